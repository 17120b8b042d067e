"""The fire loop: plan the due slots of owned tasks, claim them, start the claimed runs.

One pass (:meth:`FireLoop.tick`): move the tasks now due into the planner's backlog, plan as many
as the node has room for (admission), claim the plan's records in budget-sized batches, start
every claimed CLAIMED record through the run registry the moment its claim settles, and move
each task's cursor over its settled slots (:meth:`peerd.engine.planner.Planner.commit`) — also
when a later batch failed, so nothing is claimed or run twice and nothing is lost.

Between passes the loop sleeps until the next task is due, or, while saturated (due tasks wait
for room), until a run leaves the registry. It does not claim while this node has no live lease
(claim_ready) or while etcd has no space (NOSPACE: claims are nested transactions, which etcd 3.4
lets past its quota). Errors: a rejected lease re-registers, an unreachable etcd pauses claims
and checks the lease, anything else backs off; the loop itself never stops.

Room: a pool admits runs up to :data:`QUEUE_FACTOR` times its limit (its slots, plus as many
waiting to start), counting the runs *in flight* (due, running, or waiting for their final
record); the node-wide limit adapts to the event loop's lag (:mod:`peerd.engine.backpressure`).
Runs claimed ahead that wait for their fire instant take no room: they hold no slot and no CPU,
and a node firing 330 slots/s holds ~90 of them (300 ms of claim-ahead), which, counted, kept
the node-wide room (2 x the adaptive limit, lowered to 50-60 by a busy loop) at the edge and
the node saturated on and off at 1,000 webhooks/s (issue 13, third round: the lateness tail).
Every run in the registry counts against the node's configured room
(:data:`QUEUE_FACTOR` x ``max_concurrent_runs``), and the runs of a kind claimed ahead have a
budget of their own, as large as the kind's room: a burst of slots due at one instant is claimed
ahead no faster than the kind's pool can queue them, and the rest wait in the backlog, where the
misfire threshold and the catch-up policy apply (a run claimed ahead is not checked again).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog

from peerd.clock import Clock, wait_event
from peerd.config import NodeConfig
from peerd.coord.ledger import ClaimResult, Ledger
from peerd.core.backoff import Backoff
from peerd.core.budget import MAX_TXN_OPS
from peerd.core.overlap import first_mode
from peerd.core.plan import SKIP_REASON_PB
from peerd.core.ratelimit import TokenBucket, share
from peerd.core.records import claim_record, from_ms, run_key, skipped_record, ts_ms
from peerd.engine.batches import in_batches
from peerd.engine.claims import Claim, Claims
from peerd.engine.planner import Owned, Planner, TaskPlan
from peerd.engine.recovery import RECENT_SCAN, OwnerLostRecovery
from peerd.engine.registry import RunRegistry
from peerd.engine.stats import Load
from peerd.engine.writer import RecordWriter
from peerd.errors import LeaseLost, PeerdError, Unavailable
from peerd.runner.pools import Pools
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

LOAD_BATCH = 1024
"""Most cursors one pass of the loop loads; the rest in the next passes (a restarted node's
share at 100,000 tasks is 33,000 cursors: loaded all at once, they stalled its event loop)."""
LOAD_IN_FLIGHT = 4
"""Cursor reads (of :data:`~peerd.core.budget.MAX_TXN_OPS` tasks each) in flight at a time. One
range read per task, 32 in flight, made a restarted node and its peers send 33,000 reads at
100,000 tasks, which etcd and the nodes' gRPC clients served on the same two cores as
everything else (docs/performance.md, Part 2, fourth round); batched, 1/128 of the calls."""

TRIM_EVERY = 20
"""Trim a task's ledger after this many of its slots settled."""
MAX_SLEEP_S = 1.0
"""The loop wakes at least this often (seconds) even with nothing due."""
QUEUE_FACTOR = 2
"""A pool admits runs up to this many times its limit (its slots, plus as many waiting)."""
SATURATED_PAUSE_S = 0.05
"""While saturated, the loop waits this long after room frees up, so a claim batch gathers the
room of many finished runs instead of one transaction per run (measured with
``bench/cluster.py --overload``: 10 ms gave claim transactions of one or two slots)."""
AHEAD_TICK_SHARE = 0.25
"""With claim-ahead (:mod:`peerd.engine.planner`), the loop plans at most every this share of
``claim_ahead`` while the next task due is a claim-ahead one: its slots are still claimed at
least 3/4 of ``claim_ahead`` before they fire, and the slots coming due meanwhile share the claim
transaction (a node firing 1,000 slots/s claims ~75 per transaction with 300 ms, where without
the pause each claim round takes what came due during the previous round's transaction)."""
SWEEP_MIN_S, SWEEP_MAX_S = 60.0, 3600.0
"""Every owned task's ledger is trimmed by age every ``runs_max_age / 10`` within these bounds
(seconds), besides the trim after every :data:`TRIM_EVERY` of its slots, so tasks that stopped
firing (paused, one-shot, ended) lose their old records too."""


class Lease(Protocol):
    """This node's registration as the fire loop needs it."""

    @property
    def lease_id(self) -> int: ...

    @property
    def claim_ready(self) -> asyncio.Event: ...

    def lease_lost(self) -> None: ...

    def etcd_suspect(self) -> None: ...


Spawn = Callable[[pb.TaskSpec, pb.RunRecord, str | None, bytes | None], None]
"""``spawn(spec, record, claim_mode, replaced_lock_value)``: start a claimed run."""


class FireLoop:
    """The planning and claiming loop of one node (see the module docstring).

    Args:
        node_id: this node.
        settings: ``() -> the node's configuration`` (claim batch, runs kept, catch-up rate).
        lease: this node's registration.
        planner, claims, registry, pools, writer, recovery, ledger: the engine's parts.
        spawn: starts a claimed run.
        etcd_space: set while etcd has space.
        clock: time source.
    """

    def __init__(
        self,
        node_id: str,
        settings: Callable[[], NodeConfig],
        lease: Lease,
        planner: Planner,
        claims: Claims,
        registry: RunRegistry,
        pools: Pools,
        writer: RecordWriter,
        recovery: OwnerLostRecovery,
        ledger: Ledger,
        spawn: Spawn,
        etcd_space: asyncio.Event,
        clock: Clock,
    ) -> None:
        self.node_id = node_id
        self.settings = settings
        self.lease = lease
        self.planner = planner
        self.claims = claims
        self.registry = registry
        self.pools = pools
        self.writer = writer
        self.recovery = recovery
        self.ledger = ledger
        self.spawn = spawn
        self.etcd_space = etcd_space
        self.clock = clock
        self.claimed = 0
        """Scheduled slots claimed (since start)."""
        self.skipped: Counter[int] = Counter()
        """Slots this node recorded SKIPPED per ``pb.SkipReason`` (catch-up policy and overlap;
        a record standing for several slots counts them all), since start."""
        rate = share(settings().catch_up_rate, 1)
        # Empty at start: the first node back after a cluster-wide outage sees itself as the
        # only member (and takes the whole rate) until the others register; a full bucket
        # would add a burst on top (bench/catchup.py: ~2x the rate for a second).
        self.replay = TokenBucket(rate, max(1.0, rate), clock.monotonic(), tokens=0.0)
        self.stopping = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._saturated_since: float | None = None
        self._log = log.bind(node_id=node_id)
        registry.on_leave(self._room.set)

    def wake(self) -> None:
        """Plan now (ownership, a spec or a cursor changed)."""
        self._wake.set()

    def set_owners(self, count: int) -> None:
        """Take this node's share of the cluster-wide catch-up rate among ``count`` owning
        members; the burst is one second of that share."""
        rate = share(self.settings().catch_up_rate, max(1, count))
        self.replay.set_rate(rate, self.clock.monotonic(), max(1.0, rate))

    @property
    def capacity(self) -> int:
        """Runs the node admits at most now (the adaptive node limit times the factor)."""
        return QUEUE_FACTOR * self.pools.node.limit

    def load(self) -> Load:
        """How busy this node is: the runs in flight (those that count against
        :attr:`capacity`; runs claimed ahead that wait for their fire instant do not), the
        capacity, and the due tasks waiting for room."""
        return Load(self.registry.in_flight(), self.capacity, self.planner.backlog)

    def room_per_kind(self) -> dict[str, int]:
        """New runs each executor kind may admit now: the room of the pools (their limits
        times :data:`QUEUE_FACTOR`) left by the runs in flight, and by the runs of the kind
        claimed ahead (a budget of the same size, apart), within the configured room of the node
        left by every run in the registry (see the module docstring)."""
        registry = self.registry
        node_room = min(
            QUEUE_FACTOR * self.pools.node.limit - registry.in_flight(),
            QUEUE_FACTOR * self.settings().max_concurrent_runs - registry.active(),
        )
        room = {}
        for kind, pool in self.pools.kinds.items():
            taken = max(registry.in_flight(kind), registry.ahead(kind))
            room[kind] = max(0, min(node_room, QUEUE_FACTOR * pool.limit - taken))
        return room

    async def sweep(self) -> None:
        """Trim every owned task's ledger by age, now and then (supervised by the engine)."""
        while True:
            age_s = self.settings().runs_max_age.total_seconds()
            await self.clock.sleep(min(SWEEP_MAX_S, max(SWEEP_MIN_S, age_s / 10)))
            for task_id in list(self.planner.owned):
                self.writer.trim(task_id)

    async def run(self) -> None:
        """Plan and claim until :attr:`stopping` (supervised by the engine)."""
        backoff = Backoff(0.1, 2.0)
        while not self.stopping:
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
                await self.tick()
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
            if self.planner.next_is_early():  # gather a claim batch: see AHEAD_TICK_SHARE
                delay = max(delay, self.planner.claim_ahead.total_seconds() * AHEAD_TICK_SHARE)
        if delay > 0 and not self.planner.to_load:
            await wait_event(self.clock, self._wake, delay)

    async def _load_cursors(self) -> None:
        """Load the cursors of up to :data:`LOAD_BATCH` owned tasks from the ledger, in reads of
        :data:`~peerd.core.budget.MAX_TXN_OPS` tasks, :data:`LOAD_IN_FLIGHT` at a time. Tasks
        of a failed read stay to load; the first failure is raised after the others settled
        (the loop backs off as for a failed claim)."""
        ids = list(itertools.islice(self.planner.to_load, LOAD_BATCH))

        async def load(batch: list[str]) -> None:
            found = await self.ledger.recent_of(batch, RECENT_SCAN)
            for task_id in batch:
                self._loaded(task_id, found.get(task_id, []))

        failed = await in_batches(ids, MAX_TXN_OPS, LOAD_IN_FLIGHT, load)
        if failed:
            raise failed[0][1]

    def _loaded(self, task_id: str, recent: list[tuple[pb.RunRecord, int]]) -> None:
        """Place an owned task at the cursor its newest records give (``recent``: newest
        first, with mod revisions); nothing when it is no longer owned or already placed (a
        handoff's cursor came first)."""
        o = self.planner.owned.get(task_id)
        if o is None or task_id not in self.planner.to_load:
            return
        # Manual runs (TriggerTask: slot = the time of the trigger) are not schedule slots:
        # the cursor is the newest scheduled one. With none among the records read, the
        # floor is safe: slots already claimed are lost races, never run twice.
        newest = next((r for r, _ in recent if not r.manual), None)
        self.recovery.note(recent)
        # Slots missed while the task was paused are planned like any missed slot: the
        # catch-up policy decides (skipped ones are recorded with SKIP_PAUSED). The newest
        # slot may have been claimed under an older spec of the task (see handed_cursor), or
        # computed with other time-zone rules (see resume).
        cursor = o.compiled.floor
        if newest is not None:
            slot = from_ms(ts_ms(newest.scheduled_at))
            cursor = self.planner.resume(o, self.planner.handed_cursor(o, slot), newest)
        self.planner.set_cursor(o, cursor)

    async def tick(self) -> None:
        """One pass: plan what is due and fits, claim it, start what was claimed."""
        now = self.clock.now()
        mono = self.clock.monotonic()
        self.planner.collect_due(now)
        # Saturated: a task's skipped slots go in one record (it stands for all of them), so
        # bookkeeping does not grow with the load the node cannot run.
        limit = 1 if self._saturated_since is not None else self.settings().runs_keep
        plans = self.planner.plan(now, self.room_per_kind(), self.replay, mono, limit)
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
                tp.settled.add(ts_ms(claim.record.scheduled_at))
            if not res.claimed:
                return
            rec = claim.record
            if rec.status == pb.CLAIMED:
                self.claimed += 1
                self.spawn(claim.spec, rec, claim.mode, res.replaced)
            elif rec.status == pb.SKIPPED:
                self.skipped[rec.skip_reason] += max(1, rec.skipped_slots)

        try:
            await self.claims.claim(claims, settled)
        finally:
            self._commit(plans, now, mono)

    def _claims_of(self, tp: TaskPlan, now: datetime) -> list[Claim]:
        o, plan = tp.owned, tp.plan
        spec = o.decode_spec()  # once per planned task; the runs keep it, the planner does not
        lease_id = self.lease.lease_id
        out = []
        unlisted = plan.skipped_count - len(plan.skipped)
        for i, (slot, reason) in enumerate(plan.skipped):
            covers = None
            if i == 0 and unlisted > 0 and o.cursor is not None:
                # The oldest listed record stands for the skipped slots not listed before it.
                first = o.compiled.next_after(o.cursor)
                covers = (first, unlisted + 1) if first is not None else None
            rec = self._skipped(o, spec.node_selector, slot, reason, now, lease_id, covers)
            out.append(Claim(spec, rec, None))
        mode = first_mode(o.overlap)
        known = plan.fire_instants if len(plan.fire_instants) == len(plan.fire) else None
        for i, slot in enumerate(plan.fire):
            version, local = o.rules_of(slot)
            rec = claim_record(
                o.id,
                slot,
                self.node_id,
                lease_id,
                now,
                fire_at=known[i] if known is not None else o.fire_at(slot),
                priority=o.priority,
                tzdata_version=version,
                local_time=local,
            )
            out.append(Claim(spec, rec, mode))
        return out

    def _skipped(
        self,
        o: Owned,
        node_selector: str,
        slot: datetime,
        reason: str,
        now: datetime,
        lease_id: int,
        covers: tuple[datetime, int] | None,
    ) -> pb.RunRecord:
        version, local = o.rules_of(slot)
        rec = skipped_record(
            o.id,
            slot,
            o.fire_at(slot),
            reason,
            self.node_id,
            lease_id,
            now,
            policy=o.catch_up.policy,
            misfire_threshold=o.catch_up.misfire_threshold,
            window=o.catch_up.window,
            covers=covers,
            node_selector=node_selector,
            tzdata_version=version,
            local_time=local,
        )
        assert rec.skip_reason == SKIP_REASON_PB[reason]
        return rec

    def _commit(self, plans: list[TaskPlan], now: datetime, mono: float) -> None:
        skipped: dict[str, int] = {}
        tasks_skipping = 0
        for tp in plans:
            settled = self.planner.commit(tp, now, lambda: self.replay.next_at_s(mono) - mono)
            o = tp.owned
            o.claims_since_trim += settled
            if o.claims_since_trim >= TRIM_EVERY:
                o.claims_since_trim = 0
                self.writer.trim(o.id)
            if tp.plan.skipped_count and len(tp.settled) == len(tp.slots):
                tasks_skipping += 1
                for reason, n in tp.plan.skipped_counts.items():
                    if n:
                        skipped[reason] = skipped.get(reason, 0) + n
        if skipped:
            total = sum(skipped.values())
            self._log.info("slots_skipped", count=total, tasks=tasks_skipping, reasons=skipped)

    def _note_saturation(self, mono: float) -> None:
        backlog = self.planner.backlog
        if backlog and self._saturated_since is None:
            self._saturated_since = mono
            self._log.warning(
                "node_saturated",
                backlog=backlog,
                active_runs=self.registry.in_flight(),
                claimed_ahead=self.registry.ahead(),
                capacity=self.capacity,
            )
        elif not backlog and self._saturated_since is not None:
            self._log.info(
                "node_saturation_cleared", after_s=round(mono - self._saturated_since, 3)
            )
            self._saturated_since = None
