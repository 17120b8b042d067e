"""peerd.core.records: every record the engine writes, built without I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from peerd.core import records
from peerd.v1 import scheduler_pb2 as pb

NOW = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC)
SLOT = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def test_claim_record_carries_the_claim_facts() -> None:
    rec = records.claim_record(
        "t", SLOT, "n1", 0xAB, NOW, fire_at=SLOT + timedelta(seconds=2), priority=7
    )
    assert (rec.task_id, rec.node_id, rec.attempt, rec.status) == ("t", "n1", 1, pb.CLAIMED)
    assert rec.claim_lease_id == 0xAB and rec.priority == 7
    assert rec.scheduled_at.ToDatetime(UTC) == SLOT
    assert rec.fire_at.ToDatetime(UTC) == SLOT + timedelta(seconds=2)
    assert rec.claimed_at.ToDatetime(UTC) == NOW
    assert rec.idempotency_key == f"t/{records.slot_ms(SLOT)}"
    assert records.run_key(rec) == ("t", records.slot_ms(SLOT))


def test_manual_record_keeps_one_level_of_cause() -> None:
    cause = records.claim_record("c", SLOT, "n2", 1, NOW)
    cause.cause.CopyFrom(records.claim_record("older", SLOT, "n3", 1, NOW))
    rec = records.manual_record("t", NOW, "n1", 5, NOW, cause=cause)
    assert rec.manual and rec.fire_at == rec.scheduled_at
    assert rec.cause.task_id == "c" and not rec.cause.HasField("cause")


def test_skipped_records_name_reason_and_policy() -> None:
    common = dict(
        node_id="n1",
        lease_id=1,
        now=NOW,
        policy="run_once",
        misfire_threshold=timedelta(seconds=5),
        window=timedelta(hours=1),
    )
    misfire = records.skipped_record("t", SLOT, SLOT, "misfire", **common)  # type: ignore[arg-type]
    assert misfire.status == pb.SKIPPED and misfire.skip_reason == pb.SKIP_MISFIRE
    assert "5.0s late" in misfire.error and "RUN_ONCE" in misfire.error
    paused = records.skipped_record("t", SLOT, SLOT, "paused", **common)  # type: ignore[arg-type]
    assert paused.skip_reason == pb.SKIP_PAUSED and "paused" in paused.error
    window = records.skipped_record("t", SLOT, SLOT, "catch_up_window", **common)  # type: ignore[arg-type]
    assert window.skip_reason == pb.SKIP_CATCH_UP_WINDOW and "3600s" in window.error
    assert misfire.finished_at.ToDatetime(UTC) == NOW
    assert not misfire.skipped_slots and not misfire.HasField("skipped_from")
    first = SLOT - timedelta(seconds=9)
    many = records.skipped_record("t", SLOT, SLOT, "misfire", covers=(first, 10), **common)  # type: ignore[arg-type]
    assert many.skipped_slots == 10 and many.skipped_from.ToDatetime(UTC) == first
    assert many.error.startswith("10 slots from 2026-11-30T11:59:51.000Z to this one skipped")


def test_overlap_skipped_names_the_holder() -> None:
    rec = records.claim_record("t", SLOT, "n1", 1, NOW)
    holder = records.lock_value(b"/p/runs/t/0001764504000000", "n2", 0xF)
    skip = records.overlap_skipped(rec, holder, queue_full=False, now=NOW)
    assert skip.status == pb.SKIPPED and skip.skip_reason == pb.SKIP_OVERLAP
    assert "on n2" in skip.error and "FORBID" in skip.error
    assert rec.status == pb.CLAIMED  # the claim itself is untouched
    assert "BUFFER_ONE" in records.overlap_skipped(rec, holder, True, NOW).error
    assert records.describe_holder(b"garbage") == "another run"
    assert records.lock_holder(holder) == (1764504000000, "n2")


def test_owner_lost_retry_is_the_next_attempt() -> None:
    rec = records.claim_record("t", SLOT, "n2", 0x10, NOW)
    rec.status = pb.RUNNING
    rec.fencing_token = 42
    rec.started_at.FromDatetime(NOW)
    rec.http_status = 500
    new = records.owner_lost_retry(rec, "n1", 0x20, NOW + timedelta(seconds=3))
    assert (new.attempt, new.node_id, new.claim_lease_id, new.status) == (2, "n1", 0x20, pb.CLAIMED)
    assert not new.HasField("started_at") and new.http_status == 0
    assert new.idempotency_key == rec.idempotency_key
    [lost] = new.history
    assert (lost.attempt, lost.node_id, lost.fencing_token, lost.status) == (1, "n2", 42, pb.LOST)
    assert lost.started_at == rec.started_at and "n2 lost its lease 10" in lost.error
    marked = records.marked_lost(rec, NOW)
    assert marked.status == pb.LOST and marked.attempt == 1 and "RUNNING" in marked.error


def test_time_conversions_agree_with_the_protobuf_helpers() -> None:
    # set_time/time_of/ts_ms/set_duration replace Timestamp/Duration's Python helpers on the
    # fire path: they must give the same fields and values, also before 1970 and for
    # negative durations.
    rng = random.Random(3)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    for _ in range(2000):
        us = rng.randrange(-2 * 10**15, 4 * 10**15)
        dt = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).astimezone(
            rng.choice(zones)
        )
        ours, theirs = Timestamp(), Timestamp()
        records.set_time(ours, dt)
        theirs.FromDatetime(dt)
        assert (ours.seconds, ours.nanos) == (theirs.seconds, theirs.nanos), dt
        assert records.time_of(theirs) == theirs.ToDatetime(UTC) == dt
        assert records.ts_ms(theirs) == theirs.ToMilliseconds()
        td = timedelta(microseconds=rng.randrange(-(10**13), 10**13))
        d_ours, d_theirs = Duration(), Duration()
        records.set_duration(d_ours, td)
        d_theirs.FromTimedelta(td)
        assert (d_ours.seconds, d_ours.nanos) == (d_theirs.seconds, d_theirs.nanos), td
        assert records.duration_of(d_theirs) == d_theirs.ToTimedelta() == td


def test_rfc3339_is_utc_with_milliseconds_from_any_zone() -> None:
    rng = random.Random(5)
    for _ in range(500):
        dt = datetime(1000, 1, 2, tzinfo=UTC) + timedelta(microseconds=rng.randrange(2 * 10**17))
        dt = dt.astimezone(timezone(timedelta(minutes=rng.randrange(-720, 720))))
        utc = dt.astimezone(UTC)
        want = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
        assert records.rfc3339(dt) == want
    assert records.rfc3339(datetime(2026, 11, 21, 6, 0, 1, 999_999, tzinfo=UTC)) == (
        "2026-11-21T06:00:01.999Z"
    )
