"""Retry policy of one slot: which failures are retried, backoff, overall deadline (pure).

Rules (``pb.RetryPolicy``):

* A slot gets at most ``max_attempts`` attempts in total (the first included).
* A failed attempt is retried only when its failure class (:attr:`Outcome.failure`, the
  ``FAILURE_*`` constants of :mod:`peerd.runner.base`) is in ``retry_on``. ``config`` and
  ``cancelled`` are never retried, whatever the policy says.
* Backoff before attempt ``n + 1`` (after attempt ``n`` failed) is "full jitter" (Marc Brooker,
  "Exponential Backoff And Jitter", AWS Architecture Blog, 2015): uniform in
  ``[0, min(max_backoff, initial_backoff * multiplier ** (n - 1))]``, truncated to whole ms.
* ``deadline`` counts from the slot's fire instant: no attempt starts at or after it (an attempt
  starting at it would have no time), and a running attempt's timeout is cut to the time left.

Randomness: tenacity's full-jitter strategy, ``wait_random_exponential``, draws from the module-
global :mod:`random` (tenacity 9.2: ``random.uniform(self.min, high)``) and takes no generator.
So :func:`backoff` asks tenacity's ``wait_exponential`` (the parent class that computes ``high``)
for the bound and draws ``uniform(0, bound)`` from the caller's ``random.Random``: the same
distribution, reproducible in tests, and no shared global state between tasks.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

from tenacity import wait_exponential

from peerd.errors import InvalidArgument
from peerd.runner.base import (
    FAILURE_CANCELLED,
    FAILURE_CONFIG,
    FAILURE_CONNECTION,
    FAILURE_EXCEPTION,
    FAILURE_HTTP_4XX,
    FAILURE_HTTP_5XX,
    FAILURE_HTTP_429,
    FAILURE_NONZERO_EXIT,
    FAILURE_TIMEOUT,
)
from peerd.v1 import scheduler_pb2 as pb

if TYPE_CHECKING:
    from tenacity import RetryCallState

RETRY_ON_CLASS = {
    pb.RETRY_ON_HTTP_5XX: FAILURE_HTTP_5XX,
    pb.RETRY_ON_HTTP_429: FAILURE_HTTP_429,
    pb.RETRY_ON_TIMEOUT: FAILURE_TIMEOUT,
    pb.RETRY_ON_CONNECTION_ERROR: FAILURE_CONNECTION,
    pb.RETRY_ON_NONZERO_EXIT: FAILURE_NONZERO_EXIT,
    pb.RETRY_ON_EXCEPTION: FAILURE_EXCEPTION,
    pb.RETRY_ON_HTTP_4XX: FAILURE_HTTP_4XX,
}
"""``pb.RetryOn`` value -> failure class (``Outcome.failure``)."""
DEFAULT_RETRY_ON = frozenset(RETRY_ON_CLASS.values()) - {FAILURE_HTTP_4XX}
"""Retried when ``retry_on`` is empty: everything except other 4xx (and config, cancelled)."""
NEVER_RETRIED = frozenset({FAILURE_CONFIG, FAILURE_CANCELLED})

DEFAULT_MAX_ATTEMPTS = 1
DEFAULT_INITIAL_BACKOFF = timedelta(seconds=1)
DEFAULT_MAX_BACKOFF = timedelta(seconds=60)
DEFAULT_MULTIPLIER = 2.0
MAX_ATTEMPTS_LIMIT = 100
MAX_BACKOFF_LIMIT = timedelta(days=1)
MAX_MULTIPLIER = 10.0
MAX_DEADLINE = timedelta(days=7)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Retry:
    """A slot's retry policy with defaults applied (see :func:`retry_from_proto`).

    Attributes:
        max_attempts: attempts in total including the first, >= 1.
        initial_backoff: upper bound of the first backoff (before attempt 2).
        max_backoff: cap on the backoff bound.
        multiplier: growth of the bound per attempt, >= 1.
        retry_on: failure classes retried (``FAILURE_*`` of :mod:`peerd.runner.base`).
        deadline: overall limit counted from the slot's fire instant; None = none.

    Raises:
        ValueError: from the constructor when ``max_attempts < 1``, a backoff is negative,
            ``multiplier < 1`` or not finite, or ``deadline`` is negative.
    """

    max_attempts: int
    initial_backoff: timedelta
    max_backoff: timedelta
    multiplier: float
    retry_on: frozenset[str]
    deadline: timedelta | None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.initial_backoff < timedelta(0) or self.max_backoff < timedelta(0):
            raise ValueError("backoffs must be >= 0")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError("multiplier must be finite and >= 1")
        if self.deadline is not None and self.deadline < timedelta(0):
            raise ValueError("deadline must be >= 0")


NO_RETRY = Retry(1, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF, 2.0, DEFAULT_RETRY_ON, None)
"""The policy of a task without ``retry``: one attempt."""


def _duration(msg: pb.RetryPolicy, name: str, default: timedelta | None) -> timedelta | None:
    if not msg.HasField(name):  # type: ignore[arg-type]
        return default
    return cast(timedelta, getattr(msg, name).ToTimedelta())


def _fmt(d: timedelta) -> str:
    return f"{d.total_seconds():g}s"


def validate_retry(msg: pb.RetryPolicy, field: str = "task.retry") -> None:
    """Check a ``pb.RetryPolicy`` (limits from the proto, with defaults for unset fields).

    Checks: ``max_attempts`` 0..100; ``initial_backoff`` and ``max_backoff`` >= 0 with
    ``initial <= max`` (after defaults: unset initial 1 s, unset max 60 s) and ``max_backoff`` <=
    1 day; ``multiplier`` 0 (default) or 1..10; ``deadline`` unset or above 0 and at most 7 days
    (0 would leave no time for the first attempt); each ``retry_on`` value
    a known, specified ``RetryOn``.

    Raises:
        InvalidArgument: naming ``{field}.max_attempts``, ``.initial_backoff``,
            ``.max_backoff``, ``.multiplier``, ``.deadline`` or ``.retry_on``.
    """
    if not 0 <= msg.max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise InvalidArgument(
            f"{field}.max_attempts",
            f"must be between 0 and {MAX_ATTEMPTS_LIMIT} (0 = default 1), got {msg.max_attempts}",
        )
    initial = _duration(msg, "initial_backoff", DEFAULT_INITIAL_BACKOFF)
    maximum = _duration(msg, "max_backoff", DEFAULT_MAX_BACKOFF)
    assert initial is not None and maximum is not None
    if initial < timedelta(0):
        raise InvalidArgument(f"{field}.initial_backoff", f"must be >= 0, got {_fmt(initial)}")
    if maximum < timedelta(0) or maximum > MAX_BACKOFF_LIMIT:
        raise InvalidArgument(
            f"{field}.max_backoff", f"must be between 0 and 1 day, got {_fmt(maximum)}"
        )
    if initial > maximum:
        default = "" if msg.HasField("max_backoff") else " (the default)"
        raise InvalidArgument(
            f"{field}.initial_backoff",
            f"{_fmt(initial)} is above max_backoff {_fmt(maximum)}{default}",
        )
    m = msg.multiplier
    if m != 0 and not 1 <= m <= MAX_MULTIPLIER:  # NaN fails both
        raise InvalidArgument(
            f"{field}.multiplier", f"must be 0 (default 2) or between 1 and 10, got {m}"
        )
    deadline = _duration(msg, "deadline", None)
    if deadline is not None and not timedelta(0) < deadline <= MAX_DEADLINE:
        raise InvalidArgument(
            f"{field}.deadline",
            f"must be above 0 and at most 7 days (or unset for none), got {_fmt(deadline)}",
        )
    for i, v in enumerate(msg.retry_on):
        if v not in RETRY_ON_CLASS:
            raise InvalidArgument(
                f"{field}.retry_on",
                f"retry_on[{i}] = {v} is not a RetryOn value (RETRY_ON_UNSPECIFIED is not either)",
            )


def retry_from_proto(msg: pb.RetryPolicy, field: str = "task.retry") -> Retry:
    """The :class:`Retry` of ``msg`` with the proto's defaults applied.

    Defaults: ``max_attempts`` 0 -> 1; ``initial_backoff`` unset -> 1 s; ``max_backoff`` unset
    -> 60 s; ``multiplier`` 0 -> 2.0; ``retry_on`` empty -> :data:`DEFAULT_RETRY_ON`;
    ``deadline`` unset -> None. Set durations are used as given (0 included).

    Raises:
        InvalidArgument: when ``msg`` fails :func:`validate_retry` (field prefix ``field``).
    """
    validate_retry(msg, field)
    initial = _duration(msg, "initial_backoff", DEFAULT_INITIAL_BACKOFF)
    maximum = _duration(msg, "max_backoff", DEFAULT_MAX_BACKOFF)
    assert initial is not None and maximum is not None
    return Retry(
        max_attempts=msg.max_attempts or DEFAULT_MAX_ATTEMPTS,
        initial_backoff=initial,
        max_backoff=maximum,
        multiplier=msg.multiplier or DEFAULT_MULTIPLIER,
        retry_on=frozenset(RETRY_ON_CLASS[v] for v in msg.retry_on) or DEFAULT_RETRY_ON,
        deadline=_duration(msg, "deadline", None),
    )


class _Attempt:
    """The one field of ``tenacity.RetryCallState`` that ``wait_exponential`` reads (a real one
    would read ``time.monotonic()`` on construction)."""

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


def backoff_bound(policy: Retry, attempt: int) -> timedelta:
    """``min(max_backoff, initial_backoff * multiplier ** (attempt - 1))``, computed by
    ``tenacity.wait_exponential`` (overflow-safe for large ``attempt``).

    Raises:
        ValueError: when ``attempt < 1``.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if not policy.initial_backoff:
        return timedelta(0)  # tenacity returns ``max`` when multiplier**n overflows, even for 0
    wait = wait_exponential(
        multiplier=policy.initial_backoff.total_seconds(),
        max=policy.max_backoff.total_seconds(),
        exp_base=policy.multiplier,
    )
    seconds = wait(cast("RetryCallState", _Attempt(attempt)))
    return min(timedelta(seconds=seconds), policy.max_backoff)


def backoff(policy: Retry, attempt: int, rng: random.Random) -> timedelta:
    """Delay before attempt ``attempt + 1`` after attempt ``attempt`` (>= 1) failed: full jitter,
    ``uniform(0, backoff_bound(policy, attempt))`` drawn from ``rng``, truncated to whole ms
    (so never above the bound). Draws exactly one value from ``rng``.

    Raises:
        ValueError: when ``attempt < 1``.
    """
    bound = backoff_bound(policy, attempt)
    drawn = rng.uniform(0.0, bound.total_seconds())
    return min(math.floor(drawn * 1000) * _MS, bound)


def retryable(policy: Retry, failure: str) -> bool:
    """Whether failure class ``failure`` is retried by ``policy`` (never ``config``/
    ``cancelled``, nor "" = success)."""
    return failure in policy.retry_on and failure not in NEVER_RETRIED


def next_attempt(
    policy: Retry,
    attempt: int,
    failure: str,
    fire_at: datetime,
    now: datetime,
    rng: random.Random,
) -> datetime | None:
    """When to start attempt ``attempt + 1`` after attempt ``attempt`` failed with ``failure``.

    Returns ``now + backoff(...)``, or None when the class is not retried, ``attempt >=
    max_attempts``, or that start would be at or after ``fire_at + deadline``. ``rng`` is drawn
    from (once) only when the class and attempt count allow a retry.

    Raises:
        ValueError: when ``attempt < 1`` or a datetime is naive.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if fire_at.tzinfo is None or now.tzinfo is None:
        raise ValueError("fire_at and now must be timezone-aware")
    if not retryable(policy, failure) or attempt >= policy.max_attempts:
        return None
    start = now + backoff(policy, attempt, rng)
    if policy.deadline is not None and start >= fire_at + policy.deadline:
        return None
    return start


def attempt_timeout(
    policy: Retry, per_attempt: timedelta, fire_at: datetime, now: datetime
) -> timedelta:
    """Time limit of an attempt starting at ``now``: ``min(per_attempt, fire_at + deadline -
    now)`` (just ``per_attempt`` without a deadline), never negative.

    Raises:
        ValueError: when a datetime is naive.
    """
    if fire_at.tzinfo is None or now.tzinfo is None:
        raise ValueError("fire_at and now must be timezone-aware")
    limit = per_attempt
    if policy.deadline is not None:
        limit = min(limit, fire_at + policy.deadline - now)
    return max(limit, timedelta(0))
