"""The planner: the tasks this node owns, where each stands, and which slots are due now.

Each owned task has a *cursor* (the last slot handled: claimed, recorded as skipped, or lost to
another claimant) and a heap entry at the fire instant of its next slot. A newly acquired task
has no cursor until it is loaded from the ledger (the newest run record; see
:meth:`peerd.engine.Engine`), or given by a handoff. Planning touches only the tasks whose next
slot is due, never every owned task.

:meth:`Planner.plan` turns due tasks into :class:`TaskPlan` s with :func:`peerd.core.plan.plan_due`
and the task's catch-up policy, within two budgets:

* **Admission** (backpressure): at most ``admit(kind)`` new runs per executor kind, the room
  the node has for runs it could start soon (see :mod:`peerd.engine.facade`). A due task that
  does not fit is not planned: it stays due at the head of the heap, its cursor does not move,
  and nothing is claimed for it, so an overloaded node never claims more than it can run. Its
  slots become late, and past the misfire threshold its catch-up policy decides (by default:
  run the latest, record the others SKIPPED). Higher priority tasks are admitted first.
* **Replay rate**: missed slots that the catch-up policy replays draw on the node's share of
  the cluster-wide ``--catch-up-rate`` (:class:`peerd.core.ratelimit.TokenBucket`); single
  catch-up runs (SKIP, RUN_ONCE) before bulk replays (RUN_ALL).

Tasks are compiled with the node's time-zone rules (:mod:`peerd.core.tzrules`). A task whose
cursor was computed with other rules (the ledger's newest record names another tzdata version:
the cluster switched versions) resumes after the local time that record covered
(:meth:`Planner.resume`), so a day's run is not repeated at the instant the new rules give it.

**Claim-ahead.** A task without an overlap lock (ALLOW) enters the heap ``claim_ahead`` before
its fire instant and its slots are planned and claimed then; the run waits for its fire instant
after the claim (:mod:`peerd.engine.execution`), so the claim transaction's latency is not in
the run's lateness, and the claims of slots firing within ``claim_ahead`` of each other share a
transaction. A task with a lock is planned at its fire instant: its lock is taken by the claim,
and must not be taken (nor the run skipped as busy) while the previous run may still finish.

After the claims, :meth:`Planner.commit` moves each cursor to the last slot whose claim settled
(claimed, lost to another claimant, or recorded), in slot order: a slot whose claim failed is
planned again, one that settled never is.

**Updates** (:meth:`Planner.update`). A new spec for an owned task that keeps its schedule
(target, headers, policies, priority, description...) replaces the spec in place: the cursor,
the heap entry and the plan in flight stay, and the next slot planned uses the new spec. A
new schedule (:mod:`peerd.core.task_schedule`: the previous one up to the change time, the new
one after) is compiled and the task planned again from ``min(cursor, change time)``: slots of
the old schedule still due before the change fire, slots of the new one after the change all
fire (a slot this node claimed under the old spec after the change, before its watch delivered
the update, is a lost race if the new schedule has it too), and a plan in flight under the old
schedule no longer moves the cursor.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable, Collection, Iterable
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from peerd.core.overlap import needs_lock
from peerd.core.plan import CATCH_UP_RUN_ALL, CatchUp, Plan, catch_up_from_proto, plan_due
from peerd.core.preview import local_time
from peerd.core.ratelimit import TokenBucket
from peerd.core.records import slot_ms
from peerd.core.task_schedule import TaskSchedule, task_schedule
from peerd.core.tzrules import TimeZoneRules
from peerd.errors import PeerdError
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

MAX_FIRE = 1000
"""Most slots of one task planned per tick (an ALLOW task far behind catches up in steps)."""


@dataclass(eq=False, slots=True)
class Owned:
    """A task this node plans. ``cursor`` is the last slot handled (None until loaded);
    ``next_at`` the fire instant (slot + jitter) of the next slot to plan.

    The spec is kept as its serialized bytes (:attr:`stored`) with the few fields planning
    reads every tick (:attr:`id`, :attr:`kind`, :attr:`priority`, :attr:`overlap`,
    :attr:`paused_until`); :meth:`decode_spec` decodes the rest when a run needs it (at claim
    time). A decoded ``pb.TaskSpec`` kept per owned task cost about 1.3 KiB of upb arena for a
    100-byte spec (docs/performance.md, Part 2); the bytes cost their length plus 33 bytes.
    """

    spec: InitVar[pb.TaskSpec]
    compiled: TaskSchedule
    generation: int
    catch_up: CatchUp
    cursor: datetime | None = None
    next_at: datetime | None = None
    claims_since_trim: int = 0
    unschedulable: tuple[datetime, datetime] | None = None
    """When, before this node acquired the task, no live member was eligible for it (see
    :meth:`peerd.engine.ownership.OwnershipView.ineligible_window`): slots skipped from that
    period are recorded as ``unschedulable``."""
    id: str = field(init=False)
    stored: bytes = field(init=False)
    """The spec, serialized deterministically (:meth:`holds` compares it)."""
    kind: str = field(init=False)
    """The executor kind (``TaskSpec.target``)."""
    priority: int = field(init=False)
    overlap: int = field(init=False)
    """``TaskSpec.overlap`` (a ``pb.OverlapPolicy`` number)."""
    paused_until: datetime | None = field(init=False)
    """``TaskSpec.resumed_at``: slots before it were missed while the task was paused."""

    def __post_init__(self, spec: pb.TaskSpec) -> None:
        self.set_spec(spec)

    def set_spec(self, spec: pb.TaskSpec) -> None:
        """Keep ``spec`` (its bytes and the fields planning reads)."""
        self.id = spec.id
        self.stored = spec.SerializeToString(deterministic=True)
        self.kind = sys.intern(spec.WhichOneof("target") or "")
        self.priority = spec.priority
        self.overlap = spec.overlap
        self.paused_until = spec.resumed_at.ToDatetime(UTC) if spec.HasField("resumed_at") else None

    def decode_spec(self) -> pb.TaskSpec:
        """The spec, decoded from :attr:`stored` (a new message each call: a few µs)."""
        return pb.TaskSpec.FromString(self.stored)

    def holds(self, spec: pb.TaskSpec) -> bool:
        """Whether ``spec`` is the spec kept (same serialized bytes)."""
        return self.stored == spec.SerializeToString(deterministic=True)

    def fire_at(self, slot: datetime) -> datetime:
        """When ``slot`` fires: the slot plus its deterministic jitter."""
        return self.compiled.fire_at(self.id, slot)

    def rules_of(self, slot: datetime) -> tuple[str, str]:
        """What a record of ``slot`` says about the time-zone rules that computed it:
        ``(tzdata_version, local_time)`` (:func:`peerd.core.records.claim_record`; empty
        strings when the schedule does not depend on them)."""
        piece = self.compiled.piece_of(slot)
        version = piece.tzdata_version
        return (version, local_time(slot, piece.zone)) if version else ("", "")


@dataclass(eq=False)
class TaskPlan:
    """One task's plan for this tick, and which of its slots have settled."""

    owned: Owned
    plan: Plan
    generation: int
    """The task's generation when it was planned (a newer one: its schedule changed since)."""
    settled: set[int] = field(default_factory=set)
    """``slot_ms`` of the slots whose claim settled."""

    @property
    def slots(self) -> list[datetime]:
        """The listed slots in order: skipped ones first, then the ones to fire."""
        return [s for s, _ in self.plan.skipped] + list(self.plan.fire)


class Planner:
    """The owned tasks of one node (see the module docstring).

    Args:
        node_id: for log lines.
        misfire_threshold: the node's default (``--misfire-threshold``).
        kinds: the executor kinds this node has; a task of another kind (written by a newer
            peerd, say) is refused rather than left due forever.
        rules: the node's time-zone rules; every schedule is compiled with them.
        claim_ahead: how long before their fire instant the slots of tasks without an overlap
            lock are planned and claimed (see "Claim-ahead" in the module docstring).
    """

    def __init__(
        self,
        node_id: str,
        misfire_threshold: timedelta,
        kinds: Collection[str] = (),
        *,
        rules: TimeZoneRules,
        claim_ahead: timedelta = timedelta(0),
    ) -> None:
        self.kinds = frozenset(kinds)
        self.claim_ahead = claim_ahead
        self.rules = rules
        self.owned: dict[str, Owned] = {}
        self.invalid: dict[str, str] = {}
        """Tasks this node should own but cannot plan, with the reason (a spec it cannot
        decode, e.g. written by a newer peerd)."""
        self.to_load: set[str] = set()
        """Owned tasks whose cursor is still to be read from the ledger."""
        self.misfire_threshold = misfire_threshold
        self._heap: list[tuple[float, int, str]] = []
        self._backlog: dict[str, list[tuple[int, bool, float, int, str]]] = {}
        self._queued: set[str] = set()
        self._generation = 0
        self.acquired = 0
        """Tasks acquired since start (a count that never decreases)."""
        self._log = log.bind(node_id=node_id)

    # -- owning ----------------------------------------------------------------------------

    def acquire(
        self,
        spec: pb.TaskSpec,
        cursor: datetime | None = None,
        unschedulable: tuple[datetime, datetime] | None = None,
    ) -> Owned | None:
        """Start planning ``spec`` (from ``cursor``, or once its cursor is loaded). A spec this
        node cannot decode is logged, listed in :attr:`invalid` and not planned; None.
        ``unschedulable``: see :attr:`Owned.unschedulable`."""
        kind = spec.WhichOneof("target") or ""
        if self.kinds and kind not in self.kinds:
            self._refuse(spec.id, f"task.target: this node has no executor for {kind or 'none'!r}")
            return None
        try:
            compiled = task_schedule(spec, rules=self.rules)
            catch_up = catch_up_from_proto(spec, self.misfire_threshold)
        except (PeerdError, ValueError) as exc:
            self._refuse(spec.id, str(exc))
            return None
        self.invalid.pop(spec.id, None)
        self._generation += 1
        self.acquired += 1
        o = Owned(spec, compiled, self._generation, catch_up, unschedulable=unschedulable)
        self.owned[o.id] = o
        if cursor is None:
            self.to_load.add(o.id)
        else:
            self.set_cursor(o, cursor)
        return o

    def update(self, spec: pb.TaskSpec) -> Owned | None:
        """Plan ``spec``, a new version of an owned task (see "Updates" in the module
        docstring); a task not owned yet is acquired. A spec this node cannot plan is refused
        like in :meth:`acquire`; None."""
        o = self.owned.get(spec.id)
        if o is None:
            return self.acquire(spec)
        kind = spec.WhichOneof("target") or ""
        if self.kinds and kind not in self.kinds:
            self._refuse(spec.id, f"task.target: this node has no executor for {kind or 'none'!r}")
            return None
        same = _slot_fields(o.decode_spec()) == _slot_fields(spec)
        try:
            compiled = o.compiled if same else task_schedule(spec, rules=self.rules)
            catch_up = catch_up_from_proto(spec, self.misfire_threshold)
        except (PeerdError, ValueError) as exc:
            self._refuse(spec.id, str(exc))
            return None
        o.set_spec(spec)
        o.catch_up = catch_up
        if same:
            return o
        o.compiled = compiled
        self._generation += 1
        o.generation = self._generation  # heap and backlog entries, plans in flight: stale
        self._queued.discard(spec.id)
        if o.cursor is not None:
            since = compiled.since
            cursor = o.cursor if since is None else min(o.cursor, since)
            self.set_cursor(o, max(cursor, compiled.floor))
        return o

    def handed_cursor(self, o: Owned, cursor: datetime) -> datetime:
        """Where to plan ``o`` from, given a cursor set by a node that may have planned it with
        another version of its spec (the ledger's newest slot, a handoff): see
        :meth:`peerd.core.task_schedule.TaskSchedule.handled_cursor`; never before the
        schedule's floor."""
        return max(o.compiled.floor, o.compiled.handled_cursor(cursor))

    def _refuse(self, task_id: str, reason: str) -> None:
        if self.invalid.get(task_id) != reason:
            self._log.error("task_spec_invalid", task_id=task_id, error=reason)
        self.invalid[task_id] = reason
        self.drop(task_id)

    def drop(self, task_id: str) -> None:
        """Stop planning ``task_id`` (its heap entries go stale)."""
        self.to_load.discard(task_id)
        self.owned.pop(task_id, None)
        self._queued.discard(task_id)

    def forget_invalid(self, keep: Iterable[str]) -> None:
        """Forget invalid tasks not in ``keep`` (deleted, or no longer owned here)."""
        keep = set(keep)
        for task_id in [t for t in self.invalid if t not in keep]:
            del self.invalid[task_id]

    def set_misfire_threshold(self, threshold: timedelta) -> None:
        """Use a new default misfire threshold (hot reload): every owned task's catch-up
        settings are recomputed (a task whose spec no longer decodes is refused)."""
        self.misfire_threshold = threshold
        for o in list(self.owned.values()):
            try:
                o.catch_up = catch_up_from_proto(o.decode_spec(), threshold)
            except (PeerdError, ValueError) as exc:
                self._refuse(o.id, str(exc))

    def set_cursor(self, o: Owned, cursor: datetime) -> None:
        """Place ``o`` at ``cursor`` (loaded, or handed over) and schedule its next slot."""
        o.cursor = cursor
        nxt = o.compiled.next_after(cursor)
        o.next_at = o.fire_at(nxt) if nxt is not None else None
        self.to_load.discard(o.id)
        self.push(o)

    def resume(self, o: Owned, cursor: datetime, newest: pb.RunRecord | None) -> datetime:
        """The cursor to plan ``o`` from, given the ledger's: ``cursor``, the slot of its newest
        scheduled record ``newest`` (None: the cursor is not a record's). When that record was
        computed with other time-zone rules, the slots these rules place at or before its local
        time already ran (:meth:`CompiledSchedule.after_local`) and are passed over; logged as
        ``tzdata_cursor_moved``."""
        version = o.compiled.tzdata_version
        if newest is None or not version or not newest.local_time:
            return cursor
        if newest.tzdata_version in ("", version):
            return cursor
        try:
            moved = o.compiled.after_local(cursor, newest.local_time)
        except ValueError:
            return cursor
        if moved != cursor:
            self._log.info(
                "tzdata_cursor_moved",
                task_id=o.id,
                cursor=cursor.isoformat(),
                local_time=newest.local_time,
                tzdata_was=newest.tzdata_version,
                tzdata=version,
                resume_after=moved.isoformat(),
            )
        return moved

    def ahead_of(self, o: Owned) -> timedelta:
        """How long before a slot's fire instant ``o`` plans it: :attr:`claim_ahead`, or 0 for a
        task with an overlap lock (its lock must be taken when the run starts)."""
        return timedelta(0) if needs_lock(o.overlap) else self.claim_ahead

    def push(self, o: Owned, at_s: float | None = None) -> None:
        """Schedule ``o`` for planning at its ``next_at`` less :meth:`ahead_of` (or at ``at_s``,
        epoch seconds)."""
        if o.next_at is not None:
            ts = (o.next_at - self.ahead_of(o)).timestamp() if at_s is None else at_s
            heapq.heappush(self._heap, (ts, o.generation, o.id))

    def next_due_s(self) -> float | None:
        """Epoch seconds of the earliest entry not yet due-collected (may be stale), or None."""
        return self._heap[0][0] if self._heap else None

    def next_is_early(self) -> bool:
        """Whether the earliest entry is a claim-ahead one (its task has no overlap lock and
        :attr:`claim_ahead` is set): planning it a little later still claims it before its
        fire instant."""
        o = self.owned.get(self._heap[0][2]) if self._heap else None
        return o is not None and self.ahead_of(o) > timedelta(0)

    @property
    def backlog(self) -> int:
        """Due tasks waiting for admission (see :meth:`plan`)."""
        return len(self._queued)

    # -- planning --------------------------------------------------------------------------

    def collect_due(self, now: datetime) -> None:
        """Move the tasks due at ``now`` from the time heap to their kind's backlog."""
        now_s = now.timestamp()
        while self._heap and self._heap[0][0] <= now_s:
            ts, gen, task_id = heapq.heappop(self._heap)
            o = self.owned.get(task_id)
            if o is None or o.generation != gen or o.cursor is None or task_id in self._queued:
                continue
            self._queued.add(task_id)
            rank = (-o.priority, o.catch_up.policy == CATCH_UP_RUN_ALL, ts, gen, task_id)
            heapq.heappush(self._backlog.setdefault(o.kind, []), rank)

    def _admit(self, kind: str, room: int) -> list[Owned]:
        """Up to ``room`` backlog tasks of ``kind``, best first (priority, then due time)."""
        backlog = self._backlog.get(kind, [])
        out: list[Owned] = []
        while backlog and len(out) < room:
            *_, gen, task_id = heapq.heappop(backlog)
            o = self.owned.get(task_id)
            if o is not None and o.generation == gen and o.cursor is not None:
                self._queued.discard(task_id)  # a stale entry leaves a current one queued
                out.append(o)
        return out

    def plan(
        self,
        now: datetime,
        admit: dict[str, int],
        replay: TokenBucket,
        mono_s: float,
        skip_record_limit: int,
    ) -> list[TaskPlan]:
        """Plan the backlog at ``now`` within the admission budget ``admit`` (new runs per
        executor kind; decremented in place) and the replay bucket. Tasks that do not fit stay
        in the backlog (:attr:`backlog`), ahead of tasks that become due later."""
        budget = replay.available(mono_s)
        plans: list[TaskPlan] = []
        for kind in list(self._backlog):
            room = admit.get(kind, 0)
            while room > 0:
                batch = self._admit(kind, room)
                if not batch:
                    break
                for o in batch:
                    plan = self._plan_one(o, now, max(1, room), budget, skip_record_limit)
                    budget -= plan.missed_fired
                    replay.take(plan.missed_fired, mono_s)
                    room -= max(1, len(plan.fire))
                    plans.append(TaskPlan(o, plan, o.generation))
            admit[kind] = room
        return plans

    def _plan_one(
        self, o: Owned, now: datetime, room: int, budget: int, skip_record_limit: int
    ) -> Plan:
        assert o.cursor is not None
        return plan_due(
            o.compiled,
            o.cursor,
            now,
            o.catch_up,
            fire_at=o.fire_at,
            paused_until=o.paused_until,
            unschedulable=o.unschedulable,
            # One lock-taking claim per task per round (see peerd.coord.ledger); the rest of
            # its due slots are planned at once in the next tick.
            max_fire=min(room, 1 if needs_lock(o.overlap) else MAX_FIRE),
            replay_budget=budget,
            # As many SKIPPED records as the ledger keeps, so an audit of what is kept finds no
            # gap; the count in the log is always exact.
            skip_record_limit=skip_record_limit,
            ahead=self.ahead_of(o),
        )

    def commit(self, tp: TaskPlan, now: datetime, replay_at_s: Callable[[], float]) -> int:
        """Move the task's cursor over its settled slots and schedule it again.

        Returns:
            How many of its slots settled (for the trim cadence).
        """
        o, plan = tp.owned, tp.plan
        if self.owned.get(o.id) is not o or o.generation != tp.generation:
            return len(tp.settled)  # released, re-acquired or rescheduled while claiming
        slots = tp.slots
        done = 0
        while done < len(slots) and slot_ms(slots[done]) in tp.settled:
            done += 1
        if done == len(slots):
            cursor, next_at = plan.cursor, plan.next_at
        elif done:
            cursor = slots[done - 1]
            nxt = o.compiled.next_after(cursor)
            next_at = o.fire_at(nxt) if nxt is not None else None
        else:
            assert o.cursor is not None  # only tasks with a cursor are planned
            cursor, next_at = o.cursor, o.next_at
        if o.cursor is None or cursor >= o.cursor:
            o.cursor, o.next_at = cursor, next_at
        else:  # a handoff moved the cursor ahead meanwhile
            nxt = o.compiled.next_after(o.cursor)
            o.next_at = o.fire_at(nxt) if nxt is not None else None
        if done == len(slots) and o.next_at is not None and o.next_at <= now and not plan.fire:
            self.push(o, now.timestamp() + max(0.01, replay_at_s()))  # wait for replay budget
        else:
            self.push(o)
        return len(tp.settled)


def _slot_fields(spec: pb.TaskSpec) -> tuple[bytes, ...]:
    """What a task's slots depend on (its :func:`peerd.core.task_schedule.task_schedule`)."""
    return tuple(
        getattr(spec, name).SerializeToString(deterministic=True)
        for name in ("schedule", "schedule_since", "previous_schedule", "created_at")
    )
