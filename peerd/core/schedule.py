"""Schedules: validation, slot queries and jitter for ``cron``, ``every`` and ``at`` (pure).

A *slot* is an instant a task is due, as an aware UTC ``datetime`` truncated to whole
milliseconds; its identity is its epoch ms. Nothing here reads the clock: ``now`` is a parameter.
The spec itself (:class:`ScheduleSpec`, :func:`spec_from_proto`, the DST policy names) is in
:mod:`peerd.core.schedule_spec` and re-exported here, as is :func:`normalise_cron`.

Bounds (all kinds): a slot is strictly after ``created_at``, ``>= start_at``, ``<= end_at``, and
with ``max_runs = N > 0`` the schedule ends at its N-th slot (counted from the first slot after
``created_at``/``start_at``).

* ``every``: slots ``anchor + k*every`` (k >= 0), anchor = ``start_at`` if set, else ``created_at``
  truncated to the second. Computed in closed form (O(1)), whatever the gap.
* ``at``: one slot.
* ``cron``: the field value sets of :func:`peerd.core.crontab.parse_cron_fields` (the validator,
  :func:`normalise_cron`) matched against wall-clock time in ``time_zone`` by the calendar
  arithmetic of :mod:`peerd.core.cron_calendar` (day matching, DST policies, cost).

DST (cron only; ``every`` and ``at`` are UTC instants). A wall-clock match that a UTC-offset
transition makes *nonexistent* (spring forward) follows ``dst_nonexistent``: ``skip`` or
``shift``; one that occurs twice (fall back) follows ``dst_ambiguous``: ``first``, ``last`` or
``both`` (defined in :mod:`peerd.core.cron_calendar`). ``auto`` (the default) follows Vixie cron
/ cronie (cron(8): "If time has moved forward, those jobs that would have run in the interval
that has been skipped will be run immediately. Conversely, if time has moved backward, care is
taken to avoid running jobs twice", for jobs at a specific time; "jobs that run more frequently
are scheduled normally"): ``shift``/``first`` when the hour field is a fixed set (``30 2 * * *``,
``0 2,14 * * *``, ``@daily``, ``*/2`` too), ``skip``/``both`` when it covers all 24 hours (``*``,
``*/1``, ``0-23``, ``@hourly``). Difference: Vixie cron also treats a ``*`` *minute* (``* 2 * *
*``) as "wildcard"; here only the hour field decides (the API contract,
``proto/peerd/v1/scheduler.proto``). Matches outside the gap/overlap are never affected.
Example, Berlin ``30 2 * * *``: 03-28 01:30Z, 03-29 01:00Z (shifted), 03-30 00:30Z; 10-24 00:30Z,
10-25 00:30Z (first of two), 10-26 01:30Z.

Jitter: each slot fires at ``slot + jitter_offset(task_id, slot_ms, jitter)``, a keyed BLAKE2b
hash of (task id, slot) mapped to whole ms in ``[0, jitter)``, so every node computes the same
instant. Validation keeps ``jitter <= 1 h`` and below the smallest gap between slots
(:meth:`CompiledSchedule.min_gap`), so fire instants are strictly increasing in slot order.

Cost. Counting is exact and cheap (:meth:`CompiledSchedule.count_between`): closed form for
``every``, calendar arithmetic for ``cron`` (see :mod:`peerd.core.cron_calendar`; cached per
schedule). Iteration costs ~4 us per cron slot. Slots after 9999-12-30 do not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from hashlib import blake2b

from peerd.core.cron_calendar import MAX_S, MIN_S, CronCalendar
from peerd.core.crontab import DESCRIPTORS, CronFields, normalise_cron, parse_cron_fields
from peerd.core.durations import format_duration
from peerd.core.schedule_spec import DST_AMBIGUOUS, DST_NONEXISTENT, ScheduleSpec, spec_from_proto
from peerd.core.tzrules import TimeZoneRules, fixed_offset_zone
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
_MS = timedelta(milliseconds=1)
_MAX_MS, _MIN_MS = MAX_S * 1000, MIN_S * 1000
_DAY = 86_400
_Y2038 = (datetime(2038, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)
MAX_RUNS_LIMIT = 1_000_000
MAX_JITTER = timedelta(hours=1)
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


def _iso(dt: datetime) -> str:
    return (
        dt.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace(".000", "")
        .replace("+00:00", "Z")
    )


def validate_schedule(
    msg: pb.Schedule,
    now: datetime,
    field: str = "task.schedule",
    *,
    rules: TimeZoneRules,
    creating: bool = True,
) -> None:
    """Validate ``pb.Schedule``; ``now`` (aware) is used only when ``creating`` and for jitter.

    Checks: exactly one kind; cron syntax (see :func:`normalise_cron`); ``every`` >= 1 s; time
    zone known to ``rules``; ``end_at >= start_at``; ``at`` within the bounds; ``0 <= max_runs <=
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
    rules.zone(msg.time_zone, f"{field}.time_zone")
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
        _check_jitter(spec, now, f"{field}.jitter", rules)


def _check_jitter(spec: ScheduleSpec, now: datetime, field: str, rules: TimeZoneRules) -> None:
    jitter = spec.jitter
    text = format_duration(jitter)
    if jitter > MAX_JITTER:
        raise InvalidArgument(field, f"jitter {text} exceeds the maximum of 1h")
    if spec.every is not None and jitter >= spec.every:
        raise InvalidArgument(
            field, f"jitter {text} must be less than every ({format_duration(spec.every)})"
        )
    if spec.cron is not None and jitter >= timedelta(seconds=1):
        gap = CompiledSchedule(spec, rules).min_gap(now)
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


@lru_cache(maxsize=1024)
def _calendar(f: CronFields, zone: tzinfo, nonexistent: str, ambiguous: str) -> CronCalendar:
    """One :class:`CronCalendar` per distinct (fields, zone, DST policies), shared by every
    schedule that has them: its tables and memos (pure functions of those four) are built once,
    not once per task (measured: 3.7 KiB and 0.4 ms per acquired task before)."""
    return CronCalendar(f, zone, nonexistent, ambiguous)


def _us(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return (dt - _EPOCH) // _US


def _floor_ms(dt: datetime) -> int:
    return _us(dt) // 1000


def _dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


class CompiledSchedule:
    """A :class:`ScheduleSpec` ready for slot queries. Instances cache work; not thread-safe.

    All query datetimes must be aware; results are aware UTC, whole ms, ascending, unique. Every
    query applies the bounds, ``max_runs`` and (cron) the DST policies the same way, so
    ``next_after`` iteration, ``slots_between``, ``count_between`` and ``last_slots`` agree.

    Args:
        spec: the spec.
        rules: the time-zone rules its zone is read from (:mod:`peerd.core.tzrules`).

    Attributes:
        spec: the spec.
        zone: ``spec.time_zone`` loaded from ``rules`` (:data:`datetime.UTC` for UTC), for
            every kind.
        tzdata_version: the version of ``rules`` when the slots depend on it (``cron`` in a zone
            that is not a fixed offset), else ``""``: what run records store
            (``RunRecord.tzdata_version``).
        dst_nonexistent: the effective policy, "skip" or "shift" ("auto" resolved), or None
            for ``every``/``at``; ``dst_ambiguous``: "first", "last", "both" or None.

    Raises:
        InvalidArgument: from the constructor when the spec has no/several kinds, a bad cron
            expression or time zone (field ``schedule...``).
    """

    __slots__ = (
        "_at", "_cron", "_every", "_hi", "_lo", "_upper",
        "dst_ambiguous", "dst_nonexistent", "spec", "tzdata_version", "zone",
    )  # fmt: skip  # one per owned task: no __dict__

    def __init__(self, spec: ScheduleSpec, rules: TimeZoneRules) -> None:
        self.spec = spec
        if sum(x is not None for x in (spec.cron, spec.every, spec.at)) != 1:
            raise InvalidArgument("schedule", "exactly one of cron, every, at must be set")
        self.zone = rules.zone(spec.time_zone, "schedule.time_zone")
        dependent = spec.cron is not None and not fixed_offset_zone(spec.time_zone)
        self.tzdata_version = rules.version if dependent else ""
        self.dst_nonexistent: str | None = None
        self.dst_ambiguous: str | None = None
        self._cron: CronCalendar | None = None
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
            self._cron = _calendar(fields, self.zone, self.dst_nonexistent, self.dst_ambiguous)
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
        found = self._cron.next_slot(after // 1000)
        return None if found is None else found * 1000

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
        transitions; later ones repeat the zone's rule) - see :meth:`CronCalendar.min_gap
        <peerd.core.cron_calendar.CronCalendar.min_gap>`. It may be smaller than the real gap
        when the day fields are sparse (``0,59 0,23 * * 1``: 1 min, though Monday 23:59 -> the
        next Monday 00:00 is a week). >= 1 s for cron.

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

    def after_local(self, after: datetime, local_time: str) -> datetime:
        """The newest slot after ``after`` whose local time is not later than ``local_time``,
        or ``after`` when there is none: where to resume a schedule whose last slot was
        computed with other time-zone rules (:mod:`peerd.core.tzagree`).

        ``after`` is the ledger's newest slot and ``local_time`` what it was in local time by
        the rules that computed it (``RunRecord.local_time``, RFC 3339 with offset, e.g.
        ``2026-11-30T09:00:00-08:00``). The local time is read as a wall-clock time in this
        schedule's zone (the later instant when these rules repeat it), and the slots up to
        it are taken as run: the day's 09:00 under the old rules stands for the day's 09:00
        under these. Cost: one :meth:`last_slots` call.

        Raises:
            ValueError: ``local_time`` is not RFC 3339, or ``after`` is naive.
        """
        wall = datetime.fromisoformat(local_time).replace(tzinfo=None)
        until = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if until <= after:
            return after
        covered = self.last_slots(after, until, 1)
        return covered[0] if covered else after

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
                    offset_before=timedelta(seconds=cron.offset(ev.transition - 1)),
                    offset_after=timedelta(seconds=cron.offset(ev.transition)),
                    instants=tuple(_dt(x * 1000) for x in ev.instants),
                    slots=tuple(_dt(x * 1000) for x in ev.slots),
                )
            )
        return out
