"""Planning: which slots of one task to run, skip or leave for later, per catch-up policy (pure).

The planner is called with the task's *cursor* (the last slot already handled: fired or recorded
as skipped) and ``now``. Each slot ``s`` has a *fire instant* ``fire_at(s)`` (the slot plus the
task's deterministic jitter; the identity without jitter), strictly increasing in ``s`` and never
before ``s``. Rules:

* **Due**: ``fire_at(s) <= now + ahead`` (``ahead``: the engine's claim-ahead, 0 by default).
  Due slots are a prefix of the slots in ``(cursor, now + ahead]``; the first slot whose fire
  instant is after that is *not due yet*: the cursor never passes it and ``next_at`` is its fire
  instant. A slot due ahead of its fire instant is on time (it is claimed early and started at
  its fire instant); it can serve as ``run_once``'s catch-up run.
* **On time**: due and ``now - fire_at(s) <= misfire_threshold``. On-time slots always fire.
* **Missed**: due and later than that. What happens to them is the catch-up policy
  (``TaskSpec.catch_up``, as in Kubernetes CronJob / anacron after downtime):

  - ``skip``: no missed slot runs; all are skipped.
  - ``run_once``: if no slot is on time, the *latest* missed slot fires (the catch-up run) and
    the older ones are skipped; if a slot is on time, it serves as the catch-up and every missed
    slot is skipped.
  - ``run_all``: missed slots with ``fire_at(s) >= now - window`` fire, oldest first; older ones
    are skipped (reason ``catch_up_window``).

* **Skip reasons**: ``catch_up_window`` (``run_all``, older than the window), else ``misfire``;
  but a skipped slot whose fire instant is before ``paused_until`` (the task's ``resumed_at``)
  gets ``paused`` instead: it was missed because the task was paused; and one whose fire
  instant is in the ``unschedulable`` interval ``[start, end)`` (and not paused) gets
  ``unschedulable``: it was missed while no live node matched the task's node selector.
* **Order and limits**: the due slots form ``[skipped...][fired...]``, and ``fire`` lists the
  slots to run ascending, so replayed (missed) slots come before on-time ones. At most
  ``max_fire`` slots fire per call and at most ``replay_budget`` of them may be missed slots (the
  engine's cluster-wide replay rate limiter, :mod:`peerd.core.ratelimit`, gives the budget and is
  charged ``missed_fired``). When a limit cuts the list short the cursor stops at the last slot
  fired (or at the last skipped slot, or stays) and ``next_at`` is the fire instant of the next
  unplanned slot, ``<= now``: plan again as soon as there is budget. On-time slots never jump
  ahead of unplanned replays (the cursor is a single point), so while replays wait, later slots
  may become missed themselves; under ``run_all`` they are then replayed within the window.

Skipped slots are counted exactly per reason (``skipped_counts``) but only the most recent
``skip_record_limit`` are listed (to be written as SKIPPED run records). Counting is closed form
for ``every`` and calendar arithmetic for ``cron`` (see :mod:`peerd.core.schedule`), and
``fire_at`` is called only on a few slots near each boundary (``now + 0``, ``now - threshold``,
``now - window``, ``paused_until``), so a year of downtime with ``every 1s`` costs the same as a
minute of it. (Finding a boundary costs one ``fire_at`` call, plus one per slot whose jitter
carries it across the boundary: at most one such slot when jitter is less than the gap to the
next slot; larger jitter stays exact, just slower.)

Worked examples, ``every 1m`` anchored at 00:00, no jitter, cursor 00:00, threshold 30 s:

* ``skip``, ``now`` 01:00:10. Due 00:01 .. 01:00 (60 slots); 01:00 is 10 s late: on time, fires.
  00:01 .. 00:59 are missed: skipped, ``skipped_counts["misfire"]`` 59. Cursor 01:00, ``next_at``
  01:01. At ``now`` 01:00:40 nothing is on time: nothing fires, 60 skipped, cursor 01:00.
* ``run_once``, ``now`` 01:00:40. All 60 are missed: 01:00 fires (``missed_fired`` 1),
  00:01 .. 00:59 are skipped (59, ``misfire``). At 01:00:10, 01:00 fires on time and the 59 are
  skipped (``missed_fired`` 0). With ``replay_budget`` 0 at 01:00:40: the 59 are skipped, 01:00
  waits: cursor 00:59, ``next_at`` 01:00 (<= now: plan again when there is budget).
* ``run_all``, window 10 min, ``now`` 01:00:10. The window starts at 00:50:10, so the missed
  slots 00:51 .. 00:59 replay, then 01:00 fires on time: ``fire`` 00:51 .. 01:00,
  ``missed_fired`` 9; 00:01 .. 00:50 are skipped (50, ``catch_up_window``). With
  ``replay_budget`` 3: ``fire`` 00:51 .. 00:53, cursor 00:53, ``next_at`` 00:54 (<= now).
* Paused from 00:00 to ``paused_until`` 00:30:00, any policy that skips: 00:01 .. 00:29 are
  skipped as ``paused``, later skipped slots keep their reason (``misfire`` or
  ``catch_up_window``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from peerd.core.task_schedule import Slots
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

CATCH_UP_SKIP = "skip"
CATCH_UP_RUN_ONCE = "run_once"
CATCH_UP_RUN_ALL = "run_all"
CATCH_UP_POLICIES = (CATCH_UP_SKIP, CATCH_UP_RUN_ONCE, CATCH_UP_RUN_ALL)
"""Values of :attr:`CatchUp.policy`."""

SKIP_MISFIRE = "misfire"
SKIP_CATCH_UP_WINDOW = "catch_up_window"
SKIP_PAUSED = "paused"
SKIP_UNSCHEDULABLE = "unschedulable"
SKIP_REASONS = (SKIP_MISFIRE, SKIP_CATCH_UP_WINDOW, SKIP_PAUSED, SKIP_UNSCHEDULABLE)
"""Reasons attached to skipped slots; keys of :attr:`Plan.skipped_counts`."""
SKIP_REASON_PB = {
    SKIP_MISFIRE: pb.SKIP_MISFIRE,
    SKIP_CATCH_UP_WINDOW: pb.SKIP_CATCH_UP_WINDOW,
    SKIP_PAUSED: pb.SKIP_PAUSED,
    SKIP_UNSCHEDULABLE: pb.SKIP_UNSCHEDULABLE,
}
"""Skip reason -> ``pb.SkipReason`` (for ``RunRecord.skip_reason``)."""

DEFAULT_CATCH_UP_WINDOW = timedelta(hours=1)
MAX_CATCH_UP_WINDOW = timedelta(days=7)
_POLICY_FROM_PB = {
    pb.CATCH_UP_POLICY_UNSPECIFIED: CATCH_UP_RUN_ONCE,
    pb.CATCH_UP_SKIP: CATCH_UP_SKIP,
    pb.CATCH_UP_RUN_ONCE: CATCH_UP_RUN_ONCE,
    pb.CATCH_UP_RUN_ALL: CATCH_UP_RUN_ALL,
}
_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CatchUp:
    """A task's catch-up policy (pure mirror of the ``TaskSpec`` fields).

    Attributes:
        policy: one of :data:`CATCH_UP_POLICIES`: ``"skip"``, ``"run_once"`` or ``"run_all"``.
        window: ``run_all`` only: missed slots are replayed only when their fire instant is
            ``>= now - window``.
        misfire_threshold: how late (``now - fire_at(slot)``) a slot may be planned and still be
            on time (inclusive).

    Raises:
        ValueError: from the constructor for an unknown policy or a negative duration.
    """

    policy: str
    window: timedelta
    misfire_threshold: timedelta

    def __post_init__(self) -> None:
        if self.policy not in CATCH_UP_POLICIES:
            raise ValueError(f"catch-up policy must be one of {CATCH_UP_POLICIES}")
        if self.window < timedelta(0) or self.misfire_threshold < timedelta(0):
            raise ValueError("catch-up window and misfire threshold must be >= 0")


def catch_up_from_proto(
    spec: pb.TaskSpec, default_threshold: timedelta, field: str = "task"
) -> CatchUp:
    """The :class:`CatchUp` of ``spec``.

    Defaults: ``catch_up`` unspecified -> ``run_once``; ``catch_up_window`` unset or 0 -> 1 h
    (as :mod:`peerd.core.validate` documents); ``misfire_threshold`` unset -> ``default_threshold``
    (the node's ``--misfire-threshold``), a set 0 is used as given. The finer range checks
    (window >= 1 s, threshold <= 1 day) are :func:`peerd.core.validate.validate_task`'s.

    Raises:
        InvalidArgument: ``{field}.catch_up`` for an unknown policy value,
            ``{field}.catch_up_window`` unless 0 <= window <= 7 days,
            ``{field}.misfire_threshold`` when negative.
        ValueError: when ``default_threshold`` is negative.
    """
    policy = _POLICY_FROM_PB.get(spec.catch_up)
    if policy is None:
        raise InvalidArgument(f"{field}.catch_up", f"unknown catch-up policy {spec.catch_up}")
    window = DEFAULT_CATCH_UP_WINDOW
    if spec.HasField("catch_up_window") and spec.catch_up_window.ToTimedelta():
        window = spec.catch_up_window.ToTimedelta()
        if not timedelta(0) <= window <= MAX_CATCH_UP_WINDOW:
            raise InvalidArgument(
                f"{field}.catch_up_window", f"must be between 0 and 7 days, got {window}"
            )
    threshold = default_threshold
    if spec.HasField("misfire_threshold"):
        threshold = spec.misfire_threshold.ToTimedelta()
        if threshold < timedelta(0):
            raise InvalidArgument(f"{field}.misfire_threshold", f"must be >= 0, got {threshold}")
    return CatchUp(policy, window, threshold)


@dataclass(frozen=True)
class Plan:
    """What to do with one task's due slots (slots are aware UTC datetimes, whole ms).

    Attributes:
        fire: slots to claim and run now, ascending: replayed missed slots first, then on-time
            ones.
        skipped: the most recent ``skip_record_limit`` skipped slots with their reason (one of
            :data:`SKIP_REASONS`), ascending; to be recorded as SKIPPED.
        skipped_counts: exact number of slots skipped per reason; every reason in
            :data:`SKIP_REASONS` is a key (0 when none).
        missed_fired: how many slots in ``fire`` are missed slots (replays, including the
            ``run_once`` catch-up run); the engine charges its replay rate limiter with it.
        cursor: the new cursor: the last slot handled (fired or skipped), or the old cursor.
        next_at: the fire instant of the first slot after the new cursor: after ``now`` normally;
            ``<= now`` only when ``max_fire`` or ``replay_budget`` cut the plan short (plan again
            when there is room). None when the schedule is exhausted.
    """

    fire: list[datetime]
    skipped: list[tuple[datetime, str]]
    skipped_counts: dict[str, int]
    missed_fired: int
    cursor: datetime
    next_at: datetime | None
    fire_instants: list[datetime] = field(default_factory=list, compare=False)
    """The fire instants of ``fire`` when planning computed them (the single on-time slot,
    :func:`plan_due`'s quick path), else empty."""

    @property
    def skipped_count(self) -> int:
        """Total slots skipped (>= ``len(skipped)``)."""
        return sum(self.skipped_counts.values())


def _no_skips() -> dict[str, int]:
    return dict.fromkeys(SKIP_REASONS, 0)


def _skips(
    schedule: Slots,
    cursor: datetime,
    skip_b: datetime,
    reason: str,
    bounds: tuple[datetime, datetime, datetime],
    limit: int,
) -> tuple[dict[str, int], list[tuple[datetime, str]], datetime]:
    """Counts per reason of the skipped slots ``(cursor, skip_b]``, the newest ``limit`` of
    them with their reason, and the last of them (``cursor`` when none). ``bounds`` =
    ``(pause_b, unsched_lo, unsched_hi)``: slots up to ``pause_b`` are ``paused``, those in
    ``(unsched_lo, unsched_hi]`` ``unschedulable``, the rest ``reason``."""
    counts = _no_skips()
    total = schedule.count_between(cursor, skip_b)
    if not total:
        return counts, [], cursor
    pause_b, lo, hi = bounds
    counts[SKIP_PAUSED] = schedule.count_between(cursor, pause_b)
    counts[SKIP_UNSCHEDULABLE] = schedule.count_between(lo, hi)
    counts[reason] = total - counts[SKIP_PAUSED] - counts[SKIP_UNSCHEDULABLE]

    def reason_of(slot: datetime) -> str:
        if slot <= pause_b:
            return SKIP_PAUSED
        return SKIP_UNSCHEDULABLE if lo < slot <= hi else reason

    tail = schedule.last_slots(cursor, skip_b, max(limit, 1))
    return counts, [(s, reason_of(s)) for s in tail] if limit else [], tail[-1]


def _one_on_time(
    schedule: Slots,
    cursor: datetime,
    due_by: datetime,
    on_time_from: datetime,
    fire_of: Callable[[datetime], datetime],
) -> Plan | None:
    """The plan when exactly one slot is due and it is on time (the steady state of a task
    that keeps up: one slot per tick), else None (:func:`plan_due`'s general path decides).

    The first slot after ``cursor`` fires by ``due_by`` (due) and not before ``on_time_from``
    (on time, so no slot is missed: fire instants increase with the slots), and the next one
    fires after ``due_by``: the plan fires that slot alone and skips nothing, whatever the
    catch-up policy, pause or unschedulable period (they decide only about missed slots). Two
    slot lookups and two ``fire_at`` calls, where the general path takes a dozen of each
    (measured in issue 13: planning 11 % of a node's CPU at 1,000 fires/s)."""
    first = schedule.next_after(cursor)
    if first is None:
        return None
    first_fire = fire_of(first)
    if not on_time_from <= first_fire <= due_by:
        return None
    second = schedule.next_after(first)
    next_at = None if second is None else fire_of(second)
    if next_at is not None and next_at <= due_by:
        return None
    return Plan([first], [], _no_skips(), 0, first, next_at, [first_fire])


def plan_due(
    schedule: Slots,
    cursor: datetime,
    now: datetime,
    catch_up: CatchUp,
    *,
    fire_at: Callable[[datetime], datetime] | None = None,
    paused_until: datetime | None = None,
    unschedulable: tuple[datetime, datetime] | None = None,
    max_fire: int = 1000,
    replay_budget: int | None = None,
    skip_record_limit: int = 100,
    ahead: timedelta = timedelta(0),
) -> Plan:
    """Plan the due slots of ``schedule`` after ``cursor`` (rules in the module docstring).

    Args:
        schedule: the task's compiled schedule (bounds and ``max_runs`` already applied).
        cursor: last slot handled (aware); slots at or before it are never planned again.
        now: current time (aware).
        catch_up: the task's policy, window and misfire threshold.
        fire_at: slot -> fire instant (aware): deterministic, strictly increasing, ``>= slot``
            (jitter); None = the slot itself.
        paused_until: when the task was last resumed (``TaskSpec.resumed_at``): skipped slots
            whose fire instant is before it get reason ``paused``. None = never paused.
        unschedulable: ``(start, end)`` (aware): skipped slots not paused whose fire instant is
            in ``[start, end)`` get reason ``unschedulable``. None = no such period known.
        max_fire: most slots in ``fire`` per call (>= 1).
        replay_budget: most *missed* slots in ``fire`` per call (>= 0); None = unlimited.
        skip_record_limit: most skipped slots listed (>= 0); the counts are always exact.
        ahead: claim-ahead (>= 0): slots firing by ``now + ahead`` are due (planned to fire,
            on time); missed slots are still judged against ``now``.

    Raises:
        ValueError: for naive datetimes, ``max_fire < 1``, ``replay_budget < 0``,
            ``skip_record_limit < 0``, or ``fire_at`` returning a time before its slot.
    """
    if cursor.tzinfo is None or now.tzinfo is None:
        raise ValueError("cursor and now must be timezone-aware")
    if paused_until is not None and paused_until.tzinfo is None:
        raise ValueError("paused_until must be timezone-aware")
    if unschedulable is not None and any(t.tzinfo is None for t in unschedulable):
        raise ValueError("unschedulable must be timezone-aware")
    if max_fire < 1 or skip_record_limit < 0 or (replay_budget is not None and replay_budget < 0):
        raise ValueError("need max_fire >= 1, skip_record_limit >= 0, replay_budget >= 0")
    if ahead < timedelta(0):
        raise ValueError("need ahead >= 0")

    def fire_of(slot: datetime) -> datetime:
        if fire_at is None:
            return slot
        t = fire_at(slot)
        if t < slot:
            raise ValueError(f"fire_at({slot.isoformat()}) = {t.isoformat()} is before the slot")
        return t

    quick = _one_on_time(schedule, cursor, now + ahead, now - catch_up.misfire_threshold, fire_of)
    if quick is not None:
        return quick

    def split(x: datetime) -> datetime:
        """Bound b >= cursor: slots in (cursor, b] fire before ``x``, later slots at/after it."""
        b = x - _US
        if fire_at is None:
            return max(b, cursor)
        while b > cursor:
            last = schedule.last_slots(cursor, b, 1)
            if not last or fire_of(last[0]) < x:
                break
            b = last[0] - _US
        return max(b, cursor)

    if now + ahead <= cursor:
        nxt = schedule.next_after(cursor)
        return Plan([], [], _no_skips(), 0, cursor, None if nxt is None else fire_of(nxt))
    due_b = split(now + ahead + _US)  # due: (cursor, due_b]
    on_time_b = min(split(now - catch_up.misfire_threshold), due_b)  # missed: (cursor, on_time_b]
    # the due slots are [skipped: (cursor, skip_b]] [missed to fire: (skip_b, missed_b]] [on time]
    skip_b, missed_b, reason = on_time_b, on_time_b, SKIP_MISFIRE
    if catch_up.policy == CATCH_UP_RUN_ALL:
        skip_b, reason = min(split(now - catch_up.window), on_time_b), SKIP_CATCH_UP_WINDOW
    elif catch_up.policy == CATCH_UP_RUN_ONCE and not schedule.slots_between(on_time_b, due_b, 1):
        latest = schedule.last_slots(cursor, on_time_b, 1)  # nothing on time: the catch-up run
        if latest:
            skip_b = latest[0] - _US

    # The skipped slots (cursor, skip_b] are: paused (cursor, pause_b], then the others, of
    # which those in (unsched_lo, unsched_hi] were missed while the task was unschedulable.
    pause_b = min(split(paused_until), skip_b) if paused_until is not None else cursor
    unsched_lo = unsched_hi = pause_b
    if unschedulable is not None:
        unsched_lo = max(split(unschedulable[0]), pause_b)
        unsched_hi = max(min(split(unschedulable[1]), skip_b), unsched_lo)
    counts, skipped, new_cursor = _skips(
        schedule, cursor, skip_b, reason, (pause_b, unsched_lo, unsched_hi), skip_record_limit
    )
    n_missed = schedule.count_between(skip_b, missed_b)
    limit = max_fire
    if replay_budget is not None and replay_budget < n_missed:
        limit = min(limit, replay_budget)
    fire = schedule.slots_between(skip_b, due_b, limit) if limit else []
    if fire:
        new_cursor = fire[-1]
    nxt = schedule.next_after(new_cursor)
    return Plan(
        fire=fire,
        skipped=skipped,
        skipped_counts=counts,
        missed_fired=min(len(fire), n_missed),
        cursor=new_cursor,
        next_at=None if nxt is None else fire_of(nxt),
    )
