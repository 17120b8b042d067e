"""Run records and lock values, built and read without I/O.

Every ``RunRecord`` the engine writes is made here, from the facts it needs and ``now`` (the
caller's clock): the claim of a scheduled or manual slot, a SKIPPED slot (misfire, catch-up
window, paused, overlap), the next attempt of a run whose claimant lost its lease, and a run
marked LOST. The idempotency key and the overlap lock's value are defined here once.

=====================  ==========================================================
record                 made by
=====================  ==========================================================
CLAIMED (scheduled)    :func:`claim_record`
CLAIMED (manual)       :func:`claim_record` with ``manual=True`` (and ``cause``)
SKIPPED (planning)     :func:`skipped_record` (misfire/catch-up/paused/unschedulable)
SKIPPED (overlap)      :func:`overlap_skipped` (FORBID, or BUFFER_ONE queue full)
CLAIMED (owner lost)   :func:`owner_lost_retry` (attempt + 1, history += LOST)
LOST                   :func:`marked_lost`
=====================  ==========================================================
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from peerd.v1 import scheduler_pb2 as pb

CATCH_UP_NAMES = {"skip": "SKIP", "run_once": "RUN_ONCE", "run_all": "RUN_ALL"}
"""Catch-up policy (``peerd.core.plan`` names) -> its proto name, for messages."""

FINAL = frozenset({pb.SUCCEEDED, pb.FAILED, pb.SKIPPED, pb.LOST, pb.CANCELLED})
"""Statuses after which a record never changes again (a trim may delete it)."""
UNFINISHED = frozenset({pb.CLAIMED, pb.RUNNING})
"""Statuses of a run still claimed or in progress (a lost owner's run is one of these)."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_time(ts: Timestamp, dt: datetime) -> None:
    """Set ``ts`` to the aware datetime ``dt`` (microsecond precision), as
    ``Timestamp.FromDatetime`` does, by integer arithmetic on the datetime's difference from the
    epoch: ~1 µs where the protobuf helper (Python code, through ``calendar.timegm``) takes
    ~4.5 µs, three to five times per fire (measured with upb; docs/performance.md, second
    round).

    Raises:
        TypeError: ``dt`` is naive.
    """
    d = dt - _EPOCH
    ts.seconds = d.days * 86400 + d.seconds
    ts.nanos = d.microseconds * 1000


def set_duration(out: Duration, td: timedelta) -> None:
    """Set ``out`` to ``td`` (microsecond precision; seconds and nanos of the same sign, as
    ``Duration.FromTimedelta`` does) by integer arithmetic."""
    us = (td.days * 86400 + td.seconds) * 1_000_000 + td.microseconds
    seconds = abs(us) // 1_000_000 * (1 if us >= 0 else -1)
    out.seconds = seconds
    out.nanos = (us - seconds * 1_000_000) * 1000


def time_of(ts: Timestamp) -> datetime:
    """The aware UTC datetime of ``ts`` (microsecond precision, truncated as
    ``Timestamp.ToDatetime`` does), without the protobuf helper's Python path."""
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def duration_of(d: Duration) -> timedelta:
    """``d`` as a timedelta (microsecond precision, as ``Duration.ToTimedelta``)."""
    return timedelta(seconds=d.seconds, microseconds=int(d.nanos / 1000))


def ts_ms(ts: Timestamp) -> int:
    """Epoch milliseconds of ``ts`` (floor, as ``Timestamp.ToMilliseconds``)."""
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def slot_ms(slot: datetime) -> int:
    """Epoch milliseconds of an aware datetime: a slot's identity."""
    return round(slot.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def idempotency_key(task_id: str, scheduled_ms: int) -> str:
    """``<task_id>/<scheduled_at epoch ms>``: the same for every attempt of one slot."""
    return f"{task_id}/{scheduled_ms}"


def rfc3339(ts: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-21T06:00:01.000Z`` (a naive ``ts`` is
    taken as local time, as ``astimezone`` does). Formatted field by field: ``strftime`` took
    2.8 % of a node's CPU on the webhook path (issue 13, py-spy)."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return (
        f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:"
        f"{ts.second:02d}.{ts.microsecond // 1000:03d}Z"
    )


def run_key(rec: pb.RunRecord) -> tuple[str, int]:
    """``(task_id, slot_ms)``: the identity of a run (one per slot, whatever the attempt)."""
    return rec.task_id, ts_ms(rec.scheduled_at)


def copy(rec: pb.RunRecord) -> pb.RunRecord:
    """A deep copy of ``rec``."""
    out = pb.RunRecord()
    out.CopyFrom(rec)
    return out


def claim_record(
    task_id: str,
    slot: datetime,
    node_id: str,
    lease_id: int,
    now: datetime,
    *,
    fire_at: datetime | None = None,
    priority: int = 0,
    status: int = pb.CLAIMED,
    tzdata_version: str = "",
    local_time: str = "",
) -> pb.RunRecord:
    """The record that claims ``slot`` for ``node_id`` under ``lease_id`` (attempt 1).

    ``fire_at`` is the slot plus its jitter (None: not set); ``status`` is CLAIMED, or SKIPPED
    for the skipped-slot records built on top of this one. A slot computed with time-zone rules
    carries their ``tzdata_version`` and its ``local_time`` by them (``""``: the slot does not
    depend on them); the ledger claims such a record only while the cluster agrees on that
    version (:mod:`peerd.coord.ledger`).
    """
    rec = pb.RunRecord(
        task_id=task_id,
        node_id=node_id,
        attempt=1,
        status=status,  # type: ignore[arg-type]
        claim_lease_id=lease_id,
        priority=priority,
        tzdata_version=tzdata_version,
        local_time=local_time,
    )
    set_time(rec.scheduled_at, slot)
    set_time(rec.claimed_at, now)
    rec.idempotency_key = idempotency_key(task_id, ts_ms(rec.scheduled_at))
    if fire_at is not None:
        set_time(rec.fire_at, fire_at)
    return rec


def manual_record(
    task_id: str,
    slot: datetime,
    node_id: str,
    lease_id: int,
    now: datetime,
    *,
    priority: int = 0,
    cause: pb.RunRecord | None = None,
) -> pb.RunRecord:
    """The claim of a manual run (TriggerTask, or a compensation run with ``cause``: the failed
    run, kept one level deep). Its slot is the trigger time and fires at once."""
    rec = claim_record(task_id, slot, node_id, lease_id, now, fire_at=slot, priority=priority)
    rec.manual = True
    if cause is not None:
        rec.cause.CopyFrom(cause)
        rec.cause.ClearField("cause")
    return rec


def skipped_record(
    task_id: str,
    slot: datetime,
    fire_at: datetime,
    reason: str,
    node_id: str,
    lease_id: int,
    now: datetime,
    *,
    policy: str,
    misfire_threshold: timedelta,
    window: timedelta,
    covers: tuple[datetime, int] | None = None,
    tzdata_version: str = "",
    local_time: str = "",
    node_selector: str = "",
) -> pb.RunRecord:
    """A SKIPPED record for a slot the catch-up policy does not run.

    Args:
        reason: ``"paused"``, ``"unschedulable"``, ``"catch_up_window"`` or ``"misfire"`` (see
            :data:`peerd.core.plan.SKIP_REASONS`).
        policy: the task's catch-up policy (``peerd.core.plan`` name), named in the message.
        misfire_threshold, window: the task's catch-up settings, named in the message.
        covers: ``(first slot, count)`` when this record stands for ``count`` skipped slots
            from ``first slot`` up to ``slot`` (``RunRecord.skipped_slots``/``skipped_from``).
        tzdata_version, local_time: as for :func:`claim_record`.
        node_selector: the task's node selector, named in the message of an unschedulable slot.
    """
    rec = claim_record(
        task_id,
        slot,
        node_id,
        lease_id,
        now,
        fire_at=fire_at,
        status=pb.SKIPPED,
        tzdata_version=tzdata_version,
        local_time=local_time,
    )
    late_s = (now - fire_at).total_seconds()
    name = CATCH_UP_NAMES.get(policy, policy)
    if reason == "paused":
        rec.skip_reason = pb.SKIP_PAUSED
        rec.error = (
            f"missed while the task was paused ({late_s:.1f}s ago); catch-up policy {name} "
            "does not replay it"
        )
    elif reason == "unschedulable":
        rec.skip_reason = pb.SKIP_UNSCHEDULABLE
        rec.error = (
            f"missed while no live node matched the node selector {node_selector!r} "
            f"({late_s:.1f}s ago); catch-up policy {name} does not replay it"
        )
    elif reason == "catch_up_window":
        rec.skip_reason = pb.SKIP_CATCH_UP_WINDOW
        rec.error = (
            f"missed by {late_s:.1f}s, older than the {window.total_seconds():g}s catch-up window"
        )
    else:
        rec.skip_reason = pb.SKIP_MISFIRE
        rec.error = (
            f"misfire: {late_s:.1f}s late, beyond the {misfire_threshold.total_seconds():g}s "
            f"threshold; catch-up policy {name} does not replay it"
        )
    if covers is not None and covers[1] > 1:
        first, count = covers
        rec.skipped_slots = count
        set_time(rec.skipped_from, first)
        rec.error = f"{count} slots from {rfc3339(first)} to this one skipped: {rec.error}"
    set_time(rec.finished_at, now)
    return rec


def overlap_skipped(
    rec: pb.RunRecord, holder: bytes, queue_full: bool, now: datetime
) -> pb.RunRecord:
    """``rec`` (a claim turned away by its task's overlap lock) as a SKIPPED record naming the
    run in the way (``holder``: a :func:`lock_value`)."""
    out = copy(rec)
    out.status = pb.SKIPPED
    out.skip_reason = pb.SKIP_OVERLAP
    if queue_full:
        out.error = f"overlap: {describe_holder(holder)} is already buffered (BUFFER_ONE); not run"
    else:
        out.error = f"overlap: {describe_holder(holder)} is still in progress (FORBID); not run"
    set_time(out.finished_at, now)
    return out


def attempt_of(rec: pb.RunRecord, status: int, error: str) -> pb.AttemptRecord:
    """The current attempt of ``rec`` as a history entry (``finished_at`` left to the caller)."""
    out = pb.AttemptRecord(
        attempt=rec.attempt,
        node_id=rec.node_id,
        fencing_token=rec.fencing_token,
        status=status,  # type: ignore[arg-type]
        http_status=rec.http_status,
        error=error,
    )
    if rec.HasField("started_at"):
        out.started_at.CopyFrom(rec.started_at)
    if rec.HasField("exit_code"):
        out.exit_code = rec.exit_code
    return out


def owner_lost_reason(rec: pb.RunRecord) -> str:
    """Why a run of a lost claimant is resolved: names the node, its lease and the status."""
    return (
        f"owner lost: {rec.node_id} lost its lease {rec.claim_lease_id:x} while the run was "
        f"{pb.RunStatus.Name(rec.status)}"
    )


def owner_lost_retry(rec: pb.RunRecord, node_id: str, lease_id: int, now: datetime) -> pb.RunRecord:
    """The next attempt of a run whose claimant lost its lease, claimed by ``node_id``: same
    slot and idempotency key, attempt + 1, the lost attempt appended to ``history`` (the new
    fencing token is the revision of the take-over, filled in by the caller)."""
    reason = owner_lost_reason(rec)
    new = copy(rec)
    new.history.append(attempt_of(rec, pb.LOST, reason))
    new.attempt = rec.attempt + 1
    new.node_id = node_id
    new.status = pb.CLAIMED
    new.claim_lease_id = lease_id
    set_time(new.claimed_at, now)
    new.error = f"retry: {reason}"
    for name in ("started_at", "finished_at", "next_attempt_at", "exit_code"):
        new.ClearField(name)  # type: ignore[arg-type]
    new.http_status = 0
    new.output_tail = ""
    return new


def marked_lost(rec: pb.RunRecord, now: datetime) -> pb.RunRecord:
    """A run of a lost claimant recorded LOST (``on_owner_lost = MARK_LOST``)."""
    new = copy(rec)
    new.status = pb.LOST
    new.error = owner_lost_reason(rec)
    set_time(new.finished_at, now)
    return new


def lock_value(run_key_bytes: bytes, node_id: str, lease_id: int) -> bytes:
    """The value of an ``active/`` or ``queued/`` key: who holds it for which run key."""
    return b"%s|%s|%x" % (run_key_bytes, node_id.encode(), lease_id)


def lock_holder(value: bytes) -> tuple[int, str] | None:
    """``(slot_ms, node_id)`` of the run a :func:`lock_value` names; None when malformed."""
    try:
        key, node, _ = value.decode().split("|")
        return int(key.rsplit("/", 1)[1]), node
    except (UnicodeDecodeError, ValueError, IndexError):
        return None


def describe_holder(value: bytes) -> str:
    """'the run of slot <time> on <node>' for a lock value ('another run' if malformed)."""
    held = lock_holder(value)
    if held is None:
        return "another run"
    return f"the run of slot {rfc3339(from_ms(held[0]))} on {held[1]}"
