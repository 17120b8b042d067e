"""The schedule of a task as a pure value: :class:`ScheduleSpec` and :func:`spec_from_proto`.

What a spec means (slots, bounds, DST policies, jitter) and its validation are in
:mod:`peerd.core.schedule`, which re-exports everything here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from peerd.core.crontab import normalise_cron
from peerd.core.durations import format_duration
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
DST_NONEXISTENT = ("auto", "skip", "shift")
DST_AMBIGUOUS = ("auto", "first", "last", "both")
PB_DST_NONEXISTENT: dict[int, str] = {
    pb.DST_NONEXISTENT_POLICY_UNSPECIFIED: "auto",
    pb.DST_NONEXISTENT_SKIP: "skip",
    pb.DST_NONEXISTENT_SHIFT: "shift",
}
PB_DST_AMBIGUOUS: dict[int, str] = {
    pb.DST_AMBIGUOUS_POLICY_UNSPECIFIED: "auto",
    pb.DST_AMBIGUOUS_FIRST: "first",
    pb.DST_AMBIGUOUS_LAST: "last",
    pb.DST_AMBIGUOUS_BOTH: "both",
}
__all__ = [
    "DST_AMBIGUOUS",
    "DST_NONEXISTENT",
    "PB_DST_AMBIGUOUS",
    "PB_DST_NONEXISTENT",
    "ScheduleSpec",
    "spec_from_proto",
]


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """Pure mirror of ``pb.Schedule``; exactly one of ``cron``/``every``/``at`` is set.

    ``cron`` is a validated expression (never ``@every``: that becomes ``every``); ``every`` is a
    whole number of ms >= 1 s; datetimes are aware. ``time_zone`` is an IANA name ("" = UTC).
    ``max_runs`` 0 = unlimited. ``created_at`` (task creation, the anchor) defaults to the epoch.
    ``dst_nonexistent`` ("auto" | "skip" | "shift") and ``dst_ambiguous`` ("auto" | "first" |
    "last" | "both") apply to ``cron`` only (see :mod:`peerd.core.schedule`). ``jitter`` (>= 0,
    whole ms; :func:`~peerd.core.schedule.validate_schedule` also requires <= 1 h and < the gap
    between slots) delays each slot's fire instant by :func:`~peerd.core.schedule.jitter_offset`.

    Raises:
        ValueError: from the constructor when a datetime is naive, a DST policy is not one of
            the names above or ``jitter`` is negative.
    """

    cron: str | None = None
    every: timedelta | None = None
    at: datetime | None = None
    time_zone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_runs: int = 0
    created_at: datetime = _EPOCH
    dst_nonexistent: str = "auto"
    dst_ambiguous: str = "auto"
    jitter: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        for name in ("at", "start_at", "end_at", "created_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"ScheduleSpec.{name} must be timezone-aware")
        if self.dst_nonexistent not in DST_NONEXISTENT:
            raise ValueError(f"ScheduleSpec.dst_nonexistent must be one of {DST_NONEXISTENT}")
        if self.dst_ambiguous not in DST_AMBIGUOUS:
            raise ValueError(f"ScheduleSpec.dst_ambiguous must be one of {DST_AMBIGUOUS}")
        if self.jitter < timedelta(0):
            raise ValueError("ScheduleSpec.jitter must not be negative")


def _ts(msg: pb.Schedule, name: str, field: str) -> datetime | None:
    if not msg.HasField(name):  # type: ignore[arg-type]
        return None
    try:
        return getattr(msg, name).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError) as e:
        raise InvalidArgument(f"{field}.{name}", f"invalid timestamp: {e}") from None


def spec_from_proto(
    msg: pb.Schedule, created_at: datetime, field: str = "task.schedule"
) -> ScheduleSpec:
    """Convert ``pb.Schedule`` to a :class:`ScheduleSpec` (``@every`` in ``cron`` -> ``every``).

    ``every`` and ``jitter`` are truncated to whole ms; ``time_zone`` "" -> "UTC"; the DST enums
    map to "auto"/"skip"/"shift" and "auto"/"first"/"last"/"both" (kept, and ignored, for
    ``every``/``at``). Does not check past/future.

    Raises:
        InvalidArgument: when no kind is set, ``cron``/timestamps are malformed, a DST enum
            number is unknown (``.dst_nonexistent``/``.dst_ambiguous``) or ``jitter`` is negative
            (``.jitter``).
    """
    kind = msg.WhichOneof("kind")
    cron, every, at = None, None, None
    if kind == "cron":
        cron, every = normalise_cron(msg.cron, f"{field}.cron")
    elif kind == "every":
        every = timedelta(milliseconds=msg.every.ToTimedelta() // _MS)
    elif kind == "at":
        at = _ts(msg, "at", field)
    else:
        raise InvalidArgument(field, "no schedule: set exactly one of cron, every, at")
    nonexistent = PB_DST_NONEXISTENT.get(msg.dst_nonexistent)
    if nonexistent is None:
        raise InvalidArgument(
            f"{field}.dst_nonexistent", f"unknown DstNonexistentPolicy {int(msg.dst_nonexistent)}"
        )
    ambiguous = PB_DST_AMBIGUOUS.get(msg.dst_ambiguous)
    if ambiguous is None:
        raise InvalidArgument(
            f"{field}.dst_ambiguous", f"unknown DstAmbiguousPolicy {int(msg.dst_ambiguous)}"
        )
    jitter = timedelta(0)
    if msg.HasField("jitter"):
        jitter = timedelta(milliseconds=msg.jitter.ToTimedelta() // _MS)
        if jitter < timedelta(0):
            raise InvalidArgument(
                f"{field}.jitter", f"jitter {format_duration(jitter)} must not be negative"
            )
    return ScheduleSpec(
        cron=cron,
        every=every,
        at=at,
        time_zone=msg.time_zone or "UTC",
        start_at=_ts(msg, "start_at", field),
        end_at=_ts(msg, "end_at", field),
        max_runs=msg.max_runs,
        created_at=created_at,
        dst_nonexistent=nonexistent,
        dst_ambiguous=ambiguous,
        jitter=jitter,
    )
