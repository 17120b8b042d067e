"""The ``peerd.v1.Peer`` service and the prober that drives :mod:`peerd.core.detector`.

Every ``probe_interval_s`` each node pings its ring neighbours (and any peer it suspects or
believes dead) with a ``probe_timeout_s`` deadline. After ``suspect_after`` consecutive misses a
peer is suspected; up to two other members are asked to ping it (``PingReq``); if none reaches
it, it is declared dead and the verdict is sent to every other member (``Gossip``) and
piggybacked on later pings. A dead peer owns nothing in the ownership views of the nodes that
believe it dead, so its tasks move before its etcd lease expires. When it answers a ping again
it is alive again and takes its tasks back.

With the defaults (250 ms interval, 3 misses, 250 ms timeouts) a killed node is declared dead
about 0.75-1.25 s after it stops answering. A wrong suspicion costs at most claim races: the
fenced claim in etcd, not this detector, guarantees that a slot runs once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import grpc
import structlog

from peerd.core.detector import FailureDetector, Verdict
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import peer_pb2_grpc as ppb_grpc

if TYPE_CHECKING:
    from peerd.node import Node

log = structlog.get_logger("peerd.peer")

PROBE_INTERVAL_S = 0.25
PROBE_TIMEOUT_S = 0.25
SUSPECT_AFTER = 3
INDIRECT_HELPERS = 2


class PeerLayer:
    """Failure detection and the client side of the peer protocol for one node.

    ``on_change()`` callbacks run whenever the set of excluded members (dead or draining)
    changes, so the engine recomputes ownership.
    """

    def __init__(
        self,
        node: Node,
        probe_interval_s: float = PROBE_INTERVAL_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        suspect_after: int = SUSPECT_AFTER,
    ) -> None:
        self.node = node
        self.node_id = node.cfg.node_id
        self.interval_s = probe_interval_s
        self.timeout_s = probe_timeout_s
        self.detector = FailureDetector(self.node_id, suspect_after=suspect_after)
        self.draining: set[str] = set()
        self.not_claiming: set[str] = set()
        """Peers that said they cannot claim (keepalive failing: cut off from etcd)."""
        self._announced_claiming = False
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._listeners: list[Callable[[], None]] = []
        self._log = log.bind(node_id=self.node_id)
        node.membership.on_change(self._on_members)
        node.membership.on_claim_paused(self._announce_soon)
        self._announce_task: asyncio.Task[None] | None = None

    # -- views ------------------------------------------------------------------------------

    def on_change(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def excluded(self) -> set[str]:
        """Members that own nothing in this node's view: confirmed dead, draining, or unable to
        claim (cut off from etcd)."""
        return self.detector.dead() | self.draining | self.not_claiming

    def _on_members(self) -> None:
        view = self.node.membership.view
        before = self.excluded()
        self.detector.update_members({n: m.lease_id for n, m in view.items()})
        self.draining = {n for n, m in view.items() if m.draining} | (self.draining & set(view))
        self.not_claiming &= set(view)
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
        member = self.node.membership.view.get(node_id)
        return member.address if member else None

    def stub(self, address: str) -> ppb_grpc.PeerStub:
        """A Peer stub on a cached channel to ``address``."""
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 500),
                ],
            )
            self._channels[address] = channel
        return ppb_grpc.PeerStub(channel)

    # -- probing ----------------------------------------------------------------------------

    async def ping(self, address: str, timeout_s: float) -> ppb.PingResponse | None:
        """One direct probe; None when the peer did not answer in time."""
        rumors = [
            ppb.Rumor(node_id=v.node_id, lease_id=v.lease_id, dead=v.dead)
            for v in self.detector.rumors()
        ]
        try:
            return await self.stub(address).Ping(
                ppb.PingRequest(from_node=self.node_id, rumors=rumors), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return None

    async def run(self) -> None:
        """Probe forever (until cancelled)."""
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self._announce_claiming()
                if self.node.membership.registered_once.is_set():
                    await self._round()
            except Exception:  # the detector must never stop
                self._log.exception("probe_round_failed")
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, self.interval_s - elapsed))

    def _announce_soon(self) -> None:
        """Announce a change of claim state now rather than at the next probe round."""
        if self._announce_task is None or self._announce_task.done():
            self._announce_task = asyncio.get_running_loop().create_task(self._announce_claiming())

    async def _announce_claiming(self) -> None:
        """Tell every member when this node's ability to claim changes, so that a node cut off
        from etcd (but not from its peers) loses its tasks at once, not after its lease TTL."""
        claiming = self.node.membership.claim_ready.is_set()
        if claiming == self._announced_claiming:
            return
        self._announced_claiming = claiming
        (self._log.info if claiming else self._log.warning)(
            "announcing_claim_state", claiming=claiming
        )
        req = ppb.GossipRequest(from_node=self.node_id, claiming=claiming)
        addresses = [self._address(n) for n in self.node.membership.members() if n != self.node_id]

        async def send(address: str) -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.stub(address).Gossip(req, timeout=self.timeout_s * 2)

        await asyncio.gather(*(send(a) for a in addresses if a))

    async def _round(self) -> None:
        targets = [(t, self._address(t)) for t in self.detector.probe_targets()]
        results = await asyncio.gather(
            *(self.ping(addr, self.timeout_s) for _, addr in targets if addr)
        )
        verdicts: list[Verdict] = []
        for (target, _), resp in zip([t for t in targets if t[1]], results, strict=True):
            if resp is not None:
                self.apply_rumors(resp.rumors, source=target)
                if resp.draining:
                    self.mark_draining(target)
                self.set_claiming(target, resp.claiming)
            verdict = self.detector.on_probe(target, resp is not None, resp.lease_id if resp else 0)
            if verdict:
                verdicts.append(verdict)
        for suspect in self.detector.suspects():
            reachable = await self._indirect(suspect)
            verdict = self.detector.on_indirect(suspect, reachable)
            if verdict:
                verdicts.append(verdict)
        if verdicts:
            for v in verdicts:
                self._log.warning(
                    "peer_confirmed_dead" if v.dead else "peer_back_alive",
                    peer=v.node_id,
                    lease_id=v.lease_id,
                )
            self._notify()
            await self._broadcast(verdicts)

    async def _indirect(self, target: str) -> bool:
        address = self._address(target)
        helpers = [
            a
            for h in self.detector.helpers_for(target, INDIRECT_HELPERS)
            if (a := self._address(h))
        ]
        if not address or not helpers:
            return False
        req = ppb.PingReqRequest(
            from_node=self.node_id,
            target_node=target,
            target_address=address,
            timeout_ms=int(self.timeout_s * 1000),
        )

        async def ask(helper_address: str) -> bool:
            try:
                resp = await self.stub(helper_address).PingReq(req, timeout=self.timeout_s * 2)
                return bool(resp.reachable)
            except grpc.aio.AioRpcError:
                return False

        answers = await asyncio.gather(*(ask(a) for a in helpers))
        return any(answers)

    async def _broadcast(self, verdicts: list[Verdict]) -> None:
        req = ppb.GossipRequest(
            from_node=self.node_id,
            rumors=[
                ppb.Rumor(node_id=v.node_id, lease_id=v.lease_id, dead=v.dead) for v in verdicts
            ],
        )
        addresses = [self._address(n) for n in self.detector.alive()]

        async def send(address: str) -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.stub(address).Gossip(req, timeout=self.timeout_s * 2)

        await asyncio.gather(*(send(a) for a in addresses if a))

    def apply_rumors(self, rumors: Iterable[ppb.Rumor], source: str) -> None:
        """Apply piggybacked or gossiped verdicts; rumours about this node are ignored (it
        answers pings, which refutes them)."""
        changed = False
        for r in rumors:
            if r.node_id != self.node_id:
                changed |= self.detector.on_rumor(r.node_id, r.lease_id, r.dead)
        if changed:
            self._log.info("peer_rumor_applied", source=source, dead=sorted(self.detector.dead()))
            self._notify()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


class PeerService(ppb_grpc.PeerServicer):
    """Server side of ``peerd.v1.Peer``."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def Ping(
        self, request: ppb.PingRequest, context: grpc.aio.ServicerContext
    ) -> ppb.PingResponse:
        layer = self.node.peers
        layer.apply_rumors(request.rumors, source=request.from_node)
        return ppb.PingResponse(
            node_id=self.node.cfg.node_id,
            lease_id=self.node.membership.lease_id,
            draining=self.node.engine.draining,
            claiming=self.node.membership.claim_ready.is_set(),
            rumors=[
                ppb.Rumor(node_id=v.node_id, lease_id=v.lease_id, dead=v.dead)
                for v in layer.detector.rumors()
            ],
        )

    async def PingReq(
        self, request: ppb.PingReqRequest, context: grpc.aio.ServicerContext
    ) -> ppb.PingReqResponse:
        timeout_s = max(0.05, request.timeout_ms / 1000)
        resp = await self.node.peers.ping(request.target_address, timeout_s)
        if resp is None or resp.node_id != request.target_node:
            return ppb.PingReqResponse(reachable=False)
        return ppb.PingReqResponse(reachable=True, target_lease_id=resp.lease_id)

    async def Gossip(
        self, request: ppb.GossipRequest, context: grpc.aio.ServicerContext
    ) -> ppb.GossipResponse:
        self.node.peers.apply_rumors(request.rumors, source=request.from_node)
        if request.HasField("claiming"):
            self.node.peers.set_claiming(request.from_node, request.claiming)
        return ppb.GossipResponse()

    async def Handoff(
        self, request: ppb.HandoffRequest, context: grpc.aio.ServicerContext
    ) -> ppb.HandoffResponse:
        if request.sender_draining:
            self.node.peers.mark_draining(request.from_node)
        accepted = self.node.engine.accept_handoff(request)
        return ppb.HandoffResponse(accepted=accepted)
