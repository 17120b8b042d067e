"""Cluster membership: this node's leased key, its keepalive, and a watched view of all members.

Protocol:

1. Grant a lease (TTL ``ttl_s``) and create ``members/<node_id>`` on it, only if the key does not
   exist (``create_revision == 0``). If it exists and its holder answers a health probe, this is
   a duplicate node id: :class:`DuplicateNode`. If the holder does not answer (a crashed previous
   run of this node), wait for its lease to expire, then register.
2. Keep the lease alive every TTL/3. On the first failed keepalive the node stops claiming at once
   (:attr:`Membership.claim_ready` is cleared); a later successful keepalive re-enables it. If the
   lease has expired (TTL <= 0) or the member key is deleted, the node re-registers with a new
   lease.
3. List ``members/`` at revision R, then watch from R+1; after a compaction or a broken watch,
   re-list and watch again. The view is ``{node_id: pb.Member}`` plus its revision.

Claims are fenced on ``members/<node_id>`` being attached to :attr:`lease_id` (see
:mod:`peerd.coord.ledger`), so a node whose lease expired cannot claim even if its local view
still says it can.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import structlog

from peerd.clock import Clock, wait_event
from peerd.coord.etcd import KV, Etcd, Event, retry_backoff
from peerd.coord.etcd_messages import cmp_create_revision, op_get, op_put, txn_request
from peerd.coord.keys import Keys
from peerd.coord.watch import list_then_watch
from peerd.errors import DuplicateNode, PeerdError, Unavailable
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.membership")

KEEPALIVE_TIMEOUT_S = 2.0
"""Deadline of one keepalive (seconds): a node cut off from etcd notices within this."""
CHECK_TIMEOUT_S = 0.5
"""Deadline of the keepalive that checks etcd after a claim timed out (seconds): a node cut off
from etcd tells its peers within claim deadline + this (0.5 + 0.5 s). A keepalive is answered by
the etcd leader from memory (no raft write), so a slow but reachable etcd answers it well within
this; 1.0 s made partition failover p99 2.51 s in the long chaos profile (docs/reliability.md)."""


class MemberView(Protocol):
    """The watched member view as its readers see it (:class:`Membership` is one): the members,
    the etcd revision the view is current at, whether it was loaded, and its change event."""

    @property
    def view(self) -> Mapping[str, pb.Member]: ...

    @property
    def view_revision(self) -> int: ...

    @property
    def view_ready(self) -> asyncio.Event: ...

    def on_change(self, fn: Callable[[], None]) -> None: ...


Probe = Callable[[str], Awaitable[bool]]
"""``probe(address) -> True`` when a peerd node answers at ``address``."""


class Membership:
    """This node's registration and its view of the cluster.

    Args:
        etcd: the etcd client.
        keys: the cluster keyspace.
        me: this node's Member record (node_id, address, started_at, version).
        ttl_s: lease TTL in seconds (>= 2).
        probe: health probe used to tell a live duplicate from a crashed previous run.
        clock: time source.
    """

    def __init__(
        self, etcd: Etcd, keys: Keys, me: pb.Member, ttl_s: int, probe: Probe, clock: Clock
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.me = me
        self.ttl_s = ttl_s
        self.probe = probe
        self.clock = clock
        self.lease_id = 0
        self.view: dict[str, pb.Member] = {}
        self.view_revision = 0
        self.claim_ready = asyncio.Event()
        """Set while this node may claim (registered, last keepalive answered, no check
        pending)."""
        self.claiming = False
        """What peers are told (Ping, Gossip): False once etcd did not answer a keepalive, or
        while this node is not registered. Unlike :attr:`claim_ready` it does not drop while a
        slow claim is being checked."""
        self._check_deadline_s = KEEPALIVE_TIMEOUT_S
        self.registered_once = asyncio.Event()
        self.view_ready = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._lost = asyncio.Event()
        self._check_now = asyncio.Event()
        self._claim_listeners: list[Callable[[], None]] = []
        self._closing = False
        self._log = log.bind(node_id=me.node_id)

    @property
    def member_key(self) -> bytes:
        return self.keys.member(self.me.node_id)

    def on_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change of the member view."""
        self._listeners.append(fn)

    def members(self) -> list[str]:
        """Node ids in the current view."""
        return sorted(self.view)

    def on_claim_paused(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when :attr:`claiming` turns False (to tell peers at once)."""
        self._claim_listeners.append(fn)

    def etcd_suspect(self) -> None:
        """Report that etcd did not answer a claim in time: stop claiming at once and check the
        lease now, with a short deadline (:data:`CHECK_TIMEOUT_S`). A slow etcd still answers
        the keepalive (it is not a raft write): claims resume and peers notice nothing. Only
        when the check fails too does :attr:`claiming` turn False, so peers take this node's
        tasks over without waiting for its lease to expire."""
        if self.claim_ready.is_set():
            self._log.warning("claims_paused_checking_etcd")
            self.claim_ready.clear()
        self._check_deadline_s = CHECK_TIMEOUT_S
        self._check_now.set()

    def etcd_slow(self) -> None:
        """Report that a claim has waited :data:`peerd.engine.claims.SLOW_CLAIM_S` without an
        answer: check the lease now, with the short deadline (:data:`CHECK_TIMEOUT_S`), while
        the claim goes on waiting. Claims are not paused; a failed check turns
        :attr:`claiming` False (peers are told at once), so a node cut off from etcd is known
        about half a second sooner than if the check waited for the claim's own timeout."""
        self._check_deadline_s = CHECK_TIMEOUT_S
        self._check_now.set()

    def _set_claiming(self, claiming: bool) -> None:
        if claiming == self.claiming:
            return
        self.claiming = claiming
        if not claiming:
            for fn in self._claim_listeners:
                fn()

    def lease_lost(self) -> None:
        """Report that a fenced write failed on the lease check: stop claiming and re-register."""
        self.claim_ready.clear()
        self._set_claiming(False)
        self._lost.set()
        self._check_now.set()

    # -- registration --------------------------------------------------------------------------

    async def register(self, first: bool) -> None:
        """Create the member key on a new lease.

        Raises:
            DuplicateNode: another live node holds this node id.
            Unavailable: etcd cannot be reached.
        """
        deadline = self.clock.monotonic() + self.ttl_s + 10
        probed = False
        while True:
            lease_id = await self.etcd.lease_grant(self.ttl_s)
            self.me.lease_id = lease_id
            value = self.me.SerializeToString()
            resp = await self.etcd.txn(
                txn_request(
                    [cmp_create_revision(self.member_key, 0)],
                    [op_put(self.member_key, value, lease_id)],
                    [op_get(self.member_key)],
                )
            )
            if resp.succeeded:
                old, self.lease_id = self.lease_id, lease_id
                if old:
                    with contextlib.suppress(PeerdError):
                        await self.etcd.lease_revoke(old)
                self._lost.clear()
                self.claim_ready.set()
                self._set_claiming(True)
                self.registered_once.set()
                self._log.info("member_registered", lease_id=lease_id, ttl_s=self.ttl_s)
                return
            await self.etcd.lease_revoke(lease_id)
            kvs = resp.responses[0].response_range.kvs
            holder = pb.Member.FromString(kvs[0].value) if kvs else None
            holder_lease = kvs[0].lease if kvs else 0
            if holder_lease and holder_lease == self.lease_id:
                # Our own previous key, still on our old lease: replace it.
                with contextlib.suppress(PeerdError):
                    await self.etcd.lease_revoke(holder_lease)
                continue
            if holder is not None and not probed:
                probed = True
                if await self.probe(holder.address):
                    raise DuplicateNode(
                        f"node id {self.me.node_id!r} is already registered by a live node at "
                        f"{holder.address} (started {holder.started_at.ToJsonString()}); "
                        "choose another --node-id"
                    )
                self._log.warning(
                    "member_key_held_by_dead_holder_waiting",
                    holder_address=holder.address,
                    ttl_s=self.ttl_s,
                )
            if self.clock.monotonic() > deadline:
                raise DuplicateNode(
                    f"node id {self.me.node_id!r} stayed registered for more than the lease TTL; "
                    "another node may be using it"
                )
            if not first and holder is not None and await self.probe(holder.address):
                raise DuplicateNode(f"node id {self.me.node_id!r} was taken by {holder.address}")
            await self.clock.sleep(0.5)

    async def set_draining(self) -> None:
        """Rewrite this node's member key (same lease) with ``draining = True``, so every node
        stops counting it as an owner. Best effort: etcd errors are logged, not raised."""
        self.me.draining = True
        try:
            await self.etcd.put(self.member_key, self.me.SerializeToString(), self.lease_id)
        except PeerdError as exc:
            self._log.warning("set_draining_failed", error=str(exc))

    async def revoke(self) -> None:
        """Revoke the lease (deletes the member key): used on clean shutdown."""
        self._closing = True
        self.claim_ready.clear()
        if self.lease_id:
            with contextlib.suppress(PeerdError):
                await self.etcd.lease_revoke(self.lease_id)
            self._log.info("member_lease_revoked", lease_id=self.lease_id)

    # -- loops ---------------------------------------------------------------------------------

    async def keepalive_loop(self) -> None:
        """Refresh the lease every TTL/3; re-register after expiry. Runs until cancelled."""
        interval = self.ttl_s / 3
        while not self._closing:
            # Refresh every TTL/3; while claims are paused, check every second (and at once when
            # asked), so that claiming resumes soon after etcd answers again.
            wait_s = interval if self.claim_ready.is_set() else min(interval, 1.0)
            if not self._lost.is_set():
                await wait_event(self.clock, self._check_now, wait_s)
            self._check_now.clear()
            if self._closing:
                return
            try:
                if not self._lost.is_set():
                    deadline_s, self._check_deadline_s = self._check_deadline_s, KEEPALIVE_TIMEOUT_S
                    ttl = await self._keepalive(min(deadline_s, interval))
                    if ttl > 0:
                        if not self.claim_ready.is_set():
                            self._log.info("keepalive_recovered", ttl_s=ttl)
                        self.claim_ready.set()
                        self._set_claiming(True)
                        continue
                    self._log.warning("lease_expired", lease_id=self.lease_id)
                self.claim_ready.clear()
                self._set_claiming(False)
                await self.register(first=False)
                self._notify()
            except Unavailable as exc:
                if self.claiming:
                    self._log.warning("keepalive_failed_claims_paused", error=str(exc))
                self.claim_ready.clear()
                self._set_claiming(False)
            except DuplicateNode:
                raise
            except PeerdError as exc:
                self.claim_ready.clear()
                self._log.error("keepalive_error", error=str(exc))

    async def _keepalive(self, deadline_s: float) -> int:
        """One keepalive of :attr:`lease_id`, answered within ``deadline_s``; a check asked for
        while it waits (:meth:`etcd_suspect`, :meth:`etcd_slow`) cuts the wait to
        :data:`CHECK_TIMEOUT_S` from that moment. Without the cut, a regular keepalive (2 s)
        that went out just as etcd became unreachable held the check back, and peers learnt
        that this node had stopped claiming up to 1.5 s late (partition failover 2.13 s in the
        long chaos profile, docs/reliability.md). Every check asked while it waits is served by
        it, a short keepalive (already :data:`CHECK_TIMEOUT_S`) included: the loop does not
        send a second one at once.

        Returns:
            The lease's new TTL (seconds; 0 or less: expired).
        Raises:
            Unavailable: no answer in time.
        """
        call = asyncio.ensure_future(self.etcd.lease_keepalive(self.lease_id, timeout_s=deadline_s))
        asked = asyncio.ensure_future(self._check_now.wait())
        cut: asyncio.Future[None] | None = None
        try:
            await asyncio.wait([call, asked], return_when=asyncio.FIRST_COMPLETED)
            if not call.done() and deadline_s > CHECK_TIMEOUT_S:  # asked: cut it short
                cut = asyncio.ensure_future(self.clock.sleep(CHECK_TIMEOUT_S))
                await asyncio.wait([call, cut], return_when=asyncio.FIRST_COMPLETED)
                if not call.done():
                    raise Unavailable(
                        f"etcd did not answer a keepalive within {CHECK_TIMEOUT_S:g}s of a check"
                    )
            return await call
        finally:
            # Every check asked while this keepalive waited is served by it (it ended within
            # CHECK_TIMEOUT_S of the ask, or was cut to that): no second keepalive at once.
            self._check_now.clear()
            self._check_deadline_s = KEEPALIVE_TIMEOUT_S
            for fut in (call, asked, cut):
                if fut is not None and not fut.done():
                    fut.cancel()
            await asyncio.gather(
                *(f for f in (call, asked, cut) if f is not None), return_exceptions=True
            )

    async def watch_loop(self) -> None:
        """Keep :attr:`view` current: list ``members/``, then watch from the list's revision + 1
        (:func:`peerd.coord.watch.list_then_watch`). Runs until cancelled."""
        await list_then_watch(
            self.etcd,
            self.keys.members,
            self._on_members_listed,
            self._on_member_event,
            retry_backoff(),
            self.clock,
            "members",
            self._log,
        )

    def _on_members_listed(self, kvs: list[KV], revision: int) -> None:
        self.view = {
            self.keys.id_of(kv.key, self.keys.members): pb.Member.FromString(kv.value) for kv in kvs
        }
        self.view_revision = revision
        self.view_ready.set()
        self._notify()

    def _on_member_event(self, ev: Event) -> None:
        node_id = self.keys.id_of(ev.kv.key, self.keys.members)
        if ev.kind == "put":
            self.view[node_id] = pb.Member.FromString(ev.kv.value)
        else:
            self.view.pop(node_id, None)
            if node_id == self.me.node_id and not self._closing:
                self._log.warning("own_member_key_deleted")
                self.lease_lost()
        self.view_revision = ev.revision
        self._notify()

    def _notify(self) -> None:
        for fn in self._listeners:
            try:
                fn()
            except Exception:  # a listener bug must not kill membership
                self._log.exception("membership_listener_failed")
