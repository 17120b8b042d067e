"""Time-zone rules: one source per process, its version, and slots computed with two releases.

Two rule sets are written by the tests (:func:`tests.tzfiles.vancouver_releases`): "old" keeps
America/Vancouver on UTC-8; "new" keeps it on UTC-7 from October 2026 (like 2025b and 2026f). Where
the host has a system database of another version than the tzdata package, the real pair is
checked too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import tzdata  # type: ignore[import-untyped]

from peerd.core.schedule import CompiledSchedule, ScheduleSpec
from peerd.core.tzrules import (
    PACKAGE,
    PATH,
    SYSTEM,
    TimeZoneRules,
    check_version,
    fixed_offset_zone,
    read_version,
    version_key,
    zone_dependent,
)
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES
from tests.tzfiles import H, vancouver_releases, write_database

DAY = datetime(2027, 1, 15, tzinfo=UTC)


@pytest.fixture
def releases(tmp_path: Path) -> tuple[TimeZoneRules, TimeZoneRules]:
    return vancouver_releases(tmp_path)


@pytest.fixture
def old(releases: tuple[TimeZoneRules, TimeZoneRules]) -> TimeZoneRules:
    return releases[0]


@pytest.fixture
def new(releases: tuple[TimeZoneRules, TimeZoneRules]) -> TimeZoneRules:
    return releases[1]


def vancouver_9am(rules: TimeZoneRules, **kw: object) -> CompiledSchedule:
    spec = ScheduleSpec(
        cron="0 9 * * *",
        time_zone="America/Vancouver",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **kw,  # type: ignore[arg-type]
    )
    return CompiledSchedule(spec, rules)


# --- sources and versions -------------------------------------------------------------------


def test_package_rules_are_the_tzdata_package() -> None:
    rules = TimeZoneRules.load("package")
    assert (rules.source, rules.version, rules.where) == (PACKAGE, tzdata.IANA_VERSION, "package")
    assert str(rules.zone("America/Vancouver", "f")) == "America/Vancouver"
    assert rules.zone("", "f") is UTC and rules.zone("Etc/UTC", "f") is UTC
    assert rules.describe() == f"{tzdata.IANA_VERSION} (package)"


@pytest.mark.parametrize("name", ["Mars/Olympus", "zone.tab", "tzdata.zi", "../tzdata", "/etc/x"])
def test_unknown_zones_name_the_field_and_the_rules(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        RULES.zone(name, "task.schedule.time_zone")
    assert info.value.field == "task.schedule.time_zone"
    assert f"unknown time zone {name!r} (tzdata {RULES.version}, package)" in str(info.value)


def test_a_directory_is_read_with_its_declared_version(old: TimeZoneRules) -> None:
    assert (old.source, old.version) == (PATH, "2030a")
    assert old.where == old.location
    zone = old.zone("America/Vancouver", "f")
    assert DAY.astimezone(zone).utcoffset() == timedelta(hours=-8)
    with pytest.raises(InvalidArgument, match=r"unknown time zone 'Europe/Berlin' \(tzdata 2030a"):
        old.zone("Europe/Berlin", "f")


def test_system_is_the_first_existing_tzpath_directory(tmp_path: Path) -> None:
    db = write_database(tmp_path / "zoneinfo", "2030c", {"Etc/GMT+5": (-5 * H, [])})
    rules = TimeZoneRules.load("system", tzpath=[str(tmp_path / "missing"), str(db)])
    assert (rules.source, rules.version, rules.location) == (SYSTEM, "2030c", str(db))
    with pytest.raises(InvalidArgument) as info:
        TimeZoneRules.load("system", tzpath=[str(tmp_path / "missing")])
    assert info.value.field == "--tzdata" and "no system time-zone database" in info.value.reason


def test_a_source_without_a_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "zi").mkdir()
    with pytest.raises(InvalidArgument) as info:
        TimeZoneRules.load(str(tmp_path / "zi"))
    assert info.value.field == "--tzdata" and "cannot tell the tzdata version" in info.value.reason
    (tmp_path / "zi" / "+VERSION").write_text("2030d\n")  # macOS' form
    assert TimeZoneRules.load(str(tmp_path / "zi")).version == "2030d"
    with pytest.raises(InvalidArgument, match="is not a directory"):
        TimeZoneRules.load(str(tmp_path / "nowhere"))


def test_read_version_takes_the_first_line_of_tzdata_zi(tmp_path: Path) -> None:
    (tmp_path / "tzdata.zi").write_text("# version 2025b\n# ddeps backzone\nR ...\n")
    assert read_version(tmp_path) == "2025b"
    (tmp_path / "tzdata.zi").write_text("R no version line\n")
    assert read_version(tmp_path) is None


def test_a_database_upgraded_under_the_process_is_refused(tmp_path: Path) -> None:
    zones = {"A/One": (H, []), "A/Two": (2 * H, [])}
    rules = TimeZoneRules.load(str(write_database(tmp_path, "2030a", zones)))
    rules.zone("A/One", "f")
    write_database(tmp_path, "2030b", zones)  # pip install -U tzdata, say
    assert rules.zone("A/One", "f") is rules.zone("A/One", "f")  # loaded before: kept
    with pytest.raises(InvalidArgument, match=r"changed from 2030a to 2030b .* restart"):
        rules.zone("A/Two", "f")


def test_version_order_and_format() -> None:
    ordered = ["custom-1", "2025b", "2026a", "2026f", "2026z", "2026za", "2027a"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    assert check_version(" 2026f ", "version") == "2026f"
    with pytest.raises(InvalidArgument) as info:
        check_version("20 26", "version")
    assert info.value.field == "version" and "is not a tzdata version" in info.value.reason


@pytest.mark.parametrize(
    ("kind", "zone", "dependent"),
    [
        ({"cron": "0 9 * * *"}, "America/Vancouver", True),
        ({"cron": "*/5 * * * * *"}, "Europe/Berlin", True),
        ({"cron": "0 9 * * *"}, "", False),
        ({"cron": "0 9 * * *"}, "UTC", False),
        ({"cron": "0 9 * * *"}, "Etc/GMT+5", False),
        ({"cron": "0 9 * * *"}, "Etc/GMT-14", False),
        ({"cron": "0 9 * * *"}, "GMT", False),
        ({"cron": "@every 5m"}, "America/Vancouver", False),
        ({"cron": " @EVERY 5m"}, "America/Vancouver", False),
        ({"at": None}, "America/Vancouver", False),
    ],
)
def test_zone_dependent_schedules(kind: dict[str, str | None], zone: str, dependent: bool) -> None:
    msg = pb.Schedule(time_zone=zone)
    if "cron" in kind:
        msg.cron = kind["cron"] or ""
    else:
        msg.at.FromDatetime(DAY)
    assert zone_dependent(msg) is dependent
    assert fixed_offset_zone(zone) is (
        not zone_dependent(pb.Schedule(cron="* * * * *", time_zone=zone))
    )


# --- two releases, one schedule ---------------------------------------------------------------


def test_two_releases_place_vancouver_9am_an_hour_apart(
    old: TimeZoneRules, new: TimeZoneRules
) -> None:
    a, b = vancouver_9am(old), vancouver_9am(new)
    assert (a.tzdata_version, b.tzdata_version) == ("2030a", "2030b")
    assert a.next_after(DAY) == DAY.replace(hour=17)
    assert b.next_after(DAY) == DAY.replace(hour=16)
    summer = datetime(2026, 7, 1, tzinfo=UTC)
    assert a.next_after(summer) == summer.replace(hour=17)  # "old" has no DST at all
    every = CompiledSchedule(ScheduleSpec(every=timedelta(hours=1), time_zone="UTC"), old)
    assert every.tzdata_version == ""  # slots of every/at/UTC do not depend on the rules


def test_the_real_releases_disagree_where_the_issue_says() -> None:
    try:
        system = TimeZoneRules.load("system")
    except InvalidArgument:
        pytest.skip("no system time-zone database")
    if system.version == RULES.version:
        pytest.skip(f"the system database is the package's version ({RULES.version})")
    zones = [system.zone("America/Vancouver", "f"), RULES.zone("America/Vancouver", "f")]
    offsets = {DAY.astimezone(z).utcoffset() for z in zones}
    if len(offsets) == 1:
        pytest.skip(f"tzdata {system.version} and {RULES.version} agree on Vancouver")
    slots = {vancouver_9am(r).next_after(DAY) for r in (system, RULES)}
    assert slots == {DAY.replace(hour=16), DAY.replace(hour=17)}


def test_after_local_passes_over_the_local_time_already_run(
    old: TimeZoneRules, new: TimeZoneRules
) -> None:
    a, b = vancouver_9am(old), vancouver_9am(new)
    ran_old = DAY.replace(hour=17)  # 09:00-08:00 by "old"
    ran_new = DAY.replace(hour=16)  # 09:00-07:00 by "new"
    # "old" ran the day's 09:00 at 17:00Z; by "new" the day's 09:00 is 16:00Z: covered.
    assert b.after_local(ran_old, "2027-01-15T09:00:00-08:00") == ran_old
    assert b.next_after(b.after_local(ran_old, "2027-01-15T09:00:00-08:00")) == ran_new + timedelta(
        days=1
    )
    # "new" ran it at 16:00Z; "old" would run it again at 17:00Z without the local time.
    assert a.next_after(ran_new) == ran_old
    assert a.after_local(ran_new, "2027-01-15T09:00:00-07:00") == ran_old
    assert a.next_after(ran_old) == ran_old + timedelta(days=1)
    # A later local time than any slot covers nothing extra; garbage is refused.
    assert a.after_local(ran_new, "2027-01-15T08:00:00-07:00") == ran_new
    with pytest.raises(ValueError):
        a.after_local(ran_new, "not a time")
