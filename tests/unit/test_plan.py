"""The planner: due / on time / missed per fire instant, catch-up policies, budgets (pure)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

import peerd.core.plan
from peerd.core.plan import (
    CATCH_UP_RUN_ALL,
    CATCH_UP_RUN_ONCE,
    CATCH_UP_SKIP,
    SKIP_REASON_PB,
    CatchUp,
    Plan,
    catch_up_from_proto,
    plan_due,
)
from peerd.core.schedule import CompiledSchedule, ScheduleSpec
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)
S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)
FireAt = Callable[[datetime], datetime]


def every(step: timedelta, **kw: object) -> CompiledSchedule:
    return CompiledSchedule(ScheduleSpec(every=step, created_at=T0, **kw), RULES)  # type: ignore[arg-type]


def cron(expr: str, tz: str = "UTC", **kw: object) -> CompiledSchedule:
    return CompiledSchedule(ScheduleSpec(cron=expr, time_zone=tz, created_at=T0, **kw), RULES)  # type: ignore[arg-type]


def skip(threshold: timedelta = 30 * S) -> CatchUp:
    return CatchUp(CATCH_UP_SKIP, H, threshold)


def once(threshold: timedelta = 30 * S) -> CatchUp:
    return CatchUp(CATCH_UP_RUN_ONCE, H, threshold)


def run_all(window: timedelta = H, threshold: timedelta = 30 * S) -> CatchUp:
    return CatchUp(CATCH_UP_RUN_ALL, window, threshold)


def counts(
    misfire: int = 0, window: int = 0, paused: int = 0, unschedulable: int = 0
) -> dict[str, int]:
    return {
        "misfire": misfire,
        "catch_up_window": window,
        "paused": paused,
        "unschedulable": unschedulable,
    }


def shifted(delta: timedelta) -> FireAt:
    return lambda s: s + delta


def mins(*ks: int) -> list[datetime]:
    return [T0 + k * M for k in ks]


# --- basics (all policies agree when nothing is missed) ------------------------------------


@pytest.mark.parametrize("cu", [skip(), once(), run_all()])
def test_on_time_slot_fires(cu: CatchUp) -> None:
    p = plan_due(every(M), T0, T0 + M + 5 * S, cu)
    assert p == Plan([T0 + M], [], counts(), 0, T0 + M, T0 + 2 * M)
    assert p.skipped_count == 0


@pytest.mark.parametrize("cu", [skip(), once(), run_all()])
def test_nothing_due(cu: CatchUp) -> None:
    assert plan_due(every(M), T0, T0 + 30 * S, cu) == Plan([], [], counts(), 0, T0, T0 + M)
    # the clock went backwards behind the cursor: nothing, wake at the slot after the cursor
    p = plan_due(every(M), T0 + 5 * M, T0 + M, cu)
    assert p == Plan([], [], counts(), 0, T0 + 5 * M, T0 + 6 * M)


def test_several_on_time_slots_all_fire() -> None:
    p = plan_due(every(10 * S), T0, T0 + 35 * S, once(5 * M))
    assert p.fire == [T0 + 10 * S, T0 + 20 * S, T0 + 30 * S]
    assert (p.skipped_count, p.missed_fired, p.cursor, p.next_at) == (
        0,
        0,
        T0 + 30 * S,
        T0 + 40 * S,
    )


def test_threshold_boundary_is_inclusive() -> None:
    on_time = plan_due(every(M), T0, T0 + M + 30 * S, skip())
    assert (on_time.fire, on_time.skipped_count) == ([T0 + M], 0)
    late = plan_due(every(M), T0, T0 + M + 30 * S + MS, skip())
    assert late == Plan([], [(T0 + M, "misfire")], counts(misfire=1), 0, T0 + M, T0 + 2 * M)


# --- SKIP -------------------------------------------------------------------------------------


def test_skip_fires_only_on_time_slots() -> None:
    # due 00:01 .. 01:00; 01:00 is 10 s late (on time), the 59 others are missed
    p = plan_due(every(M), T0, T0 + 60 * M + 10 * S, skip())
    skipped = [(s, "misfire") for s in mins(*range(1, 60))]
    assert p == Plan(mins(60), skipped, counts(misfire=59), 0, T0 + 60 * M, T0 + 61 * M)


def test_skip_with_nothing_on_time_runs_nothing_and_moves_the_cursor() -> None:
    p = plan_due(every(M), T0, T0 + 60 * M + 40 * S, skip())
    skipped = [(s, "misfire") for s in mins(*range(1, 61))]
    assert p == Plan([], skipped, counts(misfire=60), 0, T0 + 60 * M, T0 + 61 * M)


# --- RUN_ONCE ---------------------------------------------------------------------------------


def test_run_once_skips_missed_when_one_is_on_time() -> None:
    p = plan_due(every(M), T0, T0 + 60 * M + 10 * S, once())
    skipped = [(s, "misfire") for s in mins(*range(1, 60))]
    assert p == Plan(mins(60), skipped, counts(misfire=59), 0, T0 + 60 * M, T0 + 61 * M)


def test_run_once_fires_only_the_latest_missed() -> None:
    p = plan_due(every(M), T0, T0 + 60 * M + 40 * S, once())
    skipped = [(s, "misfire") for s in mins(*range(1, 60))]
    assert p == Plan(mins(60), skipped, counts(misfire=59), 1, T0 + 60 * M, T0 + 61 * M)


def test_run_once_without_budget_skips_the_older_and_waits_for_the_latest() -> None:
    p = plan_due(every(M), T0, T0 + 60 * M + 40 * S, once(), replay_budget=0)
    assert (p.fire, p.missed_fired, p.skipped_count) == ([], 0, 59)
    assert (p.cursor, p.next_at) == (T0 + 59 * M, T0 + 60 * M)  # <= now: plan again
    p = plan_due(every(M), p.cursor, T0 + 60 * M + 41 * S, once(), replay_budget=1)
    assert p == Plan(mins(60), [], counts(), 1, T0 + 60 * M, T0 + 61 * M)


def test_skip_record_limit_keeps_the_most_recent_and_exact_counts() -> None:
    p = plan_due(every(M), T0, T0 + 60 * M + 40 * S, once(), skip_record_limit=3)
    assert p.skipped == [(s, "misfire") for s in mins(57, 58, 59)]
    assert (p.skipped_counts, p.skipped_count) == (counts(misfire=59), 59)
    p = plan_due(every(M), T0, T0 + 60 * M + 40 * S, once(), skip_record_limit=0)
    assert p == Plan(mins(60), [], counts(misfire=59), 1, T0 + 60 * M, T0 + 61 * M)
    # limit 0 and nothing fired: the cursor still passes the skipped slots
    p = plan_due(every(M), T0, T0 + 60 * M + 40 * S, skip(), skip_record_limit=0)
    assert p == Plan([], [], counts(misfire=60), 0, T0 + 60 * M, T0 + 61 * M)


# --- RUN_ALL ----------------------------------------------------------------------------------


def test_run_all_replays_the_window_oldest_first_then_on_time() -> None:
    # window starts 00:50:10: missed 00:51 .. 00:59 replay, 00:01 .. 00:50 are too old
    p = plan_due(every(M), T0, T0 + 60 * M + 10 * S, run_all(10 * M))
    assert p.fire == mins(*range(51, 61))
    assert p.missed_fired == 9
    assert p.skipped == [(s, "catch_up_window") for s in mins(*range(1, 51))]
    assert (p.skipped_counts, p.cursor, p.next_at) == (counts(window=50), T0 + 60 * M, T0 + 61 * M)


def test_run_all_window_boundary_is_inclusive() -> None:
    # now 01:00:00 exactly, window 10 min: 00:50 fires at the window's start, so it replays
    p = plan_due(every(M), T0, T0 + 60 * M, run_all(10 * M))
    assert p.fire == mins(*range(50, 61))
    assert (p.missed_fired, p.skipped_counts) == (10, counts(window=49))


def test_run_all_budget_cuts_the_replay_and_on_time_slots_wait() -> None:
    now = T0 + 60 * M + 10 * S
    p = plan_due(every(M), T0, now, run_all(10 * M), replay_budget=3)
    assert p.fire == mins(51, 52, 53)
    assert (p.missed_fired, p.skipped_count) == (3, 50)
    assert (p.cursor, p.next_at) == (T0 + 53 * M, T0 + 54 * M)
    # no budget: only the skips happen
    p0 = plan_due(every(M), T0, now, run_all(10 * M), replay_budget=0)
    assert p0 == Plan([], p.skipped, counts(window=50), 0, T0 + 50 * M, T0 + 51 * M)
    # budget exactly the missed count: the on-time slot fires too
    p6 = plan_due(every(M), T0 + 53 * M, now, run_all(10 * M), replay_budget=6)
    assert p6 == Plan(mins(*range(54, 61)), [], counts(), 6, T0 + 60 * M, T0 + 61 * M)


def test_run_all_budget_loop_with_a_moving_window() -> None:
    # every 10 s, window 2 min, budget 2 per plan, planned every 30 s: replays fall behind (3
    # slots per 30 s, 2 replayed), so each plan the window slides past one unreplayed slot
    s, cu = every(10 * S), run_all(2 * M, 5 * S)
    cursor, now = T0, T0 + 5 * M
    fired: list[datetime] = []
    skipped: list[datetime] = []
    for _ in range(20):
        p = plan_due(s, cursor, now, cu, replay_budget=2)
        assert p.cursor >= cursor
        assert p.missed_fired == len(p.fire) == 2
        assert p.skipped_count == len(p.skipped) == p.skipped_counts["catch_up_window"]
        fired += p.fire
        skipped += [t for t, _ in p.skipped]
        cursor, now = p.cursor, now + 30 * S
    secs = lambda *ks: [T0 + k * S for k in ks]  # noqa: E731
    assert fired[:6] == secs(180, 190, 210, 220, 240, 250)
    assert skipped[:20] == secs(*range(10, 180, 10), 200, 230, 260)
    assert (len(fired), len(skipped), cursor) == (40, 17 + 19, T0 + 760 * S)
    assert sorted(fired + skipped) == secs(*range(10, 770, 10))


def test_run_all_window_shorter_than_threshold_replays_nothing() -> None:
    p = plan_due(every(M), T0, T0 + 10 * M + 40 * S, run_all(10 * S))
    assert p == Plan([], p.skipped, counts(window=10), 0, T0 + 10 * M, T0 + 11 * M)


def test_max_fire_caps_replays_and_on_time_together() -> None:
    now = T0 + 60 * M + 10 * S
    p = plan_due(every(M), T0, now, run_all(10 * M), max_fire=4)
    assert p.fire == mins(51, 52, 53, 54)
    assert (p.missed_fired, p.cursor, p.next_at) == (4, T0 + 54 * M, T0 + 55 * M)
    p = plan_due(every(M), p.cursor, now, run_all(10 * M), max_fire=4)
    assert (p.fire, p.missed_fired) == (mins(55, 56, 57, 58), 4)
    p = plan_due(every(M), p.cursor, now, run_all(10 * M), max_fire=4)
    assert (p.fire, p.missed_fired, p.next_at) == (mins(59, 60), 1, T0 + 61 * M)


def test_max_fire_cap_on_time_slots() -> None:
    s, now, cu = every(S), T0 + 10 * S, once(H)
    p = plan_due(s, T0, now, cu, max_fire=3)
    assert p == Plan([T0 + S, T0 + 2 * S, T0 + 3 * S], [], counts(), 0, T0 + 3 * S, T0 + 4 * S)
    fired = list(p.fire)
    while p.next_at is not None and p.next_at <= now:
        p = plan_due(s, p.cursor, now, cu, max_fire=3)
        fired += p.fire
    assert fired == [T0 + k * S for k in range(1, 11)]
    assert p.next_at == T0 + 11 * S


# --- paused -------------------------------------------------------------------------------------


def test_paused_reason_for_slots_missed_while_paused() -> None:
    now = T0 + 60 * M + 10 * S
    p = plan_due(every(M), T0, now, skip(), paused_until=T0 + 30 * M)
    assert p.fire == mins(60)
    assert p.skipped_counts == counts(misfire=30, paused=29)
    assert p.skipped[28:30] == [(T0 + 29 * M, "paused"), (T0 + 30 * M, "misfire")]
    p = plan_due(every(M), T0, now, run_all(10 * M), paused_until=T0 + 30 * M, skip_record_limit=25)
    assert p.skipped_counts == counts(window=21, paused=29)
    assert p.skipped[:4] == [(t, "paused") for t in mins(26, 27, 28, 29)]
    assert p.skipped[4:] == [(t, "catch_up_window") for t in mins(*range(30, 51))]
    # run_once: the catch-up slot is not skipped; all the others were missed while paused
    p = plan_due(every(M), T0, now + 30 * S, once(), paused_until=now)
    assert (p.fire, p.skipped_counts, p.missed_fired) == (mins(60), counts(paused=59), 1)


def test_paused_boundary_uses_the_fire_instant() -> None:
    jit = shifted(40 * S)  # 00:29 fires at 00:29:40, 00:30 at 00:30:40
    now = T0 + 61 * M
    p = plan_due(every(M), T0, now, skip(), fire_at=jit, paused_until=T0 + 30 * M + 20 * S)
    assert p.skipped_counts == counts(misfire=30, paused=29)
    p = plan_due(every(M), T0, now, skip(), fire_at=jit, paused_until=T0 + 30 * M + 40 * S)
    assert p.skipped_counts == counts(misfire=30, paused=29)  # 00:30:40 is not before it
    p = plan_due(every(M), T0, now, skip(), fire_at=jit, paused_until=T0 + 30 * M + 41 * S)
    assert p.skipped_counts == counts(misfire=29, paused=30)
    # no jitter, paused_until 1 us after the 00:30 slot: 00:30 fired before it, so it is paused
    now = T0 + 60 * M + 10 * S
    us = timedelta(microseconds=1)
    p = plan_due(every(M), T0, now, skip(), paused_until=T0 + 30 * M + us)
    assert p.skipped[29] == (T0 + 30 * M, "paused")
    assert p.skipped_counts == counts(misfire=29, paused=30)


def test_unschedulable_reason_for_slots_missed_while_no_node_matched() -> None:
    now = T0 + 60 * M + 10 * S
    window = (T0 + 10 * M, T0 + 40 * M)  # 00:10 .. 00:39 were missed while unschedulable
    p = plan_due(every(M), T0, now, skip(), unschedulable=window)
    assert p.fire == mins(60)
    assert p.skipped_counts == counts(misfire=29, unschedulable=30)
    assert p.skipped[8:11] == [
        (T0 + 9 * M, "misfire"),
        *((t, "unschedulable") for t in mins(10, 11)),
    ]
    assert p.skipped[38:40] == [(T0 + 39 * M, "unschedulable"), (T0 + 40 * M, "misfire")]
    # paused wins where both apply; run_once still runs the latest missed slot
    p = plan_due(every(M), T0, now + 30 * S, once(), paused_until=T0 + 20 * M, unschedulable=window)
    assert (p.fire, p.missed_fired) == (mins(60), 1)
    assert p.skipped_counts == counts(paused=19, unschedulable=20, misfire=20)
    # a window before the cursor changes nothing
    p = plan_due(every(M), T0 + 50 * M, now, skip(), unschedulable=window)
    assert p.skipped_counts == counts(misfire=9)


# --- jitter ---------------------------------------------------------------------------------------


def test_jittered_slot_not_due_yet_holds_the_cursor() -> None:
    jit = shifted(20 * S)  # every 1m, each slot fires 20 s after it
    p = plan_due(every(M), T0, T0 + 2 * M + 10 * S, once(M), fire_at=jit)
    # 00:01 fires at 00:01:20 (50 s late: on time); 00:02 fires at 00:02:20: not due yet
    assert p == Plan(mins(1), [], counts(), 0, T0 + M, T0 + 2 * M + 20 * S)
    p = plan_due(every(M), p.cursor, T0 + 2 * M + 20 * S, once(M), fire_at=jit)
    assert p == Plan(mins(2), [], counts(), 0, T0 + 2 * M, T0 + 3 * M + 20 * S)


def test_lateness_is_measured_from_the_fire_instant() -> None:
    jit = shifted(20 * S)
    # 00:01 fires at 00:01:20; at 00:01:50 it is 30 s late: on time; at 00:01:50.001 missed
    p = plan_due(every(M), T0, T0 + M + 50 * S, skip(), fire_at=jit)
    assert p.fire == mins(1)
    p = plan_due(every(M), T0, T0 + M + 50 * S + MS, skip(), fire_at=jit)
    assert (p.fire, p.skipped) == ([], [(T0 + M, "misfire")])


def test_jitter_larger_than_the_period_is_still_exact() -> None:
    # fire_at = slot + 150 s: three slots straddle each boundary; exact, just a few more calls
    jit = shifted(150 * S)
    now = T0 + 60 * M + 10 * S
    p = plan_due(every(M), T0, now, run_all(10 * M), fire_at=jit)
    # due: fire <= now <=> slot <= 00:57:40 -> 00:01 .. 00:57; on time: fire >= 00:59:40 -> none
    # window: fire >= 00:50:10 -> slot >= 00:47:40 -> 00:48 .. 00:57 replay; 00:01 .. 00:47 skip
    assert p.fire == mins(*range(48, 58))
    assert (p.missed_fired, p.skipped_counts) == (10, counts(window=47))
    assert (p.cursor, p.next_at) == (T0 + 57 * M, T0 + 58 * M + 150 * S)


def test_fire_at_before_the_slot_is_rejected() -> None:
    with pytest.raises(ValueError, match="before the slot"):
        plan_due(every(M), T0, T0 + 5 * M, once(), fire_at=shifted(-S))


# --- huge gaps stay cheap -------------------------------------------------------------------------


def test_day_of_downtime_every_second_is_exact_and_fast() -> None:
    start = time.perf_counter()
    # due: T0+1s .. T0+86400s (86,400 slots); threshold 0: only the slot at `now` is on time
    p = plan_due(every(S), T0, T0 + D, once(timedelta(0)))
    assert (p.fire, p.skipped_counts, p.missed_fired) == ([T0 + D], counts(misfire=86_399), 0)
    assert p.skipped == [(T0 + k * S, "misfire") for k in range(86_300, 86_400)]
    assert (p.cursor, p.next_at) == (T0 + D, T0 + D + S)
    # threshold 10 s: 11 slots on time (now-10s .. now), 86,389 skipped
    p = plan_due(every(S), T0, T0 + D, once(10 * S))
    assert p.fire == [T0 + D - k * S for k in range(10, -1, -1)]
    assert p.skipped_count == 86_389
    assert p.skipped[-1] == (T0 + D - 11 * S, "misfire")
    # nothing on time: catch-up fires the latest, 86,399 skipped
    p = plan_due(every(S), T0, T0 + D + 500 * MS, once(timedelta(0)))
    assert (p.fire, p.skipped_count, len(p.skipped), p.missed_fired) == ([T0 + D], 86_399, 100, 1)
    assert time.perf_counter() - start < 1.0  # closed form: no per-slot work


def test_year_of_downtime_every_second_all_policies_with_jitter() -> None:
    year = timedelta(days=365)
    now = T0 + year  # 31,536,000 slots due without jitter
    calls: list[datetime] = []

    def jit(s: datetime) -> datetime:
        calls.append(s)
        return s + 300 * MS

    start = time.perf_counter()
    # slot `now` fires at now+0.3s: not due. on time: fire >= now-5s <=> slot >= now-5s
    p = plan_due(every(S), T0, now, skip(5 * S), fire_at=jit)
    assert p.fire == [now - k * S for k in range(5, 0, -1)]
    assert p.skipped_counts == counts(misfire=31_536_000 - 6)
    assert p.skipped[-1] == (now - 6 * S, "misfire")
    assert (p.cursor, p.next_at) == (now - S, now + 300 * MS)
    p = plan_due(every(S), T0, now - 4 * S, once(timedelta(0)), fire_at=jit)  # none on time
    assert (p.fire, p.missed_fired, p.skipped_count) == ([now - 5 * S], 1, 31_536_000 - 6)
    # run_all, window 1 h, budget 10: window <=> fire >= now-1h <=> slot >= now-1h
    p = plan_due(every(S), T0, now, run_all(H, 5 * S), fire_at=jit, replay_budget=10)
    assert p.fire == [now - H + k * S for k in range(10)]
    assert (p.missed_fired, p.skipped_counts) == (10, counts(window=31_536_000 - 3601))
    assert (p.cursor, p.next_at) == (now - H + 9 * S, now - H + 10 * S + 300 * MS)
    # paused for all but the last day
    p = plan_due(every(S), T0, now, skip(5 * S), fire_at=jit, paused_until=now - D)
    assert p.skipped_counts == counts(misfire=86_400 - 5, paused=31_536_000 - 86_400 - 1)
    assert time.perf_counter() - start < 2.0
    assert len(calls) < 100  # fire_at only near the boundaries


def test_day_of_downtime_cron_every_second() -> None:
    p = plan_due(cron("* * * * * *"), T0, T0 + D, once(10 * S))
    assert p.fire[0] == T0 + D - 10 * S and len(p.fire) == 11
    assert p.skipped_count == 86_389
    assert p.skipped == [(T0 + k * S, "misfire") for k in range(86_290, 86_390)]


def test_long_downtime_cron_across_dst_counts_exactly() -> None:
    s = cron("*/30 * * * *", "Europe/Berlin")
    cursor, now = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 11, 1, 0, 0, 5, tzinfo=UTC)
    every_slot = s.slots_between(cursor, now, 100_000)
    p = plan_due(s, cursor, now, once())
    assert p.fire == [every_slot[-1]] == [now - 5 * S]
    assert p.skipped_count == len(every_slot) - 1
    assert p.skipped == [(t, "misfire") for t in every_slot[-101:-1]]
    p = plan_due(s, cursor, now, run_all(timedelta(hours=3)))
    assert p.fire == every_slot[-6:]  # 21:30Z .. 00:00Z (the window starts 21:00:05)
    assert (p.missed_fired, p.skipped_count) == (5, len(every_slot) - 6)


def test_exhausted_schedule() -> None:
    one = CompiledSchedule(ScheduleSpec(at=T0 + M, created_at=T0), RULES)
    p = plan_due(one, T0, T0 + M, once())
    assert (p.fire, p.next_at) == ([T0 + M], None)
    assert plan_due(one, p.cursor, T0 + 2 * M, once()) == Plan([], [], counts(), 0, T0 + M, None)
    runs = cron("0 * * * *", max_runs=2)
    p = plan_due(runs, T0, T0 + 5 * H, once(10 * H))
    assert (p.fire, p.next_at) == ([T0 + H, T0 + 2 * H], None)
    ended = every(M, end_at=T0 + 3 * M)
    p = plan_due(ended, T0, T0 + 10 * M, once())
    assert (p.fire, p.skipped_count, p.missed_fired, p.next_at) == ([T0 + 3 * M], 2, 1, None)


def test_next_at_is_first_fire_after_now() -> None:
    p = plan_due(cron("0 9 * * *"), T0, T0 + timedelta(hours=9, seconds=1), once(M))
    assert p.fire == [T0 + timedelta(hours=9)]
    assert p.next_at == T0 + timedelta(days=1, hours=9)
    p = plan_due(cron("0 9 * * *"), p.cursor, p.cursor + S, once(M), fire_at=shifted(7 * M))
    assert p.next_at == T0 + timedelta(days=1, hours=9, minutes=7)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        plan_due(every(M), datetime(2026, 1, 1), T0, once())
    with pytest.raises(ValueError):
        plan_due(every(M), T0, T0, once(), paused_until=datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        plan_due(every(M), T0, T0, once(), max_fire=0)
    with pytest.raises(ValueError):
        plan_due(every(M), T0, T0, once(), replay_budget=-1)
    with pytest.raises(ValueError):
        plan_due(every(M), T0, T0, once(), skip_record_limit=-1)
    with pytest.raises(ValueError):
        CatchUp("sometimes", H, S)
    with pytest.raises(ValueError):
        CatchUp(CATCH_UP_SKIP, H, -S)
    with pytest.raises(ValueError):
        CatchUp(CATCH_UP_RUN_ALL, -H, S)


# --- from the proto -----------------------------------------------------------------------------


def test_catch_up_from_proto_defaults_and_values() -> None:
    assert catch_up_from_proto(pb.TaskSpec(), 5 * S) == CatchUp("run_once", H, 5 * S)
    spec = pb.TaskSpec(
        catch_up=pb.CATCH_UP_RUN_ALL,
        catch_up_window=Duration(seconds=7200),
        misfire_threshold=Duration(seconds=0),
    )
    assert catch_up_from_proto(spec, 5 * S) == CatchUp("run_all", 2 * H, timedelta(0))
    assert catch_up_from_proto(pb.TaskSpec(catch_up=pb.CATCH_UP_SKIP), S).policy == "skip"
    assert SKIP_REASON_PB == {
        "misfire": pb.SKIP_MISFIRE,
        "catch_up_window": pb.SKIP_CATCH_UP_WINDOW,
        "paused": pb.SKIP_PAUSED,
        "unschedulable": pb.SKIP_UNSCHEDULABLE,
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (pb.TaskSpec(catch_up=9), "task.catch_up"),  # type: ignore[arg-type]
        (pb.TaskSpec(catch_up_window=Duration(seconds=-1)), "task.catch_up_window"),
        (pb.TaskSpec(catch_up_window=Duration(seconds=7 * 86_400 + 1)), "task.catch_up_window"),
        (pb.TaskSpec(misfire_threshold=Duration(nanos=-1_000_000)), "task.misfire_threshold"),
    ],
)
def test_catch_up_from_proto_rejects(spec: pb.TaskSpec, field: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        catch_up_from_proto(spec, 5 * S)
    assert e.value.field == field


def test_catch_up_window_of_seven_days_is_accepted_and_zero_is_the_default() -> None:
    spec = pb.TaskSpec(catch_up_window=Duration(seconds=7 * 86_400))
    assert catch_up_from_proto(spec, S).window == timedelta(days=7)
    spec = pb.TaskSpec(catch_up=pb.CATCH_UP_RUN_ALL, catch_up_window=Duration(seconds=0))
    assert catch_up_from_proto(spec, S) == CatchUp("run_all", H, S)


# --- property-style: the planner against a per-slot reference model -----------------------------


def reference(
    s: CompiledSchedule,
    cursor: datetime,
    now: datetime,
    cu: CatchUp,
    fire_at: FireAt | None,
    paused_until: datetime | None,
    unschedulable: tuple[datetime, datetime] | None,
    max_fire: int,
    budget: int | None,
    ahead: timedelta = timedelta(0),
) -> Plan:
    """The rules applied slot by slot (no closed forms): the specification the planner meets."""
    f = fire_at or (lambda x: x)
    due = [x for x in s.slots_between(cursor, now + ahead, 1_000_000) if f(x) <= now + ahead]
    on_time = [x for x in due if now - f(x) <= cu.misfire_threshold]
    missed = [x for x in due if now - f(x) > cu.misfire_threshold]
    if cu.policy == CATCH_UP_SKIP or (cu.policy == CATCH_UP_RUN_ONCE and on_time):
        skipped, replay = missed, []
    elif cu.policy == CATCH_UP_RUN_ONCE:
        skipped, replay = missed[:-1], missed[-1:]
    else:
        skipped = [x for x in missed if f(x) < now - cu.window]
        replay = [x for x in missed if f(x) >= now - cu.window]
    base = "catch_up_window" if cu.policy == CATCH_UP_RUN_ALL else "misfire"

    def reason(x: datetime) -> str:
        if paused_until is not None and f(x) < paused_until:
            return "paused"
        if unschedulable is not None and unschedulable[0] <= f(x) < unschedulable[1]:
            return "unschedulable"
        return base

    reasons = [(x, reason(x)) for x in skipped]
    limit = max_fire if budget is None or budget >= len(replay) else min(max_fire, budget)
    fire = (replay + on_time)[:limit]
    new_cursor = fire[-1] if fire else skipped[-1] if skipped else cursor
    nxt = s.next_after(new_cursor)
    c = counts()
    for _, r in reasons:
        c[r] += 1
    return Plan(fire, reasons, c, len(set(fire) & set(replay)), new_cursor, f(nxt) if nxt else None)


def jitter_within(period_ms: int) -> FireAt:
    """Deterministic per-slot jitter in [0, period) (strictly increasing for gaps >= period)."""
    return lambda x: x + MS * (int(x.timestamp() * 1000) * 2_654_435_761 % period_ms)


SCHEDULES: list[tuple[CompiledSchedule, int]] = [  # (schedule, smallest gap between slots, ms)
    (every(7 * S), 7_000),
    (every(M), 60_000),
    (cron("*/5 * * * *"), 300_000),
    (cron("*/20 2,3 * * *", "Europe/Berlin"), 1_200_000),
    (every(M, end_at=T0 + 3 * H, max_runs=150), 60_000),
]


def random_case(rng: random.Random) -> tuple[CompiledSchedule, dict[str, object], datetime]:
    s, gap = rng.choice(SCHEDULES)
    start = T0 + rng.choice([timedelta(0), timedelta(days=87)])  # Berlin DST 2026-03-29 01:00Z
    cursor = start + MS * rng.randrange(0, 3 * 3_600_000)
    now = cursor + MS * rng.randrange(0, 6 * 3_600_000)
    policy = rng.choice([CATCH_UP_SKIP, CATCH_UP_RUN_ONCE, CATCH_UP_RUN_ALL])
    cu = CatchUp(policy, MS * rng.randrange(0, 3_600_000), MS * rng.randrange(0, 900_000))
    jitters: list[FireAt | None] = [None, jitter_within(gap), shifted(MS * 3 * gap // 2)]
    kw: dict[str, object] = {
        "catch_up": cu,
        "fire_at": rng.choice(jitters),
        "paused_until": rng.choice([None, cursor + (now - cursor) * rng.random()]),
        "unschedulable": rng.choice([None, window_in(rng, cursor - 2 * H, now + H)]),
        "max_fire": rng.choice([1, 3, 1000]),
        "budget": rng.choice([None, 0, 1, 4]),
    }
    return s, kw, now


def window_in(rng: random.Random, lo: datetime, hi: datetime) -> tuple[datetime, datetime]:
    a, b = sorted(lo + (hi - lo) * rng.random() for _ in range(2))
    return a, b


def call(s: CompiledSchedule, cursor: datetime, now: datetime, kw: dict[str, object]) -> Plan:
    return plan_due(
        s,
        cursor,
        now,
        kw["catch_up"],  # type: ignore[arg-type]
        fire_at=kw["fire_at"],  # type: ignore[arg-type]
        paused_until=kw["paused_until"],  # type: ignore[arg-type]
        unschedulable=kw["unschedulable"],  # type: ignore[arg-type]
        max_fire=kw["max_fire"],  # type: ignore[arg-type]
        replay_budget=kw["budget"],  # type: ignore[arg-type]
        skip_record_limit=100_000,
        ahead=kw.get("ahead", timedelta(0)),  # type: ignore[arg-type]
    )


def general(s: CompiledSchedule, cursor: datetime, now: datetime, kw: dict[str, object]) -> Plan:
    """:func:`call` with plan_due's quick path (``_one_on_time``) turned off."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(peerd.core.plan, "_one_on_time", lambda *args: None)
        p = call(s, cursor, now, kw)
    assert not p.fire_instants  # only the quick path fills them: it was off
    return p


def expected(s: CompiledSchedule, cursor: datetime, now: datetime, kw: dict[str, object]) -> Plan:
    """:func:`reference` with the arguments of a :func:`random_case`."""
    return reference(
        s,
        cursor,
        now,
        kw["catch_up"],  # type: ignore[arg-type]
        kw["fire_at"],  # type: ignore[arg-type]
        kw["paused_until"],  # type: ignore[arg-type]
        kw["unschedulable"],  # type: ignore[arg-type]
        kw["max_fire"],  # type: ignore[arg-type]
        kw["budget"],  # type: ignore[arg-type]
        kw.get("ahead", timedelta(0)),  # type: ignore[arg-type]
    )


def aheads(s: CompiledSchedule) -> list[timedelta]:
    """The claim-ahead values the random tests try: none, the engine's 300 ms, and one gap of
    ``s`` (two slots may then be due at once)."""
    gap = next(g for c, g in SCHEDULES if c is s)
    return [timedelta(0), 300 * MS, gap * MS]


def test_matches_the_reference_model_on_random_cases() -> None:
    rng = random.Random(20260101)
    for i in range(400):
        s, kw, now = random_case(rng)
        cursor = now - MS * rng.randrange(0, 6 * 3_600_000)
        kw["ahead"] = aheads(s)[i % 3]
        assert call(s, cursor, now, kw) == expected(s, cursor, now, kw), (cursor, now, kw)


def test_one_due_slot_on_time_matches_the_reference_model() -> None:
    # The steady state (cursor at most a gap or two behind now) takes plan_due's quick path
    # when exactly one slot is due and on time: it must plan what the rules say, and what the
    # general path plans, with and without claim-ahead.
    rng = random.Random(13)
    quick = dict.fromkeys(range(3), 0)
    for _ in range(400):
        s, kw, now = random_case(rng)
        gap = next(g for c, g in SCHEDULES if c is s)
        cursor = now - MS * rng.randrange(0, 2 * gap)
        last = s.last_slots(cursor - D, cursor, 1)  # a slot, as the engine's cursors are
        cursor = last[-1] if last else cursor
        for i, kw["ahead"] in enumerate(aheads(s)):
            p = call(s, cursor, now, kw)
            assert p == expected(s, cursor, now, kw), (cursor, now, kw)
            assert p == general(s, cursor, now, kw), (cursor, now, kw)
            if p.fire_instants:
                quick[i] += 1
                f = kw["fire_at"] or (lambda x: x)
                assert p.fire_instants == [f(x) for x in p.fire]  # type: ignore[operator]
    # the quick path was taken at every claim-ahead, not only the general one
    assert min(quick.values()) > 50, quick


def test_replanning_until_done_handles_every_due_slot_exactly_once() -> None:
    rng = random.Random(7)
    for _ in range(200):
        s, kw, now = random_case(rng)
        cursor0 = cursor = now - MS * rng.randrange(0, 6 * 3_600_000)
        fired: list[datetime] = []
        skipped: list[datetime] = []
        for _ in range(10_000):
            p = call(s, cursor, now, kw)
            assert p.cursor >= cursor  # monotone
            assert p.fire == sorted(p.fire) and p.missed_fired <= len(p.fire)
            assert p.skipped_count == len(p.skipped)
            fired += p.fire
            skipped += [t for t, _ in p.skipped]
            cursor = p.cursor
            if p.next_at is None or p.next_at > now:
                break
            if kw["budget"] == 0 and not p.fire and not p.skipped:
                kw["budget"] = 1  # no budget ever: the engine would wait; give it some
        assert not set(fired) & set(skipped)
        f = kw["fire_at"] or (lambda x: x)
        every_slot = s.slots_between(cursor0, now, 1_000_000)
        remaining = [x for x in every_slot if f(x) > now]  # type: ignore[operator]
        assert sorted(fired + skipped) + remaining == every_slot
        assert len(fired) + len(skipped) + len(remaining) == len(every_slot)


# --- claim-ahead ---------------------------------------------------------------------------


def test_ahead_plans_slots_firing_within_it_and_judges_misses_at_now() -> None:
    # now 00:00:59.700: without ahead, the 00:01 slot is not due; with 300 ms it fires (on time)
    now = T0 + M - 300 * MS
    assert plan_due(every(M), T0, now, skip()).fire == []
    p = plan_due(every(M), T0, now, skip(), ahead=300 * MS)
    assert p == Plan([T0 + M], [], counts(), 0, T0 + M, T0 + 2 * M)
    assert plan_due(every(M), T0, now, skip(), ahead=299 * MS).fire == []
    # a missed slot is judged against now, not now + ahead: 00:01 is 29.9 s late (threshold 30 s)
    late = plan_due(every(M), T0, T0 + M + 29_900 * MS, skip(), ahead=300 * MS)
    assert late.fire == [T0 + M] and late.skipped_count == 0


def test_ahead_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="ahead"):
        plan_due(every(M), T0, T0 + M, skip(), ahead=-MS)
