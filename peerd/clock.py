"""Clocks. Logic reads time only through a :class:`Clock`, so tests pin and advance it.

``now()`` is wall-clock UTC (aware ``datetime``) used for schedule slots; ``monotonic()`` is in
seconds and only used for measuring intervals.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of time for schedule planning and timeouts."""

    def now(self) -> datetime:
        """Current wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for intervals only."""
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

    Raises:
        ValueError: from the constructor if ``start`` is naive, from :meth:`advance` if the step
            is negative.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock start must be timezone-aware")
        self._now = start.astimezone(UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, step: timedelta | float) -> None:
        seconds = step.total_seconds() if isinstance(step, timedelta) else float(step)
        if seconds < 0:
            raise ValueError("FakeClock cannot go backwards")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
