"""A token bucket, and the per-node share of a cluster-wide rate (pure: the clock is a parameter).

Algorithm: the classic token bucket (as in Linux ``tc tbf``, Go's ``golang.org/x/time/rate``).
The bucket holds up to ``burst`` tokens and starts full. Tokens accrue continuously at
``rate_per_s``: at each call with time ``now_s`` (monotonic seconds) the bucket adds
``(now_s - last_s) * rate_per_s``, caps the sum at ``burst`` and sets ``last_s = now_s``. A
grant takes whole tokens only. The state is two floats, so every operation is O(1). A
``now_s`` earlier than the last one seen adds nothing and does not move ``last_s`` (the clock
is meant to be monotonic; a step back costs at most the time stepped back).

Floating point: a token counts as whole when it is within ``1e-9`` of the next integer, and
:meth:`TokenBucket.next_at_s` rounds its answer up to the first float at which the token is
there (by the same arithmetic as the refill), so waiting until it always yields a token.

Cluster-wide caps (:func:`share`): the engine caps catch-up replays at ``--catch-up-rate`` slots
per second *for the whole cluster*. No node coordinates with the others per slot; instead each of
the N live nodes runs its own bucket at ``rate / N``, so the nodes together replay at most
``rate`` per second (plus their bursts). While membership changes the nodes may briefly disagree
on N, so the sum can be off by one node's share for a detector period.
"""

from __future__ import annotations

import math

_EPS = 1e-9


def _check(rate_per_s: float, burst: float) -> None:
    if not (math.isfinite(rate_per_s) and rate_per_s >= 0):
        raise ValueError(f"rate_per_s must be finite and >= 0, got {rate_per_s}")
    if not (math.isfinite(burst) and burst >= 1):
        raise ValueError(f"burst must be finite and >= 1, got {burst}")


class TokenBucket:
    """Up to ``burst`` tokens, refilled at ``rate_per_s`` per second; starts full (module docs).

    Times are monotonic seconds (floats) passed by the caller. Not thread-safe.

    Raises:
        ValueError: from the constructor and :meth:`set_rate` when the rate is negative or not
            finite, or the burst is below 1 or not finite (a bucket that never holds a whole
            token could never grant).
    """

    def __init__(
        self, rate_per_s: float, burst: float, now_s: float, tokens: float | None = None
    ) -> None:
        """``tokens``: what the bucket holds at ``now_s`` (default full; clamped to 0..burst)."""
        _check(rate_per_s, burst)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst if tokens is None else min(burst, max(0.0, tokens))
        self._last_s = now_s

    def _refill(self, now_s: float) -> None:
        if now_s > self._last_s:
            self._tokens = min(self.burst, self._tokens + (now_s - self._last_s) * self.rate_per_s)
            self._last_s = now_s

    def available(self, now_s: float) -> int:
        """Whole tokens that :meth:`take` would grant at ``now_s`` (0 .. ``floor(burst)``)."""
        self._refill(now_s)
        return math.floor(self._tokens + _EPS)

    def take(self, n: int, now_s: float) -> int:
        """Take up to ``n`` whole tokens at ``now_s``; returns how many were granted (0..n).

        Raises:
            ValueError: when ``n < 0``.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        granted = min(n, self.available(now_s))
        self._tokens = max(0.0, self._tokens - granted)
        return granted

    def next_at_s(self, now_s: float) -> float:
        """When the next whole token is there: ``now_s`` if one is already, ``math.inf`` if the
        rate is 0 and none is, else ``now_s + (1 - fraction) / rate_per_s``, rounded up to the
        first float at which :meth:`available` is 1 (at large ``now_s`` the sum alone can fall
        a few ulps short)."""
        self._refill(now_s)
        if self._tokens + _EPS >= 1:
            return now_s
        if self.rate_per_s == 0:
            return math.inf
        at = self._last_s + (1 - self._tokens) / self.rate_per_s  # _last_s >= now_s
        while self._tokens + (at - self._last_s) * self.rate_per_s + _EPS < 1:
            at = math.nextafter(at, math.inf)
        return at

    def set_rate(self, rate_per_s: float, now_s: float, burst: float | None = None) -> None:
        """Change the rate (and the burst, when given) from ``now_s`` on (hot reload, a new
        share after a membership change); tokens accrued so far are kept, up to the burst.

        Raises:
            ValueError: when ``rate_per_s`` or ``burst`` is negative or not finite.
        """
        _check(rate_per_s, self.burst if burst is None else burst)
        self._refill(now_s)
        self.rate_per_s = rate_per_s
        if burst is not None:
            self.burst = burst
            self._tokens = min(self._tokens, burst)


def share(cluster_rate: float, live_members: int) -> float:
    """This node's share of a cluster-wide rate: ``cluster_rate / live_members``.

    The cap is cluster-wide because each of the N live nodes takes ``rate / N`` (see the module
    docstring). ``live_members`` counts this node too. Bursts add up the same way: give each
    node's bucket ``max(1, share(cluster_burst, N))`` to keep the cluster's burst near
    ``cluster_burst``.

    Raises:
        ValueError: when ``cluster_rate`` is negative or not finite, or ``live_members < 1``.
    """
    if not (math.isfinite(cluster_rate) and cluster_rate >= 0):
        raise ValueError(f"cluster_rate must be finite and >= 0, got {cluster_rate}")
    if live_members < 1:
        raise ValueError(f"live_members must be >= 1 (this node counts), got {live_members}")
    return cluster_rate / live_members
