"""The planner: on-time slots fire, misfires are skipped and counted, catch-up runs once (pure)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from peerd.core.plan import Plan, plan_due
from peerd.core.schedule import CompiledSchedule, ScheduleSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)
M = timedelta(minutes=1)


def every(step: timedelta, **kw: object) -> CompiledSchedule:
    return CompiledSchedule(ScheduleSpec(every=step, created_at=T0, **kw))  # type: ignore[arg-type]


def cron(expr: str, tz: str = "UTC", **kw: object) -> CompiledSchedule:
    return CompiledSchedule(ScheduleSpec(cron=expr, time_zone=tz, created_at=T0, **kw))  # type: ignore[arg-type]


def test_on_time_slot_fires() -> None:
    p = plan_due(every(M), T0, T0 + M + 5 * S, 30 * S)
    assert p == Plan(fire=[T0 + M], skipped=[], skipped_count=0, cursor=T0 + M, next_at=T0 + 2 * M)


def test_nothing_due() -> None:
    p = plan_due(every(M), T0, T0 + 30 * S, 30 * S)
    assert p == Plan(fire=[], skipped=[], skipped_count=0, cursor=T0, next_at=T0 + M)
    # the clock went backwards behind the cursor: nothing, wake at the slot after the cursor
    p = plan_due(every(M), T0 + 5 * M, T0 + M, 30 * S)
    assert p == Plan([], [], 0, T0 + 5 * M, T0 + 6 * M)


def test_several_on_time_slots_all_fire() -> None:
    p = plan_due(every(10 * S), T0, T0 + 35 * S, timedelta(minutes=5))
    assert p.fire == [T0 + 10 * S, T0 + 20 * S, T0 + 30 * S]
    assert (p.skipped_count, p.cursor, p.next_at) == (0, T0 + 30 * S, T0 + 40 * S)


def test_threshold_boundary_is_inclusive() -> None:
    on_time = plan_due(every(M), T0, T0 + M + 30 * S, 30 * S)
    assert (on_time.fire, on_time.skipped_count) == ([T0 + M], 0)
    late = plan_due(every(M), T0, T0 + M + 30 * S + timedelta(milliseconds=1), 30 * S)
    # late, but the only due slot: it runs as the catch-up
    assert (late.fire, late.skipped_count) == ([T0 + M], 0)


def test_late_slots_skipped_when_one_is_on_time() -> None:
    # due 00:01 .. 01:00; 01:00 is 10 s old (on time), the 59 others are misfires
    p = plan_due(every(M), T0, T0 + 60 * M + 10 * S, 30 * S)
    assert p.fire == [T0 + 60 * M]
    assert p.skipped == [T0 + k * M for k in range(1, 60)]
    assert (p.skipped_count, p.cursor, p.next_at) == (59, T0 + 60 * M, T0 + 61 * M)


def test_catch_up_runs_only_the_latest_misfire() -> None:
    p = plan_due(every(M), T0, T0 + 60 * M + 40 * S, 30 * S)
    assert p.fire == [T0 + 60 * M]
    assert p.skipped == [T0 + k * M for k in range(1, 60)]
    assert (p.skipped_count, p.cursor, p.next_at) == (59, T0 + 60 * M, T0 + 61 * M)


def test_skip_record_limit_keeps_the_most_recent_and_exact_count() -> None:
    p = plan_due(every(M), T0, T0 + 60 * M + 40 * S, 30 * S, skip_record_limit=3)
    assert p.skipped == [T0 + 57 * M, T0 + 58 * M, T0 + 59 * M]
    assert p.skipped_count == 59
    p = plan_due(every(M), T0, T0 + 60 * M + 40 * S, 30 * S, skip_record_limit=0)
    assert (p.fire, p.skipped, p.skipped_count) == ([T0 + 60 * M], [], 59)


def test_day_of_downtime_every_second_is_exact_and_fast() -> None:
    start = time.perf_counter()
    day = timedelta(days=1)
    # due: T0+1s .. T0+86400s (86,400 slots); threshold 0: only the slot at `now` is on time
    p = plan_due(every(S), T0, T0 + day, timedelta(0))
    assert p.fire == [T0 + day]
    assert p.skipped_count == 86_399
    assert p.skipped == [T0 + k * S for k in range(86_300, 86_400)]
    assert (p.cursor, p.next_at) == (T0 + day, T0 + day + S)
    # threshold 10 s: 11 slots on time (now-10s .. now), 86,389 skipped
    p = plan_due(every(S), T0, T0 + day, 10 * S)
    assert p.fire == [T0 + day - k * S for k in range(10, -1, -1)]
    assert p.skipped_count == 86_389
    assert p.skipped[-1] == T0 + day - 11 * S
    # nothing on time: catch-up fires the latest, 86,399 skipped
    p = plan_due(every(S), T0, T0 + day + timedelta(milliseconds=500), timedelta(0))
    assert (p.fire, p.skipped_count, len(p.skipped)) == ([T0 + day], 86_399, 100)
    assert time.perf_counter() - start < 1.0  # closed form: no per-slot work


def test_day_of_downtime_cron_every_second() -> None:
    day = timedelta(days=1)
    p = plan_due(cron("* * * * * *"), T0, T0 + day, 10 * S)
    assert p.fire[0] == T0 + day - 10 * S and len(p.fire) == 11
    assert p.skipped_count == 86_389
    assert p.skipped == [T0 + k * S for k in range(86_290, 86_390)]


def test_long_downtime_cron_across_dst_counts_exactly() -> None:
    s = cron("*/30 * * * *", "Europe/Berlin")
    cursor, now = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 11, 1, 0, 0, 5, tzinfo=UTC)
    every_slot = s.slots_between(cursor, now, 100_000)
    p = plan_due(s, cursor, now, 30 * S)
    assert p.fire == [every_slot[-1]] == [now - 5 * S]
    assert p.skipped_count == len(every_slot) - 1
    assert p.skipped == every_slot[-101:-1]


def test_max_fire_cap_moves_cursor_to_last_fired() -> None:
    s = every(S)
    now = T0 + 10 * S
    p = plan_due(s, T0, now, timedelta(hours=1), max_fire=3)
    assert p.fire == [T0 + S, T0 + 2 * S, T0 + 3 * S]
    assert (p.cursor, p.next_at, p.skipped_count) == (T0 + 3 * S, T0 + 4 * S, 0)
    assert p.next_at is not None and p.next_at <= now  # call again now
    fired = list(p.fire)
    while p.next_at is not None and p.next_at <= now:
        p = plan_due(s, p.cursor, now, timedelta(hours=1), max_fire=3)
        fired += p.fire
    assert fired == [T0 + k * S for k in range(1, 11)]
    assert p.next_at == T0 + 11 * S


def test_exhausted_schedule() -> None:
    one = CompiledSchedule(ScheduleSpec(at=T0 + M, created_at=T0))
    p = plan_due(one, T0, T0 + M, 30 * S)
    assert (p.fire, p.next_at) == ([T0 + M], None)
    assert plan_due(one, p.cursor, T0 + 2 * M, 30 * S) == Plan([], [], 0, T0 + M, None)
    runs = cron("0 * * * *", max_runs=2)
    p = plan_due(runs, T0, T0 + 5 * timedelta(hours=1), timedelta(hours=10))
    assert (p.fire, p.next_at) == ([T0 + timedelta(hours=1), T0 + timedelta(hours=2)], None)
    ended = every(M, end_at=T0 + 3 * M)
    p = plan_due(ended, T0, T0 + 10 * M, 30 * S)
    assert (p.fire, p.skipped_count, p.next_at) == ([T0 + 3 * M], 2, None)


def test_next_at_is_first_slot_after_now() -> None:
    p = plan_due(cron("0 9 * * *"), T0, T0 + timedelta(hours=9, seconds=1), M)
    assert p.fire == [T0 + timedelta(hours=9)]
    assert p.next_at == T0 + timedelta(days=1, hours=9)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        plan_due(every(M), datetime(2026, 1, 1), T0, S)
    with pytest.raises(ValueError):
        plan_due(every(M), T0, T0, -S)
    with pytest.raises(ValueError):
        plan_due(every(M), T0, T0, S, max_fire=0)
