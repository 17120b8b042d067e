"""Exponential backoff for retry loops (pure: no I/O, no clock, randomness injected).

A :class:`Backoff` hands out the delays a retry loop sleeps between attempts::

    backoff = Backoff(initial_s=0.2, max_s=2.0)
    while True:
        try:
            return await call()
        except Unavailable:
            await clock.sleep(backoff.next_delay_s())

Delay ``n`` (``n = 0, 1, ...`` since the last :meth:`Backoff.reset`) is
``min(max_s, initial_s * multiplier ** n)``: with the defaults above 0.2, 0.4, 0.8, 1.6, 2.0,
2.0, ... seconds. With ``jitter`` ``j`` in ``(0, 1]`` the delay is drawn uniformly from
``[(1 - j) * d, d]`` using the injected ``random.Random``; ``j = 1`` is "full jitter" (Marc
Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015), which spreads the
retries of many clients that failed at the same moment.

Per-run retry policies of tasks (``pb.RetryPolicy``) are a different thing: see
:mod:`peerd.core.retry`.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for one retry loop: exponential growth from ``initial_s``, capped at ``max_s``.

    Args:
        initial_s: first delay in seconds, > 0.
        max_s: cap in seconds, >= ``initial_s``.
        multiplier: growth factor per delay, >= 1.
        jitter: fraction of each delay that is randomised, in ``[0, 1]`` (0: none, the default;
            1: full jitter, uniform in ``[0, d]``).
        rng: the generator jitter is drawn from; required when ``jitter > 0``.

    Raises:
        ValueError: naming the argument and the reason, when any of the above does not hold.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        multiplier: float = 2.0,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not initial_s > 0:
            raise ValueError(f"Backoff initial_s must be > 0, got {initial_s!r}")
        if not max_s >= initial_s:
            raise ValueError(f"Backoff max_s must be >= initial_s ({initial_s!r}), got {max_s!r}")
        if not multiplier >= 1:
            raise ValueError(f"Backoff multiplier must be >= 1, got {multiplier!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"Backoff jitter must be in [0, 1], got {jitter!r}")
        if jitter > 0 and rng is None:
            raise ValueError("Backoff jitter > 0 needs an rng (random.Random) to draw from")
        self.initial_s = float(initial_s)
        self.max_s = float(max_s)
        self.multiplier = float(multiplier)
        self.jitter = float(jitter)
        self._rng = rng
        self._bound_s = self.initial_s
        self.attempts = 0
        """Delays handed out since the last :meth:`reset`."""

    def next_delay_s(self) -> float:
        """The next delay in seconds (see the module docstring), and advance the sequence."""
        bound = self._bound_s
        self._bound_s = min(self.max_s, bound * self.multiplier)
        self.attempts += 1
        if self._rng is None or self.jitter == 0:
            return bound
        return self._rng.uniform(bound * (1 - self.jitter), bound)

    def reset(self) -> None:
        """Start again from ``initial_s`` (call after a success)."""
        self._bound_s = self.initial_s
        self.attempts = 0

    def __repr__(self) -> str:
        return (
            f"Backoff(initial_s={self.initial_s}, max_s={self.max_s}, "
            f"multiplier={self.multiplier}, jitter={self.jitter}, attempts={self.attempts})"
        )
