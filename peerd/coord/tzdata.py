"""The cluster's agreed tzdata version in etcd: watched, kept to the rule, pinned by operators.

Which version the cluster agrees on, and why, is :mod:`peerd.core.tzagree`; this module keeps
it in etcd, where every node reads the same value and every claim can be fenced on it:

    keys     tzdata/agreed = "2026f"     the version zone-dependent slots are computed with
             tzdata/pin    = "2026f"     present while an operator pins it

    watch    list tzdata/ at R, watch from R + 1 -> agreed, its mod revision, pinned
    advance  on every change of the member view or of these keys, each node evaluates
             tzagree.agreed_version over the live members; when the result differs:
               compare  create_revision(tzdata/pin) == 0            not pinned
                        mod_revision(tzdata/agreed) == seen          unchanged since read
                        no key under members/ newer than the view    the view is current
               success  put tzdata/agreed = result
             A failed compare means this node's view is behind: the watch brings the news and
             the rule runs again. Every node computes the same result from the same member
             keys, so racing writers write the same value.
    pin      put tzdata/agreed = V (unless it is V already); put tzdata/pin = V   one txn
    unpin    delete tzdata/pin
    fence    a claim of a zone-dependent slot compares mod_revision(tzdata/agreed) == the
             revision at which this node saw its own version agreed (:meth:`fence`,
             :mod:`peerd.coord.ledger`): after any change of the agreed version, no node
             claims with the rules it had before, whatever its view says.

This node logs ``tzdata_agreed`` when the agreed version or the pin changes, and
``tzdata_mismatch`` (a warning, once per change) while its own version differs from the agreed
one: it then owns and claims no zone-dependent task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from peerd.clock import Clock
from peerd.coord.etcd import KV, Etcd, Event, retry_backoff
from peerd.coord.etcd_messages import (
    cmp_create_revision,
    cmp_mod_revision,
    cmp_unchanged_since,
    cmp_value,
    op_delete,
    op_get,
    op_put,
    op_txn,
    txn_request,
)
from peerd.coord.keys import Keys
from peerd.coord.membership import MemberView
from peerd.coord.watch import list_then_watch
from peerd.core.placement import Placement
from peerd.core.tzagree import agreed_version, live_versions, may_own_zone, mismatch
from peerd.core.tzrules import check_version
from peerd.errors import InvalidArgument, PeerdError
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.tzdata")


class TzdataAgreement:
    """The agreed tzdata version as this node sees it, and the loops that keep it.

    Args:
        etcd: the etcd client.
        keys: the cluster keyspace.
        node_id: this node (log lines).
        version: this node's tzdata version (:attr:`peerd.core.tzrules.TimeZoneRules.version`).
        members: the member view (live members' versions; :meth:`advance` writes only from a
            current view).
        clock: what retries sleep on.
    """

    def __init__(
        self, etcd: Etcd, keys: Keys, node_id: str, version: str, members: MemberView, clock: Clock
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.version = version
        self.members = members
        self.clock = clock
        self.agreed: str | None = None
        """The agreed version in this node's view (None: none yet)."""
        self.revision = 0
        """Mod revision of ``tzdata/agreed`` in this node's view (0: absent)."""
        self.pinned = False
        self.ready = asyncio.Event()
        """Set once the keys were listed."""
        self._dirty = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._logged: tuple[str | None, bool] | None = None
        self._log = log.bind(node_id=node_id)
        members.on_change(self._dirty.set)

    def on_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change of the agreed version or the pin."""
        self._listeners.append(fn)

    def fence(self) -> int | None:
        """The revision claims of zone-dependent slots are fenced on: that of ``tzdata/agreed``
        while it names this node's version; None while it does not (claim none)."""
        return self.revision if self.agreed == self.version and self.revision else None

    def eligible(self, placement: Placement, member: pb.Member) -> bool:
        """The ownership filter: ``member`` may own tasks of ``placement`` (:func:`peerd.core.
        tzagree.may_own_zone`)."""
        return may_own_zone(placement.zone_dependent, member.tzdata_version, self.agreed)

    # -- the watch -------------------------------------------------------------------------

    async def watch_loop(self) -> None:
        """Keep :attr:`agreed`, :attr:`revision` and :attr:`pinned` current (list, then watch
        ``tzdata/``). Runs until cancelled."""
        await list_then_watch(
            self.etcd,
            self.keys.tzdata,
            self._on_listed,
            self._on_event,
            retry_backoff(),
            self.clock,
            "tzdata",
            self._log,
        )

    def _on_listed(self, kvs: list[KV], revision: int) -> None:
        by_key = {kv.key: kv for kv in kvs}
        agreed = by_key.get(self.keys.tzdata_agreed)
        self._apply(
            agreed.value.decode(errors="replace") if agreed is not None else None,
            agreed.mod_revision if agreed is not None else 0,
            self.keys.tzdata_pin in by_key,
        )
        self.ready.set()

    def _on_event(self, ev: Event) -> None:
        if ev.kv.key == self.keys.tzdata_agreed:
            put = ev.kind == "put"
            value = ev.kv.value.decode(errors="replace") if put else None
            self._apply(value, ev.revision if put else 0, self.pinned)
        elif ev.kv.key == self.keys.tzdata_pin:
            self._apply(self.agreed, self.revision, ev.kind == "put")

    def _apply(self, agreed: str | None, revision: int, pinned: bool) -> None:
        changed = (agreed, pinned) != (self.agreed, self.pinned)
        self.agreed, self.revision, self.pinned = agreed, revision, pinned
        self._dirty.set()
        if not changed and self._logged is not None:
            return
        self._report()
        for fn in self._listeners:
            fn()

    def _report(self) -> None:
        state = (self.agreed, self.pinned)
        if state == self._logged:
            return
        self._logged = state
        self._log.info("tzdata_agreed", agreed=self.agreed, pinned=self.pinned, own=self.version)
        reason = mismatch(self.version, self.agreed, self.pinned)
        if reason is not None and self.agreed is not None:  # None: the first node, for a moment
            self._log.warning("tzdata_mismatch", reason=reason)

    # -- keeping the rule ------------------------------------------------------------------

    async def agree_loop(self) -> None:
        """Advance the agreed version whenever the rule says so (module docstring). Runs
        until cancelled; etcd errors are retried with backoff."""
        backoff = retry_backoff()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.advance()
            except PeerdError as exc:
                delay_s = backoff.next_delay_s()
                self._log.warning("tzdata_advance_failed", error=str(exc), retry_in_s=delay_s)
                await self.clock.sleep(delay_s)
                self._dirty.set()
                continue
            backoff.reset()

    async def advance(self) -> bool:
        """Write the version the rule gives, if it differs from the agreed one (and both views
        are loaded). Returns whether this call changed it.

        Raises:
            Unavailable: etcd cannot be reached.
        """
        if not (self.ready.is_set() and self.members.view_ready.is_set()):
            return False
        view_revision = self.members.view_revision
        previous = self.agreed
        target = agreed_version(previous, self.pinned, live_versions(self.members.view))
        if target is None or target == previous:
            return False
        agreed_key = self.keys.tzdata_agreed
        unchanged = (
            cmp_mod_revision(agreed_key, self.revision)
            if self.revision
            else cmp_create_revision(agreed_key, 0)
        )
        resp = await self.etcd.txn(
            txn_request(
                [
                    cmp_create_revision(self.keys.tzdata_pin, 0),
                    unchanged,
                    cmp_unchanged_since(self.keys.members, view_revision),
                ],
                [op_put(agreed_key, target.encode())],
            )
        )
        if resp.succeeded:
            self._log.info("tzdata_agreement_advanced", previous=previous, agreed=target)
        return bool(resp.succeeded)

    # -- operators -------------------------------------------------------------------------

    async def pin(self, version: str, force: bool = False) -> str:
        """Pin the agreed version to ``version``; returns it.

        Raises:
            InvalidArgument: ``version`` is malformed, or (without ``force``) no live member
                runs it, naming field ``version``.
            Unavailable: etcd cannot be reached.
        """
        version = check_version(version, "version")
        live = sorted(set(live_versions(self.members.view)))
        if not force and version not in live:
            raise InvalidArgument(
                "version",
                f"no live member runs tzdata {version} (they run {', '.join(live) or 'none'}); "
                "no node would claim a slot of a zone-dependent task. Upgrade the nodes first, "
                "or force it (peerd tzdata pin --force)",
            )
        agreed = self.keys.tzdata_agreed
        value = version.encode()
        await self.etcd.txn(
            txn_request(
                [],
                [  # agreed first: watchers see the new version, then the pin
                    op_txn([cmp_value(agreed, value)], [], [op_put(agreed, value)]),
                    op_put(self.keys.tzdata_pin, value),
                ],
            )
        )
        self._log.info("tzdata_pinned", version=version, force=force)
        return version

    async def unpin(self) -> str | None:
        """Remove the pin; returns the agreed version (the cluster starts from it again).

        Raises:
            Unavailable: etcd cannot be reached.
        """
        resp = await self.etcd.txn(
            txn_request([], [op_delete(self.keys.tzdata_pin), op_get(self.keys.tzdata_agreed)])
        )
        kvs = resp.responses[1].response_range.kvs
        self._log.info("tzdata_unpinned")
        return bytes(kvs[0].value).decode(errors="replace") if kvs else None
