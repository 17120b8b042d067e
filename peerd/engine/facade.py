"""The engine of one node: a small facade over the modules that plan, claim and run its slots.

=======================  ==================================================================
module                   job
=======================  ==================================================================
``ownership``            which members own tasks (membership + detector + drains), one event
``reconcile``            the owned tasks kept in step with the task view, in 20 ms steps
``fireloop``             the loop: plan what is due and fits, claim it, start the claimed runs
``planner``              the owned tasks, their cursors, what is due, admission
``claims``               fenced claim batches sized from etcd's budget, overlap follow-ups
``registry``             one entry per run from claim to final record; spawns at most once
``execution``            a run's lock, attempts, retries and final record
``lock``                 waits around the overlap lock
``recovery``             runs of claimants whose lease is gone (retry or mark LOST)
``writer``               batched record updates, fenced-off finals logged, trims
``handoff``              tasks moving to a new owner with their cursor, no gap
``backpressure``         the node-wide execution limit, adapted to the event loop's lag
``triggers``             manual runs and compensations: slot = now, claimed like any slot
``batches``              bounded fan-out of rescans and handoffs; failed batches kept
``ports``                the narrow views of the node the engine takes (lease, tasks, executors)
=======================  ==================================================================

The facade wires them, reconciles ownership with the task view, accepts handoffs, applies
reloaded configuration, drains and stops.

The planning loop, the writer, the handoff sender and the owner-lost recovery run as supervised
loops (:class:`peerd.supervise.Supervisor`): an unexpected exception is logged, the loop
restarts with backoff, and the node's health degrades meanwhile. Every loop takes its time from
the injected clock.

**Backpressure.** A node claims only what it can run soon: each executor pool admits as many new
runs as it has slots plus as many waiting to start (:data:`peerd.engine.fireloop.QUEUE_FACTOR`),
counting every run in flight (due, running, or waiting for its final record to be written, so a
slow etcd also slows claiming; runs claimed ahead that wait for their fire instant count only
against the configured room), and the node-wide limit follows the event loop's lag
(:mod:`peerd.engine.backpressure`). Due tasks beyond that wait in the planner's backlog,
unclaimed; their slots grow late and their catch-up policy decides once they pass the misfire
threshold. The node is *saturated* while its backlog is not empty: it logs ``node_saturated``
once (and ``node_saturation_cleared``), and peers see it in its Ping answers (``peerd
cluster``). So an overloaded node keeps running at its capacity instead of queueing without
bound, and its event loop stays free for lease keepalives and probes: a busy node is not a dead
node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from peerd.clock import Clock
from peerd.config import NodeConfig
from peerd.coord.ledger import Ledger
from peerd.core.budget import MAX_TXN_OPS
from peerd.core.placement import placement_of
from peerd.core.plan import (
    CATCH_UP_RUN_ONCE,
    DEFAULT_CATCH_UP_WINDOW,
    CatchUp,
)
from peerd.core.records import (
    from_ms,
)
from peerd.core.tzrules import TimeZoneRules
from peerd.engine.backpressure import Backpressure
from peerd.engine.claims import Claims
from peerd.engine.execution import Execution
from peerd.engine.fireloop import FireLoop
from peerd.engine.handoff import Handoffs, SendHandoff
from peerd.engine.lock import OverlapLocks
from peerd.engine.ownership import OwnershipView
from peerd.engine.planner import Planner
from peerd.engine.ports import Executors, NodeLease, TaskView
from peerd.engine.reconcile import Reconciler
from peerd.engine.recovery import OwnerLostRecovery
from peerd.engine.registry import Run, RunRegistry
from peerd.engine.stats import EngineStats, Load, PoolStats
from peerd.engine.triggers import Triggers
from peerd.engine.writer import RecordWriter
from peerd.runner.pools import Pools
from peerd.supervise import Supervisor
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")


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
        rules: the node's time-zone rules (every schedule is compiled with them).
        tz_fence: ``() -> the revision claims of zone-dependent slots are fenced on`` (None:
            claim none; :meth:`peerd.coord.tzdata.TzdataAgreement.fence`).
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
        *,
        rules: TimeZoneRules,
        tz_fence: Callable[[], int | None],
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
        self.executors = executors
        self.registry = RunRegistry()
        self.pools = Pools(cfg)
        self.rules = rules
        self.planner = Planner(
            self.node_id,
            cfg.misfire_threshold,
            self.pools.kinds,
            rules=rules,
            claim_ahead=cfg.claim_ahead,
        )
        self.backpressure = Backpressure(
            self.pools.node,
            cfg.max_concurrent_runs,
            lambda: self.planner.backlog > 0 or self.pools.node.waiting > 0,
            clock,
            self.node_id,
        )
        self.claims = Claims(
            ledger,
            lease,
            lambda: self.cfg.claim_batch,
            clock.now,
            tz_fence,
            clock.monotonic,
            lease.etcd_slow,
        )
        self.triggers = Triggers(
            self.node_id,
            lease,
            self.claims,
            tasks.tasks.get,
            self.etcd_space,
            lambda: ledger.etcd.space_hint,
            self._spawn,
            clock,
        )
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
            lambda task_id: task_id in self.planner.owned,
            self._owned_spec,
            lambda: {n: m.lease_id for n, m in lease.view.items()},
            lease.claim_ready.is_set,
            self._retry,
            self.triggers.compensate,
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
            self.triggers.compensate,
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
        self.fire = FireLoop(
            self.node_id,
            lambda: self.cfg,
            lease,
            self.planner,
            self.claims,
            self.registry,
            self.pools,
            self.writer,
            self.recovery,
            ledger,
            self._spawn,
            self.etcd_space,
            clock,
        )
        self.reconciler = Reconciler(
            self.node_id,
            tasks.placements,
            ownership,
            lambda: self.planner.owned,
            self._keep,
            self._release_gone,
            clock,
        )
        self._log = log.bind(node_id=self.node_id)
        ownership.on_change(self.reconcile)
        tasks.on_change(self._on_task_change)
        lease.on_change(self._on_members)

    # -- ownership -------------------------------------------------------------------------

    def _owned_spec(self, task_id: str) -> pb.TaskSpec | None:
        o = self.planner.owned.get(task_id)
        return o.decode_spec() if o is not None else None

    def reconcile(self) -> None:
        """Recompute the owned set from the owning members and the task view (in steps, in
        the background, for a large view: :mod:`peerd.engine.reconcile`)."""
        self.fire.set_owners(len(self.ownership.owners))
        self.reconciler.request()
        owners = self.reconciler.owners
        self.planner.forget_invalid(
            t for t in self.planner.invalid if owners.get(t) == self.node_id
        )
        self.fire.wake()

    def rules_changed(self) -> None:
        """The cluster's agreed tzdata version (or its pin) changed: forget the cursors of the
        zone-dependent tasks (another version may have claimed their slots meanwhile), then
        reconcile; those still owned are loaded again from the ledger (:meth:`Planner.resume`).
        """
        for task_id, o in list(self.planner.owned.items()):
            if o.compiled.tzdata_version:
                self.handoffs.drop(task_id)
        self.ownership.changed()

    def _keep(self, task_id: str) -> None:
        """``task_id`` is owned here: keep planning it (a handoff in progress is cancelled),
        or start; slots it missed while no live member was eligible are skipped as
        ``unschedulable`` (:meth:`OwnershipView.ineligible_window`)."""
        self.handoffs.cancel(task_id)
        if task_id in self.planner.owned:
            return
        spec = self.tasks.tasks.get(task_id)
        if spec is None:
            return
        window = self.ownership.ineligible_window(self.tasks.placements[task_id])
        o = self.planner.acquire(spec, unschedulable=window)
        if o is not None and self.tasks.creating == task_id:
            # Just created: no run record to read (a delete takes its runs along), so the
            # cursor is the schedule's floor, as the ledger read would find (no etcd read).
            self.planner.set_cursor(o, o.compiled.floor)

    def _release_gone(self, task_id: str) -> None:
        """``task_id`` is not owned here: hand it to its new owner, unless it was deleted or
        paused (then nobody owns it)."""
        placement = self.tasks.placements.get(task_id)
        self._release(task_id, to_peer=placement is not None and not placement.paused)

    def _on_task_change(self, task_id: str, spec: pb.TaskSpec | None) -> None:
        """A task was written or deleted. An owned task takes its new spec at once, also while
        it is being handed off (it fires the new spec until the new owner acks): the cursor is
        kept, or moved back to the change time for a new schedule (:meth:`Planner.update`).
        Runs in progress keep the spec they were claimed with.

        The fire loop is woken only when the change touched a task this node plans (before or
        after it): the other tasks, about (N-1)/N of the changes, are not in its heap, and a
        wake per change cost a loop pass each (at 500 creates/s, 500 passes/s per node)."""
        if not task_id:
            self.reconcile()
            return
        owned = self.planner.owned.get(task_id)
        if spec is not None and owned is not None and not owned.holds(spec):
            self.planner.update(spec)
        self.reconciler.place(task_id)
        if spec is None:
            self.planner.forget_invalid(set(self.planner.invalid) - {task_id})
        if owned is not None or task_id in self.planner.owned:
            self.fire.wake()

    def _release(self, task_id: str, to_peer: bool) -> None:
        """Stop planning ``task_id``: hand it to its new owner when that is a live peer (it
        keeps firing here until the peer acks), else drop it at once."""
        o = self.planner.owned.get(task_id)
        if o is None:
            return
        placement = self.tasks.placements.get(task_id)  # the shared one
        if placement is None:
            placement = placement_of(o.decode_spec())
        target = self.ownership.next_owner(task_id, placement) if to_peer else None
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
        self.ownership.refresh()  # a change reconciles (its listener); a pass is not restarted
        accepted = []
        sender = self.lease.view.get(request.from_node)
        sender_rules = sender.tzdata_version if sender is not None else None
        for item in request.tasks:
            self.reconciler.place(item.task_id)  # a pass in steps may not have reached it
            o = self.planner.owned.get(item.task_id)
            if o is None or item.task_id in self.handoffs.handing:
                continue  # not ours in our view: the sender keeps it and retries
            cursor = self.planner.handed_cursor(o, from_ms(item.cursor_ms))
            other_rules = bool(o.compiled.tzdata_version) and sender_rules != self.rules.version
            # A cursor computed with other time-zone rules is not ours to continue from: the
            # ledger's (read once we own the task, after the sender was fenced off) is.
            if not other_rules and (o.cursor is None or cursor > o.cursor):
                self.planner.set_cursor(o, cursor)
            accepted.append(item.task_id)
            if item.in_flight:
                self._log.info(
                    "handoff_in_flight_runs",
                    task_id=item.task_id,
                    runs=len(item.in_flight),
                    from_node=request.from_node,
                )
        self.handoffs.accepted += len(accepted)
        if accepted:
            self._log.info("handoff_accepted", from_node=request.from_node, tasks=len(accepted))
            self.fire.wake()
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
        """How busy this node is (for Ping answers and ``peerd cluster``; see
        :meth:`FireLoop.load`)."""
        return self.fire.load()

    @property
    def stats(self) -> EngineStats:
        """Counters since start and gauges now (read at scrape time; see :mod:`.stats`)."""
        pools = {"node": self.pools.node, **self.pools.kinds}
        return EngineStats(
            claimed=self.fire.claimed,
            lost_races=self.claims.lost_races,
            skipped=dict(self.fire.skipped),
            started=dict(self.registry.started),
            owned=len(self.planner.owned),
            backlog=self.planner.backlog,
            active=len(self.registry),
            capacity=self.fire.capacity,
            pools={n: PoolStats(p.limit, p.in_use, p.waiting) for n, p in pools.items()},
            ring_changes=self.ownership.changes,
            handed_off=self.handoffs.handed_off,
            handoff_timeouts=self.handoffs.timed_out,
            handoffs_accepted=self.handoffs.accepted,
        )

    # -- the planning loop -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervised loops (planning, writer, trims, handoff, recovery); they run until
        :meth:`stop`."""
        self.supervisor.spawn("engine.writer", self.writer.run)
        self.supervisor.spawn("engine.trims", self.writer.trims)
        self.supervisor.spawn("engine.handoff", self.handoffs.run)
        self.supervisor.spawn("engine.recovery", self.recovery.run)
        self.supervisor.spawn("engine.planner", self.fire.run)
        self.supervisor.spawn("engine.sweep", self.fire.sweep)
        self.supervisor.spawn("engine.backpressure", self.backpressure.run)
        self.reconcile()

    # -- runs ------------------------------------------------------------------------------

    def _spawn(
        self, spec: pb.TaskSpec, rec: pb.RunRecord, mode: str | None, replaced: bytes | None
    ) -> None:
        kind = spec.WhichOneof("target") or ""
        run = Run(spec, rec, mode, replaced, kind)
        self.registry.spawn(run, self.execution.execute)

    def _retry(self, spec: pb.TaskSpec, rec: pb.RunRecord) -> None:
        self._spawn(spec, rec, None, None)

    async def trigger(self, spec: pb.TaskSpec) -> pb.RunRecord:
        """Run ``spec`` once now on this node (:meth:`peerd.engine.triggers.Triggers.trigger`:
        the CLAIMED or SKIPPED record; raises Unavailable or ResourceExhausted)."""
        return await self.triggers.trigger(spec)

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
        self.fire.stopping = True
        self.reconciler.stop()
        self.fire.wake()
        running = self.registry.tasks() + list(self.triggers.background)
        if running:
            await asyncio.wait(running, timeout=grace_s)
        await self.writer.flush(5.0)
        await self.supervisor.stop()


async def _no_handoff(node_id: str, request: ppb.HandoffRequest) -> list[str]:
    return []
