"""The engine of one node: a small facade over the modules that plan, claim and run its slots.

=======================  ==================================================================
module                   job
=======================  ==================================================================
``ownership``            which members own tasks (membership + detector + drains), one event
``planner``              the owned tasks, their cursors, what is due, admission
``claims``               fenced claim batches sized from etcd's budget, overlap follow-ups
``registry``             one entry per run from claim to final record; spawns at most once
``execution``            a run's lock, attempts, retries and final record
``lock``                 waits around the overlap lock
``recovery``             runs of claimants whose lease is gone (retry or mark LOST)
``writer``               batched record updates, fenced-off finals logged, trims
``handoff``              tasks moving to a new owner with their cursor, no gap
=======================  ==================================================================

The planning loop, the writer, the handoff sender and the owner-lost recovery run as supervised
loops (:class:`peerd.supervise.Supervisor`): an unexpected exception is logged, the loop
restarts with backoff, and the node's health degrades meanwhile. Every loop takes its time from
the injected clock.

**Backpressure.** A node claims only what it can run soon: each executor pool admits as many new
runs as it has slots plus as many waiting to start (:data:`QUEUE_FACTOR`), counting every run in
the registry (claimed, running, or waiting for its final record to be written, so a slow etcd
also slows claiming). Due tasks beyond that wait in the planner's backlog, unclaimed; their
slots grow late and their catch-up policy decides once they pass the misfire threshold. The node
is *saturated* while its backlog is not empty: it logs ``node_saturated`` once (and
``node_saturation_cleared``), and peers see it in its Ping answers (``peerd cluster``). So an
overloaded node keeps running at its capacity instead of queueing without bound, and its event
loop stays free for lease keepalives and probes: a busy node is not a dead node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from peerd.clock import Clock, wait_event
from peerd.config import NodeConfig
from peerd.coord.ledger import ClaimResult, Ledger
from peerd.core.backoff import Backoff
from peerd.core.budget import MAX_TXN_OPS
from peerd.core.overlap import first_mode
from peerd.core.plan import (
    CATCH_UP_RUN_ONCE,
    DEFAULT_CATCH_UP_WINDOW,
    SKIP_REASON_PB,
    CatchUp,
)
from peerd.core.ratelimit import TokenBucket, share
from peerd.core.records import (
    claim_record,
    from_ms,
    manual_record,
    run_key,
    skipped_record,
    slot_ms,
)
from peerd.engine.backpressure import Backpressure
from peerd.engine.claims import Claim, Claims
from peerd.engine.execution import Execution
from peerd.engine.handoff import Handoffs, SendHandoff
from peerd.engine.lock import OverlapLocks
from peerd.engine.ownership import OwnershipView
from peerd.engine.planner import Owned, Planner, TaskPlan
from peerd.engine.recovery import RECENT_SCAN, OwnerLostRecovery
from peerd.engine.registry import Run, RunRegistry
from peerd.engine.writer import RecordWriter
from peerd.errors import LeaseLost, PeerdError, ResourceExhausted, Unavailable
from peerd.runner.base import Execution as Attempt
from peerd.runner.base import Outcome
from peerd.runner.pools import Pools
from peerd.supervise import Supervisor
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

TRIM_EVERY = 20
"""Trim a task's ledger after this many of its slots settled."""
MAX_SLEEP_S = 1.0
"""The planning loop wakes at least this often (seconds) even with nothing due."""
QUEUE_FACTOR = 2
"""A pool admits runs up to this many times its limit (its slots, plus as many waiting)."""
SATURATED_PAUSE_S = 0.01
"""While saturated, the loop waits this long after room frees up, so a claim batch gathers
more than one slot."""
TRIGGER_TRIES = 5
"""Manual slots tried (1 ms apart) when a trigger's slot is taken."""
SWEEP_MIN_S, SWEEP_MAX_S = 60.0, 3600.0
"""Every owned task's ledger is trimmed by age every ``runs_max_age / 10`` within these bounds
(seconds), besides the trim after every :data:`TRIM_EVERY` of its slots, so tasks that stopped
firing (paused, one-shot, ended) lose their old records too."""


class NodeLease(Protocol):
    """This node's registration as the engine needs it (a narrow view of Membership)."""

    @property
    def member_key(self) -> bytes: ...

    @property
    def lease_id(self) -> int: ...

    @property
    def claim_ready(self) -> asyncio.Event: ...

    @property
    def view(self) -> Mapping[str, pb.Member]: ...

    def on_change(self, fn: Callable[[], None]) -> None: ...

    def lease_lost(self) -> None: ...

    def etcd_suspect(self) -> None: ...


class TaskView(Protocol):
    """The watched task specs (a narrow view of TaskCache)."""

    @property
    def tasks(self) -> Mapping[str, pb.TaskSpec]: ...

    def on_change(self, fn: Callable[[str, pb.TaskSpec | None], None]) -> None: ...


@dataclass
class EngineStats:
    """Counters since start (exported as metrics)."""

    claimed: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Load:
    """How busy the node is: runs in the registry, the admission limit, due tasks waiting."""

    active: int
    capacity: int
    backlog: int

    @property
    def saturated(self) -> bool:
        return self.backlog > 0


class Executors(Protocol):
    """The node's executors (:class:`peerd.runner.executors.Executors`)."""

    async def run(self, spec: pb.TaskSpec, execution: Attempt) -> Outcome: ...

    def configure(self, cfg: NodeConfig) -> None: ...


class Engine:
    """Plans, claims and executes the slots of the tasks this node owns.

    Args:
        cfg: node configuration (limits, retention, batch; :meth:`apply_config` replaces it).
        lease: this node's registration.
        tasks: the task view.
        ledger: the run ledger.
        ownership: the owning members.
        executors: runs attempts per executor kind.
        send_handoff: the peer client's handoff call (None disables handoff).
        clock: time source for every loop.
        etcd_space: set while etcd has space (the node's :class:`peerd.coord.alarms.
            AlarmMonitor`); no claim is sent while it is clear, because claims are nested
            transactions, which etcd 3.4 lets past its quota (see that module).
    """

    def __init__(
        self,
        cfg: NodeConfig,
        lease: NodeLease,
        tasks: TaskView,
        ledger: Ledger,
        ownership: OwnershipView,
        executors: Executors,
        send_handoff: SendHandoff | None,
        clock: Clock,
        supervisor: Supervisor,
        etcd_space: asyncio.Event | None = None,
    ) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.lease = lease
        self.tasks = tasks
        self.ledger = ledger
        self.ownership = ownership
        self.clock = clock
        self.supervisor = supervisor
        if etcd_space is None:
            etcd_space = asyncio.Event()
            etcd_space.set()
        self.etcd_space = etcd_space
        self.stats = EngineStats()
        self.executors = executors
        self.registry = RunRegistry()
        self.pools = Pools(cfg)
        self.planner = Planner(self.node_id, cfg.misfire_threshold, self.pools.kinds)
        self.backpressure = Backpressure(
            self.pools.node,
            cfg.max_concurrent_runs,
            lambda: self.planner.backlog > 0 or self.pools.node.waiting > 0,
            clock,
            self.node_id,
        )
        self.claims = Claims(ledger, lease, lambda: self.cfg.claim_batch, clock.now)
        self.writer = RecordWriter(
            ledger,
            self.registry,
            clock,
            lambda: (self.cfg.runs_keep, self.cfg.runs_max_age.total_seconds()),
            self.node_id,
        )
        self.recovery = OwnerLostRecovery(
            self.node_id,
            ledger,
            lease,
            self.registry,
            self._owned_spec,
            lambda: {n: m.lease_id for n, m in lease.view.items()},
            lease.claim_ready.is_set,
            self._retry,
            self._compensate,
            clock,
        )
        self.locks = OverlapLocks(
            ledger, lease, self.registry, self.recovery.claimant_alive, clock, self.node_id
        )
        self.execution = Execution(
            self.node_id,
            self.registry,
            executors,
            self.pools,
            self.locks,
            self.writer,
            self._compensate,
            lambda task_id: task_id in tasks.tasks,
            clock,
        )
        self.handoffs = Handoffs(
            self.node_id,
            self.planner,
            self.registry,
            send_handoff or _no_handoff,
            lambda: (lease.lease_id, ownership.draining),
            clock,
        )
        self._handoff_enabled = send_handoff is not None
        rate = share(cfg.catch_up_rate, 1)
        # Empty at start: the first node back after a cluster-wide outage sees itself as the
        # only member (and takes the whole rate) until the others register; a full bucket
        # would add a burst on top (bench/catchup.py: ~2x the rate for a second).
        self._replay = TokenBucket(rate, max(1.0, rate), clock.monotonic(), tokens=0.0)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._saturated_since: float | None = None
        self._log = log.bind(node_id=self.node_id)
        self.registry.on_leave(self._room.set)
        ownership.on_change(self.reconcile)
        tasks.on_change(self._on_task_change)
        lease.on_change(self._on_members)

    # -- ownership -------------------------------------------------------------------------

    def _owned_spec(self, task_id: str) -> pb.TaskSpec | None:
        o = self.planner.owned.get(task_id)
        return o.spec if o is not None else None

    def reconcile(self) -> None:
        """Recompute the owned set from the owning members and the task view."""
        owners = self.ownership.owners
        self._replay.set_rate(
            share(self.cfg.catch_up_rate, max(1, len(owners))),
            self.clock.monotonic(),
            max(1.0, share(self.cfg.catch_up_rate, max(1, len(owners)))),
        )
        specs = self.tasks.tasks
        wanted = {tid for tid, spec in specs.items() if self.ownership.owns(spec)}
        for task_id in list(self.planner.owned):
            if task_id not in wanted:
                self._release(task_id, to_peer=True)
        for task_id in wanted:
            self.handoffs.cancel(task_id)
            if task_id not in self.planner.owned:
                self._acquire(specs[task_id])
        self.planner.forget_invalid(wanted)
        self._wake.set()

    def _acquire(self, spec: pb.TaskSpec) -> None:
        """Start planning ``spec``; slots it missed while no live member was eligible are
        skipped as ``unschedulable`` (:meth:`OwnershipView.ineligible_window`)."""
        self.planner.acquire(spec, unschedulable=self.ownership.ineligible_window(spec))

    def _on_task_change(self, task_id: str, spec: pb.TaskSpec | None) -> None:
        if not task_id:
            self.reconcile()
            return
        if spec is None or not self.ownership.owns(spec):
            self._release(task_id, to_peer=spec is not None and not spec.paused)
            if spec is None:
                self.planner.forget_invalid(set(self.planner.invalid) - {task_id})
        elif task_id in self.planner.owned:
            self.handoffs.cancel(task_id)
            if self.planner.owned[task_id].spec.SerializeToString() != spec.SerializeToString():
                self.planner.drop(task_id)  # spec edited: recompile, reload the cursor
                self._acquire(spec)
        else:
            self._acquire(spec)
        self._wake.set()

    def _release(self, task_id: str, to_peer: bool) -> None:
        """Stop planning ``task_id``: hand it to its new owner when that is a live peer (it
        keeps firing here until the peer acks), else drop it at once."""
        o = self.planner.owned.get(task_id)
        if o is None:
            return
        target = self.ownership.next_owner(o.spec) if to_peer else None
        if (
            target
            and o.cursor is not None
            and self.lease.claim_ready.is_set()
            and self._handoff_enabled
        ):
            self.handoffs.start(task_id, target)
        else:
            self.handoffs.drop(task_id)

    def _on_members(self) -> None:
        self.recovery.members_changed(list(self.planner.owned))
        self.locks.cancel_unlocked()

    def accept_handoff(self, request: ppb.HandoffRequest) -> list[str]:
        """Take over tasks a peer hands to us (the Peer servicer marked a draining sender
        first). Returns the ids this node now plans; the sender stops firing those."""
        self.ownership.refresh()
        self.reconcile()
        accepted = []
        for item in request.tasks:
            o = self.planner.owned.get(item.task_id)
            if o is None or item.task_id in self.handoffs.handing:
                continue  # not ours in our view: the sender keeps it and retries
            cursor = from_ms(item.cursor_ms)
            if o.cursor is None or cursor > o.cursor:
                self.planner.set_cursor(o, cursor)
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

    # -- configuration and state -----------------------------------------------------------

    def apply_config(self, cfg: NodeConfig) -> None:
        """Apply a reloaded configuration (SIGHUP): executors (the shell allow-list), pool
        limits, replay rate, misfire threshold, retention, batch size.

        All or nothing: every value is checked first, and a refused configuration raises
        ``ValueError`` having changed nothing. Running executions keep what they started with.
        """
        self.pools.check(cfg)
        CatchUp(CATCH_UP_RUN_ONCE, DEFAULT_CATCH_UP_WINDOW, cfg.misfire_threshold)  # >= 0
        if not 1 <= cfg.claim_batch <= MAX_TXN_OPS - 1:
            raise ValueError(f"claim_batch must be 1..{MAX_TXN_OPS - 1}, got {cfg.claim_batch}")
        self.cfg = cfg
        self.executors.configure(cfg)
        self.pools.apply(cfg)
        self.backpressure.set_maximum(cfg.max_concurrent_runs)
        self.planner.set_misfire_threshold(cfg.misfire_threshold)
        self.reconcile()

    def load(self) -> Load:
        """How busy this node is (for Ping answers and ``peerd cluster``)."""
        capacity = QUEUE_FACTOR * self.pools.node.limit
        return Load(len(self.registry), capacity, self.planner.backlog)

    def _room_per_kind(self) -> dict[str, int]:
        node_room = QUEUE_FACTOR * self.pools.node.limit - self.registry.active()
        return {
            kind: max(0, min(node_room, QUEUE_FACTOR * pool.limit - self.registry.active(kind)))
            for kind, pool in self.pools.kinds.items()
        }

    # -- the planning loop -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervised loops (planning, writer, handoff, recovery); they run until
        :meth:`stop`."""
        self.supervisor.spawn("engine.writer", self.writer.run)
        self.supervisor.spawn("engine.handoff", self.handoffs.run)
        self.supervisor.spawn("engine.recovery", self.recovery.run)
        self.supervisor.spawn("engine.planner", self._plan_loop)
        self.supervisor.spawn("engine.sweep", self._sweep_loop)
        self.supervisor.spawn("engine.backpressure", self.backpressure.run)
        self.reconcile()

    async def _sweep_loop(self) -> None:
        while True:
            age_s = self.cfg.runs_max_age.total_seconds()
            await self.clock.sleep(min(SWEEP_MAX_S, max(SWEEP_MIN_S, age_s / 10)))
            for task_id in list(self.planner.owned):
                self.writer.trim(task_id)

    async def _plan_loop(self) -> None:
        backoff = Backoff(0.1, 2.0)
        while not self._stopping:
            if not self.lease.claim_ready.is_set():
                await self.lease.claim_ready.wait()
                continue
            if not self.etcd_space.is_set():
                self._log.warning("claims_paused_etcd_nospace")
                await self.etcd_space.wait()
                self._log.info("claims_resumed_etcd_space")
                continue
            try:
                if self.planner.to_load:
                    await self._load_cursors()
                await self._tick()
                backoff.reset()
            except LeaseLost:
                self._log.warning("claim_rejected_lease_lost")
                self.lease.lease_lost()
                continue
            except Unavailable as exc:
                self._log.warning("etcd_unavailable_no_claims", error=str(exc))
                self.lease.etcd_suspect()
                await self.clock.sleep(backoff.next_delay_s())
                continue
            except PeerdError as exc:  # not transient, but one bad batch must not stop us
                self._log.error("claim_round_failed", error=str(exc))
                await self.clock.sleep(backoff.next_delay_s())
                continue
            await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        self._wake.clear()
        if self.planner.backlog:
            self._room.clear()
            if await wait_event(self.clock, self._room, MAX_SLEEP_S):
                await self.clock.sleep(SATURATED_PAUSE_S)
            return
        delay = MAX_SLEEP_S
        due_s = self.planner.next_due_s()
        if due_s is not None:
            delay = min(delay, max(0.0, due_s - self.clock.now().timestamp()))
        if delay > 0 and not self.planner.to_load:
            await wait_event(self.clock, self._wake, delay)

    async def _load_cursors(self) -> None:
        ids = list(self.planner.to_load)
        sem = asyncio.Semaphore(32)

        async def load(task_id: str) -> None:
            async with sem:
                recent = await self.ledger.recent(task_id, RECENT_SCAN)
            o = self.planner.owned.get(task_id)
            if o is None or task_id not in self.planner.to_load:
                return
            # Manual runs (TriggerTask: slot = the time of the trigger) are not schedule slots:
            # the cursor is the newest scheduled one. With none among the records read, the
            # floor is safe: slots already claimed are lost races, never run twice.
            scheduled = [r.scheduled_at.ToMilliseconds() for r, _ in recent if not r.manual]
            self.recovery.note(recent)
            # Slots missed while the task was paused are planned like any missed slot: the
            # catch-up policy decides (skipped ones are recorded with SKIP_PAUSED).
            floor = o.spec.created_at.ToDatetime(UTC)
            cursor = max(floor, from_ms(scheduled[0])) if scheduled else floor
            self.planner.set_cursor(o, cursor)

        await asyncio.gather(*(load(t) for t in ids))

    async def _tick(self) -> None:
        now = self.clock.now()
        mono = self.clock.monotonic()
        self.planner.collect_due(now)
        plans = self.planner.plan(
            now, self._room_per_kind(), self._replay, mono, self.cfg.runs_keep
        )
        self._note_saturation(mono)
        if not plans:
            return
        by_run: dict[tuple[str, int], TaskPlan] = {}
        claims: list[Claim] = []
        for tp in plans:
            for c in self._claims_of(tp, now):
                by_run[run_key(c.record)] = tp
                claims.append(c)

        def settled(claim: Claim, res: ClaimResult) -> None:
            tp = by_run.get(run_key(claim.record))
            if tp is not None:
                tp.settled.add(claim.record.scheduled_at.ToMilliseconds())
            if res.claimed and claim.record.status == pb.CLAIMED:
                self.stats.claimed += 1
                self._spawn(claim.spec, claim.record, claim.mode, res.replaced)

        try:
            await self.claims.claim(claims, settled)
        finally:
            self._commit(plans, now, mono)

    def _claims_of(self, tp: TaskPlan, now: datetime) -> list[Claim]:
        o, plan = tp.owned, tp.plan
        lease_id = self.lease.lease_id
        out = [
            Claim(o.spec, self._skipped(o, slot, reason, now, lease_id), None)
            for slot, reason in plan.skipped
        ]
        mode = first_mode(o.spec.overlap)
        for slot in plan.fire:
            rec = claim_record(
                o.spec.id,
                slot,
                self.node_id,
                lease_id,
                now,
                fire_at=o.fire_at(slot),
                priority=o.spec.priority,
            )
            out.append(Claim(o.spec, rec, mode))
        return out

    def _skipped(
        self, o: Owned, slot: datetime, reason: str, now: datetime, lease_id: int
    ) -> pb.RunRecord:
        rec = skipped_record(
            o.spec.id,
            slot,
            o.fire_at(slot),
            reason,
            self.node_id,
            lease_id,
            now,
            policy=o.catch_up.policy,
            misfire_threshold=o.catch_up.misfire_threshold,
            window=o.catch_up.window,
            node_selector=o.spec.node_selector,
        )
        assert rec.skip_reason == SKIP_REASON_PB[reason]
        return rec

    def _commit(self, plans: list[TaskPlan], now: datetime, mono: float) -> None:
        skipped: dict[str, int] = {}
        tasks_skipping = 0
        for tp in plans:
            settled = self.planner.commit(tp, now, lambda: self._replay.next_at_s(mono) - mono)
            o = tp.owned
            o.claims_since_trim += settled
            if o.claims_since_trim >= TRIM_EVERY:
                o.claims_since_trim = 0
                self.writer.trim(o.spec.id)
            if tp.plan.skipped_count and len(tp.settled) == len(tp.slots):
                tasks_skipping += 1
                for reason, n in tp.plan.skipped_counts.items():
                    if n:
                        skipped[reason] = skipped.get(reason, 0) + n
        if skipped:
            total = sum(skipped.values())
            self.stats.skipped += total
            self._log.info("slots_skipped", count=total, tasks=tasks_skipping, reasons=skipped)

    def _note_saturation(self, mono: float) -> None:
        backlog = self.planner.backlog
        if backlog and self._saturated_since is None:
            self._saturated_since = mono
            self._log.warning(
                "node_saturated",
                backlog=backlog,
                active_runs=len(self.registry),
                capacity=QUEUE_FACTOR * self.pools.node.limit,
            )
        elif not backlog and self._saturated_since is not None:
            self._log.info(
                "node_saturation_cleared", after_s=round(mono - self._saturated_since, 3)
            )
            self._saturated_since = None

    # -- runs ------------------------------------------------------------------------------

    def _spawn(
        self, spec: pb.TaskSpec, rec: pb.RunRecord, mode: str | None, replaced: bytes | None
    ) -> None:
        kind = spec.WhichOneof("target") or ""
        run = Run(spec, rec, mode, replaced, kind)
        self.registry.spawn(run, self.execution.execute)

    def _retry(self, spec: pb.TaskSpec, rec: pb.RunRecord) -> None:
        self.stats.claimed += 1
        self._spawn(spec, rec, None, None)

    async def trigger(self, spec: pb.TaskSpec, cause: pb.RunRecord | None = None) -> pb.RunRecord:
        """Run ``spec`` once now on this node (slot = now, ``manual``), honouring the claim and
        the task's overlap policy: the answer is the CLAIMED record, or the SKIPPED one when the
        policy turned the trigger away. ``cause``: the failed run a compensation run is for.

        Raises:
            Unavailable: etcd unreachable, or this node has no live lease.
            ResourceExhausted: etcd's NOSPACE alarm is on.
        """
        if not self.lease.claim_ready.is_set():
            raise Unavailable("this node has no live membership lease; try another node")
        if not self.etcd_space.is_set():  # a claim is a nested txn: etcd would let it past
            raise ResourceExhausted(
                "no node claims while the alarm is on", self.ledger.etcd.space_hint
            )
        now = self.clock.now()
        ms = slot_ms(now)
        answer: list[pb.RunRecord] = []

        def settled(claim: Claim, res: ClaimResult) -> None:
            if not res.claimed:
                return
            answer.append(claim.record)
            if claim.record.status == pb.CLAIMED:
                self.stats.claimed += 1
                self._spawn(claim.spec, claim.record, claim.mode, res.replaced)

        for offset in range(TRIGGER_TRIES):
            rec = manual_record(
                spec.id,
                from_ms(ms + offset),
                self.node_id,
                self.lease.lease_id,
                now,
                priority=spec.priority,
                cause=cause,
            )
            try:
                await self.claims.claim([Claim(spec, rec, first_mode(spec.overlap))], settled)
            except LeaseLost as exc:
                self.lease.lease_lost()
                raise Unavailable("this node lost its membership lease; try again") from exc
            if answer:
                return answer[0]
        raise Unavailable("could not claim a slot for the trigger; try again")

    def _compensate(self, task_id: str, cause: pb.RunRecord) -> None:
        """Trigger ``task_id`` with ``cause`` in the background (failures are logged)."""
        spec = self.tasks.tasks.get(task_id)
        if spec is None:
            self._log.error("compensation_failed", task_id=cause.task_id, error="no such task")
            return

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

        task = asyncio.get_running_loop().create_task(go())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- drain and stop --------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> None:
        """Stop owning: hand every task to its next owner and wait (up to ``timeout_s``) until
        all are acked or dropped. Running executions are not touched (see :meth:`stop`)."""
        self.ownership.set_draining()
        self.reconcile()
        deadline = self.clock.monotonic() + timeout_s
        while self.planner.owned and self.clock.monotonic() < deadline:
            await self.clock.sleep(0.05)
        for task_id in list(self.planner.owned):
            self.handoffs.drop(task_id)

    async def stop(self, grace_s: float) -> None:
        """Stop planning; wait up to ``grace_s`` seconds for running executions, flush the
        record writer, stop the loops."""
        self._stopping = True
        self._wake.set()
        running = self.registry.tasks() + list(self._background)
        if running:
            await asyncio.wait(running, timeout=grace_s)
        await self.writer.flush(5.0)
        await self.supervisor.stop()


async def _no_handoff(node_id: str, request: ppb.HandoffRequest) -> list[str]:
    return []
