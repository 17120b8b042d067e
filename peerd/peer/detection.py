"""Failure detection between nodes: the prober that drives :mod:`peerd.core.detector`.

Every ``probe_interval_s`` each node pings its ring neighbours (and any peer it suspects or
believes dead) with a probe deadline. After ``suspect_after`` consecutive misses a peer is
suspected; up to two other members are asked to ping it (``PingReq``); if none reaches it, it
is declared dead and the verdict is sent to every other member (``Gossip``) and piggybacked on
later pings. A dead peer owns nothing in the ownership views of the nodes that believe it dead,
so its tasks move before its etcd lease expires. When it answers a ping again it is alive again
and takes its tasks back.

With the defaults (250 ms interval, 3 misses, 250 ms timeouts) a killed node is declared dead
about 0.75-1.25 s after it stops answering. A wrong suspicion costs at most claim races: the
fenced claim in etcd, not this detector, guarantees that a slot runs once.

A busy node is not a dead node, and a slow prober must not accuse: the probe deadline grows
with this node's *local health* score (:func:`peerd.core.detector.local_health`, after
Lifeguard): a round that overran twice its deadline means this node's own event loop was late,
so its misses are not counted and later rounds wait longer. A peer whose last answer said it is
saturated (a backlog of due tasks) gets :data:`BUSY_FACTOR` times the deadline: it keeps its
event loop responsive by claiming less (:mod:`peerd.engine.backpressure`), but its answers may
still be slower than an idle node's.

The peer layer also tracks what peers say about themselves: draining (owns nothing, hands its
tasks over) and not claiming (cut off from etcd). Every change of the excluded set (dead,
draining, not claiming) calls the ``on_change`` listeners: the ownership view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import structlog

from peerd.clock import Clock
from peerd.core.detector import FailureDetector, Verdict, local_health
from peerd.peer.client import PeerClient
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.peer")

PROBE_INTERVAL_S = 0.25
PROBE_TIMEOUT_S = 0.25
SUSPECT_AFTER = 3
INDIRECT_HELPERS = 2
BUSY_FACTOR = 2
"""Probe deadlines for a peer that said it is saturated are this many times longer."""


class Registration(Protocol):
    """This node's registration and member view (a narrow view of Membership)."""

    @property
    def view(self) -> Mapping[str, pb.Member]: ...

    @property
    def claiming(self) -> bool: ...

    @property
    def registered_once(self) -> asyncio.Event: ...

    def on_change(self, fn: Callable[[], None]) -> None: ...

    def on_claim_paused(self, fn: Callable[[], None]) -> None: ...


class PeerLayer:
    """Failure detection and peer-reported states for one node (see the module docstring).

    Args:
        node_id: this node.
        registration: membership (member view, claim state).
        client: the peer client.
        clock: time source for rounds and sleeps.
    """

    def __init__(
        self,
        node_id: str,
        registration: Registration,
        client: PeerClient,
        clock: Clock,
        probe_interval_s: float = PROBE_INTERVAL_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        suspect_after: int = SUSPECT_AFTER,
    ) -> None:
        self.node_id = node_id
        self.registration = registration
        self.client = client
        self.clock = clock
        self.interval_s = probe_interval_s
        self.timeout_s = probe_timeout_s
        self.detector = FailureDetector(node_id, suspect_after=suspect_after)
        self.local_health = 0
        """Lifeguard local health score (0 = healthy); probe deadlines are multiplied by
        ``1 + local_health``."""
        self.draining: set[str] = set()
        self.not_claiming: set[str] = set()
        """Peers that said they cannot claim (keepalive failing: cut off from etcd)."""
        self.loads: dict[str, ppb.Load] = {}
        """The load each peer reported in its last Ping answer."""
        self._announced_claiming = False
        self._listeners: list[Callable[[], None]] = []
        self._suspected_at: dict[str, float] = {}
        """Peers this node suspects -> when it first did (monotonic s)."""
        self._verdict_listeners: list[Callable[[bool, float], None]] = []
        self._announce_task: asyncio.Task[None] | None = None
        self._log = log.bind(node_id=node_id)
        registration.on_change(self._on_members)
        registration.on_claim_paused(self._announce_soon)

    # -- views ------------------------------------------------------------------------------

    def on_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change of :meth:`excluded`."""
        self._listeners.append(fn)

    def on_verdict(self, fn: Callable[[bool, float], None]) -> None:
        """Call ``fn(dead, suspicion_s)`` for each verdict of this node's own probes: ``dead``
        (a failover detection) or back alive, and the seconds since this node first suspected
        the peer (0 when it never suspected it first)."""
        self._verdict_listeners.append(fn)

    def _track_suspicion(self, verdicts: list[Verdict]) -> None:
        now = self.clock.monotonic()
        for v in verdicts:
            since = self._suspected_at.pop(v.node_id, now)
            for fn in self._verdict_listeners:
                fn(v.dead, now - since)
        suspects = set(self.detector.suspects())
        self._suspected_at = {n: t for n, t in self._suspected_at.items() if n in suspects}

    def excluded(self) -> set[str]:
        """Members that own nothing in this node's view: confirmed dead, draining, or unable to
        claim (cut off from etcd)."""
        return self.detector.dead() | self.draining | self.not_claiming

    def dead(self) -> set[str]:
        """Members this node's detector confirmed dead."""
        return self.detector.dead()

    def rumors(self) -> list[ppb.Rumor]:
        """This node's current verdicts, to piggyback on pings and answers."""
        return [
            ppb.Rumor(node_id=v.node_id, lease_id=v.lease_id, dead=v.dead)
            for v in self.detector.rumors()
        ]

    def _on_members(self) -> None:
        view = self.registration.view
        before = self.excluded()
        self.detector.update_members({n: m.lease_id for n, m in view.items()})
        self.draining = {n for n, m in view.items() if m.draining} | (self.draining & set(view))
        self.not_claiming &= set(view)
        self.loads = {n: load for n, load in self.loads.items() if n in view}
        if self.excluded() != before:
            self._notify()

    def set_claiming(self, node_id: str, claiming: bool) -> None:
        """Record a peer's own word on whether it can claim."""
        if node_id == self.node_id:
            return
        before = node_id in self.not_claiming
        if claiming:
            self.not_claiming.discard(node_id)
        else:
            self.not_claiming.add(node_id)
        if before != (not claiming):
            self._log.info("peer_claim_state", peer=node_id, claiming=claiming)
            self._notify()

    def mark_draining(self, node_id: str) -> None:
        """Stop counting ``node_id`` as an owner (it told us it is draining)."""
        if node_id not in self.draining and node_id != self.node_id:
            self.draining.add(node_id)
            self._notify()

    def _notify(self) -> None:
        for fn in self._listeners:
            fn()

    def _address(self, node_id: str) -> str | None:
        member = self.registration.view.get(node_id)
        return member.address if member else None

    # -- probing ----------------------------------------------------------------------------

    @property
    def probe_timeout_s(self) -> float:
        """The probe deadline now: the base deadline times ``1 + local_health``."""
        return self.timeout_s * (1 + self.local_health)

    async def ping(self, address: str, timeout_s: float) -> ppb.PingResponse | None:
        """One direct probe with this node's rumours; None when there was no answer in time."""
        return await self.client.ping(address, self.rumors(), timeout_s)

    async def run(self) -> None:
        """Probe forever (supervised by the node)."""
        while True:
            started = self.clock.monotonic()
            await self._announce_claiming()
            if self.registration.registered_once.is_set():
                await self._round()
            elapsed = self.clock.monotonic() - started
            await self.clock.sleep(max(0.0, self.interval_s - elapsed))

    def _announce_soon(self) -> None:
        """Announce a change of claim state now rather than at the next probe round."""
        if self._announce_task is None or self._announce_task.done():
            self._announce_task = asyncio.get_running_loop().create_task(self._announce_claiming())

    async def _announce_claiming(self) -> None:
        """Tell every member when this node's ability to claim changes, so that a node cut off
        from etcd (but not from its peers) loses its tasks at once, not after its lease TTL."""
        claiming = self.registration.claiming
        if claiming == self._announced_claiming:
            return
        self._announced_claiming = claiming
        (self._log.info if claiming else self._log.warning)(
            "announcing_claim_state", claiming=claiming
        )
        addresses = [
            a for n in self.registration.view if n != self.node_id if (a := self._address(n))
        ]
        await asyncio.gather(
            *(
                self.client.gossip(a, claiming=claiming, timeout_s=self.timeout_s * 2)
                for a in addresses
            )
        )

    def _timeout_for(self, target: str) -> float:
        """A peer that reported a backlog (saturated: busy, not dead) gets twice the deadline."""
        load = self.loads.get(target)
        busy = load is not None and load.backlog > 0
        return self.probe_timeout_s * (BUSY_FACTOR if busy else 1)

    async def _round(self) -> None:
        timeout_s = self.probe_timeout_s
        started = self.clock.monotonic()
        targets = [(t, a) for t in self.detector.probe_targets() if (a := self._address(t))]
        results = await asyncio.gather(*(self.ping(a, self._timeout_for(t)) for t, a in targets))
        overran = self.clock.monotonic() - started > 2 * timeout_s
        self.local_health = local_health(
            self.local_health, self.clock.monotonic() - started, timeout_s
        )
        verdicts: list[Verdict] = []
        for (target, _), resp in zip(targets, results, strict=True):
            if resp is None and overran:
                continue  # this node was late, not necessarily the peer: do not count it
            if resp is not None:
                self._on_answer(target, resp)
            verdict = self.detector.on_probe(target, resp is not None, resp.lease_id if resp else 0)
            if verdict:
                verdicts.append(verdict)
        for suspect in self.detector.suspects():
            self._suspected_at.setdefault(suspect, self.clock.monotonic())
            verdict = self.detector.on_indirect(suspect, await self._indirect(suspect, timeout_s))
            if verdict:
                verdicts.append(verdict)
        self._track_suspicion(verdicts)
        if verdicts:
            for v in verdicts:
                self._log.warning(
                    "peer_confirmed_dead" if v.dead else "peer_back_alive",
                    peer=v.node_id,
                    lease_id=v.lease_id,
                    local_health=self.local_health,
                )
            self._notify()
            await self._broadcast(verdicts)

    def _on_answer(self, target: str, resp: ppb.PingResponse) -> None:
        self.apply_rumors(resp.rumors, source=target)
        if resp.draining:
            self.mark_draining(target)
        self.set_claiming(target, resp.claiming)
        self.loads[target] = resp.load

    async def _indirect(self, target: str, timeout_s: float) -> bool:
        address = self._address(target)
        helpers = [
            a
            for h in self.detector.helpers_for(target, INDIRECT_HELPERS)
            if (a := self._address(h))
        ]
        if not address or not helpers:
            return False
        answers = await asyncio.gather(
            *(self.client.ping_req(h, target, address, timeout_s) for h in helpers)
        )
        return any(answers)

    async def _broadcast(self, verdicts: list[Verdict]) -> None:
        rumors = [ppb.Rumor(node_id=v.node_id, lease_id=v.lease_id, dead=v.dead) for v in verdicts]
        addresses = [a for n in self.detector.alive() if (a := self._address(n))]
        await asyncio.gather(
            *(self.client.gossip(a, rumors, timeout_s=self.timeout_s * 2) for a in addresses)
        )

    def apply_rumors(self, rumors: Iterable[ppb.Rumor], source: str) -> None:
        """Apply piggybacked or gossiped verdicts; rumours about this node are ignored (it
        answers pings, which refutes them)."""
        changed = False
        for r in rumors:
            if r.node_id != self.node_id:
                changed |= self.detector.on_rumor(r.node_id, r.lease_id, r.dead)
        if changed:
            now = self.clock.monotonic()
            for suspect in self.detector.suspects():
                self._suspected_at.setdefault(suspect, now)
            self._log.info("peer_rumor_applied", source=source, dead=sorted(self.detector.dead()))
            self._notify()
