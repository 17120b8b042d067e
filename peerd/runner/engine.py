"""The fire loop of one node: plan due slots of owned tasks, claim them in batches, execute.

* **Ownership** (:mod:`peerd.core.ring`) decides which tasks this node plans. It is computed from
  the node's own views of membership and tasks and recomputed on every change of either; only the
  tasks that change owner are touched, nothing else pauses.
* **Planning** (:func:`peerd.core.plan.plan_due`) is pure: due slots from the task's cursor (the
  last slot handled) to ``now``. When a task is acquired its cursor is read from the ledger (the
  newest run key: one range read), so a new owner continues where the old one stopped.
* **Claiming** (:meth:`peerd.coord.ledger.Ledger.claim`) batches up to ``claim_batch`` slots of
  any tasks into one etcd transaction, fenced on this node's lease. Only claimed slots execute.
* **Executing** runs at most ``max_concurrent_runs`` at once; queued time shows as lateness.
  Record updates (RUNNING, SUCCEEDED, FAILED) are batched by a writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from peerd.clock import SystemClock
from peerd.config import NodeConfig
from peerd.coord.ledger import ClaimResult, Ledger
from peerd.coord.membership import Membership
from peerd.coord.store import TaskCache
from peerd.core.plan import plan_due
from peerd.core.ring import owner
from peerd.core.schedule import CompiledSchedule, spec_from_proto
from peerd.errors import LeaseLost, PeerdError, Unavailable
from peerd.runner.base import Execution, Outcome, rfc3339
from peerd.runner.http import HttpExecutor
from peerd.runner.shell import ShellAllowList, ShellExecutor
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

DEFAULT_TIMEOUT = timedelta(seconds=60)
TRIM_EVERY = 20
"""Trim a task's ledger to ``runs_keep`` records after this many claims of it."""
MAX_SLEEP_S = 1.0
"""The loop wakes at least this often (seconds) even with nothing due."""


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass
class Owned:
    """A task this node currently plans."""

    spec: pb.TaskSpec
    compiled: CompiledSchedule
    generation: int
    cursor: datetime | None = None
    next_at: datetime | None = None
    claims_since_trim: int = 0


@dataclass
class EngineStats:
    """Counters since start (exported by GetCluster and the benchmarks)."""

    claimed: int = 0
    lost_races: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    lateness_ms: list[float] = field(default_factory=list)


class Executors:
    """Dispatches an execution to the executor for the task's target type."""

    def __init__(self, allow_shell: ShellAllowList, clock: SystemClock) -> None:
        self.http = HttpExecutor(clock=clock)
        self.shell = ShellExecutor(allow_shell, clock=clock)
        self.clock = clock

    async def run(self, spec: pb.TaskSpec, execution: Execution) -> Outcome:
        kind = spec.WhichOneof("target")
        if kind == "http":
            return await self.http.run(spec.http, execution)
        if kind == "shell":
            return await self.shell.run(spec.shell, execution)
        now = self.clock.now()
        return Outcome(False, now, now, error=f"task has no executor target ({kind})")

    async def aclose(self) -> None:
        await self.http.aclose()


class Engine:
    """Plans, claims and executes the slots of the tasks this node owns."""

    def __init__(
        self,
        cfg: NodeConfig,
        membership: Membership,
        cache: TaskCache,
        ledger: Ledger,
        clock: SystemClock,
    ) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.membership = membership
        self.cache = cache
        self.ledger = ledger
        self.clock = clock
        self.executors = Executors(ShellAllowList(cfg.allow_shell), clock)
        self.owned: dict[str, Owned] = {}
        self.stats = EngineStats()
        self._heap: list[tuple[float, int, str]] = []
        self._generation = 0
        self._to_load: set[str] = set()
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(cfg.max_concurrent_runs)
        self._running: set[asyncio.Task[None]] = set()
        self._updates: asyncio.Queue[pb.RunRecord] = asyncio.Queue()
        self._trims: set[str] = set()
        self._stopping = False
        self._writer_task: asyncio.Task[None] | None = None
        self._log = log.bind(node_id=self.node_id)
        membership.on_change(self.reconcile_all)
        cache.on_change(self._on_task_change)

    # -- ownership -------------------------------------------------------------------------------

    def _owns(self, spec: pb.TaskSpec, members: list[str]) -> bool:
        return not spec.paused and owner(spec.id, members) == self.node_id

    def reconcile_all(self) -> None:
        """Recompute the owned set from the current member and task views."""
        members = self.membership.members()
        if self.node_id not in members:
            members = []  # not registered in our own view: own nothing until we are
        wanted = {tid for tid, spec in self.cache.tasks.items() if self._owns(spec, members)}
        for tid in list(self.owned):
            if tid not in wanted:
                self._release(tid)
        for tid in wanted:
            if tid not in self.owned:
                self._acquire(self.cache.tasks[tid])
        self._wake.set()

    def _on_task_change(self, task_id: str, spec: pb.TaskSpec | None) -> None:
        if not task_id:
            self.reconcile_all()
            return
        members = self.membership.members()
        if spec is None or self.node_id not in members or not self._owns(spec, members):
            self._release(task_id)
        elif task_id in self.owned:
            current = self.owned[task_id]
            if current.spec.SerializeToString() != spec.SerializeToString():
                # Spec changed (e.g. schedule edited): recompile, reload the cursor.
                self._release(task_id)
                self._acquire(spec)
        else:
            self._acquire(spec)
        self._wake.set()

    def _acquire(self, spec: pb.TaskSpec) -> None:
        try:
            created_at = spec.created_at.ToDatetime(UTC)
            compiled = CompiledSchedule(spec_from_proto(spec.schedule, created_at))
        except PeerdError as exc:
            self._log.error("task_schedule_invalid", task_id=spec.id, error=str(exc))
            return
        self._generation += 1
        self.owned[spec.id] = Owned(spec, compiled, self._generation)
        self._to_load.add(spec.id)
        self._log.debug("task_acquired", task_id=spec.id)

    def _release(self, task_id: str) -> None:
        if self.owned.pop(task_id, None) is not None:
            self._to_load.discard(task_id)
            self._log.debug("task_released", task_id=task_id)

    def _push(self, o: Owned) -> None:
        if o.next_at is not None:
            heapq.heappush(self._heap, (_ts(o.next_at), o.generation, o.spec.id))

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: wait for a live lease, plan, claim, dispatch."""
        self._writer_task = asyncio.create_task(self._writer())
        backoff = 0.1
        while not self._stopping:
            if not self.membership.claim_ready.is_set():
                await self.membership.claim_ready.wait()
                continue
            try:
                if self._to_load:
                    await self._load_cursors()
                await self._tick()
                backoff = 0.1
            except LeaseLost:
                self._log.warning("claim_rejected_lease_lost")
                self.membership.lease_lost()
                continue
            except Unavailable as exc:
                self._log.warning("etcd_unavailable_no_claims", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        self._wake.clear()
        delay = MAX_SLEEP_S
        if self._heap:
            delay = min(delay, max(0.0, self._heap[0][0] - _ts(self.clock.now())))
        if delay > 0 and not self._to_load:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _load_cursors(self) -> None:
        ids = list(self._to_load)
        sem = asyncio.Semaphore(32)

        async def load(tid: str) -> None:
            async with sem:
                last = await self.ledger.last_slot_ms(tid)
            o = self.owned.get(tid)
            if o is None or tid not in self._to_load:
                return
            floor = o.spec.created_at.ToDatetime(UTC)
            if o.spec.HasField("resumed_at"):
                floor = max(floor, o.spec.resumed_at.ToDatetime(UTC))
            o.cursor = max(floor, _from_ms(last)) if last is not None else floor
            o.next_at = o.compiled.next_after(o.cursor)
            self._to_load.discard(tid)
            self._push(o)

        await asyncio.gather(*(load(t) for t in ids))

    async def _tick(self) -> None:
        now = self.clock.now()
        now_ts = _ts(now)
        due: list[Owned] = []
        while self._heap and self._heap[0][0] <= now_ts:
            _, gen, tid = heapq.heappop(self._heap)
            o = self.owned.get(tid)
            if o is not None and o.generation == gen and o.cursor is not None:
                due.append(o)
        if not due:
            return
        records: list[pb.RunRecord] = []
        plans = []
        for o in due:
            assert o.cursor is not None
            plan = plan_due(o.compiled, o.cursor, now, self.cfg.misfire_threshold)
            plans.append((o, plan))
            for slot in plan.skipped:
                rec = self._record(o.spec.id, slot, pb.SKIPPED, now)
                rec.error = (
                    f"misfire: {(now - slot).total_seconds():.1f}s late, beyond the "
                    f"{self.cfg.misfire_threshold.total_seconds():g}s threshold; not run"
                )
                records.append(rec)
            records.extend(self._record(o.spec.id, s, pb.CLAIMED, now) for s in plan.fire)
        try:
            results = await self._claim(records)
        except (LeaseLost, Unavailable):
            for o, _ in plans:  # cursors unchanged: the same slots are planned again
                self._push(o)
            raise
        by_key = {(r.task_id, r.slot_ms): r for r in results}
        for o, plan in plans:
            if self.owned.get(o.spec.id) is not o:
                continue  # released while we were claiming
            o.cursor = plan.cursor
            o.next_at = plan.next_at
            self._push(o)
            o.claims_since_trim += len(plan.fire) + len(plan.skipped)
            if plan.skipped_count:
                self.stats.skipped += plan.skipped_count
                self._log.info("slots_skipped_misfire", task_id=o.spec.id, count=plan.skipped_count)
            for slot in plan.fire:
                res = by_key.get((o.spec.id, round(slot.timestamp() * 1000)))
                if res is None or not res.claimed:
                    self.stats.lost_races += 1
                    continue
                self.stats.claimed += 1
                rec = self._record(o.spec.id, slot, pb.CLAIMED, now)
                rec.fencing_token = res.token
                self._spawn(o.spec, rec)
            if o.claims_since_trim >= TRIM_EVERY:
                o.claims_since_trim = 0
                self._trims.add(o.spec.id)

    async def _claim(self, records: list[pb.RunRecord]) -> list[ClaimResult]:
        results: list[ClaimResult] = []
        size = self.cfg.claim_batch
        batches = [records[i : i + size] for i in range(0, len(records), size)]
        for batch in batches:
            results.extend(
                await self.ledger.claim(self.membership.member_key, self.membership.lease_id, batch)
            )
        return results

    def _record(self, task_id: str, slot: datetime, status: int, now: datetime) -> pb.RunRecord:
        rec = pb.RunRecord(
            task_id=task_id,
            node_id=self.node_id,
            attempt=1,
            status=status,  # type: ignore[arg-type]
        )
        rec.scheduled_at.FromDatetime(slot)
        rec.claimed_at.FromDatetime(now)
        rec.idempotency_key = f"{task_id}/{rec.scheduled_at.ToMilliseconds()}"
        return rec

    # -- execution -------------------------------------------------------------------------------

    def _spawn(self, spec: pb.TaskSpec, rec: pb.RunRecord) -> None:
        task = asyncio.create_task(self._execute(spec, rec))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, spec: pb.TaskSpec, rec: pb.RunRecord) -> None:
        slot = rec.scheduled_at.ToDatetime(UTC)
        blog = self._log.bind(task_id=spec.id, scheduled_at=rfc3339(slot))
        async with self._sem:
            started = self.clock.now()
            rec.status = pb.RUNNING
            rec.started_at.FromDatetime(started)
            rec.lateness.FromTimedelta(started - slot)
            self._updates.put_nowait(_copy(rec))
            timeout = spec.timeout.ToTimedelta() if spec.HasField("timeout") else DEFAULT_TIMEOUT
            execution = Execution(
                spec.id, slot, rec.attempt, self.node_id, rec.fencing_token, timeout
            )
            try:
                outcome = await self.executors.run(spec, execution)
            except Exception as exc:  # an executor bug must still leave a record
                blog.exception("executor_crashed")
                now = self.clock.now()
                outcome = Outcome(False, started, now, error=f"executor error: {exc!r}")
        rec.status = pb.SUCCEEDED if outcome.succeeded else pb.FAILED
        rec.finished_at.FromDatetime(outcome.finished_at)
        rec.http_status = outcome.http_status
        if outcome.exit_code is not None:
            rec.exit_code = outcome.exit_code
        rec.output_tail = outcome.output_tail
        rec.error = outcome.error
        self._updates.put_nowait(_copy(rec))
        lateness_ms = (started - slot).total_seconds() * 1000
        if len(self.stats.lateness_ms) < 100_000:
            self.stats.lateness_ms.append(lateness_ms)
        if outcome.succeeded:
            self.stats.succeeded += 1
            blog.debug("run_succeeded", fencing_token=rec.fencing_token, lateness_ms=lateness_ms)
        else:
            self.stats.failed += 1
            blog.info("run_failed", fencing_token=rec.fencing_token, error=outcome.error)

    async def trigger(self, spec: pb.TaskSpec) -> pb.RunRecord:
        """Run ``spec`` once now on this node (slot = now, ``manual``), honouring the claim.

        Raises:
            Unavailable: etcd unreachable or this node has no live lease.
        """
        if not self.membership.claim_ready.is_set():
            raise Unavailable("this node has no live membership lease; try another node")
        now = self.clock.now()
        ms = round(now.timestamp() * 1000)
        for offset in range(5):
            rec = self._record(spec.id, _from_ms(ms + offset), pb.CLAIMED, now)
            rec.manual = True
            try:
                (res,) = await self.ledger.claim(
                    self.membership.member_key, self.membership.lease_id, [rec]
                )
            except LeaseLost as exc:
                self.membership.lease_lost()
                raise Unavailable("this node lost its membership lease; try again") from exc
            if res.claimed:
                rec.fencing_token = res.token
                self.stats.claimed += 1
                self._spawn(spec, _copy(rec))
                return rec
        raise Unavailable("could not claim a slot for the trigger; try again")

    # -- record writer ---------------------------------------------------------------------------

    async def _writer(self) -> None:
        backoff = 0.1
        while True:
            first = await self._updates.get()
            batch = [first]
            while not self._updates.empty() and len(batch) < 512:
                batch.append(self._updates.get_nowait())
            while True:
                try:
                    await self.ledger.update(batch)
                    trims, self._trims = self._trims, set()
                    for tid in trims:
                        await self.ledger.trim(tid, self.cfg.runs_keep)
                    backoff = 0.1
                    break
                except Unavailable as exc:
                    self._log.warning("ledger_update_failed_retrying", error=str(exc), n=len(batch))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                except PeerdError as exc:  # not transient: retrying the same batch cannot help
                    self._log.error("ledger_update_dropped", error=str(exc), n=len(batch))
                    break
            for _ in batch:
                self._updates.task_done()

    async def stop(self, grace_s: float) -> None:
        """Stop planning; wait up to ``grace_s`` seconds for running executions and flush the
        record writer."""
        self._stopping = True
        self._wake.set()
        if self._running:
            await asyncio.wait(list(self._running), timeout=grace_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._updates.join(), 5)
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
        await self.executors.aclose()


def _copy(rec: pb.RunRecord) -> pb.RunRecord:
    out = pb.RunRecord()
    out.CopyFrom(rec)
    return out
