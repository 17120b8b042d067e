"""The fire loop of one node: plan due slots of owned tasks, claim them in batches, execute.

* **Ownership** (:mod:`peerd.core.ring`) decides which tasks this node plans. It is computed from
  the node's own views of membership and tasks and recomputed on every change of either; only the
  tasks that change owner are touched, nothing else pauses.
* **Planning** (:func:`peerd.core.plan.plan_due`) is pure: due slots from the task's cursor (the
  last slot handled) to ``now``. When a task is acquired its cursor is read from the ledger (the
  newest run key: one range read), so a new owner continues where the old one stopped.
* **Claiming** (:meth:`peerd.coord.ledger.Ledger.claim`) batches up to ``claim_batch`` slots of
  any tasks into one etcd transaction, fenced on this node's lease. Only claimed slots execute.
* **Policies** (``docs/scheduling.md``): the catch-up policy and the cluster-wide replay rate
  (:class:`peerd.core.ratelimit.TokenBucket`, each node taking its share) decide what happens to
  missed slots; the overlap policy is enforced by the task's lock key in etcd, taken in the claim
  transaction (:mod:`peerd.coord.ledger`), so it holds across nodes and owner changes.
* **Executing** goes through priority-ordered pools (:mod:`peerd.runner.pools`): the node-wide
  ``max_concurrent_runs`` and one pool per executor kind; queued time shows as lateness. The
  retry policy (:mod:`peerd.core.retry`) runs further attempts of a failed slot under the same
  claim; each attempt is recorded. Record updates are batched by a writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from google.protobuf import json_format

from peerd.clock import SystemClock
from peerd.config import NodeConfig
from peerd.coord.ledger import ClaimResult, Ledger, lock_holder, lock_value
from peerd.coord.membership import Membership
from peerd.coord.store import TaskCache
from peerd.core.overlap import QUEUE, effective, first_mode, needs_lock, when_busy
from peerd.core.plan import CATCH_UP_RUN_ALL, CatchUp, Plan, catch_up_from_proto, plan_due
from peerd.core.ratelimit import TokenBucket, share
from peerd.core.retry import NO_RETRY, attempt_timeout, next_attempt, retry_from_proto
from peerd.core.ring import owner
from peerd.core.schedule import CompiledSchedule, spec_from_proto
from peerd.errors import LeaseLost, PeerdError, ResourceExhausted, Unavailable
from peerd.runner.base import FAILURE_CONFIG, FAILURE_TIMEOUT, Execution, Outcome, rfc3339
from peerd.runner.http import HttpExecutor
from peerd.runner.pools import Pools
from peerd.runner.python import PythonExecutor
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
LOCK_POLL_S = 0.25
"""How often a run waiting for its task's overlap lock, or a REPLACE run watching whether it
was replaced, polls the lock key (seconds)."""
REPLACE_WAIT_S = 5.0
"""How long a REPLACE run waits for the run it replaced to stop before it starts anyway."""

_CATCH_UP_NAME = {"skip": "SKIP", "run_once": "RUN_ONCE", "run_all": "RUN_ALL"}


def _burst(rate_per_s: float) -> float:
    """Replay burst of a node: one second of its rate, at least one token."""
    return max(1.0, rate_per_s)


def _describe(holder: bytes) -> str:
    """'slot <time> on <node>' from a lock value (see :func:`peerd.coord.ledger.lock_value`)."""
    held = lock_holder(holder)
    if held is None:
        return "another run"
    return f"the run of slot {rfc3339(_from_ms(held[0]))} on {held[1]}"


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass
class Owned:
    """A task this node currently plans. ``cursor`` is the last slot handled; ``next_at`` the
    fire instant (slot + jitter) of the next slot to plan."""

    spec: pb.TaskSpec
    compiled: CompiledSchedule
    generation: int
    catch_up: CatchUp
    cursor: datetime | None = None
    next_at: datetime | None = None
    claims_since_trim: int = 0

    @property
    def overlap(self) -> int:
        return effective(self.spec.overlap)

    @property
    def paused_until(self) -> datetime | None:
        return self.spec.resumed_at.ToDatetime(UTC) if self.spec.HasField("resumed_at") else None

    def fire_at(self, slot: datetime) -> datetime:
        """When ``slot`` fires: the slot plus its deterministic jitter."""
        return self.compiled.fire_at(self.spec.id, slot)


@dataclass
class _Claim:
    """One record to claim and how it treats the task's overlap lock."""

    spec: pb.TaskSpec
    rec: pb.RunRecord
    mode: str | None


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

    def __init__(
        self, allow_shell: ShellAllowList, clock: SystemClock, max_python_threads: int = 64
    ) -> None:
        self.http = HttpExecutor(clock=clock)
        self.shell = ShellExecutor(allow_shell, clock=clock)
        self.python = PythonExecutor(clock=clock, max_threads=max_python_threads)
        self.clock = clock

    def set_allow_shell(self, allow_shell: ShellAllowList) -> None:
        """Use a new allow-list for runs that start from now on (hot reload)."""
        self.shell.allow_list = allow_shell

    async def run(self, spec: pb.TaskSpec, execution: Execution) -> Outcome:
        kind = spec.WhichOneof("target")
        if kind == "http":
            return await self.http.run(spec.http, execution)
        if kind == "shell":
            return await self.shell.run(spec.shell, execution)
        if kind == "python":
            return await self.python.run(spec.python, execution)
        now = self.clock.now()
        return Outcome(
            False, now, now, error=f"task has no executor target ({kind})", failure=FAILURE_CONFIG
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.python.aclose()


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
        self.executors = Executors(ShellAllowList(cfg.allow_shell), clock, cfg.max_python_runs)
        self.owned: dict[str, Owned] = {}
        self.stats = EngineStats()
        self._heap: list[tuple[float, int, str]] = []
        self._generation = 0
        self._to_load: set[str] = set()
        self._wake = asyncio.Event()
        self.pools = Pools(cfg)
        # Empty at start: the first node back after a cluster-wide outage sees itself as the
        # only member (and takes the whole rate) until the others register; a full bucket
        # would add a burst on top (measured with bench/catchup.py: ~2x the rate for a second).
        rate = share(cfg.catch_up_rate, 1)
        self._replay = TokenBucket(rate, _burst(rate), clock.monotonic(), tokens=0.0)
        self._rng = random.Random()
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._cancel_reasons: dict[tuple[str, int], str] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._updates: asyncio.Queue[pb.RunRecord] = asyncio.Queue()
        self._trims: set[str] = set()
        self._stopping = False
        self._writer_task: asyncio.Task[None] | None = None
        self.draining = False
        self.excluded: Callable[[], set[str]] = set
        """Members not to count as owners (set by the node: the failure detector's dead set and
        draining peers)."""
        self.etcd_space = asyncio.Event()
        """Set while etcd has space: the node replaces it with its alarm monitor's ``space_ok``
        (:mod:`peerd.coord.alarms`); no claim round runs while it is clear."""
        self.etcd_space.set()
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

    def apply_config(self, cfg: NodeConfig) -> None:
        """Apply a reloaded configuration (SIGHUP): shell allow-list, pool limits, replay rate,
        misfire threshold, runs kept. Running executions keep the settings they started with."""
        self.cfg = cfg
        self.executors.set_allow_shell(ShellAllowList(cfg.allow_shell))
        self.pools.apply(cfg)
        self._set_replay_rate(len(self.ownership_members()))
        for o in self.owned.values():
            o.catch_up = catch_up_from_proto(o.spec, cfg.misfire_threshold)
        self._wake.set()

    def _set_replay_rate(self, live: int) -> None:
        """Take this node's share of the cluster-wide catch-up rate (``live`` owning members);
        the burst is one second of that share, so the cluster's burst is the cluster rate."""
        rate = share(self.cfg.catch_up_rate, max(1, live))
        self._replay.set_rate(rate, self.clock.monotonic(), _burst(rate))

    def reconcile_all(self) -> None:
        """Recompute the owned set from the current member and task views."""
        members = self.ownership_members()
        self._set_replay_rate(len(members))
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
        o = Owned(
            spec, compiled, self._generation, catch_up_from_proto(spec, self.cfg.misfire_threshold)
        )
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
        o.next_at = self._next_fire(o, cursor)
        self._to_load.discard(o.spec.id)
        self._push(o)

    @staticmethod
    def _next_fire(o: Owned, after: datetime) -> datetime | None:
        slot = o.compiled.next_after(after)
        return o.fire_at(slot) if slot is not None else None

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

    def _push(self, o: Owned, at_ts: float | None = None) -> None:
        """Schedule ``o`` for planning at its ``next_at`` (or at ``at_ts``, epoch seconds)."""
        if o.next_at is not None:
            ts = _ts(o.next_at) if at_ts is None else at_ts
            heapq.heappush(self._heap, (ts, o.generation, o.spec.id))

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: wait for a live lease, plan, claim, dispatch."""
        self._writer_task = asyncio.create_task(self._writer())
        self._handoff_task = asyncio.create_task(self._handoff_loop())
        self._orphan_task = asyncio.create_task(self._orphan_loop())
        self.membership.on_change(self._on_members_for_orphans)
        self.membership.on_change(self._cancel_unlocked_runs)
        backoff = 0.1
        while not self._stopping:
            if not self.membership.claim_ready.is_set():
                await self.membership.claim_ready.wait()
                continue
            if not self.etcd_space.is_set():  # NOSPACE: claims (nested txns) pass etcd's quota
                self._log.warning("claims_paused_etcd_nospace")
                await self.etcd_space.wait()
                self._log.info("claims_resumed_etcd_space")
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
            # Manual runs (TriggerTask: slot = the time of the trigger) are not schedule slots:
            # the cursor is the newest scheduled one. With none among the records read, the
            # floor is safe: slots already claimed are lost races, never run twice.
            scheduled = [r.scheduled_at.ToMilliseconds() for r, _ in recent if not r.manual]
            last = scheduled[0] if scheduled else None
            self._note_orphans(recent)
            # Slots missed while the task was paused are planned like any missed slot: the
            # catch-up policy decides (skipped ones are recorded with SKIP_PAUSED).
            floor = o.spec.created_at.ToDatetime(UTC)
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
        mono = self.clock.monotonic()
        budget = self._replay.available(mono)
        claims: list[_Claim] = []
        plans: list[tuple[Owned, Plan]] = []
        # Single catch-up runs (SKIP / RUN_ONCE) draw on the replay budget before bulk replays
        # (RUN_ALL), so a long replay cannot starve them.
        for o in sorted(due.values(), key=lambda o: o.catch_up.policy == CATCH_UP_RUN_ALL):
            assert o.cursor is not None
            plan = plan_due(
                o.compiled,
                o.cursor,
                now,
                o.catch_up,
                fire_at=o.fire_at,
                paused_until=o.paused_until,
                # One lock-taking claim per task per round (see peerd.coord.ledger); the rest
                # of the due slots are planned in the next round, at once.
                max_fire=1 if needs_lock(o.overlap) else 1000,
                replay_budget=budget,
                # As many SKIPPED records as the ledger keeps, so an audit of what is kept
                # finds no gap; the count in the log is always exact.
                skip_record_limit=self.cfg.runs_keep,
            )
            budget -= plan.missed_fired
            self._replay.take(plan.missed_fired, mono)
            plans.append((o, plan))
            for slot, reason in plan.skipped:
                claims.append(_Claim(o.spec, self._skipped(o, slot, reason, now), None))
            for slot in plan.fire:
                rec = self._record(o.spec.id, slot, pb.CLAIMED, now)
                rec.fire_at.FromDatetime(o.fire_at(slot))
                rec.priority = o.spec.priority
                claims.append(_Claim(o.spec, rec, first_mode(o.overlap)))
        try:
            await self._claim_rounds(claims)
        except PeerdError:
            for o, _ in plans:  # cursors unchanged: the same slots are planned again
                self._push(o)
            raise
        for o, plan in plans:
            if self.owned.get(o.spec.id) is not o:
                continue  # released while we were claiming
            if o.cursor is None or plan.cursor >= o.cursor:
                o.cursor, o.next_at = plan.cursor, plan.next_at
            else:  # a handoff moved the cursor ahead meanwhile
                o.next_at = self._next_fire(o, o.cursor)
            if o.next_at is not None and o.next_at <= now and not plan.fire:
                # Out of replay budget: come back when the rate limiter has a token.
                wait = max(0.01, self._replay.next_at_s(mono) - mono)
                self._push(o, _ts(now) + wait)
            else:
                self._push(o)
            o.claims_since_trim += len(plan.fire) + len(plan.skipped)
            if plan.skipped_count:
                self.stats.skipped += plan.skipped_count
                self._log.info(
                    "slots_skipped",
                    task_id=o.spec.id,
                    count=plan.skipped_count,
                    reasons=dict(plan.skipped_counts),
                )
            if o.claims_since_trim >= TRIM_EVERY:
                o.claims_since_trim = 0
                self._trims.add(o.spec.id)

    async def _claim_rounds(self, claims: list[_Claim]) -> list[tuple[_Claim, ClaimResult]]:
        """Claim, then follow up the claims an overlap lock turned away: BUFFER_ONE tries the
        queue, FORBID (or a full queue) records the slot SKIPPED. Every claimed CLAIMED record
        is spawned. Returns the final (claim, result) pairs."""
        done: list[tuple[_Claim, ClaimResult]] = []
        while claims:
            follow: list[_Claim] = []
            for claim, res in await self._claim(claims):
                rec = claim.rec
                if res.claimed:
                    rec.fencing_token = res.token
                    if rec.status == pb.CLAIMED:
                        # Every slot claimed here runs here, even if the task was released
                        # (handed off, paused) meanwhile: the claim, not ownership, decides.
                        self.stats.claimed += 1
                        self._spawn(claim.spec, rec, claim.mode, res.replaced)
                    done.append((claim, res))
                elif res.busy is not None and rec.status == pb.CLAIMED:
                    if when_busy(claim.spec.overlap, claim.mode) == QUEUE:
                        rec.error = f"buffered: waiting for {_describe(res.busy)} to finish"
                        follow.append(_Claim(claim.spec, rec, QUEUE))
                    else:
                        skip = self._overlap_skip(rec, res.busy, claim.mode == QUEUE)
                        follow.append(_Claim(claim.spec, skip, None))
                else:
                    self.stats.lost_races += 1
                    done.append((claim, res))
            claims = follow
        return done

    async def _claim(self, claims: list[_Claim]) -> list[tuple[_Claim, ClaimResult]]:
        out: list[tuple[_Claim, ClaimResult]] = []
        size = self.cfg.claim_batch
        for i in range(0, len(claims), size):
            batch = claims[i : i + size]
            results = await self.ledger.claim(
                self.membership.member_key,
                self.membership.lease_id,
                [c.rec for c in batch],
                [c.mode for c in batch],
            )
            out.extend(zip(batch, results, strict=True))
        return out

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

    def _skipped(self, o: Owned, slot: datetime, reason: str, now: datetime) -> pb.RunRecord:
        rec = self._record(o.spec.id, slot, pb.SKIPPED, now)
        fire_at = o.fire_at(slot)
        rec.fire_at.FromDatetime(fire_at)
        late = (now - fire_at).total_seconds()
        threshold = o.catch_up.misfire_threshold.total_seconds()
        if reason == "paused":
            rec.skip_reason = pb.SKIP_PAUSED
            rec.error = f"missed while the task was paused ({late:.1f}s ago); catch-up policy "
            rec.error += f"{_CATCH_UP_NAME[o.catch_up.policy]} does not replay it"
        elif reason == "catch_up_window":
            rec.skip_reason = pb.SKIP_CATCH_UP_WINDOW
            window = o.catch_up.window.total_seconds()
            rec.error = f"missed by {late:.1f}s, older than the {window:g}s catch-up window"
        else:
            rec.skip_reason = pb.SKIP_MISFIRE
            rec.error = (
                f"misfire: {late:.1f}s late, beyond the {threshold:g}s threshold; catch-up "
                f"policy {_CATCH_UP_NAME[o.catch_up.policy]} does not replay it"
            )
        rec.finished_at.FromDatetime(now)
        return rec

    def _overlap_skip(self, rec: pb.RunRecord, busy: bytes, queue_full: bool) -> pb.RunRecord:
        out = _copy(rec)
        out.status = pb.SKIPPED
        out.skip_reason = pb.SKIP_OVERLAP
        if queue_full:
            out.error = f"overlap: {_describe(busy)} is already buffered (BUFFER_ONE); not run"
        else:
            out.error = f"overlap: {_describe(busy)} is still in progress (FORBID); not run"
        out.finished_at.FromDatetime(self.clock.now())
        return out

    # -- execution -------------------------------------------------------------------------------

    def _spawn(
        self,
        spec: pb.TaskSpec,
        rec: pb.RunRecord,
        mode: str | None,
        replaced: bytes | None = None,
    ) -> None:
        key = (spec.id, rec.scheduled_at.ToMilliseconds())
        self._in_flight[key] = rec
        task = asyncio.create_task(self._execute(spec, _copy(rec), mode, replaced))
        self._running.add(task)
        self._tasks[key] = task

        def done(t: asyncio.Task[None]) -> None:
            self._running.discard(t)
            if self._tasks.get(key) is t:
                self._tasks.pop(key, None)
                self._in_flight.pop(key, None)

        task.add_done_callback(done)

    async def _execute(
        self, spec: pb.TaskSpec, rec: pb.RunRecord, mode: str | None, replaced: bytes | None
    ) -> None:
        """Run one claimed slot: take the overlap lock if the claim did not, cancel a replaced
        run, run the attempts, release the lock."""
        key = (spec.id, rec.scheduled_at.ToMilliseconds())
        locked = mode is not None or needs_lock(spec.overlap)
        watcher: asyncio.Task[None] | None = None
        try:
            waits = locked and mode in (QUEUE, None)
            if waits and not await self._wait_lock(spec, rec, from_queue=mode == QUEUE):
                return
            if mode == QUEUE:
                rec.error = ""  # no longer "buffered: waiting for ..."
            if replaced:
                await self._cancel_replaced(spec, rec, replaced)
            if effective(spec.overlap) == pb.OVERLAP_REPLACE:
                me = asyncio.current_task()
                assert me is not None
                watcher = asyncio.create_task(self._watch_replaced(spec, rec, me))
            await self._attempts(spec, rec)
        except asyncio.CancelledError:
            reason = self._cancel_reasons.pop(key, None)
            if reason is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._finish(spec, rec, pb.CANCELLED, reason)
        except Exception as exc:  # a bug must not leave the record CLAIMED/RUNNING forever
            self._log.exception("run_crashed", task_id=spec.id)
            self._finish(spec, rec, pb.FAILED, f"internal error: {exc!r}")
        finally:
            if watcher is not None:
                watcher.cancel()
            if locked:
                await self._release_lock(rec)

    async def _attempts(self, spec: pb.TaskSpec, rec: pb.RunRecord) -> None:
        """Attempts of one slot under the task's retry policy; each is recorded in the ledger
        (earlier ones in ``history``), the final one decides the status."""
        slot = rec.scheduled_at.ToDatetime(UTC)
        fire_at = rec.fire_at.ToDatetime(UTC) if rec.HasField("fire_at") else slot
        try:
            retry = retry_from_proto(spec.retry) if spec.HasField("retry") else NO_RETRY
        except PeerdError as exc:  # stored before a validation rule existed
            self._log.error("task_retry_policy_invalid", task_id=spec.id, error=str(exc))
            retry = NO_RETRY
        per_attempt = spec.timeout.ToTimedelta() if spec.HasField("timeout") else DEFAULT_TIMEOUT
        kind = spec.WhichOneof("target") or ""
        cause_json = ""
        if rec.HasField("cause"):
            cause_json = json_format.MessageToJson(
                rec.cause, preserving_proto_field_name=True, indent=None
            )
        blog = self._log.bind(task_id=spec.id, scheduled_at=rfc3339(slot))
        first = not rec.HasField("started_at")
        while True:
            async with self.pools.slot(kind, spec.priority, _ts(fire_at)):
                started = self.clock.now()
                if first:
                    rec.lateness.FromTimedelta(started - fire_at)
                    first = False
                rec.status = pb.RUNNING
                rec.started_at.FromDatetime(started)
                rec.ClearField("finished_at")
                rec.ClearField("next_attempt_at")
                self._updates.put_nowait(_copy(rec))
                timeout = attempt_timeout(retry, per_attempt, fire_at, started)
                cut = timeout < per_attempt
                if timeout <= timedelta(0):
                    outcome = Outcome(
                        False, started, started, error="no time left", failure=FAILURE_TIMEOUT
                    )
                else:
                    execution = Execution(
                        spec.id,
                        slot,
                        rec.attempt,
                        self.node_id,
                        rec.fencing_token,
                        timeout,
                        cause_json=cause_json,
                        fire_at=fire_at,
                    )
                    try:
                        outcome = await self.executors.run(spec, execution)
                    except Exception as exc:  # an executor bug must still leave a record
                        blog.exception("executor_crashed")
                        now = self.clock.now()
                        outcome = Outcome(
                            False,
                            started,
                            now,
                            error=f"executor error: {exc!r}",
                            failure=FAILURE_CONFIG,
                        )
            rec.http_status = outcome.http_status
            rec.ClearField("exit_code")
            if outcome.exit_code is not None:
                rec.exit_code = outcome.exit_code
            rec.output_tail = outcome.output_tail
            if outcome.succeeded:
                rec.finished_at.FromDatetime(outcome.finished_at)
                self._finish(spec, rec, pb.SUCCEEDED, "")
                return
            now = self.clock.now()
            nxt = next_attempt(retry, rec.attempt, outcome.failure, fire_at, now, self._rng)
            if nxt is None:
                rec.finished_at.FromDatetime(outcome.finished_at)
                if cut and outcome.failure == FAILURE_TIMEOUT and retry.deadline is not None:
                    deadline_s = retry.deadline.total_seconds()
                    error = f"overall deadline {deadline_s:g}s reached: {outcome.error}"
                    self._finish(spec, rec, pb.CANCELLED, error, failed=True)
                else:
                    self._finish(spec, rec, pb.FAILED, outcome.error, failed=True)
                return
            prev = _attempt_of(rec, pb.FAILED, outcome.error)
            prev.finished_at.FromDatetime(outcome.finished_at)
            rec.history.append(prev)
            rec.attempt += 1
            rec.next_attempt_at.FromDatetime(nxt)
            rec.error = f"attempt {prev.attempt} failed ({outcome.failure}): {outcome.error}"
            self._updates.put_nowait(_copy(rec))
            blog.info("run_retrying", attempt=rec.attempt, at=rfc3339(nxt), error=outcome.error)
            await asyncio.sleep(max(0.0, (nxt - now).total_seconds()))

    def _finish(
        self, spec: pb.TaskSpec, rec: pb.RunRecord, status: int, error: str, failed: bool = False
    ) -> None:
        """Record the final status of a run; trigger the compensation task of a failure."""
        rec.status = status  # type: ignore[assignment]
        rec.error = error
        rec.ClearField("next_attempt_at")
        if not rec.HasField("finished_at"):
            rec.finished_at.FromDatetime(self.clock.now())
        if failed and spec.on_failure:
            if spec.on_failure not in self.cache.tasks:
                rec.error += f" (on_failure task {spec.on_failure!r} does not exist)"
            else:
                self._compensate(spec.on_failure, rec)
        self._updates.put_nowait(_copy(rec))
        if status == pb.SUCCEEDED:
            self.stats.succeeded += 1
            self._log.debug("run_succeeded", task_id=spec.id, fencing_token=rec.fencing_token)
        else:
            self.stats.failed += 1
            self._log.info(
                "run_failed",
                task_id=spec.id,
                status=pb.RunStatus.Name(status),  # type: ignore[arg-type]
                fencing_token=rec.fencing_token,
                error=rec.error,
            )

    def _compensate(self, task_id: str, cause: pb.RunRecord) -> None:
        """Trigger ``task_id`` with ``cause`` (in the background; failures are logged)."""
        spec = self.cache.tasks[task_id]

        async def go() -> None:
            try:
                run = await self.trigger(spec, cause=cause)
                self._log.info(
                    "compensation_triggered",
                    task_id=cause.task_id,
                    on_failure=task_id,
                    status=pb.RunStatus.Name(run.status),
                )
            except PeerdError as exc:
                self._log.error("compensation_failed", task_id=cause.task_id, error=str(exc))

        task = asyncio.create_task(go())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    # -- overlap lock ----------------------------------------------------------------------------

    def _cancel_unlocked_runs(self) -> None:
        """Cancel runs of overlap-controlled tasks claimed under a lease this node no longer
        holds (it expired, e.g. while the process was stopped): their lock went with the lease,
        so the task's owner may already run the next slot or retry this one. Their records
        are fenced on that lease, so the task's owner resolves them (``on_owner_lost``)."""
        lease = self.membership.lease_id
        for key, rec in list(self._in_flight.items()):
            task = self._tasks.get(key)
            spec = self.cache.tasks.get(key[0])
            if rec.claim_lease_id == lease or task is None or spec is None:
                continue
            if needs_lock(spec.overlap) and key not in self._cancel_reasons:
                self._cancel_reasons[key] = f"lease {rec.claim_lease_id:x} lost while running"
                self._log.warning(
                    "run_cancelled_lease_lost",
                    task_id=key[0],
                    scheduled_at=rfc3339(_from_ms(key[1])),
                    lease_id=f"{rec.claim_lease_id:x}",
                )
                task.cancel()

    async def _wait_lock(self, spec: pb.TaskSpec, rec: pb.RunRecord, from_queue: bool) -> bool:
        """Wait until this run holds its task's overlap lock. False when this node's lease
        changed meanwhile (the run is then a lost owner's, resolved by the task's owner)."""
        while True:
            if self.membership.lease_id != rec.claim_lease_id:
                return False
            try:
                holder = await self.ledger.acquire_lock(
                    self.membership.member_key, rec.claim_lease_id, rec, from_queue
                )
            except LeaseLost:
                return False
            except PeerdError as exc:  # etcd trouble: try again
                self._log.debug("lock_acquire_failed", task_id=spec.id, error=str(exc))
                holder = b""
            if holder is None:
                return True
            local = self._local_run(spec.id, holder)
            if local is not None:
                await asyncio.wait([local], timeout=1.0)
            else:
                await asyncio.sleep(LOCK_POLL_S)

    def _local_run(self, task_id: str, holder: bytes) -> asyncio.Task[None] | None:
        held = lock_holder(holder)
        return self._tasks.get((task_id, held[0])) if held is not None else None

    async def _release_lock(self, rec: pb.RunRecord) -> None:
        """Release the lock; retried until done or until the lease it is on is gone."""
        backoff = 0.1
        while self.membership.lease_id == rec.claim_lease_id:
            try:
                await self.ledger.release_lock(rec, rec.claim_lease_id)
                return
            except PeerdError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _cancel_replaced(self, spec: pb.TaskSpec, rec: pb.RunRecord, holder: bytes) -> None:
        """REPLACE: stop the run that held the lock before ``rec`` took it, then return. A run on
        this node is cancelled at once; one on another node cancels itself when it sees the lock
        change (within :data:`LOCK_POLL_S`); we wait up to :data:`REPLACE_WAIT_S` for it."""
        reason = f"replaced by slot {rfc3339(rec.scheduled_at.ToDatetime(UTC))} (overlap REPLACE)"
        held = lock_holder(holder)
        if held is None:
            return
        slot = held[0]
        local = self._tasks.get((spec.id, slot))
        if local is not None:
            self._cancel_reasons[(spec.id, slot)] = reason
            local.cancel()
            await asyncio.wait([local], timeout=REPLACE_WAIT_S)
            return
        deadline = self.clock.monotonic() + REPLACE_WAIT_S
        while self.clock.monotonic() < deadline:
            try:
                old = await self.ledger.get(spec.id, slot)
            except PeerdError:
                await asyncio.sleep(0.1)
                continue
            if old is None or old.status not in (pb.CLAIMED, pb.RUNNING):
                return
            if not self._claimant_alive(old):
                return
            await asyncio.sleep(0.1)
        self._log.warning("replace_wait_timed_out", task_id=spec.id, replaced=_describe(holder))

    async def _watch_replaced(
        self, spec: pb.TaskSpec, rec: pb.RunRecord, run: asyncio.Task[None]
    ) -> None:
        """REPLACE: cancel ``run`` when another run takes the task's lock (on any node)."""
        mine = lock_value(
            self.ledger.keys.run(spec.id, rec.scheduled_at.ToMilliseconds()),
            rec.node_id,
            rec.claim_lease_id,
        )
        key = (spec.id, rec.scheduled_at.ToMilliseconds())
        while True:
            await asyncio.sleep(LOCK_POLL_S)
            try:
                holder = await self.ledger.lock_holder(spec.id)
            except PeerdError:
                continue
            if holder is not None and holder != mine:
                self._cancel_reasons.setdefault(
                    key, f"replaced by {_describe(holder)} (overlap REPLACE)"
                )
                run.cancel()
                return

    async def trigger(self, spec: pb.TaskSpec, cause: pb.RunRecord | None = None) -> pb.RunRecord:
        """Run ``spec`` once now on this node (slot = now, ``manual``), honouring the claim and
        the task's overlap policy: the answer is the CLAIMED record, or the SKIPPED one when the
        policy turned the trigger away. ``cause``: the failed run a compensation trigger is for.

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
            rec.fire_at.CopyFrom(rec.scheduled_at)
            rec.priority = spec.priority
            if cause is not None:
                rec.cause.CopyFrom(cause)
                rec.cause.ClearField("cause")  # one level is enough
            try:
                claim = _Claim(spec, rec, first_mode(spec.overlap))
                done = await self._claim_rounds([claim])
            except LeaseLost as exc:
                self.membership.lease_lost()
                raise Unavailable("this node lost its membership lease; try again") from exc
            for final, res in done:
                if res.claimed:
                    return final.rec
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
                except (Unavailable, ResourceExhausted):  # retried when etcd is back / has space
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
                if spec.on_failure in self.cache.tasks and spec.on_failure != spec.id:
                    self._compensate(spec.on_failure, new)
            return
        new.history.append(_attempt_of(rec, pb.LOST, reason))
        new.attempt = rec.attempt + 1
        new.node_id = self.node_id
        new.status = pb.CLAIMED
        new.claim_lease_id = self.membership.lease_id
        new.claimed_at.FromDatetime(now)
        new.error = f"retry: {reason}"
        for name in ("started_at", "finished_at", "next_attempt_at", "exit_code"):
            new.ClearField(name)  # type: ignore[arg-type]
        new.http_status = 0
        new.output_tail = ""
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
        self._spawn(spec, new, None)

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


def _attempt_of(rec: pb.RunRecord, status: int, error: str) -> pb.AttemptRecord:
    """The current attempt of ``rec`` as a history entry (``finished_at`` left to the caller)."""
    out = pb.AttemptRecord(
        attempt=rec.attempt,
        node_id=rec.node_id,
        fencing_token=rec.fencing_token,
        status=status,  # type: ignore[arg-type]
        http_status=rec.http_status,
        error=error,
    )
    if rec.HasField("started_at"):
        out.started_at.CopyFrom(rec.started_at)
    if rec.HasField("exit_code"):
        out.exit_code = rec.exit_code
    return out


def _copy(rec: pb.RunRecord) -> pb.RunRecord:
    out = pb.RunRecord()
    out.CopyFrom(rec)
    return out
