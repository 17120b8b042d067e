"""The ledger audit (pure): expected slots, gaps, multiple claims, status counts, lateness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from peerd.core.audit import (
    INF_BUCKET,
    LATENESS_BUCKETS_MS,
    MAX_GAPS,
    LedgerEntry,
    audit,
    audit_window,
    histogram,
    multi_claim,
    percentile,
    to_proto,
)
from peerd.core.schedule import CompiledSchedule, ScheduleSpec
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
S = timedelta(seconds=1)
MS = timedelta(milliseconds=1)
THRESHOLD = timedelta(seconds=5)


def every(seconds: int = 10, created: datetime = T0) -> CompiledSchedule:
    return CompiledSchedule(
        ScheduleSpec(every=timedelta(seconds=seconds), created_at=created), RULES
    )


def attempt(
    n: int,
    node: str,
    status: int,
    start: datetime | None,
    end: datetime | None = None,
    token: int = 0,
) -> pb.AttemptRecord:
    a = pb.AttemptRecord(attempt=n, node_id=node, status=status, fencing_token=token)  # type: ignore[arg-type]
    if start is not None:
        a.started_at.FromDatetime(start)
    if end is not None:
        a.finished_at.FromDatetime(end)
    return a


def record(
    slot: datetime,
    status: int = pb.SUCCEEDED,
    *,
    node: str = "n1",
    late: timedelta | None = timedelta(milliseconds=5),
    took: timedelta = timedelta(milliseconds=20),
    token: int = 0,
    manual: bool = False,
    fire_at: datetime | None = None,
    history: list[pb.AttemptRecord] | None = None,
    attempt_no: int = 1,
) -> pb.RunRecord:
    r = pb.RunRecord(
        task_id="t",
        node_id=node,
        status=status,  # type: ignore[arg-type]
        fencing_token=token,
        manual=manual,
        attempt=attempt_no,
        history=history or [],
    )
    r.scheduled_at.FromDatetime(slot)
    if fire_at is not None:
        r.fire_at.FromDatetime(fire_at)
    if late is not None and status not in (pb.SKIPPED, pb.CLAIMED):
        start = (fire_at or slot) + late
        r.started_at.FromDatetime(start)
        if status != pb.RUNNING:
            r.finished_at.FromDatetime(start + took)
    return r


def entries(*records: pb.RunRecord, first_revision: int = 100) -> list[LedgerEntry]:
    return [LedgerEntry(r, first_revision + i) for i, r in enumerate(records)]


# --------------------------------------------------------------------------- expected and gaps


def test_complete_ledger_has_no_gaps() -> None:
    until = T0 + 60 * S
    # slots T0+10 .. T0+60; the ones after until - 5 s (T0+60) are not expected yet
    recs = [record(T0 + k * 10 * S) for k in range(1, 7)]
    report = audit(every(), entries(*recs), T0, until, THRESHOLD)
    assert report.expected_slots == 5
    assert report.gap_count == 0 and report.gaps == []
    assert report.multi_claims == []
    assert report.by_status == {"SUCCEEDED": 6}  # the not-yet-expected slot is still counted
    assert report.started == 6 and sum(c for _, c in report.lateness) == 6
    assert report.expected_until == until - THRESHOLD


def test_missing_slots_are_gaps_but_skipped_ones_are_not() -> None:
    recs = [
        record(T0 + 10 * S),
        record(T0 + 30 * S, pb.SKIPPED, late=None),
        record(T0 + 50 * S, pb.FAILED),
    ]
    report = audit(every(), entries(*recs), T0, T0 + 65 * S, THRESHOLD)
    assert report.expected_slots == 6
    assert report.gaps == [T0 + 20 * S, T0 + 40 * S, T0 + 60 * S]
    assert report.gap_count == 3
    assert report.by_status == {"FAILED": 1, "SKIPPED": 1, "SUCCEEDED": 1}
    assert report.started == 2  # a SKIPPED slot never started


def test_a_skipped_record_standing_for_several_slots_fills_their_gaps() -> None:
    # A saturated node skipped T0+20 .. T0+50 and recorded them in one record at T0+50.
    ranged = record(T0 + 50 * S, pb.SKIPPED, late=None)
    ranged.skipped_slots = 4
    ranged.skipped_from.FromDatetime(T0 + 20 * S)
    recs = [record(T0 + 10 * S), ranged, record(T0 + 60 * S)]
    report = audit(every(), entries(*recs), T0, T0 + 85 * S, THRESHOLD)
    assert report.expected_slots == 8  # T0+10 .. T0+80
    assert report.gaps == [T0 + 70 * S, T0 + 80 * S] and report.gap_count == 2
    # A slot inside the range that has a record of its own is counted once.
    inside = record(T0 + 30 * S)
    report = audit(every(), entries(*recs, inside), T0, T0 + 85 * S, THRESHOLD)
    assert report.gap_count == 2
    # A range reaching before the window only counts its part inside it.
    report = audit(
        every(), entries(ranged, record(T0 + 60 * S)), T0 + 35 * S, T0 + 65 * S, THRESHOLD
    )
    assert report.expected_slots == 3 and report.gap_count == 0  # T0+40 (range), 50, 60


def test_gap_list_is_capped_but_count_is_exact() -> None:
    until = T0 + timedelta(days=1)
    report = audit(every(1), [], T0, until, THRESHOLD)
    assert report.expected_slots == 86_400 - 5
    assert report.gap_count == 86_400 - 5
    assert len(report.gaps) == MAX_GAPS
    assert report.gaps[0] == T0 + S and report.gaps[-1] == T0 + MAX_GAPS * S


def test_manual_runs_are_counted_but_never_expected() -> None:
    recs = [
        record(T0 + 10 * S),
        record(T0 + 15 * S, manual=True),  # a trigger between two slots
        record(T0 + 20 * S, manual=True),  # a trigger that happens to land on a slot
    ]
    report = audit(every(), entries(*recs), T0, T0 + 25 * S, THRESHOLD)
    assert report.expected_slots == 2
    assert report.gaps == [T0 + 20 * S]  # the manual run does not fill the scheduled slot
    assert report.by_status == {"SUCCEEDED": 3}
    assert report.started == 3


def test_records_outside_the_window_are_ignored() -> None:
    recs = [record(T0 + 10 * S), record(T0 + 20 * S), record(T0 + 90 * S)]
    report = audit(every(), entries(*recs), T0 + 10 * S, T0 + 30 * S, THRESHOLD)
    assert report.expected_slots == 1  # (T0+10, T0+25]: T0+20
    assert report.gap_count == 0
    assert report.by_status == {"SUCCEEDED": 1}


def test_jitter_and_pause_shorten_the_expected_window() -> None:
    until = T0 + 100 * S
    jittered = audit(every(), [], T0, until, THRESHOLD, jitter=timedelta(seconds=10))
    assert jittered.expected_slots == 8  # (T0, T0+85]
    paused = audit(every(), [], T0, until, THRESHOLD, paused_at=T0 + 42 * S)
    assert paused.expected_slots == 4 and paused.expected_until == T0 + 42 * S


def test_window_before_creation_expects_nothing_before_it() -> None:
    report = audit(every(created=T0), [], T0 - timedelta(hours=1), T0 + 25 * S, THRESHOLD)
    assert report.expected_slots == 2


def test_cron_schedule_expected_slots() -> None:
    compiled = CompiledSchedule(ScheduleSpec(cron="*/15 * * * *", created_at=T0), RULES)
    recs = [record(T0 + timedelta(minutes=m)) for m in (15, 30, 60)]
    report = audit(compiled, entries(*recs), T0, T0 + timedelta(minutes=61), THRESHOLD)
    assert report.expected_slots == 4
    assert report.gaps == [T0 + timedelta(minutes=45)]


def test_a_record_off_the_schedule_does_not_fill_a_gap() -> None:
    recs = [record(T0 + 10 * S), record(T0 + 13 * S)]  # 13 s is no slot of "every 10s"
    report = audit(every(), entries(*recs), T0, T0 + 25 * S, THRESHOLD)
    assert report.expected_slots == 2 and report.gap_count == 1


# --------------------------------------------------------------------------- window


def test_window_defaults_to_creation_when_nothing_was_trimmed() -> None:
    assert audit_window(None, T0, T0 + 50 * S, possibly_trimmed=False) == (T0, False)
    earlier = T0 - timedelta(days=3)
    assert audit_window(earlier, T0, T0 + 50 * S, possibly_trimmed=False) == (earlier, False)


def test_window_is_cut_to_the_oldest_record_kept_when_trimmed() -> None:
    oldest = T0 + 50 * S
    assert audit_window(None, T0, oldest, possibly_trimmed=True) == (oldest - MS, True)
    assert audit_window(T0 + S, T0, oldest, possibly_trimmed=True) == (oldest - MS, True)
    later = T0 + 70 * S
    assert audit_window(later, T0, oldest, possibly_trimmed=True) == (later, False)
    assert audit_window(None, T0, None, possibly_trimmed=True) == (T0, False)


def test_cut_window_includes_the_oldest_record() -> None:
    oldest = T0 + 50 * S
    since, truncated = audit_window(None, T0, oldest, possibly_trimmed=True)
    recs = [record(T0 + k * 10 * S) for k in range(5, 9)]
    report = audit(every(), entries(*recs), since, T0 + 85 * S, THRESHOLD, truncated=truncated)
    assert report.expected_slots == 4 and report.gap_count == 0 and report.truncated


# --------------------------------------------------------------------------- multi-claims


def test_single_claims_are_clean() -> None:
    plain = LedgerEntry(record(T0, token=100), 100)
    assert multi_claim(plain) is None
    unrecorded_token = LedgerEntry(record(T0, token=0), 100)
    assert multi_claim(unrecorded_token) is None


def test_recreated_key_is_a_multi_claim() -> None:
    found = multi_claim(LedgerEntry(record(T0, token=100), 250))
    assert found is not None
    assert found.fencing_tokens == (100, 250) and "re-created" in found.detail
    lost = attempt(1, "n1", pb.LOST, T0, token=100)
    history = LedgerEntry(record(T0, node="n2", token=180, history=[lost], attempt_no=2), 250)
    found = multi_claim(history)
    assert found is not None and found.fencing_tokens == (100, 250)


def test_take_over_of_a_lost_attempt_is_a_retry() -> None:
    # n1 vanished while RUNNING; n2 took the record over (token 180), recording n1's attempt
    # as LOST without a finish time.
    lost = attempt(1, "n1", pb.LOST, T0 + 5 * MS, token=100)
    rec = record(T0, node="n2", token=180, late=timedelta(seconds=4), history=[lost], attempt_no=2)
    assert multi_claim(LedgerEntry(rec, 100)) is None


def test_retry_after_failure_is_not_a_multi_claim() -> None:
    failed = attempt(1, "n1", pb.FAILED, T0, T0 + S, token=100)
    rec = record(T0, node="n2", late=2 * S, history=[failed], token=100, attempt_no=2)
    assert multi_claim(LedgerEntry(rec, 100)) is None
    # the same node overlapping itself is not a claim by another node
    running = attempt(1, "n1", pb.RUNNING, T0, token=100)
    rec = record(T0, node="n1", late=2 * S, history=[running], token=100, attempt_no=2)
    assert multi_claim(LedgerEntry(rec, 100)) is None


def test_concurrent_attempts_on_two_nodes_are_a_multi_claim() -> None:
    # n1 was still RUNNING (no finish) when n2 started attempt 2
    running = attempt(1, "n1", pb.RUNNING, T0, token=100)
    rec = record(T0, node="n2", late=2 * S, history=[running], token=180, attempt_no=2)
    found = multi_claim(LedgerEntry(rec, 100))
    assert found is not None
    assert found.fencing_tokens == (100, 180)
    assert "attempt 2 on n2 ran while attempt 1 on n1 was RUNNING" in found.detail
    # FAILED, but only after n2 had started: the attempts overlapped
    late_fail = attempt(1, "n1", pb.FAILED, T0, T0 + 3 * S, token=100)
    rec = record(T0, node="n2", late=2 * S, history=[late_fail], token=180, attempt_no=2)
    assert multi_claim(LedgerEntry(rec, 100)) is not None


def test_run_after_success_is_a_multi_claim() -> None:
    done = attempt(1, "n1", pb.SUCCEEDED, T0, T0 + S, token=100)
    rec = record(T0, node="n1", late=5 * S, history=[done], token=180, attempt_no=2)
    found = multi_claim(LedgerEntry(rec, 100))
    assert found is not None and "SUCCEEDED" in found.detail
    assert found.fencing_tokens == (100, 180)


def test_audit_lists_multi_claims_in_slot_order() -> None:
    bad_late = LedgerEntry(record(T0 + 20 * S, token=7), 9)
    bad_early = LedgerEntry(record(T0 + 10 * S, token=3), 5)
    report = audit(every(), [bad_late, bad_early], T0, T0 + 30 * S, THRESHOLD)
    assert [m.scheduled_at for m in report.multi_claims] == [T0 + 10 * S, T0 + 20 * S]


# --------------------------------------------------------------------------- lateness


def test_histogram_bucket_bounds_are_inclusive() -> None:
    values = [-3.0, 0.0, 10.0, 10.5, 50.0, 9999.0, 10_000.0, 10_001.0, 1e9]
    buckets = dict(histogram(values))
    assert list(buckets) == [*LATENESS_BUCKETS_MS, INF_BUCKET]
    assert buckets[10] == 3 and buckets[50] == 2 and buckets[10_000] == 2
    assert buckets[INF_BUCKET] == 2
    assert sum(buckets.values()) == len(values)


def test_percentiles_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_lateness_is_measured_from_fire_at_and_the_first_attempt() -> None:
    jittered = record(T0 + 10 * S, fire_at=T0 + 13 * S, late=timedelta(milliseconds=40))
    first = attempt(1, "n1", pb.FAILED, T0 + 20 * S + 700 * MS, T0 + 21 * S)
    retried = record(T0 + 20 * S, late=5 * S, history=[first], attempt_no=2)
    report = audit(every(), entries(jittered, retried), T0, T0 + 30 * S, THRESHOLD)
    buckets = dict(report.lateness)
    assert buckets[50] == 1 and buckets[1000] == 1
    assert report.lateness_p50 == timedelta(milliseconds=40)
    assert report.lateness_max == timedelta(milliseconds=700)


def test_to_proto_carries_everything() -> None:
    recs = [record(T0 + 10 * S, token=100), record(T0 + 30 * S, token=1)]
    report = audit(
        every(), [LedgerEntry(recs[0], 100), LedgerEntry(recs[1], 2)], T0, T0 + 40 * S, THRESHOLD
    )
    out = to_proto(report, "t")
    assert out.task_id == "t" and out.expected_slots == 3 and out.gap_count == 1
    assert [g.ToDatetime(tzinfo=UTC) for g in out.gaps] == [T0 + 20 * S]
    assert len(out.multi_claims) == 1 and list(out.multi_claims[0].fencing_tokens) == [1, 2]
    assert dict(out.by_status) == {"SUCCEEDED": 2}
    assert [b.le_ms for b in out.lateness][-1] == -1
    assert sum(b.count for b in out.lateness) == 2
    assert out.lateness_p50.ToTimedelta() == timedelta(milliseconds=5)
    assert out.since.ToDatetime(tzinfo=UTC) == T0 and not out.truncated
    empty = to_proto(audit(every(), [], T0, T0 + S, THRESHOLD), "t")
    assert not empty.HasField("lateness_p50") and empty.expected_slots == 0
