"""Schedule preview (local times, DST notes), deterministic jitter and its validation."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from google.protobuf.duration_pb2 import Duration

from peerd.core.preview import PreviewSlot, preview, to_proto
from peerd.core.schedule import (
    MAX_JITTER,
    CompiledSchedule,
    ScheduleSpec,
    jitter_offset,
    spec_from_proto,
    validate_schedule,
)
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def z(month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, sec, tzinfo=UTC)


def cron(expr: str, tz: str = "UTC", **kw: object) -> CompiledSchedule:
    return CompiledSchedule(ScheduleSpec(cron=expr, time_zone=tz, **kw), RULES)  # type: ignore[arg-type]


def rows(slots: list[PreviewSlot]) -> list[tuple[str, str]]:
    return [(p.local_time, p.note) for p in slots]


# --- preview ------------------------------------------------------------------------------------


def test_spring_forward_shift_note() -> None:
    out = preview(cron("30 2 * * *", "Europe/Berlin"), "t", z(3, 27, 12), 3)
    assert [p.scheduled_at for p in out] == [z(3, 28, 1, 30), z(3, 29, 1), z(3, 30, 0, 30)]
    assert rows(out) == [
        ("2026-03-28T02:30:00+01:00", ""),
        (
            "2026-03-29T03:00:00+02:00",
            "02:30 does not exist on 2026-03-29 (spring forward); shifted to 03:00",
        ),
        ("2026-03-30T02:30:00+02:00", ""),
    ]
    assert all(p.fire_at == p.scheduled_at for p in out)  # no jitter


def test_spring_forward_skip_note_goes_on_the_next_slot() -> None:
    out = preview(cron("30 2 * * *", "Europe/Berlin", dst_nonexistent="skip"), "t", z(3, 27, 12), 2)
    assert rows(out) == [
        ("2026-03-28T02:30:00+01:00", ""),
        (
            "2026-03-30T02:30:00+02:00",
            "02:30 does not exist on 2026-03-29 (spring forward); skipped",
        ),
    ]
    # hourly (auto = skip): the 03:00 slot explains the missing 02:00
    hourly = preview(cron("0 * * * *", "Europe/Berlin"), "t", z(3, 29, 0, 30), 2)
    assert rows(hourly) == [
        (
            "2026-03-29T03:00:00+02:00",
            "02:00 does not exist on 2026-03-29 (spring forward); skipped",
        ),
        ("2026-03-29T04:00:00+02:00", ""),
    ]


def test_several_missing_times_in_one_note() -> None:
    three = preview(cron("*/20 2 * * *", "Europe/Berlin"), "t", z(3, 29), 1)
    assert rows(three) == [
        (
            "2026-03-29T03:00:00+02:00",
            "02:00, 02:20, 02:40 do not exist on 2026-03-29 (spring forward); shifted to 03:00",
        )
    ]
    sixty = preview(cron("* 2 * * *", "Europe/Berlin"), "t", z(3, 29), 1)
    assert sixty[0].note == (
        "02:00 to 02:59 (60 times) do not exist on 2026-03-29 (spring forward); shifted to 03:00"
    )
    seconds = preview(cron("*/30 * 2 * * *", "Europe/Berlin"), "t", z(3, 29), 1)
    assert seconds[0].local_time == "2026-03-29T03:00:00+02:00"
    assert seconds[0].note == (
        "02:00:00 to 02:59:30 (120 times) do not exist on 2026-03-29 (spring forward); "
        "shifted to 03:00:00"
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            "first",
            [("2026-10-25T02:30:00+02:00", "first of two (the second does not fire)")],
        ),
        (
            "last",
            [("2026-10-25T02:30:00+01:00", "second of two (the first does not fire)")],
        ),
        (
            "both",
            [
                ("2026-10-25T02:30:00+02:00", "first of two"),
                ("2026-10-25T02:30:00+01:00", "second of two"),
            ],
        ),
    ],
)
def test_fall_back_notes(policy: str, expected: list[tuple[str, str]]) -> None:
    s = cron("30 2 * * *", "Europe/Berlin", dst_ambiguous=policy)
    out = preview(s, "t", z(10, 24, 12), len(expected) + 1)
    prefix = "02:30 occurs twice on 2026-10-25 (fall back); "
    assert rows(out) == [(t, prefix + n) for t, n in expected] + [("2026-10-26T02:30:00+01:00", "")]


def test_lord_howe_half_hour_offsets() -> None:
    out = preview(
        cron("0 * * * *", "Australia/Lord_Howe", dst_nonexistent="shift"), "t", z(10, 3, 14), 3
    )
    assert rows(out) == [
        ("2026-10-04T01:00:00+10:30", ""),
        (
            "2026-10-04T02:30:00+11:00",
            "02:00 does not exist on 2026-10-04 (spring forward); shifted to 02:30",
        ),
        ("2026-10-04T03:00:00+11:00", ""),
    ]
    back = preview(cron("45 1 * * *", "Australia/Lord_Howe"), "t", z(4, 4), 1)
    assert rows(back) == [
        (
            "2026-04-05T01:45:00+11:00",
            "01:45 occurs twice on 2026-04-05 (fall back); first of two (the second does not fire)",
        )
    ]


def test_local_time_format() -> None:
    every = CompiledSchedule(
        ScheduleSpec(every=timedelta(milliseconds=1500), created_at=NOW, time_zone="Europe/Berlin"),
        RULES,
    )
    assert [p.local_time for p in preview(every, "t", NOW, 2)] == [
        "2026-01-01T01:00:01.500+01:00",
        "2026-01-01T01:00:03+01:00",
    ]
    assert preview(cron("0 9 * * *"), "t", NOW, 1)[0].local_time == "2026-01-01T09:00:00+00:00"
    ny = preview(cron("0 9 * * *", "America/New_York"), "t", NOW, 1)[0]
    assert (ny.scheduled_at, ny.local_time) == (z(1, 1, 14), "2026-01-01T09:00:00-05:00")


def test_preview_is_next_after_with_bounds() -> None:
    s = cron("*/7 1-3 * * *", "Europe/Berlin", max_runs=40, created_at=z(3, 27))
    out = preview(s, "t", z(3, 27), 100)
    expected, t = [], z(3, 27)
    while (nxt := s.next_after(t)) is not None:
        expected.append(nxt)
        t = nxt
    assert [p.scheduled_at for p in out] == expected and len(expected) == 40
    assert preview(s, "t", z(3, 27), 0) == []
    ended = cron("0 * * * *", end_at=z(1, 1, 3))
    assert [p.scheduled_at for p in preview(ended, "t", NOW, 10)] == [
        z(1, 1, 1),
        z(1, 1, 2),
        z(1, 1, 3),
    ]
    with pytest.raises(ValueError, match="count"):
        preview(s, "t", z(3, 27), -1)
    with pytest.raises(ValueError, match="timezone-aware"):
        preview(s, "t", datetime(2026, 3, 27), 1)


def test_preview_fire_at_uses_the_jitter() -> None:
    s = cron("0 * * * *", jitter=timedelta(minutes=10))
    out = preview(s, "task-a", NOW, 50)
    assert [p.fire_at for p in out] == [s.fire_at("task-a", p.scheduled_at) for p in out]
    assert all(p.scheduled_at <= p.fire_at < p.scheduled_at + timedelta(minutes=10) for p in out)
    assert any(p.fire_at != p.scheduled_at for p in out)


def test_to_proto() -> None:
    s = cron("30 2 * * *", "Europe/Berlin", jitter=timedelta(seconds=30))
    slot = preview(s, "t", z(3, 28, 12), 1)[0]
    msg = to_proto(slot)
    assert isinstance(msg, pb.PreviewSlot)
    assert msg.scheduled_at.ToDatetime(tzinfo=UTC) == z(3, 29, 1)
    assert msg.fire_at.ToDatetime(tzinfo=UTC) == slot.fire_at
    assert (msg.local_time, msg.note) == (slot.local_time, slot.note)
    assert msg.note.endswith("shifted to 03:00")


# --- jitter -------------------------------------------------------------------------------------


def test_jitter_offset_is_pinned_across_versions() -> None:
    # Every node must compute the same instant: these values may never change.
    assert jitter_offset("task-1", 1_774_746_000_000, timedelta(minutes=5)) == 253_202 * MS
    assert jitter_offset("task-1", 1_774_746_000_001, timedelta(minutes=5)) == 56_485 * MS
    assert jitter_offset("backup-db", 0, timedelta(seconds=30)) == 18_655 * MS
    assert jitter_offset("é-unicode", -1000, timedelta(hours=1)) == 1_293_275 * MS


def test_jitter_offset_bounds_and_edge_cases() -> None:
    for jitter in (MS, 2 * MS, timedelta(seconds=1), timedelta(minutes=59, seconds=59)):
        for i in range(500):
            d = jitter_offset(f"task-{i}", 1_700_000_000_000 + i * 60_000, jitter)
            assert timedelta(0) <= d < jitter
            assert d % MS == timedelta(0)
    assert jitter_offset("t", 0, timedelta(0)) == timedelta(0)
    assert jitter_offset("t", 0, timedelta(microseconds=999)) == timedelta(0)  # under 1 ms
    assert jitter_offset("t", 0, MS) == timedelta(0)
    with pytest.raises(ValueError, match="negative"):
        jitter_offset("t", 0, -MS)


def test_jitter_offset_distribution() -> None:
    # 20,000 slots of one task over [0, 1000) ms: uniform in 10 buckets (chi-square, 9 dof:
    # p = 0.001 at 27.9), mean near 499.5; other tasks get other offsets for the same slot.
    values = [
        jitter_offset("task-x", 1_700_000_000_000 + i * 1000, timedelta(seconds=1)) // MS
        for i in range(20_000)
    ]
    buckets = Counter(v // 100 for v in values)
    chi2 = sum((buckets[b] - 2000) ** 2 / 2000 for b in range(10))
    assert chi2 < 27.9
    assert abs(sum(values) / len(values) - 499.5) < 10
    same_slot = {jitter_offset(f"task-{i}", 0, timedelta(seconds=1)) for i in range(100)}
    assert len(same_slot) > 90


def test_fire_at_is_deterministic() -> None:
    spec = ScheduleSpec(cron="*/5 * * * *", jitter=timedelta(minutes=4))
    a, b = CompiledSchedule(spec, RULES), CompiledSchedule(spec, RULES)
    slot = z(3, 1, 12, 5)
    assert (
        a.fire_at("t1", slot)
        == b.fire_at("t1", slot)
        == slot + jitter_offset("t1", int(slot.timestamp() * 1000), timedelta(minutes=4))
    )
    assert len({a.fire_at(f"t{i}", slot) for i in range(50)}) > 40


@pytest.mark.parametrize(
    ("expr", "tz", "policies", "jitter"),
    [
        ("0 * * * *", "Europe/Berlin", {}, timedelta(minutes=59, seconds=59, milliseconds=999)),
        ("0 * * * *", "Australia/Lord_Howe", {"dst_nonexistent": "shift"}, timedelta(minutes=29)),
        ("* * * * *", "America/New_York", {"dst_ambiguous": "both"}, timedelta(seconds=59)),
        ("30 2,3 * * *", "Europe/Berlin", {}, timedelta(minutes=29, seconds=59)),
    ],
)
def test_fire_at_strictly_increasing_with_the_largest_valid_jitter(
    expr: str, tz: str, policies: dict[str, str], jitter: timedelta
) -> None:
    s = cron(expr, tz, jitter=jitter, **policies)
    assert s.min_gap(NOW) is not None and jitter < s.min_gap(NOW)  # type: ignore[operator]
    slots = []
    for lo, hi in (
        (z(3, 7), z(3, 9)),
        (z(3, 28), z(3, 30)),
        (z(4, 3), z(4, 6)),
        (z(10, 2), z(10, 5)),
        (z(10, 24), z(11, 2)),
    ):
        slots += s.slots_between(lo, hi, 10_000)
    for task in (f"task-{i}" for i in range(40)):
        fires = [s.fire_at(task, x) for x in slots]
        assert all(a < b for a, b in pairwise(fires))


def test_fire_order_breaks_when_jitter_reaches_the_gap() -> None:
    # the property above is not vacuous: with jitter > gap some task fires out of order
    s = cron("* * * * *", jitter=timedelta(minutes=5))
    slots = s.slots_between(NOW, NOW + timedelta(hours=1), 100)
    inverted = 0
    for task in (f"task-{i}" for i in range(20)):
        fires = [s.fire_at(task, x) for x in slots]
        inverted += sum(a >= b for a, b in pairwise(fires))
    assert inverted > 0


# --- min_gap and jitter validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz", "policies", "gap"),
    [
        ("0 * * * *", "Europe/Berlin", {}, timedelta(hours=1)),
        ("0 * * * *", "Australia/Lord_Howe", {}, timedelta(hours=1)),
        ("0 * * * *", "Australia/Lord_Howe", {"dst_nonexistent": "shift"}, timedelta(minutes=30)),
        ("30 2,3 * * *", "Europe/Berlin", {}, timedelta(minutes=30)),  # 02:30 -> 03:00, 03:30
        ("59 1,3 * * *", "Europe/Berlin", {}, timedelta(hours=1)),  # 01:59 CET -> 03:59 CEST
        ("*/10 * * * *", "UTC", {}, timedelta(minutes=10)),
        ("0 9 * * *", "America/New_York", {}, timedelta(hours=23)),
        ("* * * * * *", "Europe/Berlin", {}, timedelta(seconds=1)),
        ("0,59 0,23 * * 1", "UTC", {}, timedelta(minutes=1)),  # bound, as if every day matched
    ],
)
def test_min_gap(expr: str, tz: str, policies: dict[str, str], gap: timedelta) -> None:
    assert cron(expr, tz, **policies).min_gap(NOW) == gap


@pytest.mark.parametrize(
    ("expr", "tz", "policies"),
    [
        ("0 * * * *", "Australia/Lord_Howe", {"dst_nonexistent": "shift"}),
        ("30 2,3 * * *", "Europe/Berlin", {}),
        ("59 1,3 * * *", "America/New_York", {"dst_ambiguous": "both"}),
        ("*/25 1-3 * * *", "Australia/Lord_Howe", {"dst_ambiguous": "last"}),
    ],
)
def test_min_gap_is_a_lower_bound(expr: str, tz: str, policies: dict[str, str]) -> None:
    s = cron(expr, tz, **policies)
    slots = s.slots_between(NOW, NOW + timedelta(days=2 * 366), 100_000)
    real = min(b - a for a, b in pairwise(slots))
    bound = s.min_gap(NOW)
    assert bound is not None and bound <= real


def test_min_gap_every_and_at() -> None:
    every = CompiledSchedule(ScheduleSpec(every=timedelta(seconds=90), created_at=NOW), RULES)
    assert every.min_gap(NOW) == timedelta(seconds=90)
    assert CompiledSchedule(ScheduleSpec(at=z(6, 1), created_at=NOW), RULES).min_gap(NOW) is None


def _sched(**kw: object) -> pb.Schedule:
    return pb.Schedule(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"cron": "* * * * *", "jitter": Duration(seconds=-1)}, "jitter -1s must not be negative"),
        (
            {"cron": "0 0 * * *", "jitter": Duration(seconds=3601)},
            "jitter 1h1s exceeds the maximum of 1h",
        ),
        (
            {"at": z(6, 1), "jitter": Duration(seconds=3600, nanos=1_000_000)},
            "jitter 1h1ms exceeds the maximum of 1h",
        ),
        (
            {"every": Duration(seconds=10), "jitter": Duration(seconds=10)},
            "jitter 10s must be less than every (10s)",
        ),
        (
            {"cron": "* * * * *", "jitter": Duration(seconds=60)},
            "jitter 1m must be less than the smallest gap between slots (1m)",
        ),
        (
            {"cron": "0 * * * *", "jitter": Duration(seconds=3600)},
            "jitter 1h must be less than the smallest gap between slots (1h)",
        ),
        (
            {
                "cron": "0 * * * *",
                "time_zone": "Australia/Lord_Howe",
                "dst_nonexistent": pb.DST_NONEXISTENT_SHIFT,
                "jitter": Duration(seconds=1800),
            },
            "jitter 30m must be less than the smallest gap between slots (30m)",
        ),
        (
            {"cron": "* * * * * *", "jitter": Duration(seconds=1)},
            "jitter 1s must be less than the smallest gap between slots (1s)",
        ),
    ],
)
def test_jitter_validation_errors(kw: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        validate_schedule(_sched(**kw), NOW, rules=RULES)
    assert ei.value.field == "task.schedule.jitter"
    assert reason in ei.value.reason


@pytest.mark.parametrize(
    "kw",
    [
        {"cron": "* * * * *", "jitter": Duration(seconds=59, nanos=999_000_000)},
        {"cron": "0 * * * *", "time_zone": "Europe/Berlin", "jitter": Duration(seconds=3599)},
        {"cron": "0 0 * * *", "jitter": Duration(seconds=3600)},
        {"cron": "* * * * * *", "jitter": Duration(nanos=999_000_000)},  # < 1 s: always fine
        {"every": Duration(seconds=10), "jitter": Duration(seconds=9, nanos=999_999_999)},
        {"at": z(6, 1), "jitter": Duration(seconds=3600)},
        {"cron": "@hourly"},
    ],
)
def test_jitter_validation_accepts(kw: dict[str, object]) -> None:
    validate_schedule(_sched(**kw), NOW, rules=RULES)


def test_jitter_from_proto_is_whole_ms() -> None:
    msg = _sched(every=Duration(seconds=10), jitter=Duration(seconds=2, nanos=5_999_999))
    validate_schedule(msg, NOW, rules=RULES)
    s = CompiledSchedule(
        ScheduleSpec(
            every=timedelta(seconds=10), jitter=timedelta(milliseconds=2005), created_at=NOW
        ),
        RULES,
    )
    assert spec_from_proto(msg, NOW).jitter == timedelta(milliseconds=2005) == s.spec.jitter
    assert timedelta(hours=1) == MAX_JITTER
    with pytest.raises(ValueError, match="negative"):
        ScheduleSpec(cron="* * * * *", jitter=-MS)
