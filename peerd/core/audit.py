"""Audit of one task's run ledger (pure): expected slots, gaps, multiple claims, status counts and
lateness. The service (:meth:`peerd.rpc.service.SchedulerService.AuditTask`) reads the records
with the create revision of their keys (:class:`peerd.coord.runs_view.RunsView`) and the clock;
everything here is a function of its arguments, so tests use synthetic records and fixed times.

Window
    Records count when their slot is in ``(since, until]``. Slots the schedule *expects* are those
    in ``(since, expected_until]``, ``expected_until = until - misfire threshold - jitter bound``
    (a slot due within the last threshold may legitimately not be claimed yet), and, for a task
    paused now, no later than the moment it was paused. :func:`audit_window` picks ``since``:
    the requested one (default: the task's creation), moved up to just before the oldest record
    kept when the ledger may have been trimmed (``--runs-keep``), which sets ``truncated``.

Gaps
    Expected slots with no record at all (a SKIPPED record is not a gap: the slot was handled).
    Manual runs (``manual``) are not expected slots: they never fill or cause a gap, but they
    are counted by status, in the lateness histogram and checked for multiple claims.

Time-zone rules
    Expected slots are computed with the auditing node's rules. A record whose slot was
    computed with another tzdata version (``tzdata_version``, while the cluster agreed on
    another one) fills the expected slot with the same local time (``local_time``): that is
    the slot it stood for, so it is not a gap (:func:`covered_by_other_rules`).

Multiple claims
    See :func:`multi_claim`.

Lateness
    Of every started run in the window: first attempt's ``started_at`` minus ``fire_at`` (or
    ``scheduled_at`` when ``fire_at`` is unset). Histogram buckets are *per bucket* (not
    cumulative): a value v lands in the first bucket with ``v <= le_ms`` (upper bounds 10, 50,
    100, 250, 500, 1000, 2500, 5000, 10000 ms, then +inf, ``le_ms = -1``); the counts add up to
    the number of started runs. Percentiles are nearest-rank.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from peerd.core.task_schedule import Slots
from peerd.v1 import scheduler_pb2 as pb

LATENESS_BUCKETS_MS: tuple[int, ...] = (10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Upper bounds (inclusive, ms) of the lateness histogram; a final +inf bucket follows."""
INF_BUCKET = -1
"""``le_ms`` of the +inf bucket."""
MAX_GAPS = 1000
"""Gaps listed by timestamp; :attr:`AuditReport.gap_count` is exact regardless."""
GIVEN_UP = frozenset({pb.LOST, pb.FAILED, pb.CANCELLED})
"""Statuses of an attempt that was abandoned, so another attempt of the slot is a retry."""
_US = timedelta(microseconds=1)
_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCAN_PAGE = 1000


@dataclass(frozen=True)
class LedgerEntry:
    """A run record as stored, with the create revision of its key ``runs/<task>/<slot_ms>``.

    ``record.fencing_token`` must be the value as stored (0 when the writer left it unset), not
    filled in from ``create_revision``.
    """

    record: pb.RunRecord
    create_revision: int


@dataclass(frozen=True)
class MultiClaimFinding:
    """A slot claimed more than once: the distinct claims' fencing tokens and why."""

    scheduled_at: datetime
    fencing_tokens: tuple[int, ...]
    detail: str


@dataclass
class AuditReport:
    """Result of :func:`audit`. Datetimes are aware UTC; durations are None without data."""

    since: datetime
    until: datetime
    expected_until: datetime
    expected_slots: int
    gaps: list[datetime]
    gap_count: int
    multi_claims: list[MultiClaimFinding]
    by_status: dict[str, int]
    lateness: list[tuple[int, int]]
    """``(le_ms, count)`` per bucket, ascending, the last one ``(-1, count)`` (+inf)."""
    started: int
    lateness_p50: timedelta | None = None
    lateness_p99: timedelta | None = None
    lateness_max: timedelta | None = None
    truncated: bool = False


def _dt(ts: object) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


def audit_window(
    requested_since: datetime | None,
    created_at: datetime,
    oldest_kept: datetime | None,
    possibly_trimmed: bool,
) -> tuple[datetime, bool]:
    """The exclusive window start and whether it was cut (``truncated``).

    Args:
        requested_since: AuditTaskRequest.since, or None for "from the task's creation".
        created_at: the task's creation (no slot is at or before it).
        oldest_kept: slot of the oldest run record still in the ledger, None when there is none.
        possibly_trimmed: the ledger may have deleted older records (the task has at least
            ``--runs-keep`` records). When false, every record the task ever had is present, so
            a missing slot before the oldest record is a real gap and the window is not cut.

    Returns:
        ``(since, truncated)``: when records may have been trimmed and the asked start is before
        the oldest record kept, ``since`` is 1 ms before that record's slot (so it is included)
        and ``truncated`` is true.
    """
    asked = requested_since if requested_since is not None else created_at
    if possibly_trimmed and oldest_kept is not None and asked < oldest_kept - _MS:
        return oldest_kept - _MS, True
    return asked, False


def _attempts(rec: pb.RunRecord, create_revision: int) -> list[pb.AttemptRecord]:
    """History (oldest first) plus the record's current attempt as an AttemptRecord."""
    current = pb.AttemptRecord(
        attempt=rec.attempt,
        node_id=rec.node_id,
        fencing_token=rec.fencing_token or (create_revision if not rec.history else 0),
        status=rec.status,
        http_status=rec.http_status,
        error=rec.error,
    )
    if rec.HasField("started_at"):
        current.started_at.CopyFrom(rec.started_at)
    if rec.HasField("finished_at"):
        current.finished_at.CopyFrom(rec.finished_at)
    return [*rec.history, current]


def _overlap(a: pb.AttemptRecord, b: pb.AttemptRecord) -> bool:
    """Both started and ``[started_at, finished_at)`` intersect (unset finished_at = still
    running)."""
    if not (a.HasField("started_at") and b.HasField("started_at")):
        return False
    a0, b0 = _dt(a.started_at), _dt(b.started_at)
    a1 = _dt(a.finished_at) if a.HasField("finished_at") else None
    b1 = _dt(b.finished_at) if b.HasField("finished_at") else None
    return (b1 is None or a0 < b1) and (a1 is None or b0 < a1)


def _given_up_before(earlier: pb.AttemptRecord, later: pb.AttemptRecord) -> bool:
    """``earlier`` was LOST/FAILED/CANCELLED before ``later`` started (no finished_at: it was
    given up by whoever wrote ``later``, i.e. a take-over)."""
    if earlier.status not in GIVEN_UP:
        return False
    if not earlier.HasField("finished_at") or not later.HasField("started_at"):
        return True
    return _dt(earlier.finished_at) <= _dt(later.started_at)


def multi_claim(entry: LedgerEntry) -> MultiClaimFinding | None:
    """Whether one slot was claimed more than once, and by which fencing tokens.

    The attempts of a slot are its ``history`` (oldest first) followed by the record's own
    (current) attempt. The slot counts as claimed more than once when any of these holds:

    1. **Key re-created.** The fencing token of the first attempt (``history[0].fencing_token``
       if there is a history, else the record's ``fencing_token``) is set and differs from the
       ``create_revision`` of the run key: the key was deleted and the slot claimed again.
       Tokens: ``[first attempt's token, create_revision]``.
    2. **Concurrent executions.** Two attempts i < j ran on *different* nodes, both have
       ``started_at``, their intervals ``[started_at, finished_at)`` overlap (an unset
       ``finished_at`` counts as still running), and attempt i was not given up before j
       started. *Given up* means status LOST, FAILED or CANCELLED with ``finished_at`` unset
       (declared by the take-over that started j) or ``<= j.started_at``.
    3. **Run after success.** An attempt follows a SUCCEEDED attempt: a retry is only ever
       started after a LOST, FAILED or CANCELLED attempt.

    Attempts whose token is 0 (never recorded) are listed by attempt number in ``detail`` only.

    Returns:
        None when none holds, else the finding with the distinct tokens (ascending).
    """
    rec = entry.record
    attempts = _attempts(rec, entry.create_revision)
    tokens: set[int] = set()
    reasons: list[str] = []
    first = attempts[0].fencing_token
    if first and entry.create_revision and first != entry.create_revision:
        tokens.update((first, entry.create_revision))
        reasons.append(
            f"run key re-created: first attempt claimed at revision {first}, key created at "
            f"revision {entry.create_revision}"
        )
    for j in range(1, len(attempts)):
        later = attempts[j]
        for i in range(j):
            earlier = attempts[i]
            if (
                earlier.node_id != later.node_id
                and _overlap(earlier, later)
                and not _given_up_before(earlier, later)
            ):
                reasons.append(
                    f"attempt {later.attempt} on {later.node_id} ran while attempt "
                    f"{earlier.attempt} on {earlier.node_id} was "
                    f"{pb.RunStatus.Name(earlier.status)}"
                )
                tokens.update(t for t in (earlier.fencing_token, later.fencing_token) if t)
        prev = attempts[j - 1]
        if prev.status == pb.SUCCEEDED:
            reasons.append(
                f"attempt {later.attempt} on {later.node_id or '?'} followed attempt "
                f"{prev.attempt} that SUCCEEDED on {prev.node_id or '?'}"
            )
            tokens.update(t for t in (prev.fencing_token, later.fencing_token) if t)
    if not reasons:
        return None
    return MultiClaimFinding(_dt(rec.scheduled_at), tuple(sorted(tokens)), "; ".join(reasons))


def _lateness_ms(rec: pb.RunRecord) -> float | None:
    """First attempt's start - fire_at (or scheduled_at), in ms; None if never started."""
    start = None
    if rec.history and rec.history[0].HasField("started_at"):
        start = _dt(rec.history[0].started_at)
    elif rec.HasField("started_at"):
        start = _dt(rec.started_at)
    if start is None:
        return None
    base = _dt(rec.fire_at) if rec.HasField("fire_at") else _dt(rec.scheduled_at)
    return (start - base) / _MS


def histogram(values_ms: Sequence[float]) -> list[tuple[int, int]]:
    """Per-bucket counts over :data:`LATENESS_BUCKETS_MS` and +inf (``le_ms = -1``)."""
    counts = [0] * (len(LATENESS_BUCKETS_MS) + 1)
    for v in values_ms:
        i = next((k for k, le in enumerate(LATENESS_BUCKETS_MS) if v <= le), -1)
        counts[i] += 1
    return [*zip(LATENESS_BUCKETS_MS, counts[:-1], strict=True), (INF_BUCKET, counts[-1])]


def percentile(sorted_ms: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (0 < p <= 100) of ascending values.

    Raises:
        ValueError: on an empty sequence.
    """
    if not sorted_ms:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100 * len(sorted_ms)))
    return sorted_ms[rank - 1]


def _ms(dt: datetime) -> int:
    return (dt - _EPOCH) // _MS


def _is_slot(compiled: Slots, slot: datetime) -> bool:
    return compiled.count_between(slot - _MS, slot) == 1


def _skipped_ranges(
    entries: list[LedgerEntry], since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """The slots that SKIPPED records stand for besides their own (``skipped_slots`` > 1), as
    ``(lo, hi]`` bounds clipped to ``(since, until]``: ``skipped_from`` up to just before the
    record's own slot. Ranges of one task's records never overlap (each starts after the
    previous record's slot)."""
    out = []
    for e in entries:
        rec = e.record
        if rec.status != pb.SKIPPED or rec.skipped_slots <= 1 or not rec.HasField("skipped_from"):
            continue
        lo = max(since, _dt(rec.skipped_from) - _US)
        hi = min(until, _dt(rec.scheduled_at) - _US)
        if hi > lo:
            out.append((lo, hi))
    return out


def _keys_between(keys_ms: set[int], lo: datetime, hi: datetime) -> int:
    """How many of ``keys_ms`` fall in ``(lo, hi]``."""
    lo_ms, hi_ms = _ms(lo), _ms(hi)
    return sum(1 for ms in keys_ms if lo_ms < ms <= hi_ms)


def covered_by_other_rules(compiled: Slots, records: Sequence[pb.RunRecord]) -> set[int]:
    """Slots (epoch ms) of ``compiled`` that records computed with other time-zone rules stand
    for: the slots at those records' local times by these rules (either instant of a repeated
    local time). Records without ``local_time``, or with these rules' version, cover nothing.
    """
    out: set[int] = set()
    version = compiled.tzdata_version
    for rec in records:
        if not (version and rec.local_time and rec.tzdata_version not in ("", version)):
            continue
        try:
            wall = datetime.fromisoformat(rec.local_time).replace(tzinfo=None)
        except ValueError:
            continue
        for fold in (0, 1):
            slot = wall.replace(tzinfo=compiled.zone, fold=fold).astimezone(UTC)
            if _is_slot(compiled, slot):
                out.add(_ms(slot))
    return out


def audit(
    compiled: Slots,
    entries: Sequence[LedgerEntry],
    since: datetime,
    until: datetime,
    misfire_threshold: timedelta,
    *,
    jitter: timedelta = timedelta(0),
    paused_at: datetime | None = None,
    truncated: bool = False,
) -> AuditReport:
    """Audit the records of one task.

    Args:
        compiled: the task's slots, compiled the way the engine compiles them
            (:func:`peerd.core.task_schedule.task_schedule`: same ``created_at``, and after a
            schedule change the previous schedule up to the change), so expected slots are
            exactly the engine's.
        entries: the task's records with their keys' create revisions, any order; those outside
            ``(since, until]`` are ignored.
        since: exclusive window start (see :func:`audit_window`); aware.
        until: inclusive window end (normally now); aware.
        misfire_threshold: the task's (or the node's) threshold: slots after ``until`` minus
            this are not expected yet.
        jitter: the schedule's jitter bound (slots fire up to this late on purpose).
        paused_at: when the task is paused now, the time it was paused: no slot after it is
            expected.
        truncated: passed through to the report.

    Returns:
        The report; ``gaps`` lists at most :data:`MAX_GAPS` gaps, ``gap_count`` is exact.
    """
    expected_until = until - misfire_threshold - jitter
    if paused_at is not None:
        expected_until = min(expected_until, paused_at)
    expected = compiled.count_between(since, expected_until) if expected_until > since else 0

    in_window = [e for e in entries if since < _dt(e.record.scheduled_at) <= until]
    by_status = Counter(pb.RunStatus.Name(e.record.status) for e in in_window)
    scheduled_ms = {
        e.record.scheduled_at.ToMilliseconds()
        for e in in_window
        if not e.record.manual and _dt(e.record.scheduled_at) <= expected_until
    }
    scheduled_ms |= {
        ms
        for ms in covered_by_other_rules(compiled, [e.record for e in in_window])
        if since < _EPOCH + ms * _MS <= expected_until
    }
    matched = sum(1 for ms in scheduled_ms if _is_slot(compiled, _EPOCH + ms * _MS))
    ranges = _skipped_ranges(in_window, since, expected_until)
    matched += sum(
        compiled.count_between(lo, hi) - _keys_between(scheduled_ms, lo, hi) for lo, hi in ranges
    )
    gap_count = max(0, expected - matched)
    gaps: list[datetime] = []
    cursor = since
    while len(gaps) < min(gap_count, MAX_GAPS):
        page = compiled.slots_between(cursor, expected_until, _SCAN_PAGE)
        if not page:
            break
        for slot in page:
            covered = any(lo < slot <= hi for lo, hi in ranges)
            if _ms(slot) not in scheduled_ms and not covered:
                gaps.append(slot)
                if len(gaps) >= MAX_GAPS:
                    break
        cursor = page[-1]

    findings = [f for f in (multi_claim(e) for e in in_window) if f is not None]
    findings.sort(key=lambda f: f.scheduled_at)

    values = sorted(v for v in (_lateness_ms(e.record) for e in in_window) if v is not None)
    report = AuditReport(
        since=since,
        until=until,
        expected_until=expected_until,
        expected_slots=expected,
        gaps=gaps,
        gap_count=gap_count,
        multi_claims=findings,
        by_status=dict(sorted(by_status.items())),
        lateness=histogram(values),
        started=len(values),
        truncated=truncated,
    )
    if values:
        report.lateness_p50 = timedelta(milliseconds=percentile(values, 50))
        report.lateness_p99 = timedelta(milliseconds=percentile(values, 99))
        report.lateness_max = timedelta(milliseconds=values[-1])
    return report


def to_proto(report: AuditReport, task_id: str) -> pb.AuditTaskResponse:
    """The report as the RPC's response."""
    out = pb.AuditTaskResponse(
        task_id=task_id,
        expected_slots=report.expected_slots,
        gap_count=report.gap_count,
        truncated=report.truncated,
    )
    out.since.FromDatetime(report.since)
    out.until.FromDatetime(report.until)
    for gap in report.gaps:
        out.gaps.add().FromDatetime(gap)
    for f in report.multi_claims:
        m = out.multi_claims.add(fencing_tokens=list(f.fencing_tokens), detail=f.detail)
        m.scheduled_at.FromDatetime(f.scheduled_at)
    for name, count in report.by_status.items():
        out.by_status[name] = count
    for le, count in report.lateness:
        out.lateness.add(le_ms=le, count=count)
    for attr in ("lateness_p50", "lateness_p99", "lateness_max"):
        value = getattr(report, attr)
        if value is not None:
            getattr(out, attr).FromTimedelta(value)
    return out
