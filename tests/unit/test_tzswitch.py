"""A switch of the cluster's tzdata version, in pure code: records say which rules computed
their slot, the planner resumes after the local time already run, the audit counts it.

The releases are :func:`tests.tzfiles.vancouver_releases`: by "old" the day's 09:00 in
America/Vancouver is 17:00Z, by "new" 16:00Z.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from peerd.coord.ledger import CLAIM_COST, claim_cost
from peerd.core.audit import LedgerEntry, audit
from peerd.core.ratelimit import TokenBucket
from peerd.core.records import claim_record, skipped_record
from peerd.core.schedule import CompiledSchedule, spec_from_proto
from peerd.core.tzrules import TimeZoneRules
from peerd.engine.planner import Planner
from peerd.v1 import scheduler_pb2 as pb
from tests.tzfiles import vancouver_releases

DAY = datetime(2027, 1, 15, tzinfo=UTC)
OLD_9AM, NEW_9AM = DAY.replace(hour=17), DAY.replace(hour=16)
CREATED = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def releases(tmp_path: Path) -> tuple[TimeZoneRules, TimeZoneRules]:
    return vancouver_releases(tmp_path)


def daily(zone: str = "America/Vancouver") -> pb.TaskSpec:
    spec = pb.TaskSpec(id="daily", http=pb.HttpTarget(url="http://127.0.0.1:1/"))
    spec.schedule.cron = "0 9 * * *"
    spec.schedule.time_zone = zone
    spec.created_at.FromDatetime(CREATED)
    return spec


def ran(slot: datetime, version: str, local: str) -> pb.RunRecord:
    rec = claim_record("daily", slot, "n1", 7, slot, tzdata_version=version, local_time=local)
    rec.status = pb.SUCCEEDED
    return rec


def test_records_carry_the_rules_of_their_slot(
    releases: tuple[TimeZoneRules, TimeZoneRules],
) -> None:
    old, _ = releases
    p = Planner("n1", timedelta(seconds=5), rules=old)
    o = p.acquire(daily(), cursor=CREATED)
    assert o is not None
    assert o.rules_of(OLD_9AM) == ("2030a", "2027-01-15T09:00:00-08:00")
    utc = p.acquire(daily("UTC"), cursor=CREATED)
    assert utc is not None and utc.rules_of(OLD_9AM) == ("", "")
    rec = skipped_record(
        "daily", OLD_9AM, OLD_9AM, "misfire", "n1", 7, OLD_9AM,
        policy="skip", misfire_threshold=timedelta(seconds=5), window=timedelta(0),
        tzdata_version="2030a", local_time="2027-01-15T09:00:00-08:00",
    )  # fmt: skip
    assert (rec.tzdata_version, rec.local_time) == ("2030a", "2027-01-15T09:00:00-08:00")


def test_a_fenced_claim_costs_one_compare_more() -> None:
    fenced = pb.RunRecord(tzdata_version="2030a")
    assert [claim_cost(pb.RunRecord(), m) for m in CLAIM_COST] == list(CLAIM_COST.values())
    assert {m: claim_cost(fenced, m) for m in CLAIM_COST} == {
        None: 2,
        "lock": 3,
        "queue": 3,
        "replace": 3,
    }


def test_resume_after_the_local_time_run_by_other_rules(
    releases: tuple[TimeZoneRules, TimeZoneRules],
) -> None:
    """New rules ran the day's 09:00 at 16:00Z; a node with the old ones takes over: without
    the local time it would fire the day's 09:00 again at 17:00Z."""
    old, _ = releases
    p = Planner("n1", timedelta(seconds=5), rules=old)
    o = p.acquire(daily())
    assert o is not None and o.cursor is None  # to be loaded from the ledger
    newest = ran(NEW_9AM, "2030b", "2027-01-15T09:00:00-07:00")
    assert o.compiled.next_after(NEW_9AM) == OLD_9AM  # the double fire resume() prevents
    cursor = p.resume(o, NEW_9AM, newest)
    assert cursor == OLD_9AM
    p.set_cursor(o, cursor)
    assert o.next_at == OLD_9AM + timedelta(days=1)
    later = OLD_9AM + timedelta(minutes=1)
    p.collect_due(later)
    assert p.plan(later, {"http": 10}, TokenBucket(1000.0, 1000.0, 0.0), 0.0, 100) == []


@pytest.mark.parametrize(
    ("version", "local", "why"),
    [
        ("2030a", "2027-01-15T09:00:00-07:00", "same rules: the slot is the instant"),
        ("", "", "a record without rules (UTC, or an older peerd)"),
        ("2030b", "", "no local time to go by"),
    ],
)
def test_resume_keeps_the_cursor(
    releases: tuple[TimeZoneRules, TimeZoneRules], version: str, local: str, why: str
) -> None:
    old, _ = releases
    p = Planner("n1", timedelta(seconds=5), rules=old)
    o = p.acquire(daily())
    assert o is not None
    assert p.resume(o, NEW_9AM, ran(NEW_9AM, version, local)) == NEW_9AM, why
    assert p.resume(o, NEW_9AM, None) == NEW_9AM


def test_the_other_direction_needs_no_skip(
    releases: tuple[TimeZoneRules, TimeZoneRules],
) -> None:
    """Old rules ran it at 17:00Z; by the new ones the day's 09:00 (16:00Z) is already past."""
    _, new = releases
    p = Planner("n1", timedelta(seconds=5), rules=new)
    o = p.acquire(daily())
    assert o is not None
    cursor = p.resume(o, OLD_9AM, ran(OLD_9AM, "2030a", "2027-01-15T09:00:00-08:00"))
    assert cursor == OLD_9AM
    assert o.compiled.next_after(cursor) == NEW_9AM + timedelta(days=1)


def test_audit_counts_a_slot_run_by_other_rules(
    releases: tuple[TimeZoneRules, TimeZoneRules],
) -> None:
    """Days 1-2 ran by "new" (16:00Z), day 3 by "old" (17:00Z) after a switch: audited with
    "old", day 3 is its own slot and days 1-2 are covered by their local time, no gap."""
    old, _ = releases
    compiled = CompiledSchedule(spec_from_proto(daily().schedule, CREATED), old)
    days = [DAY + timedelta(days=d) for d in range(3)]
    records = [ran(d.replace(hour=16), "2030b", f"{d.date()}T09:00:00-07:00") for d in days[:2]] + [
        ran(days[2].replace(hour=17), "2030a", f"{days[2].date()}T09:00:00-08:00")
    ]
    entries = [LedgerEntry(r, i + 1) for i, r in enumerate(records)]
    since, until = DAY, DAY + timedelta(days=3)
    report = audit(compiled, entries, since, until, timedelta(seconds=5))
    assert (report.expected_slots, report.gap_count, report.gaps) == (3, 0, [])
    bare = [LedgerEntry(ran(r.scheduled_at.ToDatetime(UTC), "2030b", ""), 1) for r in records[:2]]
    report = audit(compiled, [*bare, entries[2]], since, until, timedelta(seconds=5))
    assert report.gap_count == 2  # without the local time nothing says which slot they were
