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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

DEFAULT_TIMEOUT = timedelta(seconds=60)
TRIM_EVERY = 20
"""Trim a task's ledger to ``runs_keep`` records after this many claims of it."""
RECENT_SCAN = 20
"""Run records read when a task is acquired: the newest gives the cursor, unfinished ones of
another incarnation are checked for a lost owner."""
ORPHAN_CHECK_S = 0.5
"""How often runs of a possibly lost owner are re-checked (seconds)."""
HANDOFF_TIMEOUT_S = 3.0
"""Seconds a task keeps firing here while its new owner has not acked the handoff."""
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
    """Counters since start, for debugging and future metrics (nothing exports them yet)."""

    claimed: int = 0
    lost_races: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0


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
        self.draining = False
        self.excluded: Callable[[], set[str]] = set
        """Members not to count as owners (set by the node: the failure detector's dead set and
        draining peers)."""
        self.handoff: Callable[[str, ppb.HandoffRequest], Awaitable[list[str]]] | None = None
        """Sends a HandoffRequest to a node id and returns the accepted task ids (set by the
        node; None disables handoff)."""
        self._handing: dict[str, tuple[str, float]] = {}
        self._handoff_task: asyncio.Task[None] | None = None
        self._orphan_task: asyncio.Task[None] | None = None
        self._handoff_wake = asyncio.Event()
        self._in_flight: dict[tuple[str, int], pb.RunRecord] = {}
        self._orphans: dict[tuple[str, int], tuple[pb.RunRecord, int]] = {}
        self._orphan_wake = asyncio.Event()
        self._to_scan: set[str] = set()
        self._known_leases: dict[str, int] = {}
        self._log = log.bind(node_id=self.node_id)
        membership.on_change(self.reconcile_all)
        cache.on_change(self._on_task_change)

    # -- ownership -------------------------------------------------------------------------------

    def ownership_members(self) -> list[str]:
        """Members that own tasks in this node's view: registered in etcd, not confirmed dead by
        the failure detector, not draining. Empty while this node is not registered itself."""
        members = self.membership.members()
        if self.node_id not in members:
            return []  # not registered in our own view: own nothing until we are
        excluded = self.excluded()
        if self.draining:
            excluded = excluded | {self.node_id}
        return [m for m in members if m not in excluded]

    def _owns(self, spec: pb.TaskSpec, members: list[str]) -> bool:
        return not spec.paused and owner(spec.id, members) == self.node_id

    def reconcile_all(self) -> None:
        """Recompute the owned set from the current member and task views."""
        members = self.ownership_members()
        wanted = {tid for tid, spec in self.cache.tasks.items() if self._owns(spec, members)}
        for tid in list(self.owned):
            if tid not in wanted:
                self._release(tid, members)
        for tid in wanted:
            self._handing.pop(tid, None)  # ownership came back before the handoff finished
            if tid not in self.owned:
                self._acquire(self.cache.tasks[tid])
        self._wake.set()

    def _on_task_change(self, task_id: str, spec: pb.TaskSpec | None) -> None:
        if not task_id:
            self.reconcile_all()
            return
        members = self.ownership_members()
        if spec is None or not self._owns(spec, members):
            self._release(task_id, members if spec is not None and not spec.paused else [])
        elif task_id in self.owned:
            self._handing.pop(task_id, None)  # ours again before the handoff finished
            current = self.owned[task_id]
            if current.spec.SerializeToString() != spec.SerializeToString():
                # Spec changed (e.g. schedule edited): recompile, reload the cursor.
                self._drop(task_id)
                self._acquire(spec)
        else:
            self._acquire(spec)
        self._wake.set()

    def _acquire(self, spec: pb.TaskSpec, cursor: datetime | None = None) -> Owned | None:
        try:
            created_at = spec.created_at.ToDatetime(UTC)
            compiled = CompiledSchedule(spec_from_proto(spec.schedule, created_at))
        except PeerdError as exc:
            self._log.error("task_schedule_invalid", task_id=spec.id, error=str(exc))
            return None
        self._generation += 1
        o = Owned(spec, compiled, self._generation)
        self.owned[spec.id] = o
        if cursor is None:
            self._to_load.add(spec.id)
        else:
            self._set_cursor(o, cursor)
        self._log.debug("task_acquired", task_id=spec.id)
        return o

    def _release(self, task_id: str, members: list[str]) -> None:
        """Stop planning ``task_id``: hand it over first when its new owner is a live peer (the
        task keeps firing here until that peer acks), else drop it at once."""
        o = self.owned.get(task_id)
        if o is None:
            return
        target = owner(task_id, [m for m in members if m != self.node_id])
        if (
            target
            and o.cursor is not None
            and self.membership.claim_ready.is_set()
            and self.handoff is not None
        ):
            if task_id not in self._handing:
                self._handing[task_id] = (target, self.clock.monotonic())
                self._handoff_wake.set()
            else:
                self._handing[task_id] = (target, self._handing[task_id][1])
            return
        self._drop(task_id)

    def _drop(self, task_id: str) -> None:
        self._handing.pop(task_id, None)
        if self.owned.pop(task_id, None) is not None:
            self._to_load.discard(task_id)
            self._log.debug("task_released", task_id=task_id)

    def _set_cursor(self, o: Owned, cursor: datetime) -> None:
        o.cursor = cursor
        o.next_at = o.compiled.next_after(cursor)
        self._to_load.discard(o.spec.id)
        self._push(o)

    # -- handoff ---------------------------------------------------------------------------------

    def accept_handoff(self, request: ppb.HandoffRequest) -> list[str]:
        """Take over tasks a peer hands to us (called by the Peer servicer after it has marked a
        draining sender). Returns the ids this node now plans; the sender stops firing those."""
        self.reconcile_all()
        accepted = []
        for item in request.tasks:
            o = self.owned.get(item.task_id)
            if o is None or item.task_id in self._handing:
                continue  # not ours in our view: the sender keeps it and retries
            cursor = _from_ms(item.cursor_ms)
            if o.cursor is None or cursor > o.cursor:
                self._set_cursor(o, cursor)
            accepted.append(item.task_id)
            if item.in_flight:
                self._log.info(
                    "handoff_in_flight_runs",
                    task_id=item.task_id,
                    runs=len(item.in_flight),
                    from_node=request.from_node,
                )
        if accepted:
            self._log.info("handoff_accepted", from_node=request.from_node, tasks=len(accepted))
            self._wake.set()
        return accepted

    async def _handoff_loop(self) -> None:
        """Send pending handoffs, batched per target; drop tasks once acked (or after
        :data:`HANDOFF_TIMEOUT_S` without an ack, when the lease-based path takes over)."""
        while True:
            if not self._handing:
                self._handoff_wake.clear()
                await self._handoff_wake.wait()
            by_target: dict[str, list[str]] = {}
            now = self.clock.monotonic()
            for tid, (target, since) in list(self._handing.items()):
                if now - since > HANDOFF_TIMEOUT_S:
                    self._log.warning("handoff_timed_out", task_id=tid, to_node=target)
                    self._drop(tid)
                else:
                    by_target.setdefault(target, []).append(tid)
            await asyncio.gather(*(self._send_handoff(t, ids) for t, ids in by_target.items()))
            if self._handing:
                await asyncio.sleep(0.1)

    async def _send_handoff(self, target: str, task_ids: list[str]) -> None:
        assert self.handoff is not None
        items = []
        for tid in task_ids:
            o = self.owned.get(tid)
            if o is None or o.cursor is None:
                continue
            in_flight = [r for (t, _), r in self._in_flight.items() if t == tid]
            items.append(
                ppb.HandoffTask(
                    task_id=tid, cursor_ms=round(o.cursor.timestamp() * 1000), in_flight=in_flight
                )
            )
        if not items:
            return
        accepted = await self.handoff(
            target,
            ppb.HandoffRequest(
                from_node=self.node_id,
                from_lease_id=self.membership.lease_id,
                sender_draining=self.draining,
                tasks=items,
            ),
        )
        for tid in accepted:
            if self._handing.get(tid, ("", 0.0))[0] == target:
                self._drop(tid)
        if accepted:
            self._log.info("handoff_done", to_node=target, tasks=len(accepted))

    async def drain(self, timeout_s: float = HANDOFF_TIMEOUT_S) -> None:
        """Stop owning: hand every task to its next owner and wait (up to ``timeout_s``) until
        all are acked or dropped. Running executions are not touched (see :meth:`stop`)."""
        self.draining = True
        self.reconcile_all()
        deadline = self.clock.monotonic() + timeout_s
        while self.owned and self.clock.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for tid in list(self.owned):
            self._drop(tid)

    def _push(self, o: Owned) -> None:
        if o.next_at is not None:
            heapq.heappush(self._heap, (_ts(o.next_at), o.generation, o.spec.id))

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: wait for a live lease, plan, claim, dispatch."""
        self._writer_task = asyncio.create_task(self._writer())
        self._handoff_task = asyncio.create_task(self._handoff_loop())
        self._orphan_task = asyncio.create_task(self._orphan_loop())
        self.membership.on_change(self._on_members_for_orphans)
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
                self.membership.etcd_suspect()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except PeerdError as exc:  # not transient, but one bad batch must not stop the node
                self._log.error("claim_round_failed", error=str(exc))
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
                recent = await self.ledger.recent(tid, RECENT_SCAN)
            o = self.owned.get(tid)
            if o is None or tid not in self._to_load:
                return
            last = recent[0][0].scheduled_at.ToMilliseconds() if recent else None
            self._note_orphans(recent)
            floor = o.spec.created_at.ToDatetime(UTC)
            if o.spec.HasField("resumed_at"):
                floor = max(floor, o.spec.resumed_at.ToDatetime(UTC))
            self._set_cursor(o, max(floor, _from_ms(last)) if last is not None else floor)

        await asyncio.gather(*(load(t) for t in ids))

    async def _tick(self) -> None:
        now = self.clock.now()
        now_ts = _ts(now)
        due: dict[str, Owned] = {}  # one entry per task, however many heap entries it has
        while self._heap and self._heap[0][0] <= now_ts:
            _, gen, tid = heapq.heappop(self._heap)
            o = self.owned.get(tid)
            if o is not None and o.generation == gen and o.cursor is not None:
                due[tid] = o
        if not due:
            return
        records: list[pb.RunRecord] = []
        plans = []
        for o in due.values():
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
        except PeerdError:
            for o, _ in plans:  # cursors unchanged: the same slots are planned again
                self._push(o)
            raise
        by_key = {(r.task_id, r.slot_ms): r for r in results}
        claimed_records = {(r.task_id, r.scheduled_at.ToMilliseconds()): r for r in records}
        for o, plan in plans:
            # Every slot claimed here runs here, even if the task was released (handed off,
            # paused) while the claim was in flight: the claim, not ownership, decides.
            for slot in plan.fire:
                res = by_key.get((o.spec.id, round(slot.timestamp() * 1000)))
                if res is None or not res.claimed:
                    self.stats.lost_races += 1
                    continue
                self.stats.claimed += 1
                rec = _copy(claimed_records[(o.spec.id, res.slot_ms)])
                rec.fencing_token = res.token
                self._spawn(o.spec, rec)
            if self.owned.get(o.spec.id) is not o:
                continue  # released while we were claiming
            if o.cursor is None or plan.cursor >= o.cursor:
                o.cursor, o.next_at = plan.cursor, plan.next_at
            else:  # a handoff moved the cursor ahead meanwhile
                o.next_at = o.compiled.next_after(o.cursor)
            self._push(o)
            o.claims_since_trim += len(plan.fire) + len(plan.skipped)
            if plan.skipped_count:
                self.stats.skipped += plan.skipped_count
                self._log.info("slots_skipped_misfire", task_id=o.spec.id, count=plan.skipped_count)
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
        rec.claim_lease_id = self.membership.lease_id
        rec.idempotency_key = f"{task_id}/{rec.scheduled_at.ToMilliseconds()}"
        return rec

    # -- execution -------------------------------------------------------------------------------

    def _spawn(self, spec: pb.TaskSpec, rec: pb.RunRecord) -> None:
        key = (spec.id, rec.scheduled_at.ToMilliseconds())
        self._in_flight[key] = rec
        task = asyncio.create_task(self._execute(spec, rec))
        self._running.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._running.discard(t)
            self._in_flight.pop(key, None)

        task.add_done_callback(done)

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

    # -- runs of a lost owner --------------------------------------------------------------------

    def _note_orphans(self, recent: list[tuple[pb.RunRecord, int]]) -> None:
        """Remember unfinished runs claimed by another incarnation (another node, or this node
        under an earlier lease); :meth:`_orphan_loop` resolves them once that lease is gone."""
        for rec, mod in recent:
            if rec.status not in (pb.CLAIMED, pb.RUNNING):
                continue
            key = (rec.task_id, rec.scheduled_at.ToMilliseconds())
            mine = rec.node_id == self.node_id and rec.claim_lease_id == self.membership.lease_id
            if not mine and key not in self._in_flight:
                self._orphans[key] = (rec, mod)
                self._orphan_wake.set()

    def _on_members_for_orphans(self) -> None:
        """When a member's lease disappears, rescan the recent runs of every owned task: a run
        it claimed (e.g. a trigger on a task it did not own) is now an orphan."""
        leases = {n: m.lease_id for n, m in self.membership.view.items()}
        gone = [n for n, lease in self._known_leases.items() if leases.get(n) != lease]
        self._known_leases = leases
        if gone:
            self._to_scan.update(self.owned)
        self._orphan_wake.set()

    async def _scan(self) -> None:
        ids, self._to_scan = list(self._to_scan), set()
        sem = asyncio.Semaphore(32)

        async def scan(tid: str) -> None:
            async with sem:
                self._note_orphans(await self.ledger.recent(tid, RECENT_SCAN))

        await asyncio.gather(*(scan(t) for t in ids if t in self.owned))

    def _claimant_alive(self, rec: pb.RunRecord) -> bool:
        member = self.membership.view.get(rec.node_id)
        if member is None:
            return False
        return not rec.claim_lease_id or member.lease_id == rec.claim_lease_id

    async def _orphan_loop(self) -> None:
        while True:
            if not self._orphans and not self._to_scan:
                self._orphan_wake.clear()
                await self._orphan_wake.wait()
            if self._to_scan and self.membership.claim_ready.is_set():
                try:
                    await self._scan()
                except PeerdError as exc:
                    self._log.warning("orphan_scan_failed", error=str(exc))
            for key, (rec, mod) in list(self._orphans.items()):
                o = self.owned.get(rec.task_id)
                if o is None or key in self._in_flight:
                    self._orphans.pop(key, None)  # not ours (the owner resolves it) or ours
                    continue
                if self._claimant_alive(rec) or not self.membership.claim_ready.is_set():
                    continue
                try:
                    await self._resolve_orphan(o.spec, rec, mod)
                except Unavailable:
                    continue
                except PeerdError as exc:
                    self._log.error(
                        "owner_lost_resolve_failed", task_id=rec.task_id, error=str(exc)
                    )
                self._orphans.pop(key, None)
            await asyncio.sleep(ORPHAN_CHECK_S)

    async def _resolve_orphan(self, spec: pb.TaskSpec, rec: pb.RunRecord, mod: int) -> None:
        now = self.clock.now()
        reason = (
            f"owner lost: {rec.node_id} lost its lease {rec.claim_lease_id:x} while the run was "
            f"{pb.RunStatus.Name(rec.status)}"
        )
        new = _copy(rec)
        if spec.on_owner_lost == pb.OWNER_LOST_MARK_LOST:
            new.status = pb.LOST
            new.error = reason
            new.finished_at.FromDatetime(now)
            token = await self.ledger.take_over(
                rec, mod, self.membership.member_key, self.membership.lease_id, new
            )
            if token:
                self._log.warning(
                    "run_marked_lost",
                    task_id=rec.task_id,
                    scheduled_at=rfc3339(rec.scheduled_at.ToDatetime(UTC)),
                    lost_node=rec.node_id,
                )
            return
        new = self._record(rec.task_id, rec.scheduled_at.ToDatetime(UTC), pb.CLAIMED, now)
        new.attempt = rec.attempt + 1
        new.manual = rec.manual
        new.error = f"retry: {reason}"
        token = await self.ledger.take_over(
            rec, mod, self.membership.member_key, self.membership.lease_id, new
        )
        if token is None:
            return
        new.fencing_token = token
        self.stats.claimed += 1
        self._log.warning(
            "run_retried_owner_lost",
            task_id=rec.task_id,
            attempt=new.attempt,
            fencing_token=token,
            lost_node=rec.node_id,
        )
        self._spawn(spec, new)

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
                except PeerdError as exc:  # not transient: isolate the record(s) at fault
                    self._log.error("ledger_update_batch_failed", error=str(exc), n=len(batch))
                    for rec in batch:
                        try:
                            await self.ledger.update([rec])
                        except PeerdError as one:
                            self._log.error(
                                "ledger_update_dropped", task_id=rec.task_id, error=str(one)
                            )
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
        for loop_task in (self._handoff_task, self._orphan_task):
            if loop_task is not None:
                loop_task.cancel()
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
        await self.executors.aclose()


def _copy(rec: pb.RunRecord) -> pb.RunRecord:
    out = pb.RunRecord()
    out.CopyFrom(rec)
    return out
