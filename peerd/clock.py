"""Clocks. Logic reads time and sleeps only through a :class:`Clock`, so tests pin and advance it.

``now()`` is wall-clock UTC (aware ``datetime``) used for schedule slots; ``monotonic()`` is in
seconds and only used for measuring intervals; ``sleep()`` waits on the monotonic scale.

:class:`FakeClock` moves only when a test calls :meth:`FakeClock.advance`; coroutines sleeping on
it wake when the clock reaches their deadline, so a test drives timer-based loops step by step
without waiting real time. :func:`wait_event` is "sleep until due or woken" on any clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of time for schedule planning, timeouts and sleeps."""

    def now(self) -> datetime:
        """Current wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for intervals only."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` on the :meth:`monotonic` scale; 0 or less yields once."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A manual clock for tests. :meth:`advance` refuses to go backwards.

    :meth:`sleep` returns once :meth:`advance` has moved :meth:`monotonic` to or past the
    sleeper's deadline. One :meth:`advance` wakes every sleeper whose deadline it reached, in
    deadline order (equal deadlines: in the order they went to sleep); they run after
    ``advance`` returns, at the next await of the caller, and all see the advanced time. A
    sleep of 0 or less yields to the event loop once and does not wait for ``advance``.

    Raises:
        ValueError: from the constructor if ``start`` is naive, from :meth:`advance` if the step
            is negative.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock start must be timezone-aware")
        self._now = start.astimezone(UTC)
        self._mono = 0.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        """Heap of ``(deadline, seq, future)``; cancelled sleepers stay until popped."""
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, step: timedelta | float) -> None:
        """Move the clock forward by ``step`` (seconds or a timedelta) and wake the sleepers
        that are now due."""
        seconds = step.total_seconds() if isinstance(step, timedelta) else float(step)
        if seconds < 0:
            raise ValueError("FakeClock cannot go backwards")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Wait until :meth:`advance` reaches ``monotonic() + seconds`` (see the class)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))
        self._notify_watchers()
        await fut  # cancelling the sleeping task cancels fut: it no longer counts

    @property
    def sleepers(self) -> int:
        """How many coroutines are sleeping on this clock now."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    def deadlines(self) -> list[float]:
        """Monotonic deadlines (seconds) of the current sleepers, earliest first."""
        return sorted(d for d, _, fut in self._sleepers if not fut.done())

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Return once at least ``count`` coroutines are sleeping on this clock: the point where
        the loops under test have done their work and wait for time to pass."""
        if self.sleepers >= count:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((count, fut))
        try:
            await fut
        finally:
            self._watchers = [(n, f) for n, f in self._watchers if f is not fut]

    def _notify_watchers(self) -> None:
        sleeping = self.sleepers
        for count, fut in self._watchers:
            if sleeping >= count and not fut.done():
                fut.set_result(None)


async def wait_event(clock: Clock, event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` seconds of ``clock`` time have passed.

    Returns:
        True if the event is set (at once when it already was), False on timeout. A timeout of
        0 or less only yields once before looking at the event.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(timeout_s))
    try:
        await asyncio.wait([waiter, sleeper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
        await asyncio.gather(waiter, sleeper, return_exceptions=True)
    return event.is_set()
