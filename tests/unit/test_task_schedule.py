"""peerd.core.task_schedule: a task's slots across a schedule change, checked against a brute
force enumeration of the two schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from peerd.core.schedule import CompiledSchedule, ScheduleSpec
from peerd.core.task_schedule import TaskSchedule, task_schedule
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)
MS = timedelta(milliseconds=1)


def every(seconds: float, jitter: timedelta = timedelta(0)) -> CompiledSchedule:
    return CompiledSchedule(
        ScheduleSpec(every=timedelta(seconds=seconds), created_at=T0, jitter=jitter), RULES
    )


def changed(at: datetime) -> TaskSchedule:
    """every 2s until ``at``, every 3s after it."""
    return TaskSchedule(every(3), at, (every(2), T0))


def brute(at: datetime, until: datetime) -> list[datetime]:
    old = [T0 + k * 2 * S for k in range(1, 1000) if T0 + k * 2 * S <= min(at, until)]
    new = [T0 + k * 3 * S for k in range(1, 1000) if at < T0 + k * 3 * S <= until]
    return old + new


@pytest.mark.parametrize("change_s", [10.0, 10.5, 12.0, 0.5])
def test_slots_follow_the_old_schedule_up_to_the_change_and_the_new_one_after(
    change_s: float,
) -> None:
    at = T0 + timedelta(seconds=change_s)
    ts = changed(at)
    until = T0 + 40 * S
    expected = brute(at, until)
    assert ts.slots_between(T0, until, 1000) == expected
    walked, t = [], T0
    while (nxt := ts.next_after(t)) is not None and nxt <= until:
        walked.append(nxt)
        t = nxt
    assert walked == expected
    for a in (T0, T0 + 5 * S, at - MS, at, at + 2 * S):
        for b in (at, at + 7 * S, until):
            want = [s for s in expected if a < s <= b]
            assert ts.count_between(a, b) == len(want), (a, b)
            assert ts.last_slots(a, b, 3) == want[-3:], (a, b)
            assert ts.slots_between(a, b, 2) == want[:2], (a, b)
    assert all(ts.is_slot(s) for s in expected)
    assert not ts.is_slot(T0 + 3 * S) or change_s < 3  # a 3s slot before the change is none


def test_no_slot_at_or_before_the_previous_schedules_start() -> None:
    ts = TaskSchedule(every(3), T0 + 20 * S, (every(2), T0 + 10 * S))
    assert ts.floor == T0 + 10 * S
    assert ts.slots_between(T0, T0 + 30 * S, 100) == [
        *(T0 + k * S for k in (12, 14, 16, 18, 20)),
        *(T0 + k * S for k in (21, 24, 27, 30)),
    ]


def test_unchanged_schedule_is_the_compiled_one() -> None:
    ts = TaskSchedule(every(2))
    assert ts.floor == T0 and ts.since is None
    assert ts.slots_between(T0, T0 + 10 * S, 100) == every(2).slots_between(T0, T0 + 10 * S, 100)
    assert ts.handled_cursor(T0 + 3 * S) == T0 + 3 * S


def test_old_slots_fire_no_later_than_the_change_so_fire_times_stay_in_order() -> None:
    jitter = timedelta(milliseconds=1900)
    at = T0 + 10 * S + 100 * MS
    ts = TaskSchedule(every(3, jitter), at, (every(2, jitter), T0))
    slots = ts.slots_between(T0, T0 + 60 * S, 1000)
    fires = [ts.fire_at("task-a", s) for s in slots]
    assert fires == sorted(fires)
    assert all(f >= s for f, s in zip(fires, slots, strict=True))
    assert all(f <= at for f, s in zip(fires, slots, strict=True) if s <= at)
    ten = T0 + 10 * S
    assert ts.fire_at("task-a", ten) == min(every(2, jitter).fire_at("task-a", ten), at)


def test_a_cursor_on_an_old_only_slot_after_the_change_moves_back_to_the_change() -> None:
    at = T0 + 10 * S + 500 * MS
    ts = changed(at)
    assert ts.handled_cursor(T0 + 10 * S) == T0 + 10 * S  # before the change
    assert ts.handled_cursor(T0 + 12 * S) == T0 + 12 * S  # a slot of both
    assert ts.handled_cursor(T0 + 14 * S) == at  # only the old schedule has it
    assert ts.handled_cursor(T0 + 15 * S) == T0 + 15 * S  # a new slot


def test_task_schedule_compiles_the_stored_pieces() -> None:
    spec = pb.TaskSpec(id="t")
    spec.created_at.FromDatetime(T0)
    spec.schedule.every.FromSeconds(3)
    assert task_schedule(spec, rules=RULES).since is None
    spec.schedule_since.FromDatetime(T0 + 10 * S)
    spec.previous_schedule.schedule.every.FromSeconds(2)
    spec.previous_schedule.since.FromDatetime(T0)
    ts = task_schedule(spec, rules=RULES)
    assert ts.slots_between(T0, T0 + 13 * S, 100) == brute(T0 + 10 * S, T0 + 13 * S)


def test_naive_times_and_a_previous_piece_without_a_change_time_are_refused() -> None:
    with pytest.raises(ValueError):
        TaskSchedule(every(3), None, (every(2), T0))
    with pytest.raises(ValueError):
        TaskSchedule(every(3), datetime(2026, 1, 1), None)
