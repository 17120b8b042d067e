"""Schedules: cron/every/at slots, time zones and DST, bounds, max_runs, validation (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from croniter import croniter
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from peerd.core.crontab import parse_cron_fields
from peerd.core.schedule import (
    CompiledSchedule,
    ScheduleSpec,
    normalise_cron,
    spec_from_proto,
    validate_schedule,
)
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def z(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def cron(expr: str, tz: str = "UTC", **kw: object) -> CompiledSchedule:
    return CompiledSchedule(ScheduleSpec(cron=expr, time_zone=tz, **kw), RULES)  # type: ignore[arg-type]


def take(s: CompiledSchedule, after: datetime, n: int) -> list[datetime]:
    return s.slots_between(after, z(9999, 1, 1), n)


def hm(slots: list[datetime]) -> list[str]:
    return [d.strftime("%m-%d %H:%M:%SZ") for d in slots]


# --- cron ---------------------------------------------------------------------------------------


def test_five_field_cron() -> None:
    s = cron("*/15 9-10 * * *")
    assert hm(take(s, z(2026, 1, 1, 9, 40), 4)) == [
        "01-01 09:45:00Z",
        "01-01 10:00:00Z",
        "01-01 10:15:00Z",
        "01-01 10:30:00Z",
    ]
    assert s.next_after(z(2026, 1, 1, 10, 45)) == z(2026, 1, 2, 9, 0)


def test_six_field_cron_has_leading_seconds() -> None:
    s = cron("*/20 * * * * *")
    assert take(s, z(2026, 1, 1), 3) == [
        z(2026, 1, 1, 0, 0, 20),
        z(2026, 1, 1, 0, 0, 40),
        z(2026, 1, 1, 0, 1, 0),
    ]
    assert cron("30 0 12 * * *").next_after(z(2026, 1, 1)) == z(2026, 1, 1, 12, 0, 30)


@pytest.mark.parametrize(
    ("desc", "first"),
    [
        ("@hourly", z(2026, 1, 1, 1)),
        ("@daily", z(2026, 1, 2)),
        ("@midnight", z(2026, 1, 2)),
        ("@weekly", z(2026, 1, 4)),  # Sunday
        ("@monthly", z(2026, 2, 1)),
        ("@yearly", z(2027, 1, 1)),
        ("@annually", z(2027, 1, 1)),
        ("@DAILY", z(2026, 1, 2)),
    ],
)
def test_descriptors(desc: str, first: datetime) -> None:
    assert cron(desc).next_after(z(2026, 1, 1)) == first


def test_names_and_dow_seven_and_dom_dow_or() -> None:
    assert cron("0 9 * JAN mon").next_after(z(2026, 1, 1)) == z(2026, 1, 5, 9)
    assert cron("0 0 * * 7").next_after(z(2026, 1, 1)) == z(2026, 1, 4)  # 7 = Sunday
    assert cron("0 0 * * 7-7").next_after(z(2026, 1, 1)) == z(2026, 1, 4)
    # dom and dow both restricted: OR (crontab(5)): the 13th or any Friday.
    assert hm(take(cron("0 0 13 * fri"), z(2026, 2, 1), 4)) == [
        "02-06 00:00:00Z",
        "02-13 00:00:00Z",
        "02-20 00:00:00Z",
        "02-27 00:00:00Z",
    ]
    assert hm(take(cron("0 0 13 * fri"), z(2026, 3, 1), 3)) == [
        "03-06 00:00:00Z",
        "03-13 00:00:00Z",
        "03-20 00:00:00Z",
    ]
    # dom unrestricted (*): dow alone decides.
    assert cron("0 0 * * fri").next_after(z(2026, 2, 6)) == z(2026, 2, 13)


def test_leap_day() -> None:
    assert cron("0 0 29 2 *").next_after(z(2026, 1, 1)) == z(2028, 2, 29)


# --- time zones and DST -------------------------------------------------------------------------


def test_new_york_daily_nine_is_14z_in_winter_13z_in_summer() -> None:
    s = cron("0 9 * * *", "America/New_York")
    assert s.next_after(z(2026, 1, 10)) == z(2026, 1, 10, 14)
    assert s.next_after(z(2026, 7, 10)) == z(2026, 7, 10, 13)
    # across the 2026-03-08 spring-forward
    assert hm(take(s, z(2026, 3, 6, 15), 3)) == [
        "03-07 14:00:00Z",
        "03-08 13:00:00Z",
        "03-09 13:00:00Z",
    ]


def test_berlin_spring_forward_2026_03_29() -> None:
    # 02:00 CET (01:00Z) jumps to 03:00 CEST: 02:xx local does not exist that day.
    assert hm(take(cron("30 2 * * *", "Europe/Berlin"), z(2026, 3, 27, 12), 3)) == [
        "03-28 01:30:00Z",  # 02:30 CET
        "03-29 01:00:00Z",  # 02:30 does not exist: fires at 03:00 CEST
        "03-30 00:30:00Z",  # 02:30 CEST
    ]
    assert cron("0 2 * * *", "Europe/Berlin").next_after(z(2026, 3, 28, 12)) == z(2026, 3, 29, 1)
    # '*' in the hour: the missing 02:30 is skipped, not moved
    assert hm(take(cron("30 * * * *", "Europe/Berlin"), z(2026, 3, 28, 23, 59), 3)) == [
        "03-29 00:30:00Z",  # 01:30 CET
        "03-29 01:30:00Z",  # 03:30 CEST
        "03-29 02:30:00Z",  # 04:30 CEST
    ]
    hourly = cron("0 * * * *", "Europe/Berlin")
    assert hourly.count_between(z(2026, 3, 28, 23), z(2026, 3, 29, 23)) == 24


def test_berlin_fall_back_2026_10_25() -> None:
    # 03:00 CEST (01:00Z) goes back to 02:00 CET: 02:xx local happens twice. Default (auto):
    # a fixed hour fires at the first occurrence only, like Vixie cron.
    assert hm(take(cron("30 2 * * *", "Europe/Berlin"), z(2026, 10, 23, 12), 4)) == [
        "10-24 00:30:00Z",  # 02:30 CEST
        "10-25 00:30:00Z",  # 02:30 CEST (the 02:30 CET at 01:30Z does not fire)
        "10-26 01:30:00Z",  # 02:30 CET
        "10-27 01:30:00Z",
    ]
    # '*' in the hour: both occurrences
    assert hm(take(cron("0 * * * *", "Europe/Berlin"), z(2026, 10, 24, 23, 30), 4)) == [
        "10-25 00:00:00Z",  # 02:00 CEST
        "10-25 01:00:00Z",  # 02:00 CET
        "10-25 02:00:00Z",  # 03:00 CET
        "10-25 03:00:00Z",
    ]
    # times outside the repeated hour are unaffected
    assert hm(take(cron("0 9 * * *", "Europe/Berlin"), z(2026, 10, 24), 2)) == [
        "10-24 07:00:00Z",
        "10-25 08:00:00Z",
    ]
    # a 25-hour local day: 25 hourly slots between local midnights
    hourly = cron("0 * * * *", "Europe/Berlin")
    assert hourly.count_between(z(2026, 10, 24, 21, 59), z(2026, 10, 25, 22, 59)) == 25


@pytest.mark.parametrize("expr", ["*/30 * * * *", "30 2 * * *", "0 2-3 * * *", "*/7 1-3 * * *"])
def test_dst_is_deterministic_and_counts_match_enumeration(expr: str) -> None:
    s = cron(expr, "Europe/Berlin")
    for lo, hi in ((z(2026, 3, 27), z(2026, 4, 1)), (z(2026, 10, 23), z(2026, 10, 28))):
        all_slots = s.slots_between(lo, hi, 10_000)
        assert all_slots == sorted(set(all_slots))
        assert all_slots == cron(expr, "Europe/Berlin").slots_between(lo, hi, 10_000)
        assert s.count_between(lo, hi) == len(all_slots)
        t = lo
        while t < all_slots[-1]:  # the next slot does not depend on where we start
            expected = next(x for x in all_slots if x > t)
            assert s.next_after(t) == expected
            t += timedelta(minutes=7)
        assert s.last_slots(lo, hi, 5) == all_slots[-5:]


@pytest.mark.parametrize("ambiguous", ["first", "last", "both"])
def test_next_after_in_any_order_matches_enumeration(ambiguous: str) -> None:
    # The calendar memoises its last answer (CronCalendar.next_slot), and calendars are shared
    # by every schedule with the same fields and zone: asking forwards, backwards and again,
    # from instants inside and outside the memoised interval, gives the enumerated answer.
    lo, hi = z(2026, 10, 24, 20), z(2026, 10, 25, 6)
    all_slots = cron("*/20 * * * *", "Europe/Berlin", dst_ambiguous=ambiguous).slots_between(
        lo, hi, 1000
    )
    queries = [lo + timedelta(minutes=7 * i, seconds=i % 3) for i in range(80)]
    queries = queries + queries[::-1] + queries[::3] + queries[1::2][::-1]
    for t in queries:
        s = cron("*/20 * * * *", "Europe/Berlin", dst_ambiguous=ambiguous)
        assert s.next_after(t) == next(x for x in all_slots if x > t), t


@pytest.mark.parametrize(
    "expr",
    [
        "*/15 9-10 * * *",
        "0 0 13 * fri",
        "0 0 29 2 *",
        "*/20 * * * * *",
        "5 4 */2 * 1-5",
        "0 12 1,15 * sun",
        "0 0 28-31 * *",
        "*/7 */3 */5 */2 *",
        "0 9 1-7 * 1",
        "30 0 12 * * *",
    ],
)
@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo"])
def test_slots_match_croniter(expr: str, tz: str) -> None:
    # croniter is the oracle for field and day matching (peerd computes slots itself).
    fields = parse_cron_fields(expr)
    start = datetime(2023, 5, 17, 3, 4, 5, tzinfo=UTC)
    it = croniter(
        fields.canonical,
        start.astimezone(RULES.zone(tz, "tz")),
        day_or=True,
        second_at_beginning=fields.six,
    )
    expected = [it.get_next(datetime).astimezone(UTC) for _ in range(200)]
    s = cron(expr, tz)
    assert take(s, start, 200) == expected
    assert s.count_between(start, expected[-1]) == 200
    assert s.last_slots(start, expected[-1], 3) == expected[-3:]


def test_count_is_exact_over_years() -> None:
    s = cron("*/5 * * * *", "Europe/Berlin")
    # 2026 has 365 local days, one 23-hour and one 25-hour day: 365 * 288 slots
    assert s.count_between(z(2025, 12, 31, 22, 59), z(2026, 12, 31, 22, 59)) == 365 * 288
    assert cron("0 0 1 1 *").count_between(z(2000, 1, 1), z(2400, 1, 1)) == 400
    assert cron("0 0 29 2 *").count_between(z(2000, 1, 1), z(2400, 1, 1)) == 97


# --- every / at ---------------------------------------------------------------------------------


def test_every_anchored_on_created_at_truncated_to_second() -> None:
    created = datetime(2026, 1, 1, 0, 0, 0, 700_000, tzinfo=UTC)
    s = CompiledSchedule(ScheduleSpec(every=timedelta(seconds=10), created_at=created), RULES)
    assert take(s, created - timedelta(hours=1), 2) == [
        z(2026, 1, 1, 0, 0, 10),
        z(2026, 1, 1, 0, 0, 20),
    ]


def test_every_anchored_on_start_at_only_counts_slots_after_created() -> None:
    s = CompiledSchedule(
        ScheduleSpec(every=timedelta(hours=1), start_at=z(2020, 1, 1, 0, 30), created_at=NOW), RULES
    )
    assert s.next_after(z(2000, 1, 1)) == z(2026, 1, 1, 0, 30)


def test_every_is_o1_for_far_jumps() -> None:
    s = CompiledSchedule(ScheduleSpec(every=timedelta(seconds=1), created_at=NOW), RULES)
    assert s.next_after(z(2036, 1, 1, 0, 0, 0) - timedelta(milliseconds=1)) == z(2036, 1, 1)
    assert s.count_between(NOW, z(2036, 1, 1)) == (z(2036, 1, 1) - NOW) // timedelta(seconds=1)


def test_every_keeps_milliseconds() -> None:
    s = CompiledSchedule(ScheduleSpec(every=timedelta(milliseconds=1500), created_at=NOW), RULES)
    assert take(s, NOW, 2) == [NOW + timedelta(milliseconds=1500), NOW + timedelta(seconds=3)]


def test_at_is_one_slot_truncated_to_ms() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678_999, tzinfo=UTC)
    s = CompiledSchedule(ScheduleSpec(at=at, created_at=NOW), RULES)
    assert s.next_after(NOW) == datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    assert s.next_after(at) is None
    assert s.slots_between(NOW, z(2030, 1, 1), 10) == [s.next_after(NOW)]
    assert (
        CompiledSchedule(ScheduleSpec(at=NOW, created_at=NOW), RULES).next_after(z(2000, 1, 1))
        is None
    )


def test_slots_are_whole_ms_utc() -> None:
    s = CompiledSchedule(ScheduleSpec(every=timedelta(seconds=7), created_at=NOW), RULES)
    for d in take(s, datetime(2026, 1, 1, 0, 0, 3, 123_456, tzinfo=UTC), 5):
        assert d.tzinfo is UTC and d.microsecond % 1000 == 0


# --- bounds -------------------------------------------------------------------------------------


def test_created_at_is_exclusive() -> None:
    assert cron("0 * * * *", created_at=z(2026, 1, 1, 5)).next_after(z(2000, 1, 1)) == z(
        2026, 1, 1, 6
    )
    s = CompiledSchedule(ScheduleSpec(every=timedelta(minutes=1), created_at=NOW), RULES)
    assert s.next_after(z(2000, 1, 1)) == NOW + timedelta(minutes=1)


def test_start_and_end_are_inclusive() -> None:
    s = cron("0 * * * *", start_at=z(2026, 1, 1, 3), end_at=z(2026, 1, 1, 5))
    assert s.slots_between(z(2000, 1, 1), z(2030, 1, 1), 10) == [
        z(2026, 1, 1, 3),
        z(2026, 1, 1, 4),
        z(2026, 1, 1, 5),
    ]
    assert s.next_after(z(2026, 1, 1, 5)) is None
    assert s.count_between(z(2000, 1, 1), z(2030, 1, 1)) == 3
    late_start = cron("0 * * * *", start_at=datetime(2026, 1, 1, 3, 0, 0, 1, tzinfo=UTC))
    assert late_start.next_after(z(2000, 1, 1)) == z(2026, 1, 1, 4)


def test_max_runs_cron() -> None:
    s = cron("0 * * * *", max_runs=3, created_at=NOW)
    assert take(s, z(2000, 1, 1), 10) == [z(2026, 1, 1, 1), z(2026, 1, 1, 2), z(2026, 1, 1, 3)]
    assert s.next_after(z(2026, 1, 1, 3)) is None
    # the bound is counted from the first slot, not from `after`
    assert s.next_after(z(2026, 1, 1, 2)) == z(2026, 1, 1, 3)


def test_max_runs_cron_large_and_across_dst() -> None:
    s = cron("* * * * *", max_runs=100_000, created_at=NOW)
    last = NOW + timedelta(minutes=100_000)
    assert s.count_between(NOW, z(2030, 1, 1)) == 100_000
    assert s.next_after(last - timedelta(minutes=1)) == last
    assert s.next_after(last) is None
    berlin = cron("0 2 * * *", "Europe/Berlin", max_runs=400, created_at=NOW)
    all_slots = cron("0 2 * * *", "Europe/Berlin", created_at=NOW).slots_between(
        NOW, z(2028, 1, 1), 400
    )
    assert berlin.last_slots(NOW, z(2030, 1, 1), 1) == [all_slots[399]]
    assert berlin.next_after(all_slots[399]) is None


def test_max_runs_every_closed_form() -> None:
    s = CompiledSchedule(
        ScheduleSpec(every=timedelta(seconds=10), max_runs=5, created_at=NOW), RULES
    )
    assert take(s, z(2000, 1, 1), 10) == [NOW + timedelta(seconds=10 * k) for k in range(1, 6)]
    assert s.next_after(NOW + timedelta(seconds=50)) is None
    assert s.count_between(z(2000, 1, 1), z(2100, 1, 1)) == 5


# --- proto, validation --------------------------------------------------------------------------


def test_spec_from_proto() -> None:
    msg = pb.Schedule(cron="@every 1m30s", time_zone="", max_runs=4)
    msg.start_at.CopyFrom(ts(z(2026, 2, 1)))
    spec = spec_from_proto(msg, NOW)
    assert spec == ScheduleSpec(
        every=timedelta(seconds=90),
        time_zone="UTC",
        start_at=z(2026, 2, 1),
        max_runs=4,
        created_at=NOW,
    )
    every = spec_from_proto(pb.Schedule(every=Duration(seconds=2, nanos=5_000_999)), NOW)
    assert every.every == timedelta(milliseconds=2005)
    assert spec_from_proto(pb.Schedule(cron=" 0  9 * * MON "), NOW).cron == "0 9 * * MON"


def test_normalise_cron() -> None:
    assert normalise_cron("@Every 10s", "f") == (None, timedelta(seconds=10))
    assert normalise_cron("@WEEKLY", "f") == ("@weekly", None)
    assert normalise_cron("0\t9 * * *", "f") == ("0 9 * * *", None)


def test_naive_datetime_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ScheduleSpec(cron="* * * * *", created_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        cron("* * * * *").next_after(datetime(2026, 1, 1))


def _sched(**kw: object) -> pb.Schedule:
    msg = pb.Schedule()
    for k, v in kw.items():
        if isinstance(v, datetime):
            getattr(msg, k).CopyFrom(ts(v))
        elif isinstance(v, Duration):
            msg.every.CopyFrom(v)
        else:
            setattr(msg, k, v)
    return msg


@pytest.mark.parametrize(
    ("kw", "field", "reason"),
    [
        ({"cron": "61 * * * *"}, "cron", "'61 * * * *': minute 61 out of range 0-59"),
        ({"cron": "* 25 * * *"}, "cron", "'* 25 * * *': hour 25 out of range 0-23"),
        ({"cron": "0 0 32 * *"}, "cron", "day of month 32 out of range 1-31"),
        ({"cron": "0 0 * 13 *"}, "cron", "month 13 out of range 1-12"),
        ({"cron": "0 0 * * 8"}, "cron", "day of week 8 out of range 0-7"),
        ({"cron": "60 * * * * *"}, "cron", "second 60 out of range 0-59"),
        ({"cron": "* * * * * * *"}, "cron", "expected 5 or 6 fields, got 7"),
        ({"cron": "* * * *"}, "cron", "expected 5 or 6 fields, got 4"),
        ({"cron": "5-1 * * * *"}, "cron", "minute range 5-1 is reversed"),
        ({"cron": "*/0 * * * *"}, "cron", "invalid step '0' in minute field"),
        ({"cron": "0 0 L * *"}, "cron", "invalid day of month value 'L'"),
        ({"cron": "0 0 * foo *"}, "cron", "invalid month value 'foo'"),
        ({"cron": "1,,2 * * * *"}, "cron", "invalid minute value ''"),
        ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
        ({"cron": "@reboot"}, "cron", "@reboot is not supported"),
        ({"cron": "@fortnightly"}, "cron", "unknown descriptor '@fortnightly'"),
        ({"cron": "@every 500ms"}, "cron", "every must be at least 1s"),
        ({"cron": "@every soon"}, "cron", "'soon' is not a duration"),
        ({"cron": ""}, "cron", "empty cron expression"),
        (
            {"cron": "* * * * *", "time_zone": "Mars/Olympus"},
            "time_zone",
            "unknown time zone 'Mars/Olympus'",
        ),
        ({"every": Duration(nanos=500_000_000)}, "every", "every must be at least 1s"),
        ({"every": Duration(seconds=-5)}, "every", "every must be at least 1s"),
        ({"at": z(2020, 1, 1)}, "at", "at 2020-01-01T00:00:00Z is in the past"),
        ({"at": z(2027, 1, 1), "end_at": z(2026, 6, 1)}, "at", "is after end_at"),
        (
            {"cron": "* * * * *", "start_at": z(2027, 1, 1), "end_at": z(2026, 6, 1)},
            "end_at",
            "end_at is before start_at",
        ),
        (
            {"cron": "* * * * *", "end_at": z(2025, 6, 1)},
            "end_at",
            "end_at 2025-06-01T00:00:00Z is in the past",
        ),
        ({"cron": "* * * * *", "max_runs": -1}, "max_runs", "between 0 and 1000000, got -1"),
        ({"cron": "* * * * *", "max_runs": 1_000_001}, "max_runs", "got 1000001"),
        ({}, "", "no schedule: set exactly one of cron, every, at"),
    ],
)
def test_validation_errors(kw: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        validate_schedule(_sched(**kw), NOW, rules=RULES)
    assert ei.value.field == "task.schedule" + (f".{field}" if field else "")
    assert reason in ei.value.reason


def test_validation_accepts_and_respects_creating() -> None:
    for kw in (
        {"cron": "*/5 * * * *", "time_zone": "Europe/Berlin", "max_runs": 1_000_000},
        {"cron": "0 0 * * * *"},
        {"cron": "@every 10s"},
        {"cron": "0 9 * jan-mar mon-fri"},
        {"every": Duration(seconds=1)},
        {"at": z(2026, 1, 1, 0, 0, 1)},
    ):
        validate_schedule(_sched(**kw), NOW, rules=RULES)
    validate_schedule(_sched(at=z(2020, 1, 1)), NOW, creating=False, rules=RULES)
    with pytest.raises(InvalidArgument) as ei:
        validate_schedule(_sched(cron="61 * * * *"), NOW, "spec.schedule", rules=RULES)
    assert ei.value.field == "spec.schedule.cron"


def test_compiled_schedule_rejects_bad_specs() -> None:
    with pytest.raises(InvalidArgument):
        CompiledSchedule(ScheduleSpec(), RULES)
    with pytest.raises(InvalidArgument, match="unknown time zone"):
        cron("* * * * *", "Nowhere/Land")
    with pytest.raises(InvalidArgument, match="at least 1s"):
        CompiledSchedule(ScheduleSpec(every=timedelta(milliseconds=10)), RULES)
