"""Schedules: validation, slot arithmetic and jitter for ``cron``, ``every`` and ``at`` (pure).

A *slot* is an instant a task is due, as an aware UTC ``datetime`` truncated to whole
milliseconds; its identity is its epoch ms. Nothing here reads the clock: ``now`` is a parameter.

Bounds (all kinds): a slot is strictly after ``created_at``, ``>= start_at``, ``<= end_at``, and
with ``max_runs = N > 0`` the schedule ends at its N-th slot (counted from the first slot after
``created_at``/``start_at``).

* ``every``: slots ``anchor + k*every`` (k >= 0), anchor = ``start_at`` if set, else ``created_at``
  truncated to the second. Computed in closed form (O(1)), whatever the gap.
* ``at``: one slot.
* ``cron``: the field value sets of :func:`peerd.core.crontab.parse_cron_fields` (the validator,
  :func:`normalise_cron`, re-exported here) matched against wall-clock time in ``time_zone``.
  Day matching (crontab(5), croniter ``day_or=True``): when day-of-month and day-of-week are
  both restricted a day matches if *either* does; "unrestricted" means covering the whole range
  (``*``, ``*/1``, ``1-31``, ``0-7``) - unlike Vixie cron, which tests for a leading ``*`` (so
  ``*/2`` in dom is OR-ed with dow here, AND-ed there). Slots are computed here by calendar
  arithmetic, not by croniter (croniter validates in :mod:`peerd.core.crontab` and is the test
  oracle: ``tests/unit/test_schedule.py`` checks that both give the same slots).

DST (cron only; ``every`` and ``at`` are UTC instants). A wall-clock match that a UTC-offset
transition makes *nonexistent* (spring forward: Europe/Berlin 2026-03-29, 02:00 CET -> 03:00
CEST, 02:xx does not exist) follows ``dst_nonexistent``: ``skip`` (no slot) or ``shift`` (a slot
at the first instant after the gap, 03:00 CEST = 01:00Z; all nonexistent times of one gap shift
to that one slot, also shared with a regular 03:00 slot). A match that occurs twice (fall back:
2026-10-25, 03:00 CEST -> 02:00 CET, 02:xx happens at +02:00 and again at +01:00) follows
``dst_ambiguous``: ``first`` (the earlier UTC instant, summer offset), ``last`` or ``both``.
``auto`` (the default) follows Vixie cron / cronie (cron(8): "If time has moved forward, those
jobs that would have run in the interval that has been skipped will be run immediately.
Conversely, if time has moved backward, care is taken to avoid running jobs twice", for jobs at
a specific time; "jobs that run more frequently are scheduled normally"): ``shift``/``first``
when the hour field is a fixed set (``30 2 * * *``, ``0 2,14 * * *``, ``@daily``, ``*/2`` too),
``skip``/``both`` when it covers all 24 hours (``*``, ``*/1``, ``0-23``, ``@hourly``).
Difference: Vixie cron also treats a ``*`` *minute* (``* 2 * * *``) as "wildcard"; here only the
hour field decides (the API contract, ``proto/peerd/v1/scheduler.proto``). Matches outside the
gap/overlap are never affected. Example, Berlin ``30 2 * * *``: 03-28 01:30Z, 03-29 01:00Z
(shifted), 03-30 00:30Z; 10-24 00:30Z, 10-25 00:30Z (first of two), 10-26 01:30Z.

Jitter: each slot fires at ``slot + jitter_offset(task_id, slot_ms, jitter)``, a keyed BLAKE2b
hash of (task id, slot) mapped to whole ms in ``[0, jitter)``, so every node computes the same
instant. Validation keeps ``jitter <= 1 h`` and below the smallest gap between slots
(:meth:`CompiledSchedule.min_gap`), so fire instants are strictly increasing in slot order.

Cost. Counting is exact and cheap (:meth:`CompiledSchedule.count_between`): cron matches are
counted arithmetically on wall-clock time (calendar arithmetic with a 400-year Gregorian cycle)
in each constant-offset stretch; a transition adds a window of the instants it affects, where
the policy applies: O(1) for a spring-forward gap, one step per match in the repeated hour for
a fall-back (~1 us each: a per-second cron ~4 ms per transition), cached per schedule.
Transitions are found by sampling the zone weekly (two transitions that cancel within one week
would be missed; tzdata has none) and are assumed further apart than their shifts (in all of
tzdata 1850-2100 they are >= 6.9 days apart). Iteration costs ~4 us per slot. Slots after
9999-12-30 do not exist.
"""

from __future__ import annotations

import calendar
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from hashlib import blake2b
from itertools import pairwise
from typing import NamedTuple

from peerd.core.crontab import DESCRIPTORS, CronFields, load_zone, normalise_cron, parse_cron_fields
from peerd.core.durations import format_duration
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_MAX_ORD = date.max.toordinal()
_US = timedelta(microseconds=1)
_MS = timedelta(milliseconds=1)
_MAX_S = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)
_MIN_S = (datetime(1, 1, 3, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)
_MAX_MS, _MIN_MS = _MAX_S * 1000, _MIN_S * 1000
_DAY, _WEEK, _CHUNK = 86_400, 7 * 86_400, 1 << 25
_PAD = 2 * _DAY  # > any transition window's half-width (|offset change|; tzdata's largest: 24 h)
_Y2038 = (datetime(2038, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)
MAX_RUNS_LIMIT = 1_000_000
MAX_JITTER = timedelta(hours=1)
DST_NONEXISTENT = ("auto", "skip", "shift")
DST_AMBIGUOUS = ("auto", "first", "last", "both")
_PB_NONEXISTENT = {
    pb.DST_NONEXISTENT_POLICY_UNSPECIFIED: "auto",
    pb.DST_NONEXISTENT_SKIP: "skip",
    pb.DST_NONEXISTENT_SHIFT: "shift",
}
_PB_AMBIGUOUS = {
    pb.DST_AMBIGUOUS_POLICY_UNSPECIFIED: "auto",
    pb.DST_AMBIGUOUS_FIRST: "first",
    pb.DST_AMBIGUOUS_LAST: "last",
    pb.DST_AMBIGUOUS_BOTH: "both",
}
_JITTER_KEY = b"peerd.jitter.v1"
__all__ = [
    "DST_AMBIGUOUS",
    "DST_NONEXISTENT",
    "MAX_JITTER",
    "MAX_RUNS_LIMIT",
    "CompiledSchedule",
    "DstEvent",
    "ScheduleSpec",
    "jitter_offset",
    "normalise_cron",
    "spec_from_proto",
    "validate_schedule",
]


@dataclass(frozen=True)
class ScheduleSpec:
    """Pure mirror of ``pb.Schedule``; exactly one of ``cron``/``every``/``at`` is set.

    ``cron`` is a validated expression (never ``@every``: that becomes ``every``); ``every`` is a
    whole number of ms >= 1 s; datetimes are aware. ``time_zone`` is an IANA name ("" = UTC).
    ``max_runs`` 0 = unlimited. ``created_at`` (task creation, the anchor) defaults to the epoch.
    ``dst_nonexistent`` ("auto" | "skip" | "shift") and ``dst_ambiguous`` ("auto" | "first" |
    "last" | "both") apply to ``cron`` only (see the module docstring). ``jitter`` (>= 0, whole
    ms; :func:`validate_schedule` also requires <= 1 h and < the gap between slots) delays each
    slot's fire instant by :func:`jitter_offset`.

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


def _iso(dt: datetime) -> str:
    return (
        dt.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace(".000", "")
        .replace("+00:00", "Z")
    )


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
    nonexistent = _PB_NONEXISTENT.get(msg.dst_nonexistent)
    if nonexistent is None:
        raise InvalidArgument(
            f"{field}.dst_nonexistent", f"unknown DstNonexistentPolicy {int(msg.dst_nonexistent)}"
        )
    ambiguous = _PB_AMBIGUOUS.get(msg.dst_ambiguous)
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


def validate_schedule(
    msg: pb.Schedule, now: datetime, field: str = "task.schedule", *, creating: bool = True
) -> None:
    """Validate ``pb.Schedule``; ``now`` (aware) is used only when ``creating`` and for jitter.

    Checks: exactly one kind; cron syntax (see :func:`normalise_cron`); ``every`` >= 1 s; time
    zone known to zoneinfo; ``end_at >= start_at``; ``at`` within the bounds; ``0 <= max_runs <=
    1_000_000``; when creating, ``at`` and ``end_at`` not in the past (``<= now``); DST enums
    known (accepted and ignored for ``every``/``at``); ``0 <= jitter <= 1h`` and ``jitter <
    every`` (``every``) or ``jitter <`` :meth:`CompiledSchedule.min_gap` after ``now``
    (``cron``: a sound lower bound of the gap between consecutive slots; any jitter below 1 s
    passes since cron slots are whole, distinct seconds); any such jitter for ``at``.

    Raises:
        InvalidArgument: with ``field`` + ``.cron``/``.every``/``.at``/``.time_zone``/
            ``.end_at``/``.max_runs``/``.dst_nonexistent``/``.dst_ambiguous``/``.jitter`` (or
            ``field`` itself when no kind is set), e.g. ``("task.schedule.jitter", "jitter 2m
            must be less than the smallest gap between slots (1m)")``.
    """
    spec = spec_from_proto(msg, now, field)
    load_zone(msg.time_zone, f"{field}.time_zone")
    if msg.WhichOneof("kind") == "every" and (spec.every or timedelta(0)) < timedelta(seconds=1):
        raise InvalidArgument(f"{field}.every", "every must be at least 1s")
    if not 0 <= spec.max_runs <= MAX_RUNS_LIMIT:
        raise InvalidArgument(
            f"{field}.max_runs",
            f"max_runs must be between 0 and {MAX_RUNS_LIMIT}, got {spec.max_runs}",
        )
    if spec.start_at and spec.end_at and spec.end_at < spec.start_at:
        raise InvalidArgument(f"{field}.end_at", "end_at is before start_at")
    if spec.at is not None:
        if spec.start_at and spec.at < spec.start_at:
            raise InvalidArgument(f"{field}.at", f"at {_iso(spec.at)} is before start_at")
        if spec.end_at and spec.at > spec.end_at:
            raise InvalidArgument(f"{field}.at", f"at {_iso(spec.at)} is after end_at")
        if creating and spec.at <= now:
            raise InvalidArgument(f"{field}.at", f"at {_iso(spec.at)} is in the past")
    if creating and spec.end_at is not None and spec.end_at <= now:
        raise InvalidArgument(f"{field}.end_at", f"end_at {_iso(spec.end_at)} is in the past")
    if spec.jitter:
        _check_jitter(spec, now, f"{field}.jitter")


def _check_jitter(spec: ScheduleSpec, now: datetime, field: str) -> None:
    jitter = spec.jitter
    text = format_duration(jitter)
    if jitter > MAX_JITTER:
        raise InvalidArgument(field, f"jitter {text} exceeds the maximum of 1h")
    if spec.every is not None and jitter >= spec.every:
        raise InvalidArgument(
            field, f"jitter {text} must be less than every ({format_duration(spec.every)})"
        )
    if spec.cron is not None and jitter >= timedelta(seconds=1):
        gap = CompiledSchedule(spec).min_gap(now)
        if gap is not None and jitter >= gap:
            raise InvalidArgument(
                field,
                f"jitter {text} must be less than the smallest gap between slots "
                f"({format_duration(gap)})",
            )


def jitter_offset(task_id: str, slot_ms: int, jitter: timedelta) -> timedelta:
    """The deterministic delay of slot ``slot_ms`` (epoch ms) of ``task_id``: whole ms in
    ``[0, jitter)`` (0 when ``jitter`` is under 1 ms).

    The hash is BLAKE2b (RFC 7693), 8-byte digest, keyed with a fixed domain key, over the slot
    (8-byte big-endian signed) followed by the UTF-8 task id - like :func:`peerd.core.ring.weight`
    it is the same on every node, process and Python version. The 64-bit value ``h`` maps to
    ``(h * n) >> 64`` for ``n = jitter`` in ms (Lemire, "Fast Random Integer Generation in an
    Interval", ACM TOMACS 2019; bias below ``n / 2**64``).

    Raises:
        ValueError: when ``jitter`` is negative.
    """
    if jitter < timedelta(0):
        raise ValueError("jitter must not be negative")
    n = jitter // _MS
    if n <= 0:
        return timedelta(0)
    data = slot_ms.to_bytes(8, "big", signed=True) + task_id.encode()
    h = int.from_bytes(blake2b(data, digest_size=8, key=_JITTER_KEY).digest(), "big")
    return timedelta(milliseconds=(h * n) >> 64)


@dataclass(frozen=True)
class DstEvent:
    """A cron wall-clock match that a UTC-offset transition made nonexistent or ambiguous.

    Attributes:
        wall: the matched local wall time, naive, e.g. ``2026-03-29 02:30``.
        nonexistent: True for a time inside a spring-forward gap, False for one that occurs
            twice (fall back).
        transition: the first instant (aware UTC) of the new offset.
        offset_before: UTC offset before ``transition``; ``offset_after``: from it on.
        instants: nonexistent: ``(first valid instant after the gap,)`` = ``(transition,)``;
            ambiguous: both occurrences, ascending (aware UTC).
        slots: the slots the policy made of it (a subset of ``instants``), ``()`` when it
            dropped them (``skip``; ``first``/``last`` drop one occurrence).
    """

    wall: datetime
    nonexistent: bool
    transition: datetime
    offset_before: timedelta
    offset_after: timedelta
    instants: tuple[datetime, ...]
    slots: tuple[datetime, ...]


@lru_cache(maxsize=256)
def _day_tables(
    months: frozenset[int], dom: frozenset[int], dow: frozenset[int], dom_full: bool, dow_full: bool
) -> tuple[list[int], dict[int, list[int]]]:
    """Day-matching tables shared by all schedules with the same day fields.

    ``prefixes[month * 7 + wd1]``: matching days before day 1..32 of ``month`` starting on
    weekday ``wd1`` (Monday 0). ``cum[i]``: matching days before month ``i`` of a 400-year cycle
    starting 0001-01 (the Gregorian calendar, weekdays included, repeats every 400 years).
    """
    prefixes: dict[int, list[int]] = {}
    for month in range(1, 13):
        for wd1 in range(7):
            out = [0]
            for day in range(1, 32):
                dm = dom_full or day in dom
                wm = dow_full or (wd1 + day) % 7 in dow  # cron dow: Sunday 0
                ok = (dm or wm) if not (dom_full or dow_full) else (dm and wm)
                out.append(out[-1] + (ok and month in months))
            prefixes[month * 7 + wd1] = out
    cum = [0]
    for y in range(1, 401):
        for m in range(1, 13):
            nd = calendar.monthrange(y, m)[1]
            cum.append(cum[-1] + prefixes[m * 7 + date(y, m, 1).weekday()][nd])
    return cum, prefixes


def _us(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return (dt - _EPOCH) // _US


def _floor_ms(dt: datetime) -> int:
    return _us(dt) // 1000


def _dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


class _Event(NamedTuple):
    """A :class:`DstEvent` in epoch/wall seconds."""

    wall: int
    transition: int
    nonexistent: bool
    instants: tuple[int, ...]
    slots: tuple[int, ...]


class _Window(NamedTuple):
    """The instants ``(a, b]`` one transition affects and the slots there (policy applied)."""

    a: int
    b: int
    slots: list[int]


class _Cron:
    """Cron slots in epoch seconds: ``iter``, exact ``count``/``nth``, DST policies applied.

    Wall-clock seconds (``wall``) count seconds since 1970-01-01 00:00 *local*; an instant ``s``
    reads ``s + off(s)``. ``nonexistent`` is "skip" or "shift", ``ambiguous`` "first", "last" or
    "both" (already resolved from "auto").
    """

    def __init__(self, f: CronFields, tz: tzinfo, nonexistent: str, ambiguous: str) -> None:
        self.f, self.tz = f, tz
        self.nonexistent, self.ambiguous = nonexistent, ambiguous
        self._tod = sorted(  # matching seconds-of-day
            h * 3600 + m * 60 + s for h in f.hours for m in f.minutes for s in f.seconds
        )
        self._chunks: dict[int, list[int]] = {}
        self._windows: dict[int, _Window] = {}
        self._day = (0, False)  # last (ordinal, matches) looked up

    # --- wall-clock calendar arithmetic (no zone) -----------------------------------------------

    def _days_before(self, ordinal: int) -> tuple[int, bool]:
        """(matching days with ordinal < ``ordinal``, whether ``ordinal`` itself matches)."""
        f = self.f
        cum, prefixes = _day_tables(f.months, f.dom, f.dow, f.dom_full, f.dow_full)
        d = date.fromordinal(ordinal)
        cyc, yi = divmod(d.year - 1, 400)
        pre = prefixes[d.month * 7 + date(d.year, d.month, 1).weekday()]
        before = cyc * cum[-1] + cum[yi * 12 + d.month - 1] + pre[d.day - 1]
        return before, pre[d.day] > pre[d.day - 1]

    def _matches(self, ordinal: int) -> bool:
        if self._day[0] != ordinal:
            self._day = (ordinal, self._days_before(ordinal)[1])
        return self._day[1]

    def _upto(self, ordinal: int) -> int:
        """Matching days with ordinal <= ``ordinal``."""
        before, today = self._days_before(ordinal)
        return before + today

    def _next_day(self, ordinal: int) -> int | None:
        """The first matching day with ordinal >= ``ordinal`` (>= 1), or None before year 10000."""
        for x in range(ordinal, min(ordinal + 8, _MAX_ORD + 1)):
            if self._matches(x):
                return x
        lo = ordinal + 7  # no match in [ordinal, lo]; bisect the first y with _upto(y) > k
        if lo >= _MAX_ORD:
            return None
        k = self._upto(lo)
        if self._upto(_MAX_ORD) <= k:
            return None
        hi = _MAX_ORD
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self._upto(mid) > k else (mid, hi)
        return hi

    def _next_wall(self, wall: int) -> int | None:
        """The first matching wall-clock second > ``wall``, or None after year 9999."""
        days, sod = divmod(wall, _DAY)
        ordinal = days + _EPOCH_ORD
        if ordinal > _MAX_ORD:
            return None
        if ordinal >= 1:
            i = bisect_right(self._tod, sod)
            if i < len(self._tod) and self._matches(ordinal):
                return days * _DAY + self._tod[i]
        nd = self._next_day(max(ordinal + 1, 1))
        return None if nd is None else (nd - _EPOCH_ORD) * _DAY + self._tod[0]

    def _wall_le(self, wall: int) -> int:
        """Matches at wall-clock seconds <= ``wall``."""
        days, sod = divmod(wall, _DAY)
        before, today = self._days_before(days + _EPOCH_ORD)
        return before * len(self._tod) + (bisect_right(self._tod, sod) if today else 0)

    # --- the zone --------------------------------------------------------------------------------

    def _off(self, t: int) -> int:
        t = min(max(t, _MIN_S - _DAY), _MAX_S + _DAY)  # datetime's range
        off = datetime.fromtimestamp(t, self.tz).utcoffset()
        return off // timedelta(seconds=1) if off is not None else 0

    def _transitions(self, lo: int, hi: int) -> list[int]:
        """UTC-offset transitions T in (lo, hi] (T = first second of the new offset)."""
        if self.tz is UTC:
            return []
        out: list[int] = []
        for c in range(lo // _CHUNK, hi // _CHUNK + 1):
            if c not in self._chunks:
                found: list[int] = []
                a = max(c * _CHUNK, _MIN_S - _DAY)
                end = min((c + 1) * _CHUNK, _MAX_S + _DAY // 2)
                oa = self._off(a)
                while a < end:
                    b = min(a + _WEEK, end)
                    ob = self._off(b)
                    while ob != oa:  # bisect the first second with a new offset, then go on
                        x, y = a, b
                        while y - x > 1:
                            mid = (x + y) // 2
                            x, y = (mid, y) if self._off(mid) == oa else (x, mid)
                        found.append(y)
                        a, oa = y, self._off(y)
                    a, oa = b, ob
                self._chunks[c] = found
            out.extend(t for t in self._chunks[c] if lo < t <= hi)
        return out

    def _window(self, t: int) -> _Window:
        """The instants the transition at ``t`` affects, ``(a, b]``, and the slots there.

        Spring forward by ``d`` (offset ``o1`` -> ``o2 = o1 + d``): the walls ``[t + o1, t +
        o2)`` have no instant; the window is ``(t - 1, t]``: ``t`` is a slot if its own wall
        matches or (``shift``) a wall in the gap does - one slot however many. Fall back by
        ``e``: the walls ``[t + o2, t + o1)`` show first at ``[t - e, t)`` then again at ``[t, t +
        e)``, the window; the policy keeps the first, the last or both occurrences. Outside
        windows each instant ``s`` is a slot iff its wall ``s + off(s)`` matches (no policy
        applies), which :meth:`count` counts arithmetically. Assumes transitions more than
        ``|d| + |e|`` apart (in all of tzdata 1850-2100 they are >= 6.9 days apart).
        """
        if t not in self._windows:
            o1, o2 = self._off(t - 1), self._off(t)
            if o2 > o1:
                regular = self._wall_le(t + o2) > self._wall_le(t + o2 - 1)
                in_gap = self._wall_le(t + o2 - 1) > self._wall_le(t + o1 - 1)
                shifted = in_gap and self.nonexistent == "shift"
                self._windows[t] = _Window(t - 1, t, [t] if regular or shifted else [])
            else:
                e = o1 - o2
                walls = list(self._walls(t + o2, t + o1))
                slots: list[int] = []
                if self.ambiguous in ("first", "both"):
                    slots += [w - o1 for w in walls]
                if self.ambiguous in ("last", "both"):
                    slots += [w - o2 for w in walls]
                self._windows[t] = _Window(t - e - 1, t + e - 1, slots)
        return self._windows[t]

    def _walls(self, lo: int, hi: int) -> Iterator[int]:
        """Matching wall-clock seconds in ``[lo, hi)``, ascending."""
        w = self._next_wall(lo - 1)
        while w is not None and w < hi:
            yield w
            w = self._next_wall(w)

    def _first_window(self, cur: int, s: int) -> _Window | None:
        """The earliest transition window that ends after ``cur`` and starts before ``s``."""
        for t in self._transitions(cur - _PAD, s + _PAD):
            win = self._window(t)
            if win.b > cur and win.a < s:
                return win
        return None

    # --- queries ---------------------------------------------------------------------------------

    def iter(self, after: int) -> Iterator[int]:
        """Slots strictly after ``after`` (epoch s), ascending, up to 9999-12-30.

        Between windows the offset ``o`` is constant and the next slot is the next wall match
        minus ``o``; a candidate reaching into a window is replaced by the window's slots.
        """
        cur = max(after, _MIN_S)
        while cur < _MAX_S:
            o = self._off(cur)
            w = self._next_wall(cur + o)
            if w is None:
                return
            s = w - o
            win = self._first_window(cur, s)
            if win is None:
                if s > _MAX_S:
                    return
                yield s
                cur = s
                continue
            for x in win.slots[bisect_right(win.slots, cur) :]:
                if x > _MAX_S:
                    return
                yield x
            cur = win.b

    def count(self, lo: int, hi: int) -> int:
        """Number of slots s with ``lo < s <= hi`` (epoch s), exact."""
        lo, hi = max(lo, _MIN_S), min(hi, _MAX_S)
        total, cur = 0, lo
        for t in self._transitions(lo - _PAD, hi + _PAD):
            a, b, slots = self._window(t)
            if b <= cur or a >= hi:
                continue
            if a > cur:  # constant offset on (cur, a]: count wall-clock matches
                o = self._off(a)
                total += self._wall_le(a + o) - self._wall_le(cur + o)
                cur = a
            end = min(b, hi)
            total += bisect_right(slots, end) - bisect_right(slots, cur)
            cur = end
        if hi > cur:
            o = self._off(hi)
            total += self._wall_le(hi + o) - self._wall_le(cur + o)
        return total

    def nth(self, lo: int, n: int) -> int | None:
        """The ``n``-th (n >= 1) slot strictly after ``lo``, or None before year 9999."""
        if n <= 64:
            for i, s in enumerate(self.iter(lo), 1):
                if i == n:
                    return s
            return None
        if 2 * (self._wall_le(_MAX_S + 64_800) - self._wall_le(lo - 64_800)) < n:
            return None  # a wall-clock match gives at most 2 slots (repeated hour): never reached
        prev, step = lo, _DAY
        while True:  # exponential search for an upper bound, then bisect
            hi = min(lo + step, _MAX_S)
            if self.count(lo, hi) >= n:
                break
            if hi >= _MAX_S:
                return None
            prev, step = hi, step * 2
        while hi - prev > 1:
            mid = (prev + hi) // 2
            prev, hi = (prev, mid) if self.count(lo, mid) >= n else (mid, hi)
        return hi

    def events(self, lo: int, hi: int) -> list[_Event]:
        """DST events with an instant in ``(lo, hi]`` (epoch s), ascending (see :meth:`_window`).

        Cost: one step per matching wall time in each gap/overlap in the range.
        """
        out: list[_Event] = []
        for t in self._transitions(lo - _PAD, hi + _PAD):
            o1, o2 = self._off(t - 1), self._off(t)
            for w in self._walls(t + min(o1, o2), t + max(o1, o2)):
                inst: tuple[int, ...]
                made: tuple[int, ...]
                if o2 > o1:
                    inst = (t,)
                    made = inst if self.nonexistent == "shift" else ()
                else:
                    inst = (w - o1, w - o2)
                    made = {"first": inst[:1], "last": inst[1:], "both": inst}[self.ambiguous]
                if any(lo < x <= hi for x in inst):
                    out.append(_Event(w, t, o2 > o1, inst, made))
        return out

    def min_gap(self, after: int, until: int) -> int:
        """A lower bound (s) of the gap between consecutive slots after ``after``.

        Sound rule: the real slots are a subset of those of the same expression with every day
        matching (the policies are monotone: fewer wall matches, fewer slots), whose gaps are
        the cyclic gaps of the matching seconds-of-day except near transitions, and there they
        depend only on the transition's shape (local time, offsets before and after). So: the
        smallest cyclic gap, and the smallest gap of the every-day schedule around one
        transition of each shape in ``(after, until]``. ``until`` must reach past the zone's
        explicit transitions (zoneinfo's rule repeats after them).
        """
        tod = self._tod
        gaps = [y - x for x, y in pairwise(tod)] + [_DAY - tod[-1] + tod[0]]
        best, widest = min(gaps), max(gaps)
        if best <= 1:  # slots are whole, distinct seconds: no gap is smaller
            return best
        every_day = _Cron(
            replace(
                self.f,
                months=frozenset(range(1, 13)),
                dom=frozenset(range(1, 32)),
                dow=frozenset(range(7)),
                dom_full=True,
                dow_full=True,
            ),
            self.tz,
            self.nonexistent,
            self.ambiguous,
        )
        shapes: set[tuple[int, int, int]] = set()
        for t in self._transitions(after, until):
            o1, o2 = self._off(t - 1), self._off(t)
            if ((t + o1) % _DAY, o1, o2) in shapes:
                continue
            shapes.add(((t + o1) % _DAY, o1, o2))
            reach = abs(o2 - o1) + widest + 1  # one regular slot beyond the affected instants
            prev: int | None = None
            for s in every_day.iter(t - reach - widest):
                if prev is not None:
                    best = min(best, s - prev)
                if s > t + reach:
                    break
                prev = s
        return best


class CompiledSchedule:
    """A :class:`ScheduleSpec` ready for slot queries. Instances cache work; not thread-safe.

    All query datetimes must be aware; results are aware UTC, whole ms, ascending, unique. Every
    query applies the bounds, ``max_runs`` and (cron) the DST policies the same way, so
    ``next_after`` iteration, ``slots_between``, ``count_between`` and ``last_slots`` agree.

    Attributes:
        spec: the spec.
        zone: ``spec.time_zone`` loaded (:data:`datetime.UTC` for UTC), for every kind.
        dst_nonexistent: the effective policy, "skip" or "shift" ("auto" resolved), or None
            for ``every``/``at``; ``dst_ambiguous``: "first", "last", "both" or None.

    Raises:
        InvalidArgument: from the constructor when the spec has no/several kinds, a bad cron
            expression or time zone (field ``schedule...``).
    """

    def __init__(self, spec: ScheduleSpec) -> None:
        self.spec = spec
        if sum(x is not None for x in (spec.cron, spec.every, spec.at)) != 1:
            raise InvalidArgument("schedule", "exactly one of cron, every, at must be set")
        self.zone = load_zone(spec.time_zone, "schedule.time_zone")
        self.dst_nonexistent: str | None = None
        self.dst_ambiguous: str | None = None
        self._cron: _Cron | None = None
        self._at: int | None = None
        self._every: tuple[int, int] | None = None  # (anchor ms, period ms)
        if spec.cron is not None:
            expr = DESCRIPTORS.get(spec.cron.strip().lower(), spec.cron)
            try:
                fields = parse_cron_fields(expr)
            except ValueError as e:
                raise InvalidArgument("schedule.cron", f"{spec.cron!r}: {e}") from None
            every_hour = fields.hours == frozenset(range(24))
            self.dst_nonexistent = spec.dst_nonexistent
            if self.dst_nonexistent == "auto":
                self.dst_nonexistent = "skip" if every_hour else "shift"
            self.dst_ambiguous = spec.dst_ambiguous
            if self.dst_ambiguous == "auto":
                self.dst_ambiguous = "both" if every_hour else "first"
            self._cron = _Cron(fields, self.zone, self.dst_nonexistent, self.dst_ambiguous)
        elif spec.every is not None:
            period = spec.every // _MS
            if period < 1000:
                raise InvalidArgument("schedule.every", "every must be at least 1s")
            if spec.start_at is not None:
                anchor = _floor_ms(spec.start_at)
            else:
                anchor = _us(spec.created_at) // 1_000_000 * 1000
            self._every = (anchor, period)
        elif spec.at is not None:
            self._at = _floor_ms(spec.at)
        lows = [_floor_ms(spec.created_at), _MIN_MS]
        if spec.start_at is not None:
            lows.append(-(-_us(spec.start_at) // 1000) - 1)  # slot >= start_at <=> slot > ceil - 1
        self._lo = max(lows)  # exclusive lower bound, ms
        self._hi = min(_floor_ms(spec.end_at), _MAX_MS) if spec.end_at is not None else _MAX_MS
        self._upper: int | None = None  # inclusive upper bound incl. max_runs, lazily

    # raw series (no bounds), epoch ms
    def _raw_next(self, after: int) -> int | None:
        if self._every is not None:
            a, p = self._every
            s = a + p * max(0, (after - a) // p + 1)
            return s if s <= _MAX_MS else None
        if self._at is not None:
            return self._at if self._at > after else None
        assert self._cron is not None
        return next((s * 1000 for s in self._cron.iter(after // 1000)), None)

    def _raw_count(self, lo: int, hi: int) -> int:
        if hi <= lo:
            return 0
        if self._every is not None:
            a, p = self._every
            return max(0, (hi - a) // p - max(0, (lo - a) // p + 1) + 1)
        if self._at is not None:
            return int(lo < self._at <= hi)
        assert self._cron is not None
        return self._cron.count(lo // 1000, hi // 1000)

    def _raw_nth(self, lo: int, n: int) -> int | None:
        if self._cron is not None:
            s = self._cron.nth(lo // 1000, n)
            return None if s is None else s * 1000
        first = self._raw_next(lo)
        if first is None or self._every is None:
            return first if n == 1 else None
        s = first + (n - 1) * self._every[1]
        return s if s <= _MAX_MS else None

    def _last(self) -> int:
        """Inclusive upper bound in ms: ``end_at`` and the ``max_runs``-th slot (cached)."""
        if self._upper is None:
            self._upper = self._hi
            if self.spec.max_runs > 0:
                nth = self._raw_nth(self._lo, self.spec.max_runs)
                if nth is not None:
                    self._upper = min(self._hi, nth)
        return self._upper

    def _range(self, after: datetime, until: datetime | None) -> tuple[int, int]:
        hi = self._last() if until is None else min(self._last(), _floor_ms(until))
        return max(self._lo, _floor_ms(after)), hi

    def next_after(self, after: datetime) -> datetime | None:
        """First slot strictly after ``after`` within all bounds, or None when exhausted."""
        lo, hi = self._range(after, None)
        s = self._raw_next(lo)
        return _dt(s) if s is not None and s <= hi else None

    def slots_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The earliest ``limit`` slots in ``(after, until]``, ascending."""
        lo, hi = self._range(after, until)
        out: list[datetime] = []
        if limit <= 0 or hi <= lo:
            return out
        if self._cron is not None:
            for s in self._cron.iter(lo // 1000):
                if s * 1000 > hi:
                    break
                out.append(_dt(s * 1000))
                if len(out) >= limit:
                    break
            return out
        while len(out) < limit:
            nxt = self._raw_next(lo)
            if nxt is None or nxt > hi:
                break
            out.append(_dt(nxt))
            lo = nxt
        return out

    def count_between(self, after: datetime, until: datetime) -> int:
        """Exact number of slots in ``(after, until]`` (closed form / calendar arithmetic)."""
        return self._raw_count(*self._range(after, until))

    def last_slots(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The latest ``limit`` slots in ``(after, until]``, ascending; cheap for huge ranges."""
        lo, hi = self._range(after, until)
        total = self._raw_count(lo, hi)
        if limit <= 0 or total == 0:
            return []
        if total > limit:
            first = self._raw_nth(lo, total - limit + 1)
            assert first is not None
            lo = first - 1
        return self.slots_between(_dt(lo), _dt(hi), limit)

    def fire_at(self, task_id: str, slot: datetime) -> datetime:
        """When ``slot`` (aware) of task ``task_id`` fires: ``slot +`` :func:`jitter_offset`.

        With a validated jitter (< :meth:`min_gap`) fire instants are strictly increasing in
        slot order. ``slot`` is not checked to be a slot of this schedule.

        Raises:
            ValueError: when ``slot`` is naive.
        """
        return slot + jitter_offset(task_id, _floor_ms(slot), self.spec.jitter)

    def min_gap(self, after: datetime) -> timedelta | None:
        """A lower bound of the gap between consecutive slots after ``after`` (aware).

        ``every``: the period (exact). ``at``: None (one slot). ``cron``: a sound bound, ignoring
        the bounds and ``max_runs``, from the matching seconds-of-day and the shape of every
        UTC-offset transition from ``after`` to two years past 2038 (past tzdata's explicit
        transitions; later ones repeat the zone's rule) - see ``_Cron.min_gap``. It may be
        smaller than the real gap when the day fields are sparse (``0,59 0,23 * * 1``: 1 min,
        though Monday 23:59 -> the next Monday 00:00 is a week). >= 1 s for cron.

        Raises:
            ValueError: when ``after`` is naive.
        """
        start = _us(after) // 1_000_000
        if self._every is not None:
            return timedelta(milliseconds=self._every[1])
        if self._cron is None:
            return None
        until = max(start, _Y2038) + 2 * 366 * _DAY
        return timedelta(seconds=self._cron.min_gap(start, until))

    def dst_events(self, after: datetime, until: datetime) -> list[DstEvent]:
        """The DST events (cron wall-clock matches a transition made nonexistent or ambiguous)
        with an instant in ``(after, until]`` within the schedule's bounds, ascending.

        Each tells which slots the policy made of the wall time (see :class:`DstEvent`); ``[]``
        for ``every``/``at`` and zones without transitions. Cost: the transition windows in
        the range (cached).

        Raises:
            ValueError: when a datetime is naive.
        """
        lo, hi = self._range(after, until)
        if self._cron is None or hi <= lo:
            return []
        cron = self._cron
        out: list[DstEvent] = []
        for ev in cron.events(lo // 1000, hi // 1000):
            if not any(lo < x * 1000 <= hi for x in ev.instants):
                continue
            out.append(
                DstEvent(
                    wall=_EPOCH_NAIVE + timedelta(seconds=ev.wall),
                    nonexistent=ev.nonexistent,
                    transition=_dt(ev.transition * 1000),
                    offset_before=timedelta(seconds=cron._off(ev.transition - 1)),
                    offset_after=timedelta(seconds=cron._off(ev.transition)),
                    instants=tuple(_dt(x * 1000) for x in ev.instants),
                    slots=tuple(_dt(x * 1000) for x in ev.slots),
                )
            )
        return out
