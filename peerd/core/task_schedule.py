"""The slots of a task across a schedule change (pure): :class:`TaskSchedule`.

An update that changes a task's schedule takes effect from the update's time ``B``
(``TaskSpec.schedule_since``): slots up to ``B`` follow the schedule that was in force before
(``TaskSpec.previous_schedule``, valid after its own ``since``), slots after ``B`` follow the new
one. The task's slots are the two pieces put end to end::

    previous schedule            | schedule
    ------(since ..... B]--------|--(B ..........
          old slots still due    |  new slots
          at the change fire     |  (none at or before B: no replay of the new schedule)

So a slot that was due before the change but not handled yet (its owner lagging, or moving)
still fires, a slot of the new schedule at or before the change never fires (nothing is replayed
by accident), and a slot present in both schedules is one slot, claimed once. Only one previous
schedule is kept: an owner more than one change behind loses the slots of the older ones.

Fire instants: each piece keeps its own jitter; a slot of the previous piece fires no later than
``B`` (``min(fire_at, B)``), so fire instants stay in slot order across the boundary (the planner
relies on that) and a pending old slot fires as soon as its owner learns of the change.

``max_runs`` and the bounds apply per piece, each compiled as the engine compiles a schedule
(anchored at the task's ``created_at``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from peerd.core.records import time_of
from peerd.core.schedule import CompiledSchedule, spec_from_proto
from peerd.core.tzrules import TimeZoneRules
from peerd.v1 import scheduler_pb2 as pb

_MS = timedelta(milliseconds=1)


class Slots(Protocol):
    """The slot queries planning and audit use (:class:`CompiledSchedule` and
    :class:`TaskSchedule` both provide them); datetimes are aware UTC, whole ms."""

    def next_after(self, after: datetime) -> datetime | None: ...

    def slots_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]: ...

    def count_between(self, after: datetime, until: datetime) -> int: ...

    def last_slots(self, after: datetime, until: datetime, limit: int) -> list[datetime]: ...

    @property
    def tzdata_version(self) -> str:
        """The tzdata version the slots depend on (``""``: none)."""

    @property
    def zone(self) -> tzinfo:
        """The (current) schedule's time zone."""


@dataclass(frozen=True, slots=True)
class _Piece:
    """Slots of ``compiled`` in ``(after, until]`` (None: unbounded on that side)."""

    compiled: CompiledSchedule
    after: datetime | None
    until: datetime | None

    def clip(self, after: datetime, until: datetime) -> tuple[datetime, datetime] | None:
        lo = after if self.after is None else max(after, self.after)
        hi = until if self.until is None else min(until, self.until)
        return (lo, hi) if hi > lo else None


class TaskSchedule:
    """The slots of one task: its schedule, preceded by its previous schedule up to the change.

    Args:
        current: the schedule in force, compiled.
        since: when it took effect (``schedule_since``); None = since the task was created
            (then there is no previous piece).
        previous: the schedule before, compiled, and when it took effect (exclusive).

    Every query applies the pieces' bounds, so ``next_after`` iteration, ``slots_between``,
    ``count_between`` and ``last_slots`` agree.

    Raises:
        ValueError: ``previous`` given without ``since``, or naive datetimes.
    """

    __slots__ = ("_pieces", "current", "since")  # one per owned task: no __dict__

    def __init__(
        self,
        current: CompiledSchedule,
        since: datetime | None = None,
        previous: tuple[CompiledSchedule, datetime] | None = None,
    ) -> None:
        if previous is not None and since is None:
            raise ValueError("a previous schedule needs the time of the change")
        for t in (since, previous[1] if previous else None):
            if t is not None and t.tzinfo is None:
                raise ValueError("TaskSchedule datetimes must be timezone-aware")
        self.current = current
        self.since = since
        pieces = []
        if previous is not None:
            pieces.append(_Piece(previous[0], previous[1], since))
        pieces.append(_Piece(current, since, None))
        self._pieces = tuple(pieces)

    @property
    def floor(self) -> datetime:
        """No slot is at or before this instant: the start of the oldest piece (the task's
        creation when its schedule never changed)."""
        first = self._pieces[0]
        if first.after is not None:
            return first.after
        return first.compiled.spec.created_at

    @property
    def zone(self) -> tzinfo:
        """The current schedule's time zone."""
        return self.current.zone

    @property
    def tzdata_version(self) -> str:
        """The tzdata version the slots depend on (``""``: none of the pieces depends on
        time-zone rules). Every piece is compiled with the same rules."""
        return next(
            (p.compiled.tzdata_version for p in self._pieces if p.compiled.tzdata_version), ""
        )

    def piece_of(self, slot: datetime) -> CompiledSchedule:
        """The compiled schedule ``slot`` belongs to (the previous one up to the change)."""
        for p in self._pieces:
            if p.until is None or slot <= p.until:
                return p.compiled
        raise AssertionError("the last piece is unbounded")

    def after_local(self, after: datetime, local_time: str) -> datetime:
        """:meth:`CompiledSchedule.after_local` of the piece ``after`` belongs to."""
        return self.piece_of(after).after_local(after, local_time)

    def next_after(self, after: datetime) -> datetime | None:
        """First slot strictly after ``after``, or None when the schedule is exhausted."""
        for p in self._pieces:
            if p.until is not None and after >= p.until:
                continue
            s = p.compiled.next_after(after if p.after is None else max(after, p.after))
            if s is not None and (p.until is None or s <= p.until):
                return s
        return None

    def slots_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The earliest ``limit`` slots in ``(after, until]``, ascending."""
        out: list[datetime] = []
        for p in self._pieces:
            window = p.clip(after, until)
            if window is not None and len(out) < limit:
                out += p.compiled.slots_between(*window, limit - len(out))
        return out

    def count_between(self, after: datetime, until: datetime) -> int:
        """Exact number of slots in ``(after, until]``."""
        total = 0
        for p in self._pieces:
            window = p.clip(after, until)
            if window is not None:
                total += p.compiled.count_between(*window)
        return total

    def last_slots(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The latest ``limit`` slots in ``(after, until]``, ascending."""
        out: list[datetime] = []
        for p in reversed(self._pieces):
            window = p.clip(after, until)
            if window is not None and len(out) < limit:
                out = p.compiled.last_slots(*window, limit - len(out)) + out
        return out

    def is_slot(self, at: datetime) -> bool:
        """Whether ``at`` (aware) is a slot of this task."""
        return self.next_after(at - _MS) == at

    def fire_at(self, task_id: str, slot: datetime) -> datetime:
        """When ``slot`` fires: its piece's jittered instant; for a slot of the previous piece
        no later than the change (see the module docstring)."""
        for p in self._pieces:
            if p.until is None or slot <= p.until:
                t = p.compiled.fire_at(task_id, slot)
                return t if p.until is None else min(t, p.until)
        raise AssertionError("the last piece is unbounded")

    def fire_at_of(self, task_id: str) -> Callable[[datetime], datetime]:
        """``slot -> fire instant`` for ``task_id`` (what the planner passes around)."""
        return lambda slot: self.fire_at(task_id, slot)

    def handled_cursor(self, cursor: datetime) -> datetime:
        """Where planning resumes for a cursor set by a node that may have planned with an
        older spec: ``cursor`` itself when it is at or before the change, or a slot of this
        schedule; otherwise (a slot of the old schedule after the change) the change time, so
        that the new schedule's slots after the change are all planned (those already claimed
        are lost races, never run twice)."""
        if self.since is None or cursor <= self.since or self.is_slot(cursor):
            return cursor
        return self.since


def _ts(ts: Timestamp) -> datetime:
    """``ts`` as an aware datetime by integer arithmetic (:func:`peerd.core.records.time_of`;
    the protobuf helper is Python code, a few µs per call on every acquisition).

    Raises:
        ValueError: outside datetime's range.
    """
    try:
        return time_of(ts)
    except OverflowError as exc:
        raise ValueError(f"timestamp out of range: {exc}") from None


def task_schedule(
    spec: pb.TaskSpec, field: str = "task.schedule", *, rules: TimeZoneRules
) -> TaskSchedule:
    """The :class:`TaskSchedule` of a stored task, exactly as every node compiles it (its
    ``created_at`` anchors both pieces; both compiled with the time-zone ``rules``).

    Raises:
        InvalidArgument: a schedule that does not compile (naming ``field``...).
        ValueError: out-of-range timestamps.
    """
    created_at = _ts(spec.created_at)
    current = CompiledSchedule(spec_from_proto(spec.schedule, created_at, field), rules)
    if not spec.HasField("schedule_since"):
        return TaskSchedule(current)
    since = _ts(spec.schedule_since)
    previous = None
    if spec.HasField("previous_schedule"):
        prev = spec.previous_schedule
        compiled = CompiledSchedule(
            spec_from_proto(prev.schedule, created_at, "task.previous_schedule.schedule"), rules
        )
        start = _ts(prev.since) if prev.HasField("since") else created_at
        previous = (compiled, start)
    return TaskSchedule(current, since, previous)


__all__ = ["Slots", "TaskSchedule", "task_schedule"]
