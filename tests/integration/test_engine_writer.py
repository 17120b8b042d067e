"""The record writer on a real etcd, driven by a fake clock: writes per fire, fenced-off finals,
and retries while etcd is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import pytest
import structlog

from peerd.clock import FakeClock
from peerd.coord.etcd import Etcd
from peerd.coord.keys import Keys
from peerd.coord.ledger import Ledger, UpdateResult
from peerd.core.records import claim_record
from peerd.engine.registry import Run, RunRegistry
from peerd.engine.writer import GATHER_S, PROGRESS_DELAY_S, TRIM_INTERVAL_S, RecordWriter
from peerd.errors import Unavailable
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually_async, run_async
from tests.integration.test_ledger import member

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, tzinfo=UTC)


class CountingLedger(Ledger):
    """The real ledger, counting the records each update writes; ``down`` makes updates fail
    as if etcd were unreachable."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        super().__init__(etcd, keys)
        self.updates: list[list[pb.RunStatus.ValueType]] = []
        self.down = False
        self.refused = 0
        self.trims: list[list[str]] = []
        self.hold_trims: asyncio.Event | None = None
        """Set: trims wait for this event (a slow trim pass)."""

    async def update(self, records: Sequence[pb.RunRecord]) -> UpdateResult:
        if self.down:
            self.refused += 1
            raise Unavailable("etcd unavailable (test)")
        self.updates.append([r.status for r in records])
        return await super().update(records)

    async def trim(self, task_ids: Sequence[str], keep: int, before_ms: int = 0) -> int:
        self.trims.append(sorted(task_ids))
        if self.hold_trims is not None:
            await self.hold_trims.wait()
        return await super().trim(task_ids, keep, before_ms)


async def drive(clock: FakeClock, cond: Callable[[], bool]) -> None:
    """Let the writer's short gathering waits pass on the fake clock until ``cond()``."""
    while not cond():
        await asyncio.sleep(0.01)
        if clock.sleepers and not cond():
            clock.advance(GATHER_S)


Body = Callable[[CountingLedger, RunRegistry, RecordWriter, FakeClock, int], Awaitable[None]]


def scenario(etcd_endpoint: str, cluster: str, body: Body) -> None:
    async def main() -> None:
        etcd = Etcd([etcd_endpoint])
        await etcd.connect()
        keys = Keys(f"/peerd/{cluster}/")
        clock = FakeClock(T0)
        ledger = CountingLedger(etcd, keys)
        registry = RunRegistry()
        writer = RecordWriter(ledger, registry, clock, lambda: (100, 0.0), "a")
        loop = asyncio.create_task(writer.run())
        trims = asyncio.create_task(writer.trims())
        try:
            m = await member(etcd, keys, "a")
            await body(ledger, registry, writer, clock, m.lease_id)
        finally:
            loop.cancel()
            trims.cancel()
            await asyncio.gather(loop, trims, return_exceptions=True)
            await etcd.close()

    run_async(main, timeout_s=30)


async def claimed_run(ledger: Ledger, registry: RunRegistry, lease_id: int, slot_s: int) -> Run:
    rec = claim_record("t", datetime.fromtimestamp(slot_s, UTC), "a", lease_id, T0)
    (res,) = await ledger.claim(ledger.keys.member("a"), lease_id, [rec])
    rec.fencing_token = res.token
    run = Run(pb.TaskSpec(id="t"), rec, kind="http")

    async def idle(_: Run) -> None:
        return None

    registry.spawn(run, idle)
    return run


def test_a_quick_run_costs_one_update_its_running_record_is_never_written(
    etcd_endpoint: str, cluster_name: str
) -> None:
    async def body(ledger, registry, writer, clock, lease_id) -> None:  # type: ignore[no-untyped-def]
        run = await claimed_run(ledger, registry, lease_id, 1000)
        run.record.status = pb.RUNNING
        registry.transition(run, "start")
        writer.progress(run.record)
        await clock.wait_for_sleepers()
        clock.advance(PROGRESS_DELAY_S / 2)  # the run ends before its RUNNING record is due
        run.record.status = pb.SUCCEEDED
        registry.transition(run, "finish")
        writer.final(run, run.record)
        await drive(clock, lambda: len(registry) == 0)  # released once written
        assert ledger.updates == [[pb.SUCCEEDED]]
        stored = await ledger.get("t", 1_000_000)
        assert stored is not None and stored.status == pb.SUCCEEDED

    scenario(etcd_endpoint, cluster_name, body)


def test_a_long_run_shows_running_after_the_progress_delay(
    etcd_endpoint: str, cluster_name: str
) -> None:
    async def body(ledger, registry, writer, clock, lease_id) -> None:  # type: ignore[no-untyped-def]
        run = await claimed_run(ledger, registry, lease_id, 2000)
        run.record.status = pb.RUNNING
        registry.transition(run, "start")
        writer.progress(run.record)
        await clock.wait_for_sleepers()
        assert ledger.updates == []
        clock.advance(PROGRESS_DELAY_S)
        await drive(clock, lambda: ledger.updates == [[pb.RUNNING]] and writer.pending == 0)
        stored = await ledger.get("t", 2_000_000)
        assert stored is not None and stored.status == pb.RUNNING
        run.record.status = pb.FAILED
        registry.transition(run, "finish")
        writer.final(run, run.record)
        await drive(clock, lambda: len(registry) == 0)
        assert ledger.updates == [[pb.RUNNING], [pb.FAILED]]

    scenario(etcd_endpoint, cluster_name, body)


def test_a_fenced_off_final_record_is_logged_and_the_run_released(
    etcd_endpoint: str, cluster_name: str
) -> None:
    async def body(ledger, registry, writer, clock, lease_id) -> None:  # type: ignore[no-untyped-def]
        run = await claimed_run(ledger, registry, lease_id, 3000)
        await ledger.etcd.lease_revoke(lease_id)  # the claimant lost its lease meanwhile
        run.record.status = pb.SUCCEEDED
        registry.transition(run, "start")
        registry.transition(run, "finish")
        with structlog.testing.capture_logs() as logs:
            writer.final(run, run.record)
            await drive(clock, lambda: len(registry) == 0)
        fenced = [e for e in logs if e["event"] == "run_record_fenced_off"]
        assert len(fenced) == 1 and fenced[0]["log_level"] == "warning"
        assert fenced[0]["task_id"] == "t" and fenced[0]["status"] == "SUCCEEDED"
        stored = await ledger.get("t", 3_000_000)
        assert stored is not None and stored.status == pb.CLAIMED  # nothing written over it

    scenario(etcd_endpoint, cluster_name, body)


def test_updates_wait_out_an_etcd_outage_and_nothing_is_lost(
    etcd_endpoint: str, cluster_name: str
) -> None:
    async def body(ledger, registry, writer, clock, lease_id) -> None:  # type: ignore[no-untyped-def]
        runs = [await claimed_run(ledger, registry, lease_id, 4000 + i) for i in range(3)]
        ledger.down = True
        for run in runs:
            run.record.status = pb.SUCCEEDED
            registry.transition(run, "start")
            registry.transition(run, "finish")
            writer.final(run, run.record)
        await drive(clock, lambda: ledger.refused > 0)  # the writer tried, and backs off
        assert len(registry) == 3 and writer.pending == 3
        ledger.down = False
        clock.advance(5.0)
        await drive(clock, lambda: len(registry) == 0)
        assert writer.pending == 0
        for i in range(3):
            stored = await ledger.get("t", (4000 + i) * 1000)
            assert stored is not None and stored.status == pb.SUCCEEDED

    scenario(etcd_endpoint, cluster_name, body)


def test_trims_asked_for_within_the_interval_go_out_in_one_pass(
    etcd_endpoint: str, cluster_name: str
) -> None:
    """Ledgers asked for between trim passes are trimmed together, one call for all of them, at
    most every TRIM_INTERVAL_S (before: one call per ledger, as soon as it was asked for)."""

    async def body(
        ledger: CountingLedger, registry: RunRegistry, writer: RecordWriter, clock: FakeClock,
        lease_id: int,
    ) -> None:  # fmt: skip
        writer.trim("a")
        await assert_eventually_async(lambda: ledger.trims == [["a"]])
        writer.trim("b")
        # the writer either trimmed b at once or waits for the next pass (at TRIM_INTERVAL_S)
        await assert_eventually_async(
            lambda: ledger.trims == [["a"], ["b"]] or TRIM_INTERVAL_S in clock.deadlines()
        )
        writer.trim("c")
        clock.advance(TRIM_INTERVAL_S)
        await assert_eventually_async(lambda: len(ledger.trims) >= 2)
        assert ledger.trims == [["a"], ["b", "c"]]

    scenario(etcd_endpoint, cluster_name, body)


def test_a_trim_pass_never_holds_up_record_updates(etcd_endpoint: str, cluster_name: str) -> None:
    """A final record is written while a trim pass is still waiting for etcd (before, the
    writer trimmed between flushes: ledgers of tasks created together came due together and
    held the final records back, and the finished runs filled the node's room)."""

    async def body(
        ledger: CountingLedger, registry: RunRegistry, writer: RecordWriter, clock: FakeClock,
        lease_id: int,
    ) -> None:  # fmt: skip
        ledger.hold_trims = asyncio.Event()
        writer.trim("t")
        await assert_eventually_async(lambda: ledger.trims == [["t"]])  # the pass is under way
        run = await claimed_run(ledger, registry, lease_id, 3000)
        run.record.status = pb.SUCCEEDED
        registry.transition(run, "finish")
        writer.final(run, run.record)
        await drive(clock, lambda: len(registry) == 0)  # released once written
        assert ledger.updates == [[pb.SUCCEEDED]]
        ledger.hold_trims.set()

    scenario(etcd_endpoint, cluster_name, body)
