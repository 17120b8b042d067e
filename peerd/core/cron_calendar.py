"""Cron calendar arithmetic: where a cron expression's slots fall in a time zone (pure).

Everything is whole seconds: an *instant* counts seconds since the Unix epoch (UTC), a *wall*
time seconds since 1970-01-01 00:00 local. :class:`CronCalendar` takes the field value sets of
:func:`peerd.core.crontab.parse_cron_fields`, a zone and the DST policies, and gives the slots
after an instant (``iter``), their exact number in a range (``count``), the n-th (``nth``), the
DST events (``events``) and a lower bound of the gap between slots (``min_gap``). Slots lie
in ``(MIN_S, MAX_S]`` (0001-01-03 to 9999-12-30 UTC); later slots do not exist.
:class:`peerd.core.schedule.CompiledSchedule` adds the bounds, ``max_runs`` and datetimes.

Day matching (crontab(5), croniter ``day_or=True``): when day-of-month and day-of-week are both
restricted a day matches if *either* does; "unrestricted" means covering the whole range (``*``,
``*/1``, ``1-31``, ``0-7``) - unlike Vixie cron, which tests for a leading ``*`` (so ``*/2`` in
dom is OR-ed with dow here, AND-ed there). Slots are computed here by calendar arithmetic, not
by croniter (croniter validates in :mod:`peerd.core.crontab` and is the test oracle:
``tests/unit/test_schedule.py`` checks that both give the same slots).

DST policies (already resolved from "auto" by the caller). A wall-clock match that a UTC-offset
transition makes *nonexistent* (spring forward: Europe/Berlin 2026-03-29, 02:00 CET -> 03:00
CEST, 02:xx does not exist) follows ``nonexistent``: ``skip`` (no slot) or ``shift`` (a slot at
the first instant after the gap, 03:00 CEST = 01:00Z; all nonexistent times of one gap shift to
that one slot, also shared with a regular 03:00 slot). A match that occurs twice (fall back:
2026-10-25, 03:00 CEST -> 02:00 CET, 02:xx happens at +02:00 and again at +01:00) follows
``ambiguous``: ``first`` (the earlier UTC instant, summer offset), ``last`` or ``both``. Matches
outside the gap/overlap are never affected.

Cost. Counting is exact and cheap: cron matches are counted arithmetically on wall-clock time
(calendar arithmetic with a 400-year Gregorian cycle) in each constant-offset stretch; a
transition adds a window of the instants it affects, where the policy applies: O(1) for a
spring-forward gap, one step per match in the repeated hour for a fall-back (~1 us each: a
per-second cron ~4 ms per transition), cached per calendar. Transitions are found by sampling
the zone weekly (two transitions that cancel within one week would be missed; tzdata has none)
and are assumed further apart than their shifts (in all of tzdata 1850-2100 they are >= 6.9
days apart). Iteration costs ~4 us per slot.
"""

from __future__ import annotations

import calendar
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple

from peerd.core.crontab import CronFields

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_MAX_ORD = date.max.toordinal()
# slots lie in (MIN_S, MAX_S], epoch s
MAX_S = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)
MIN_S = (datetime(1, 1, 3, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)
_DAY, _WEEK, _CHUNK = 86_400, 7 * 86_400, 1 << 25
_PAD = 2 * _DAY  # > any transition window's half-width (|offset change|; tzdata's largest: 24 h)
__all__ = ["MAX_S", "MIN_S", "CronCalendar", "DstMatch"]


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


class DstMatch(NamedTuple):
    """A :class:`peerd.core.schedule.DstEvent` in epoch/wall seconds (see ``events``)."""

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


class CronCalendar:
    """Cron slots in epoch seconds: ``iter``, exact ``count``/``nth``, DST policies applied.

    Wall-clock seconds (``wall``) count seconds since 1970-01-01 00:00 *local*; an instant ``s``
    reads ``s + offset(s)``. ``nonexistent`` is "skip" or "shift", ``ambiguous`` "first", "last" or
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
        self._next = (0, 0)  # (a, s): s = next_slot(a), so also for every instant in [a, s)

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

    def offset(self, t: int) -> int:
        """The zone's UTC offset (s) at instant ``t``."""
        t = min(max(t, MIN_S - _DAY), MAX_S + _DAY)  # datetime's range
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
                a = max(c * _CHUNK, MIN_S - _DAY)
                end = min((c + 1) * _CHUNK, MAX_S + _DAY // 2)
                oa = self.offset(a)
                while a < end:
                    b = min(a + _WEEK, end)
                    ob = self.offset(b)
                    while ob != oa:  # bisect the first second with a new offset, then go on
                        x, y = a, b
                        while y - x > 1:
                            mid = (x + y) // 2
                            x, y = (mid, y) if self.offset(mid) == oa else (x, mid)
                        found.append(y)
                        a, oa = y, self.offset(y)
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
            o1, o2 = self.offset(t - 1), self.offset(t)
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
        cur = max(after, MIN_S)
        while cur < MAX_S:
            o = self.offset(cur)
            w = self._next_wall(cur + o)
            if w is None:
                return
            s = w - o
            win = self._first_window(cur, s)
            if win is None:
                if s > MAX_S:
                    return
                yield s
                cur = s
                continue
            for x in win.slots[bisect_right(win.slots, cur) :]:
                if x > MAX_S:
                    return
                yield x
            cur = win.b

    def next_slot(self, after: int) -> int | None:
        """The first slot strictly after ``after`` (epoch s), or None: ``next(iter(after))``.

        Memoised for the last answer: if ``s`` is the first slot after ``a``, it is also the
        first after every instant in ``[a, s)`` (no slot lies between). A calendar is shared by
        every task with the same fields, zone and policies, and the tasks created or loaded
        together ask with cursors in one such interval (their creation instants): after the
        first, each answer is a comparison instead of ~100 µs of calendar arithmetic for a
        yearly cron (the first slot of a new task was 18 % of a node's CPU during a bulk
        create, docs/performance.md, Part 2).
        """
        a, s = self._next
        if a <= after < s:
            return s
        found = next(self.iter(after), None)
        if found is not None:
            self._next = (after, found)
        return found

    def count(self, lo: int, hi: int) -> int:
        """Number of slots s with ``lo < s <= hi`` (epoch s), exact."""
        lo, hi = max(lo, MIN_S), min(hi, MAX_S)
        total, cur = 0, lo
        for t in self._transitions(lo - _PAD, hi + _PAD):
            a, b, slots = self._window(t)
            if b <= cur or a >= hi:
                continue
            if a > cur:  # constant offset on (cur, a]: count wall-clock matches
                o = self.offset(a)
                total += self._wall_le(a + o) - self._wall_le(cur + o)
                cur = a
            end = min(b, hi)
            total += bisect_right(slots, end) - bisect_right(slots, cur)
            cur = end
        if hi > cur:
            o = self.offset(hi)
            total += self._wall_le(hi + o) - self._wall_le(cur + o)
        return total

    def nth(self, lo: int, n: int) -> int | None:
        """The ``n``-th (n >= 1) slot strictly after ``lo``, or None before year 9999."""
        if n <= 64:
            for i, s in enumerate(self.iter(lo), 1):
                if i == n:
                    return s
            return None
        if 2 * (self._wall_le(MAX_S + 64_800) - self._wall_le(lo - 64_800)) < n:
            return None  # a wall-clock match gives at most 2 slots (repeated hour): never reached
        prev, step = lo, _DAY
        while True:  # exponential search for an upper bound, then bisect
            hi = min(lo + step, MAX_S)
            if self.count(lo, hi) >= n:
                break
            if hi >= MAX_S:
                return None
            prev, step = hi, step * 2
        while hi - prev > 1:
            mid = (prev + hi) // 2
            prev, hi = (prev, mid) if self.count(lo, mid) >= n else (mid, hi)
        return hi

    def events(self, lo: int, hi: int) -> list[DstMatch]:
        """DST events with an instant in ``(lo, hi]`` (epoch s), ascending (see :meth:`_window`).

        Cost: one step per matching wall time in each gap/overlap in the range.
        """
        out: list[DstMatch] = []
        for t in self._transitions(lo - _PAD, hi + _PAD):
            o1, o2 = self.offset(t - 1), self.offset(t)
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
                    out.append(DstMatch(w, t, o2 > o1, inst, made))
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
        every_day = CronCalendar(
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
            o1, o2 = self.offset(t - 1), self.offset(t)
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
