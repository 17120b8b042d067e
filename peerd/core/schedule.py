"""Schedules: validation and slot arithmetic for ``cron``, ``every`` and ``at`` (pure).

A *slot* is an instant a task is due, as an aware UTC ``datetime`` truncated to whole
milliseconds; its identity is its epoch ms. Nothing here reads the clock: ``now`` is a parameter.

Bounds (all kinds): a slot is strictly after ``created_at``, ``>= start_at``, ``<= end_at``, and
with ``max_runs = N > 0`` the schedule ends at its N-th slot (counted from the first slot after
``created_at``/``start_at``).

* ``every``: slots ``anchor + k*every`` (k >= 0), anchor = ``start_at`` if set, else ``created_at``
  truncated to the second. Computed in closed form (O(1)), whatever the gap.
* ``at``: one slot.
* ``cron``: croniter 7 (``day_or=True``) evaluated in ``time_zone``, results converted to UTC.
  Syntax and validation live in :mod:`peerd.core.crontab` (:func:`normalise_cron`, re-exported
  here); croniter is given the canonical form (explicit value lists), so what runs is exactly
  what was validated. Day matching (crontab(5), croniter): when day-of-month and day-of-week are
  both restricted a day matches if *either* does; "unrestricted" means covering the whole range
  (``*``, ``*/1``, ``1-31``, ``0-7``) - unlike Vixie cron, which tests for a leading ``*`` (so
  ``*/2`` in dom is OR-ed with dow here, AND-ed there).

DST (observed croniter 7.0 behaviour, pinned by tests, deterministic: the slot sequence does not
depend on where enumeration starts). Europe/Berlin 2026-03-29 (02:00 CET -> 03:00 CEST): wall
times in the missing hour with a fixed hour (``30 2 * * *``, ``0 2 * * *``) fire once at 03:00
CEST (01:00Z); with ``*`` in the hour field (``30 * * * *``) the missing times are skipped. On
2026-10-25 (03:00 CEST -> 02:00 CET) times in the repeated hour fire *twice*, once per UTC
offset: ``30 2 * * *`` gives 00:30Z and 01:30Z. Times outside those hours are unaffected.

Counting is exact and cheap (:meth:`CompiledSchedule.count_between`): in constant-offset
stretches cron matches are counted arithmetically (wall-clock calendar arithmetic with a 400-year
Gregorian cycle); only the few hours around each UTC-offset transition are enumerated with
croniter. Transitions are found by sampling the zone weekly (two transitions that cancel within
one week would be missed; tzdata has none). A transition window costs ~0.1 ms per slot in
it, once per schedule (a per-second cron: ~1 s). Slots after 9999-12-30 do not exist.
"""

from __future__ import annotations

import calendar
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache

from croniter import CroniterError, croniter

from peerd.core.crontab import DESCRIPTORS, CronFields, load_zone, normalise_cron, parse_cron_fields
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_US = timedelta(microseconds=1)
_MAX_S = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)
_MIN_S = (datetime(1, 1, 3, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)
_MAX_MS, _MIN_MS = _MAX_S * 1000, _MIN_S * 1000
_DAY, _WEEK, _CHUNK = 86_400, 7 * 86_400, 1 << 25
MAX_RUNS_LIMIT = 1_000_000
__all__ = [
    "MAX_RUNS_LIMIT",
    "CompiledSchedule",
    "ScheduleSpec",
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

    Raises:
        ValueError: from the constructor when a datetime is naive.
    """

    cron: str | None = None
    every: timedelta | None = None
    at: datetime | None = None
    time_zone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_runs: int = 0
    created_at: datetime = _EPOCH

    def __post_init__(self) -> None:
        for name in ("at", "start_at", "end_at", "created_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"ScheduleSpec.{name} must be timezone-aware")


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

    ``every`` is truncated to whole ms; ``time_zone`` "" -> "UTC". Does not check past/future.

    Raises:
        InvalidArgument: when no kind is set or ``cron``/timestamps are malformed.
    """
    kind = msg.WhichOneof("kind")
    cron, every, at = None, None, None
    if kind == "cron":
        cron, every = normalise_cron(msg.cron, f"{field}.cron")
    elif kind == "every":
        every = timedelta(milliseconds=msg.every.ToTimedelta() // timedelta(milliseconds=1))
    elif kind == "at":
        at = _ts(msg, "at", field)
    else:
        raise InvalidArgument(field, "no schedule: set exactly one of cron, every, at")
    return ScheduleSpec(
        cron=cron,
        every=every,
        at=at,
        time_zone=msg.time_zone or "UTC",
        start_at=_ts(msg, "start_at", field),
        end_at=_ts(msg, "end_at", field),
        max_runs=msg.max_runs,
        created_at=created_at,
    )


def validate_schedule(
    msg: pb.Schedule, now: datetime, field: str = "task.schedule", *, creating: bool = True
) -> None:
    """Validate ``pb.Schedule``; ``now`` (aware) is used only when ``creating``.

    Checks: exactly one kind; cron syntax (see :func:`normalise_cron`); ``every`` >= 1 s; time
    zone known to zoneinfo; ``end_at >= start_at``; ``at`` within the bounds; ``0 <= max_runs <=
    1_000_000``; when creating, ``at`` and ``end_at`` not in the past (``<= now``).

    Raises:
        InvalidArgument: with ``field`` + ``.cron``/``.every``/``.at``/``.time_zone``/
            ``.end_at``/``.max_runs`` (or ``field`` itself when no kind is set).
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


class _Cron:
    """Cron slots in epoch seconds: ``next``/``iter`` via croniter, exact ``count``/``nth``."""

    def __init__(self, f: CronFields, tz: tzinfo) -> None:
        self.f, self.tz = f, tz
        self._tod: list[int] | None = None  # matching seconds-of-day, sorted
        self._chunks: dict[int, list[int]] = {}
        self._windows: dict[int, tuple[int, int, list[int]]] = {}

    def iter(self, after: int) -> Iterator[int]:
        """Slots strictly after ``after`` (epoch s), ascending, up to year 9999."""
        try:
            it = croniter(
                self.f.canonical,
                datetime.fromtimestamp(after, self.tz),
                day_or=True,
                second_at_beginning=self.f.six,
            )
            while (s := (it.get_next(datetime) - _EPOCH) // timedelta(seconds=1)) <= _MAX_S:
                yield s
        except (CroniterError, OverflowError, ValueError):
            return

    def _days_before(self, ordinal: int) -> tuple[int, bool]:
        """(matching days with ordinal < ``ordinal``, whether ``ordinal`` itself matches)."""
        f = self.f
        cum, prefixes = _day_tables(f.months, f.dom, f.dow, f.dom_full, f.dow_full)
        d = date.fromordinal(ordinal)
        cyc, yi = divmod(d.year - 1, 400)
        pre = prefixes[d.month * 7 + date(d.year, d.month, 1).weekday()]
        before = cyc * cum[-1] + cum[yi * 12 + d.month - 1] + pre[d.day - 1]
        return before, pre[d.day] > pre[d.day - 1]

    def _wall_le(self, wall: int) -> int:
        """Matches at wall-clock seconds <= ``wall`` (seconds since 1970-01-01 local)."""
        if self._tod is None:
            f = self.f
            self._tod = sorted(
                h * 3600 + m * 60 + s for h in f.hours for m in f.minutes for s in f.seconds
            )
        days, sod = divmod(wall, _DAY)
        before, today = self._days_before(days + _EPOCH_ORD)
        return before * len(self._tod) + (bisect_right(self._tod, sod) if today else 0)

    def _off(self, t: int) -> int:
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

    def _window(self, t: int) -> tuple[int, int, list[int]]:
        """(a, b, slots in (a, b]) around transition ``t``, enumerated with croniter."""
        if t not in self._windows:
            o1, o2 = self._off(t - 1), self._off(t)
            margin = abs(o2 - o1) + 900  # croniter moves/duplicates only within |shift| of t
            a, b = t - margin, t + margin
            slots: list[int] = []
            if self._wall_le(b + max(o1, o2)) > self._wall_le(a + min(o1, o2)):  # any wall match?
                for s in self.iter(a):
                    if s > b:
                        break
                    slots.append(s)
            self._windows[t] = (a, b, slots)
        return self._windows[t]

    def count(self, lo: int, hi: int) -> int:
        """Number of slots s with ``lo < s <= hi`` (epoch s), exact."""
        lo, hi = max(lo, _MIN_S), min(hi, _MAX_S)
        total, cur = 0, lo
        for t in self._transitions(lo - _DAY - 7200, hi + _DAY + 7200):  # Samoa 2011: 24 h
            a, b, slots = self._window(t)
            if b <= cur or a >= hi:
                continue
            if a > cur:
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


class CompiledSchedule:
    """A :class:`ScheduleSpec` ready for slot queries. Instances cache work; not thread-safe.

    All query datetimes must be aware; results are aware UTC, whole ms, ascending.

    Raises:
        InvalidArgument: from the constructor when the spec has no/several kinds, a bad cron
            expression or time zone (field ``schedule...``).
    """

    def __init__(self, spec: ScheduleSpec) -> None:
        self.spec = spec
        if sum(x is not None for x in (spec.cron, spec.every, spec.at)) != 1:
            raise InvalidArgument("schedule", "exactly one of cron, every, at must be set")
        self._cron: _Cron | None = None
        self._at: int | None = None
        self._every: tuple[int, int] | None = None  # (anchor ms, period ms)
        if spec.cron is not None:
            expr = DESCRIPTORS.get(spec.cron.strip().lower(), spec.cron)
            try:
                fields = parse_cron_fields(expr)
            except ValueError as e:
                raise InvalidArgument("schedule.cron", f"{spec.cron!r}: {e}") from None
            self._cron = _Cron(fields, load_zone(spec.time_zone, "schedule.time_zone"))
        elif spec.every is not None:
            period = spec.every // timedelta(milliseconds=1)
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
