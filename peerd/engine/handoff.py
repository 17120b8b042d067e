"""Handoff: a task this node gives up moves to its new owner with its cursor, without a gap.

When ownership moves a task to a live peer (the peer joined, or this node drains), this node
keeps firing it and sends the peer the task's cursor and in-flight runs (``Peer.Handoff``,
batched per peer). The peer accepts the tasks it owns in its own view; this node drops each
accepted task. A task not accepted within :data:`HANDOFF_TIMEOUT_S` is dropped anyway: the new
owner then continues from the ledger's newest record, as after a crash. Ownership coming back
before the ack cancels the handoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from peerd.clock import Clock
from peerd.core.records import slot_ms
from peerd.engine.batches import in_batches
from peerd.engine.planner import Planner
from peerd.engine.registry import RunRegistry
from peerd.v1 import peer_pb2 as ppb

log = structlog.get_logger("peerd.engine")

HANDOFF_TIMEOUT_S = 3.0
"""Seconds a task keeps firing here while its new owner has not acked the handoff."""
RESEND_S = 0.1
"""Pause between handoff rounds while tasks wait for an ack (seconds)."""

BATCH = 100
"""Most tasks per handoff request. A node that rejoins gets its share back from its peers at once
(8,300 tasks at 25,000 on 3 nodes, about 4,200 from each); in one request, building it would
stall the sender's event loop and accepting it (placing and acquiring each task) the
receiver's. Accepting 250 took 40-80 ms on a busy receiver (``bench/scale.py``,
docs/performance.md Part 2), so 100: about 16-32 ms."""

IN_FLIGHT = 4
"""Handoff requests in flight per peer. One at a time, the 42 requests of 4,200 tasks took longer
than :data:`HANDOFF_TIMEOUT_S` on a busy machine, and 1,108 tasks were dropped unacked (their new
owner then read their cursor from the ledger) in a ``bench/scale.py`` run at 20,000 tasks."""

LOGGED_IDS = 5
"""Task ids named in a ``handoff_timed_out`` line (the line counts them all)."""

SendHandoff = Callable[[str, ppb.HandoffRequest], Awaitable[list[str]]]
"""``send(node_id, request) -> accepted task ids`` (the peer client; [] on failure)."""


class Handoffs:
    """Outgoing handoffs of one node.

    Args:
        node_id: this node.
        planner: the owned tasks (cursors; accepted tasks are dropped from it).
        registry: in-flight runs sent along with each task.
        send: the peer client's handoff call.
        sender_state: ``() -> (lease_id, draining)`` of this node, sent with each request.
        clock: timeouts and pauses.
    """

    def __init__(
        self,
        node_id: str,
        planner: Planner,
        registry: RunRegistry,
        send: SendHandoff,
        sender_state: Callable[[], tuple[int, bool]],
        clock: Clock,
    ) -> None:
        self.node_id = node_id
        self.planner = planner
        self.registry = registry
        self.send = send
        self.sender_state = sender_state
        self.clock = clock
        self.handing: dict[str, tuple[str, float]] = {}
        """task id -> (target node, since monotonic s): handoffs waiting for an ack."""
        self._wake = asyncio.Event()
        self._log = log.bind(node_id=node_id)
        self.handed_off = 0
        """Tasks a new owner acked (since start)."""
        self.timed_out = 0
        """Tasks given up without an ack after :data:`HANDOFF_TIMEOUT_S` (since start)."""
        self.accepted = 0
        """Tasks taken over from a peer's handoff (since start; counted by the engine)."""

    def start(self, task_id: str, target: str) -> None:
        """Hand ``task_id`` to ``target`` (it keeps firing here until acked)."""
        since = self.handing.get(task_id, ("", self.clock.monotonic()))[1]
        self.handing[task_id] = (target, since)
        self._wake.set()

    def cancel(self, task_id: str) -> None:
        """Ownership came back: keep ``task_id`` (no-op if it was not being handed off)."""
        self.handing.pop(task_id, None)

    def drop(self, task_id: str) -> None:
        """Give ``task_id`` up now (acked, timed out, or no handoff possible)."""
        self.handing.pop(task_id, None)
        self.planner.drop(task_id)

    async def run(self) -> None:
        """Send pending handoffs until cancelled (supervised by the engine)."""
        while True:
            if not self.handing:
                self._wake.clear()
                await self._wake.wait()
            by_target: dict[str, list[str]] = {}
            expired: dict[str, list[str]] = {}
            now = self.clock.monotonic()
            for task_id, (target, since) in list(self.handing.items()):
                if now - since > HANDOFF_TIMEOUT_S:
                    expired.setdefault(target, []).append(task_id)
                    self.drop(task_id)
                else:
                    by_target.setdefault(target, []).append(task_id)
            self._log_expired(expired)
            await asyncio.gather(*(self._send(t, ids) for t, ids in by_target.items()))
            if self.handing:
                await self.clock.sleep(RESEND_S)

    def _log_expired(self, expired: dict[str, list[str]]) -> None:
        """Count the tasks given up unacked and log one line per target (the count and the
        first :data:`LOGGED_IDS` ids). A line per task was 13,600 lines in one callback when a
        restarted node's share timed out at 100,000 tasks: a 480 ms stall of the sender's
        event loop (docs/performance.md, Part 2, restart timeline at 100,000)."""
        for target, task_ids in expired.items():
            self.timed_out += len(task_ids)
            self._log.warning(
                "handoff_timed_out",
                to_node=target,
                tasks=len(task_ids),
                task_ids=task_ids[:LOGGED_IDS],
            )

    async def _send(self, target: str, task_ids: list[str]) -> None:
        """Hand ``task_ids`` to ``target``, :data:`BATCH` tasks per request, :data:`IN_FLIGHT`
        requests at a time. The tasks of a failed request stay pending (resent next pass)."""
        failed = await in_batches(
            task_ids, BATCH, IN_FLIGHT, lambda batch: self._send_batch(target, batch)
        )
        for batch, exc in failed:
            self._log.warning("handoff_failed", to_node=target, tasks=len(batch), error=str(exc))

    async def _send_batch(self, target: str, task_ids: list[str]) -> None:
        items = []
        for task_id in task_ids:
            o = self.planner.owned.get(task_id)
            if o is None or o.cursor is None:
                continue
            in_flight = [r.record for r in self.registry.of_task(task_id)]
            items.append(
                ppb.HandoffTask(task_id=task_id, cursor_ms=slot_ms(o.cursor), in_flight=in_flight)
            )
        if not items:
            return
        lease_id, draining = self.sender_state()
        accepted = await self.send(
            target,
            ppb.HandoffRequest(
                from_node=self.node_id,
                from_lease_id=lease_id,
                sender_draining=draining,
                tasks=items,
            ),
        )
        for task_id in accepted:
            if self.handing.get(task_id, ("", 0.0))[0] == target:
                self.drop(task_id)
                self.handed_off += 1
        if accepted:
            self._log.info("handoff_done", to_node=target, tasks=len(accepted))
