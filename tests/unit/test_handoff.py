"""Outgoing handoffs (peerd.engine.handoff) given up unacked, on a fake clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from peerd.clock import FakeClock
from peerd.core.tzrules import TimeZoneRules
from peerd.engine.handoff import HANDOFF_TIMEOUT_S, Handoffs
from peerd.engine.planner import Planner
from peerd.engine.registry import RunRegistry
from peerd.v1 import peer_pb2 as ppb
from tests.helpers import assert_eventually_async, run_async


def test_a_timed_out_share_is_one_line_per_target() -> None:
    """800 handoffs to two peers that never ack: all are dropped after the timeout, counted,
    and logged as one line per peer with its count (a line per task stalled the sender's loop
    for 480 ms at 100,000 tasks)."""

    async def main() -> None:
        clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
        planner = Planner("n1", timedelta(seconds=5), rules=TimeZoneRules.load("package"))

        async def send(node_id: str, request: ppb.HandoffRequest) -> list[str]:
            return []  # never acked (the planner plans none of these, so nothing is sent)

        handoffs = Handoffs("n1", planner, RunRegistry(), send, lambda: (1, False), clock)
        to_n2 = [f"a{i:03d}" for i in range(500)]
        to_n3 = [f"b{i:03d}" for i in range(300)]
        for task_id in to_n2:
            handoffs.start(task_id, "n2")
        for task_id in to_n3:
            handoffs.start(task_id, "n3")
        with capture_logs() as logs:
            runner = asyncio.get_running_loop().create_task(handoffs.run())
            clock.advance(HANDOFF_TIMEOUT_S + 1)
            await assert_eventually_async(lambda: not handoffs.handing, timeout=5, interval=0.01)
            runner.cancel()
        lines = [e for e in logs if e["event"] == "handoff_timed_out"]
        assert len(lines) == 2, f"{len(lines)} handoff_timed_out lines, want one per target"
        assert sorted((e["to_node"], e.get("tasks")) for e in lines) == [("n2", 500), ("n3", 300)]
        for e in lines:  # a few ids are named, the first ones given up
            named = e["task_ids"]
            assert 0 < len(named) < 300
            assert named == (to_n2 if e["to_node"] == "n2" else to_n3)[: len(named)]
        assert handoffs.timed_out == 800

    run_async(main, timeout_s=10)
