"""The client side of ``peerd.v1.Peer``: every call one node makes to another goes through here.

One cached gRPC channel per peer address (short reconnect backoff, so a peer that comes back is
reached again within half a second). With TLS the channels present this node's certificate
(mutual TLS); :meth:`PeerClient.reset` drops them when the certificate files are reloaded.
Failures are answers, never exceptions: a probe that gets no answer in time returns None, a
gossip that fails is dropped (the next probe round repeats what matters), a handoff that fails
returns no accepted tasks (the sender retries until its handoff timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import grpc
import structlog

from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import peer_pb2_grpc as ppb_grpc

log = structlog.get_logger("peerd.peer")

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
HANDOFF_RPC_TIMEOUT_S = 2.0
"""Deadline of one Handoff call (seconds)."""


class PeerClient:
    """Calls to other nodes' Peer service.

    Args:
        node_id: this node (the ``from_node`` of every request).
        address_of: ``(node_id) -> HOST:PORT`` from the member view, or None when unknown.
        credentials: ``() -> TLS credentials`` for new channels (None: plaintext).
    """

    def __init__(
        self,
        node_id: str,
        address_of: Callable[[str], str | None],
        credentials: Callable[[], grpc.ChannelCredentials | None] = lambda: None,
    ) -> None:
        self.node_id = node_id
        self.address_of = address_of
        self.credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._log = log.bind(node_id=node_id)

    def _stub(self, address: str) -> ppb_grpc.PeerStub:
        channel = self._channels.get(address)
        if channel is None:
            creds = self.credentials()
            if creds is None:
                channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return ppb_grpc.PeerStub(channel)

    def reset(self) -> None:
        """Drop every channel (new calls dial again with fresh credentials); the old ones are
        closed in the background, letting calls in flight finish (1 s grace)."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            task = asyncio.get_running_loop().create_task(channel.close(grace=1.0))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def ping(
        self, address: str, rumors: Sequence[ppb.Rumor], timeout_s: float
    ) -> ppb.PingResponse | None:
        """One direct probe carrying ``rumors``; None when the peer did not answer in time."""
        try:
            return await self._stub(address).Ping(
                ppb.PingRequest(from_node=self.node_id, rumors=rumors), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return None

    async def ping_req(
        self, helper: str, target_node: str, target_address: str, timeout_s: float
    ) -> bool:
        """Ask the node at ``helper`` to probe ``target_node``; whether it answered."""
        req = ppb.PingReqRequest(
            from_node=self.node_id,
            target_node=target_node,
            target_address=target_address,
            timeout_ms=int(timeout_s * 1000),
        )
        try:
            resp = await self._stub(helper).PingReq(req, timeout=timeout_s * 2)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.reachable)

    async def gossip(
        self,
        address: str,
        rumors: Sequence[ppb.Rumor] = (),
        claiming: bool | None = None,
        timeout_s: float = 0.5,
    ) -> None:
        """Send verdicts (and this node's claim state, when given); failures are dropped."""
        req = ppb.GossipRequest(from_node=self.node_id, rumors=rumors)
        if claiming is not None:
            req.claiming = claiming
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._stub(address).Gossip(req, timeout=timeout_s)

    async def handoff(self, node_id: str, request: ppb.HandoffRequest) -> list[str]:
        """Hand tasks to ``node_id``; the ids it accepted ([] on failure or unknown node)."""
        address = self.address_of(node_id)
        if address is None:
            return []
        try:
            resp = await self._stub(address).Handoff(request, timeout=HANDOFF_RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            self._log.warning("handoff_failed", to_node=node_id, error=exc.code().name)
            return []
        return list(resp.accepted)

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
