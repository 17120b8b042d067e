"""DST policies of cron schedules: exact UTC slots across real transitions, all queries agreeing.

Transitions used (checked against zoneinfo in ``test_transition_dates``):

* Europe/Berlin 2026-03-29 01:00Z (02:00 CET -> 03:00 CEST), 2026-10-25 01:00Z (03:00 CEST ->
  02:00 CET);
* America/New_York 2026-03-08 07:00Z (02:00 EST -> 03:00 EDT), 2026-11-01 06:00Z (02:00 EDT ->
  01:00 EST);
* Australia/Lord_Howe (30-minute shift) 2026-04-04 15:00Z (2026-04-05 02:00 +11 -> 01:30 +10:30),
  2026-10-03 15:30Z (2026-10-04 02:00 +10:30 -> 02:30 +11);
* Asia/Tokyo and UTC: none.

Each expected list is derived by hand from those offsets (comments give the local times); a
second, independent implementation (PEP 495 ``fold`` via zoneinfo, :func:`reference`) checks a
wider matrix.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from peerd.core.crontab import DESCRIPTORS, parse_cron_fields
from peerd.core.schedule import CompiledSchedule, ScheduleSpec, spec_from_proto, validate_schedule
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

FAR = datetime(2100, 1, 1, tzinfo=UTC)


def z(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def minutes(first: datetime, last: datetime) -> list[datetime]:
    """Every minute from ``first`` to ``last`` inclusive."""
    return [first + timedelta(minutes=i) for i in range((last - first) // timedelta(minutes=1) + 1)]


def compiled(
    expr: str, tz: str, ne: str = "auto", am: str = "auto", **kw: object
) -> CompiledSchedule:
    policies = {"dst_nonexistent": ne, "dst_ambiguous": am}
    return CompiledSchedule(ScheduleSpec(cron=expr, time_zone=tz, **policies, **kw), RULES)  # type: ignore[arg-type]


def assert_consistent(
    expr: str, tz: str, ne: str, am: str, lo: datetime, hi: datetime, expected: list[datetime]
) -> None:
    """Every query of the schedule gives exactly ``expected`` in ``(lo, hi]``."""
    s = compiled(expr, tz, ne, am)
    assert s.slots_between(lo, hi, 100_000) == expected
    assert s.count_between(lo, hi) == len(expected)
    for k in (1, 3, len(expected)):
        assert s.last_slots(lo, hi, k) == expected[-k:]
    # next_after iteration, and from arbitrary points: the next slot never depends on the start
    got, t = [], lo
    while (nxt := s.next_after(t)) is not None and nxt <= hi:
        got.append(nxt)
        t = nxt
    assert got == expected
    probe = lo
    while probe < hi:
        assert s.next_after(probe) == next((x for x in expected if x > probe), s.next_after(hi))
        probe += timedelta(minutes=7)
    # sub-ranges count what they list
    mid = lo + (hi - lo) / 2
    assert s.count_between(lo, mid) + s.count_between(mid, hi) == len(expected)
    assert s.count_between(lo, mid) == len(s.slots_between(lo, mid, 100_000))
    # max_runs (counted from created_at = lo): n <= 64 iterates, n > 64 bisects on counts
    for n in sorted({1, len(expected) // 2 or 1, len(expected) - 1 or 1, len(expected)}):
        capped = compiled(expr, tz, ne, am, created_at=lo, max_runs=n)
        assert capped.slots_between(lo, FAR, 100_000) == expected[:n]
        assert capped.count_between(lo, FAR) == n
        assert capped.last_slots(lo, FAR, 2) == expected[:n][-2:]
        assert capped.next_after(expected[n - 1]) is None


# --- the expected slots -------------------------------------------------------------------------

HOURLY, MINUTELY = "0 * * * *", "* * * * *"
SPRING: dict[tuple[str, str], tuple[datetime, datetime, dict[str, list[datetime]]]] = {}
FALL: dict[tuple[str, str], tuple[datetime, datetime, dict[str, list[datetime]]]] = {}


def spring(
    tz: str,
    expr: str,
    lo: datetime,
    hi: datetime,
    skip: list[datetime],
    shift: list[datetime],
    auto: str,
) -> None:
    SPRING[tz, expr] = (
        lo,
        hi,
        {"skip": skip, "shift": shift, "auto": skip if auto == "skip" else shift},
    )


def fall(
    tz: str,
    expr: str,
    lo: datetime,
    hi: datetime,
    first: list[datetime],
    last: list[datetime],
    both: list[datetime],
    auto: str,
) -> None:
    FALL[tz, expr] = (
        lo,
        hi,
        {"first": first, "last": last, "both": both, "auto": {"first": first, "both": both}[auto]},
    )


# Europe/Berlin, 2026-03-29: 02:00-02:59 local do not exist; 03:00 CEST = 01:00Z.
_hourly = [z(3, 29, 0), z(3, 29, 1), z(3, 29, 2), z(3, 29, 3)]  # 01:00 CET, 03:00-05:00 CEST
# 02:00 shifts to 01:00Z, which is also the regular 03:00 CEST: one slot, so skip == shift.
spring("Europe/Berlin", HOURLY, z(3, 28, 23), z(3, 29, 3), _hourly, _hourly, "skip")
spring(
    "Europe/Berlin",
    "30 2 * * *",
    z(3, 28),
    z(3, 31),
    [z(3, 28, 1, 30), z(3, 30, 0, 30)],  # 02:30 CET, 02:30 CEST
    [z(3, 28, 1, 30), z(3, 29, 1), z(3, 30, 0, 30)],  # + 03:00 CEST for the missing 02:30
    "shift",
)
_minutely = minutes(z(3, 29, 0, 58), z(3, 29, 1, 3))  # 01:58, 01:59 CET, 03:00.. CEST
spring("Europe/Berlin", MINUTELY, z(3, 29, 0, 57), z(3, 29, 1, 3), _minutely, _minutely, "skip")

# Europe/Berlin, 2026-10-25: 02:00-02:59 local occur at 00:xxZ (CEST) and again at 01:xxZ (CET).
fall(
    "Europe/Berlin",
    HOURLY,
    z(10, 24, 22),
    z(10, 25, 3),
    [z(10, 24, 23), z(10, 25, 0), z(10, 25, 2), z(10, 25, 3)],
    [z(10, 24, 23), z(10, 25, 1), z(10, 25, 2), z(10, 25, 3)],
    [z(10, 24, 23), z(10, 25, 0), z(10, 25, 1), z(10, 25, 2), z(10, 25, 3)],
    "both",
)
fall(
    "Europe/Berlin",
    "30 2 * * *",
    z(10, 24),
    z(10, 27),
    [z(10, 24, 0, 30), z(10, 25, 0, 30), z(10, 26, 1, 30)],
    [z(10, 24, 0, 30), z(10, 25, 1, 30), z(10, 26, 1, 30)],
    [z(10, 24, 0, 30), z(10, 25, 0, 30), z(10, 25, 1, 30), z(10, 26, 1, 30)],
    "first",
)
fall(
    "Europe/Berlin",
    MINUTELY,
    z(10, 24, 23, 57),
    z(10, 25, 2, 2),
    minutes(z(10, 24, 23, 58), z(10, 25, 0, 59)) + minutes(z(10, 25, 2), z(10, 25, 2, 2)),
    minutes(z(10, 24, 23, 58), z(10, 24, 23, 59)) + minutes(z(10, 25, 1), z(10, 25, 2, 2)),
    minutes(z(10, 24, 23, 58), z(10, 25, 2, 2)),
    "both",
)

# America/New_York, 2026-03-08: 02:00-02:59 local do not exist; 03:00 EDT = 07:00Z.
_hourly = [z(3, 8, 6), z(3, 8, 7), z(3, 8, 8), z(3, 8, 9)]  # 01:00 EST, 03:00-05:00 EDT
spring("America/New_York", HOURLY, z(3, 8, 5), z(3, 8, 9), _hourly, _hourly, "skip")
spring(
    "America/New_York",
    "30 2 * * *",
    z(3, 7),
    z(3, 10),
    [z(3, 7, 7, 30), z(3, 9, 6, 30)],
    [z(3, 7, 7, 30), z(3, 8, 7), z(3, 9, 6, 30)],
    "shift",
)
_minutely = minutes(z(3, 8, 6, 58), z(3, 8, 7, 3))
spring("America/New_York", MINUTELY, z(3, 8, 6, 57), z(3, 8, 7, 3), _minutely, _minutely, "skip")

# America/New_York, 2026-11-01: 01:00-01:59 local occur at 05:xxZ (EDT) and at 06:xxZ (EST).
fall(
    "America/New_York",
    HOURLY,
    z(11, 1, 4),
    z(11, 1, 8),
    [z(11, 1, 5), z(11, 1, 7), z(11, 1, 8)],
    [z(11, 1, 6), z(11, 1, 7), z(11, 1, 8)],
    [z(11, 1, 5), z(11, 1, 6), z(11, 1, 7), z(11, 1, 8)],
    "both",
)
fall(
    "America/New_York",
    "30 1 * * *",
    z(10, 31),
    z(11, 3),
    [z(10, 31, 5, 30), z(11, 1, 5, 30), z(11, 2, 6, 30)],
    [z(10, 31, 5, 30), z(11, 1, 6, 30), z(11, 2, 6, 30)],
    [z(10, 31, 5, 30), z(11, 1, 5, 30), z(11, 1, 6, 30), z(11, 2, 6, 30)],
    "first",
)
_unaffected = [z(10, 31, 6, 30), z(11, 1, 7, 30), z(11, 2, 7, 30)]  # 02:30 EDT, EST, EST
fall(
    "America/New_York",
    "30 2 * * *",
    z(10, 31),
    z(11, 3),
    _unaffected,
    _unaffected,
    _unaffected,
    "first",
)
fall(
    "America/New_York",
    MINUTELY,
    z(11, 1, 4, 57),
    z(11, 1, 7, 2),
    minutes(z(11, 1, 4, 58), z(11, 1, 5, 59)) + minutes(z(11, 1, 7), z(11, 1, 7, 2)),
    minutes(z(11, 1, 4, 58), z(11, 1, 4, 59)) + minutes(z(11, 1, 6), z(11, 1, 7, 2)),
    minutes(z(11, 1, 4, 58), z(11, 1, 7, 2)),
    "both",
)

# Australia/Lord_Howe, 2026-10-04: 02:00-02:29 local do not exist; 02:30 +11 = 10-03 15:30Z.
spring(
    "Australia/Lord_Howe",
    HOURLY,
    z(10, 3, 13),
    z(10, 3, 18),
    [z(10, 3, 13, 30), z(10, 3, 14, 30), z(10, 3, 16), z(10, 3, 17), z(10, 3, 18)],
    # 02:00 shifts to 02:30 +11, half an hour before the regular 03:00
    [
        z(10, 3, 13, 30),
        z(10, 3, 14, 30),
        z(10, 3, 15, 30),
        z(10, 3, 16),
        z(10, 3, 17),
        z(10, 3, 18),
    ],
    "skip",
)
spring(
    "Australia/Lord_Howe",
    "15 2 * * *",
    z(10, 2),
    z(10, 5),
    [z(10, 2, 15, 45), z(10, 4, 15, 15)],  # 02:15 +10:30, 02:15 +11
    [z(10, 2, 15, 45), z(10, 3, 15, 30), z(10, 4, 15, 15)],
    "shift",
)
_minutely = minutes(z(10, 3, 15, 28), z(10, 3, 15, 32))  # 01:58, 01:59 +10:30, 02:30.. +11
spring(
    "Australia/Lord_Howe",
    MINUTELY,
    z(10, 3, 15, 27),
    z(10, 3, 15, 32),
    _minutely,
    _minutely,
    "skip",
)

# Australia/Lord_Howe, 2026-04-05: 01:30-01:59 local occur at 04-04 14:30Z (+11), 15:00Z (+10:30).
_hourly = [z(4, 4, 13), z(4, 4, 14), z(4, 4, 15, 30), z(4, 4, 16, 30)]  # 00:00, 01:00 +11; 02:00..
fall("Australia/Lord_Howe", HOURLY, z(4, 4, 12), z(4, 4, 17), _hourly, _hourly, _hourly, "both")
fall(
    "Australia/Lord_Howe",
    "45 1 * * *",
    z(4, 3),
    z(4, 6),
    [z(4, 3, 14, 45), z(4, 4, 14, 45), z(4, 5, 15, 15)],
    [z(4, 3, 14, 45), z(4, 4, 15, 15), z(4, 5, 15, 15)],
    [z(4, 3, 14, 45), z(4, 4, 14, 45), z(4, 4, 15, 15), z(4, 5, 15, 15)],
    "first",
)
fall(
    "Australia/Lord_Howe",
    MINUTELY,
    z(4, 4, 14, 27),
    z(4, 4, 15, 32),
    minutes(z(4, 4, 14, 28), z(4, 4, 14, 59)) + minutes(z(4, 4, 15, 30), z(4, 4, 15, 32)),
    minutes(z(4, 4, 14, 28), z(4, 4, 14, 29)) + minutes(z(4, 4, 15), z(4, 4, 15, 32)),
    minutes(z(4, 4, 14, 28), z(4, 4, 15, 32)),
    "both",
)

# Zones without transitions: every policy gives the plain wall-clock slots.
for _tz, _h in (("Asia/Tokyo", 9), ("UTC", 0)):
    _day = [z(3, 28, 2, 30) - timedelta(hours=_h), z(3, 29, 2, 30) - timedelta(hours=_h)]
    _hours = [z(3, 29, h) for h in range(0, 4)]
    _mins = minutes(z(3, 29, 0, 58), z(3, 29, 1, 3))
    for _expr, _lo, _hi, _slots in (
        (HOURLY, z(3, 28, 23), z(3, 29, 3), _hours),
        ("30 2 * * *", z(3, 27, 12), z(3, 29, 12), _day),
        (MINUTELY, z(3, 29, 0, 57), z(3, 29, 1, 3), _mins),
    ):
        spring(_tz, _expr, _lo, _hi, _slots, _slots, "skip")
        fall(_tz, _expr, _lo, _hi, _slots, _slots, _slots, "first")


@pytest.mark.parametrize("policy", ["skip", "shift", "auto"])
@pytest.mark.parametrize(("tz", "expr"), list(SPRING))
def test_nonexistent_times(tz: str, expr: str, policy: str) -> None:
    lo, hi, expected = SPRING[tz, expr]
    assert_consistent(expr, tz, policy, "auto", lo, hi, expected[policy])
    # the ambiguous policy plays no part in a spring-forward window
    for am in ("first", "last", "both"):
        assert compiled(expr, tz, policy, am).slots_between(lo, hi, 10_000) == expected[policy]


@pytest.mark.parametrize("policy", ["first", "last", "both", "auto"])
@pytest.mark.parametrize(("tz", "expr"), list(FALL))
def test_ambiguous_times(tz: str, expr: str, policy: str) -> None:
    lo, hi, expected = FALL[tz, expr]
    assert_consistent(expr, tz, "auto", policy, lo, hi, expected[policy])
    for ne in ("skip", "shift"):
        assert compiled(expr, tz, ne, policy).slots_between(lo, hi, 10_000) == expected[policy]


def test_transition_dates() -> None:
    def offsets(tz: str, at: datetime) -> tuple[timedelta | None, timedelta | None]:
        zone = RULES.zone(tz, "tz")
        return (at - timedelta(seconds=1)).astimezone(zone).utcoffset(), at.astimezone(
            zone
        ).utcoffset()

    h = timedelta(hours=1)
    assert offsets("Europe/Berlin", z(3, 29, 1)) == (h, 2 * h)
    assert offsets("Europe/Berlin", z(10, 25, 1)) == (2 * h, h)
    assert offsets("America/New_York", z(3, 8, 7)) == (-5 * h, -4 * h)
    assert offsets("America/New_York", z(11, 1, 6)) == (-4 * h, -5 * h)
    assert offsets("Australia/Lord_Howe", z(4, 4, 15)) == (11 * h, 10.5 * h)
    assert offsets("Australia/Lord_Howe", z(10, 3, 15, 30)) == (10.5 * h, 11 * h)


def test_whole_local_days_count() -> None:
    # Berlin 2026-03-29 has 23 hours, 2026-10-25 has 25 (local midnight to local midnight).
    minutely = compiled(MINUTELY, "Europe/Berlin")
    assert minutely.count_between(z(3, 28, 23), z(3, 29, 22)) == 23 * 60
    assert minutely.count_between(z(10, 24, 22), z(10, 25, 23)) == 25 * 60
    first = compiled(MINUTELY, "Europe/Berlin", am="first")
    assert first.count_between(z(10, 24, 22), z(10, 25, 23)) == 24 * 60
    # a year of a fixed-hour schedule: one slot per day whatever the policy
    for ne, am in (("skip", "both"), ("shift", "first"), ("shift", "last")):
        daily = compiled("30 2 * * *", "Europe/Berlin", ne, am)
        extra = {"skip": -1, "shift": 0}[ne] + {"both": 1, "first": 0, "last": 0}[am]
        assert daily.count_between(z(1, 1), z(1, 1, year=2027)) == 365 + extra


@pytest.mark.parametrize(
    ("expr", "every_hour"),
    [
        ("* * * * *", True),
        ("0 * * * *", True),
        ("0 */1 * * *", True),
        ("0 0-23 * * *", True),
        ("@hourly", True),
        ("*/10 * * * * *", True),
        ("30 2 * * *", False),
        ("0 2,14 * * *", False),
        ("0 */2 * * *", False),
        ("* 2 * * *", False),  # Vixie cron would call this wildcard (minute '*'); the hour decides
        ("@daily", False),
    ],
)
def test_auto_policy_follows_the_hour_field(expr: str, every_hour: bool) -> None:
    s = compiled(expr, "Europe/Berlin")
    assert s.dst_nonexistent == ("skip" if every_hour else "shift")
    assert s.dst_ambiguous == ("both" if every_hour else "first")
    explicit = compiled(expr, "Europe/Berlin", "shift", "last")
    assert (explicit.dst_nonexistent, explicit.dst_ambiguous) == ("shift", "last")


def test_several_nonexistent_times_shift_to_one_slot() -> None:
    # 02:00, 02:20, 02:40 do not exist: one slot at 03:00 CEST; with 03:00 itself listed, still one
    for expr in ("*/20 2 * * *", "*/20 2,3 * * *"):
        s = compiled(expr, "Europe/Berlin", "shift")
        assert s.slots_between(z(3, 29), z(3, 29, 1, 10), 100) == [z(3, 29, 1)]
    assert compiled("*/20 2 * * *", "Europe/Berlin", "shift").slots_between(
        z(3, 29), z(3, 29, 23), 100
    ) == [z(3, 29, 1)]
    assert compiled("*/20 2,3 * * *", "Europe/Berlin", "shift").slots_between(
        z(3, 29), z(3, 29, 23), 100
    ) == [z(3, 29, 1), z(3, 29, 1, 20), z(3, 29, 1, 40)]  # 03:00 (= 02:xx shifted), 03:20, 03:40


def test_every_and_at_ignore_dst_policies() -> None:
    created = z(3, 28)
    base = CompiledSchedule(
        ScheduleSpec(every=timedelta(minutes=30), created_at=created, time_zone="Europe/Berlin"),
        RULES,
    )
    for ne, am in (("skip", "last"), ("shift", "both")):
        other = CompiledSchedule(
            ScheduleSpec(
                every=timedelta(minutes=30),
                created_at=created,
                time_zone="Europe/Berlin",
                dst_nonexistent=ne,
                dst_ambiguous=am,
            ),
            RULES,
        )
        assert other.slots_between(created, z(3, 30), 1000) == base.slots_between(
            created, z(3, 30), 1000
        )
        assert other.dst_nonexistent is None and other.dst_events(created, z(3, 30)) == []
    at = CompiledSchedule(
        ScheduleSpec(at=z(3, 29, 1, 30), time_zone="Europe/Berlin", dst_nonexistent="skip"), RULES
    )
    assert at.next_after(z(3, 29)) == z(3, 29, 1, 30)


def test_dst_events_describe_each_affected_time() -> None:
    s = compiled("*/30 2 * * *", "Europe/Berlin")  # auto: shift, first
    spring_events = s.dst_events(z(3, 28), z(3, 30))
    assert [(e.wall, e.nonexistent, e.slots) for e in spring_events] == [
        (datetime(2026, 3, 29, 2, 0), True, (z(3, 29, 1),)),
        (datetime(2026, 3, 29, 2, 30), True, (z(3, 29, 1),)),
    ]
    assert spring_events[0].transition == z(3, 29, 1)
    assert (spring_events[0].offset_before, spring_events[0].offset_after) == (
        timedelta(hours=1),
        timedelta(hours=2),
    )
    fall_events = s.dst_events(z(10, 24), z(10, 26))
    assert [(e.wall.time().isoformat(), e.instants, e.slots) for e in fall_events] == [
        ("02:00:00", (z(10, 25, 0), z(10, 25, 1)), (z(10, 25, 0),)),
        ("02:30:00", (z(10, 25, 0, 30), z(10, 25, 1, 30)), (z(10, 25, 0, 30),)),
    ]
    assert (
        compiled("*/30 2 * * *", "Europe/Berlin", "skip").dst_events(z(3, 28), z(3, 30))[0].slots
        == ()
    )
    assert compiled("30 2 * * *", "Asia/Tokyo").dst_events(z(1, 1), z(12, 31)) == []
    # outside the schedule's bounds: nothing
    assert (
        compiled("*/30 2 * * *", "Europe/Berlin", end_at=z(3, 1)).dst_events(z(3, 28), z(3, 30))
        == []
    )


# --- a second implementation: PEP 495 folds through zoneinfo ------------------------------------


def reference(expr: str, tz: str, lo: datetime, hi: datetime, ne: str, am: str) -> list[datetime]:
    """Slots in ``(lo, hi]`` by walking every wall-clock minute (or second) and asking zoneinfo:
    ``fold=0``/``fold=1`` give the two readings of a local time (PEP 495); a time whose
    ``fold=0`` reading does not round-trip is nonexistent, two distinct readings are ambiguous."""
    f = parse_cron_fields(DESCRIPTORS.get(expr, expr))
    zone = RULES.zone(tz, "tz")
    every_hour = f.hours == frozenset(range(24))
    ne = ne if ne != "auto" else ("skip" if every_hour else "shift")
    am = am if am != "auto" else ("both" if every_hour else "first")
    step = timedelta(seconds=1 if f.six else 60)
    wall = (lo.astimezone(zone).replace(tzinfo=None) - timedelta(hours=30)).replace(second=0)
    end = hi.astimezone(zone).replace(tzinfo=None) + timedelta(hours=30)
    out: set[datetime] = set()
    while wall <= end:
        dom, dow = wall.day in f.dom, wall.isoweekday() % 7 in f.dow
        day = (dom and dow) if (f.dom_full or f.dow_full) else (dom or dow)
        if (
            day
            and wall.month in f.months
            and wall.hour in f.hours
            and wall.minute in f.minutes
            and wall.second in f.seconds
        ):
            u0 = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
            u1 = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
            if u0.astimezone(zone).replace(tzinfo=None) != wall:  # nonexistent: u1 < gap end <= u0
                if ne == "shift":  # the first instant with the offset after the gap
                    after_gap = u0.astimezone(zone).utcoffset()
                    a, b = u1, u0
                    while b - a > timedelta(seconds=1):
                        m = (a + (b - a) / 2).replace(microsecond=0)
                        a, b = (a, m) if m.astimezone(zone).utcoffset() == after_gap else (m, b)
                    out.add(b)
            elif u0 != u1:
                if am in ("first", "both"):
                    out.add(min(u0, u1))
                if am in ("last", "both"):
                    out.add(max(u0, u1))
            else:
                out.add(u0)
        wall += step
    return sorted(s for s in out if lo < s <= hi)


TRANSITIONS = {
    "Europe/Berlin": [z(3, 29, 1), z(10, 25, 1)],
    "America/New_York": [z(3, 8, 7), z(11, 1, 6)],
    "Australia/Lord_Howe": [z(4, 4, 15), z(10, 3, 15, 30)],
}


@pytest.mark.parametrize("tz", list(TRANSITIONS))
@pytest.mark.parametrize(
    "expr",
    [
        "0 * * * *",
        "30 2 * * *",
        "30 1 * * *",
        "15 2 * * *",
        "45 1 * * *",
        "*/20 1-3 * * *",
        "0 2,3 * * *",
        "59 1,3 * * *",
        "@daily",
        "0 */2 * * *",
        "*/15 * * * *",
        "0,30 1-2 * * 0",
    ],
)
def test_matches_pep495_reference(tz: str, expr: str) -> None:
    for t in TRANSITIONS[tz]:
        lo, hi = t - timedelta(hours=26), t + timedelta(hours=26)
        for ne in ("auto", "skip", "shift"):
            for am in ("auto", "first", "last", "both"):
                s = compiled(expr, tz, ne, am)
                expected = reference(expr, tz, lo, hi, ne, am)
                assert s.slots_between(lo, hi, 10_000) == expected, (ne, am)
                assert s.count_between(lo, hi) == len(expected)


def test_reference_can_tell_policies_apart() -> None:
    # guard against a reference that ignores its arguments
    t = z(10, 25, 1)
    lo, hi = t - timedelta(hours=3), t + timedelta(hours=3)
    first = reference("30 2 * * *", "Europe/Berlin", lo, hi, "auto", "first")
    last = reference("30 2 * * *", "Europe/Berlin", lo, hi, "auto", "last")
    assert first == [z(10, 25, 0, 30)] and last == [z(10, 25, 1, 30)]


def test_count_over_four_centuries_is_exact() -> None:
    # 400 years of a per-minute schedule in Berlin: arithmetic plus ~800 small windows
    s = compiled(MINUTELY, "Europe/Berlin", am="first")
    lo, hi = datetime(2000, 1, 1, tzinfo=UTC), datetime(2400, 1, 1, tzinfo=UTC)
    # one slot per wall minute (first occurrences only, gaps skipped): local minutes in range
    local_lo = lo.astimezone(RULES.zone("Europe/Berlin", "tz")).replace(tzinfo=None)
    local_hi = hi.astimezone(RULES.zone("Europe/Berlin", "tz")).replace(tzinfo=None)
    gaps = 400 * 60  # one 60-minute gap a year, no repeats counted
    assert s.count_between(lo, hi) == (local_hi - local_lo) // timedelta(minutes=1) - gaps


# --- proto mapping and validation ---------------------------------------------------------------


def test_spec_from_proto_maps_the_enums() -> None:
    now = z(1, 1)
    assert spec_from_proto(pb.Schedule(cron="0 2 * * *"), now).dst_nonexistent == "auto"
    msg = pb.Schedule(
        cron="0 2 * * *",
        dst_nonexistent=pb.DST_NONEXISTENT_SKIP,
        dst_ambiguous=pb.DST_AMBIGUOUS_LAST,
    )
    spec = spec_from_proto(msg, now)
    assert (spec.dst_nonexistent, spec.dst_ambiguous) == ("skip", "last")
    pairs = [
        (pb.DST_NONEXISTENT_SHIFT, pb.DST_AMBIGUOUS_FIRST, "shift", "first"),
        (pb.DST_NONEXISTENT_POLICY_UNSPECIFIED, pb.DST_AMBIGUOUS_BOTH, "auto", "both"),
        (pb.DST_NONEXISTENT_SKIP, pb.DST_AMBIGUOUS_POLICY_UNSPECIFIED, "skip", "auto"),
    ]
    for ne, am, ne_name, am_name in pairs:
        spec = spec_from_proto(
            pb.Schedule(cron="@daily", dst_nonexistent=ne, dst_ambiguous=am), now
        )
        assert (spec.dst_nonexistent, spec.dst_ambiguous) == (ne_name, am_name)
    # kept (and ignored) on non-cron schedules
    every = pb.Schedule(every=timedelta(minutes=1), dst_nonexistent=pb.DST_NONEXISTENT_SKIP)
    validate_schedule(every, now, rules=RULES)
    assert spec_from_proto(every, now).dst_nonexistent == "skip"


@pytest.mark.parametrize(
    ("kw", "field", "reason"),
    [
        ({"dst_nonexistent": 3}, "dst_nonexistent", "unknown DstNonexistentPolicy 3"),
        ({"dst_ambiguous": 7}, "dst_ambiguous", "unknown DstAmbiguousPolicy 7"),
        ({"dst_ambiguous": -1}, "dst_ambiguous", "unknown DstAmbiguousPolicy -1"),
    ],
)
def test_unknown_enum_numbers_are_rejected(kw: dict[str, int], field: str, reason: str) -> None:
    for kind in ({"cron": "0 2 * * *"}, {"every": timedelta(seconds=10)}):
        with pytest.raises(InvalidArgument) as ei:
            validate_schedule(pb.Schedule(**kind, **kw), z(1, 1), rules=RULES)  # type: ignore[arg-type]
        assert (ei.value.field, ei.value.reason) == (f"task.schedule.{field}", reason)


def test_spec_rejects_unknown_policy_names() -> None:
    with pytest.raises(ValueError, match="dst_nonexistent"):
        ScheduleSpec(cron="* * * * *", dst_nonexistent="later")
    with pytest.raises(ValueError, match="dst_ambiguous"):
        ScheduleSpec(cron="* * * * *", dst_ambiguous="second")
