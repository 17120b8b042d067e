"""``peerd.v1.Peer`` servicer: answers probes, relays indirect probes, takes verdicts and
handoffs. It sees the node through three narrow protocols, never the node itself.

Errors go through :func:`peerd.rpc.errors.grpc_errors` like every public RPC: an unexpected
exception is logged and answered INTERNAL, never an UNKNOWN status with a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import grpc

from peerd.rpc.errors import grpc_errors
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import peer_pb2_grpc as ppb_grpc


class LocalState(Protocol):
    """What a Ping answer says about this node."""

    def ping_answer(self) -> ppb.PingResponse:
        """This node's id, lease, draining and claim state, load (no rumours)."""
        ...


class Detection(Protocol):
    """The failure detector and peer-reported states (:class:`peerd.peer.detection.PeerLayer`)."""

    def apply_rumors(self, rumors: Iterable[ppb.Rumor], source: str) -> None: ...

    def rumors(self) -> list[ppb.Rumor]: ...

    def mark_draining(self, node_id: str) -> None: ...

    def set_claiming(self, node_id: str, claiming: bool) -> None: ...

    async def ping(self, address: str, timeout_s: float) -> ppb.PingResponse | None: ...


class HandoffTarget(Protocol):
    """Takes tasks a peer hands over (:meth:`peerd.engine.Engine.accept_handoff`)."""

    def accept_handoff(self, request: ppb.HandoffRequest) -> list[str]: ...


class PeerService(ppb_grpc.PeerServicer):
    """Server side of ``peerd.v1.Peer``."""

    def __init__(self, local: LocalState, detection: Detection, handoffs: HandoffTarget) -> None:
        self.local = local
        self.detection = detection
        self.handoffs = handoffs

    @grpc_errors
    async def Ping(
        self, request: ppb.PingRequest, context: grpc.aio.ServicerContext
    ) -> ppb.PingResponse:
        self.detection.apply_rumors(request.rumors, source=request.from_node)
        answer = self.local.ping_answer()
        answer.rumors.extend(self.detection.rumors())
        return answer

    @grpc_errors
    async def PingReq(
        self, request: ppb.PingReqRequest, context: grpc.aio.ServicerContext
    ) -> ppb.PingReqResponse:
        timeout_s = max(0.05, request.timeout_ms / 1000)
        resp = await self.detection.ping(request.target_address, timeout_s)
        if resp is None or resp.node_id != request.target_node:
            return ppb.PingReqResponse(reachable=False)
        return ppb.PingReqResponse(reachable=True, target_lease_id=resp.lease_id)

    @grpc_errors
    async def Gossip(
        self, request: ppb.GossipRequest, context: grpc.aio.ServicerContext
    ) -> ppb.GossipResponse:
        self.detection.apply_rumors(request.rumors, source=request.from_node)
        if request.HasField("claiming"):
            self.detection.set_claiming(request.from_node, request.claiming)
        return ppb.GossipResponse()

    @grpc_errors
    async def Handoff(
        self, request: ppb.HandoffRequest, context: grpc.aio.ServicerContext
    ) -> ppb.HandoffResponse:
        if request.sender_draining:
            self.detection.mark_draining(request.from_node)
        return ppb.HandoffResponse(accepted=self.handoffs.accept_handoff(request))
