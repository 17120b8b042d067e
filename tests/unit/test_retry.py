"""Retry policy: defaults, validation, full-jitter backoff, attempts, deadline (pure, seeded)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
import tenacity
from google.protobuf.duration_pb2 import Duration

from peerd.core.retry import (
    DEFAULT_RETRY_ON,
    NO_RETRY,
    RETRY_ON_CLASS,
    Retry,
    attempt_timeout,
    backoff,
    backoff_bound,
    next_attempt,
    retry_from_proto,
    retryable,
    validate_retry,
)
from peerd.errors import InvalidArgument
from peerd.runner.base import FAILURE_CLASSES
from peerd.v1 import scheduler_pb2 as pb

F = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)  # a slot's fire instant
MS = timedelta(milliseconds=1)
S = timedelta(seconds=1)


def policy(
    max_attempts: int = 5,
    initial: timedelta = S,
    maximum: timedelta = 60 * S,
    multiplier: float = 2.0,
    retry_on: frozenset[str] = DEFAULT_RETRY_ON,
    deadline: timedelta | None = None,
) -> Retry:
    return Retry(max_attempts, initial, maximum, multiplier, retry_on, deadline)


# --- from the proto ------------------------------------------------------------------------------


def test_defaults() -> None:
    assert retry_from_proto(pb.RetryPolicy()) == NO_RETRY
    assert Retry(1, S, 60 * S, 2.0, DEFAULT_RETRY_ON, None) == NO_RETRY
    assert {
        "http_5xx",
        "http_429",
        "timeout",
        "connection",
        "nonzero_exit",
        "exception",
    } == DEFAULT_RETRY_ON


def test_every_retry_on_value_maps_to_a_failure_class() -> None:
    assert set(RETRY_ON_CLASS) == set(pb.RetryOn.values()) - {pb.RETRY_ON_UNSPECIFIED}
    assert set(RETRY_ON_CLASS.values()) == set(FAILURE_CLASSES) - {"config", "cancelled"}


def test_values_are_taken_as_given() -> None:
    msg = pb.RetryPolicy(
        max_attempts=4,
        initial_backoff=Duration(seconds=0),
        max_backoff=Duration(seconds=30),
        multiplier=3.0,
        retry_on=[pb.RETRY_ON_HTTP_4XX, pb.RETRY_ON_TIMEOUT, pb.RETRY_ON_TIMEOUT],
        deadline=Duration(seconds=600),
    )
    expected = Retry(4, timedelta(0), 30 * S, 3.0, frozenset({"http_4xx", "timeout"}), 600 * S)
    assert retry_from_proto(msg) == expected


def test_retry_from_proto_validates() -> None:
    with pytest.raises(InvalidArgument) as e:
        retry_from_proto(pb.RetryPolicy(max_attempts=101), "spec.retry")
    assert e.value.field == "spec.retry.max_attempts"


# --- validation ----------------------------------------------------------------------------------

DAY = 86_400


@pytest.mark.parametrize(
    ("msg", "field", "reason"),
    [
        (pb.RetryPolicy(max_attempts=101), "max_attempts", "between 0 and 100"),
        (pb.RetryPolicy(max_attempts=-1), "max_attempts", "got -1"),
        (pb.RetryPolicy(initial_backoff=Duration(seconds=-1)), "initial_backoff", "got -1s"),
        (pb.RetryPolicy(max_backoff=Duration(seconds=-1)), "max_backoff", "got -1s"),
        (pb.RetryPolicy(max_backoff=Duration(seconds=DAY + 1)), "max_backoff", "1 day"),
        (
            pb.RetryPolicy(initial_backoff=Duration(seconds=120)),
            "initial_backoff",
            "120s is above max_backoff 60s (the default)",
        ),
        (
            pb.RetryPolicy(initial_backoff=Duration(seconds=5), max_backoff=Duration(seconds=4)),
            "initial_backoff",
            "5s is above max_backoff 4s",
        ),
        (pb.RetryPolicy(max_backoff=Duration(nanos=500_000_000)), "initial_backoff", "1s is above"),
        (pb.RetryPolicy(multiplier=0.5), "multiplier", "got 0.5"),
        (pb.RetryPolicy(multiplier=10.5), "multiplier", "between 1 and 10"),
        (pb.RetryPolicy(multiplier=-2), "multiplier", "got -2"),
        (pb.RetryPolicy(multiplier=math.nan), "multiplier", "got nan"),
        (pb.RetryPolicy(deadline=Duration(seconds=-1)), "deadline", "got -1s"),
        (pb.RetryPolicy(deadline=Duration()), "deadline", "above 0"),
        (pb.RetryPolicy(deadline=Duration(seconds=7 * DAY + 1)), "deadline", "7 days"),
        (pb.RetryPolicy(retry_on=[pb.RETRY_ON_TIMEOUT, 0]), "retry_on", "retry_on[1] = 0"),
        (pb.RetryPolicy(retry_on=[42]), "retry_on", "retry_on[0] = 42"),  # type: ignore[list-item]
    ],
)
def test_validation_names_the_field(msg: pb.RetryPolicy, field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate_retry(msg)
    assert e.value.field == f"task.retry.{field}"
    assert reason in e.value.reason
    with pytest.raises(InvalidArgument) as e:
        validate_retry(msg, "tasks[3].retry")
    assert e.value.field == f"tasks[3].retry.{field}"


@pytest.mark.parametrize(
    "msg",
    [
        pb.RetryPolicy(),
        pb.RetryPolicy(max_attempts=100, multiplier=10),
        pb.RetryPolicy(max_attempts=0, multiplier=1),
        pb.RetryPolicy(max_backoff=Duration(seconds=DAY), deadline=Duration(seconds=7 * DAY)),
        pb.RetryPolicy(initial_backoff=Duration(seconds=60), max_backoff=Duration(seconds=60)),
        pb.RetryPolicy(initial_backoff=Duration(), max_backoff=Duration()),
        pb.RetryPolicy(retry_on=list(RETRY_ON_CLASS)),
    ],
)
def test_valid_limits_are_accepted(msg: pb.RetryPolicy) -> None:
    validate_retry(msg)
    retry_from_proto(msg)


def test_retry_rejects_nonsense_directly() -> None:
    for kw in [
        {"max_attempts": 0},
        {"initial": -S},
        {"maximum": -S},
        {"multiplier": 0.5},
        {"multiplier": math.inf},
        {"deadline": -S},
    ]:
        with pytest.raises(ValueError):
            policy(**kw)  # type: ignore[arg-type]


# --- backoff -------------------------------------------------------------------------------------


def test_backoff_bound_grows_and_is_capped() -> None:
    p = policy()
    bounds = [backoff_bound(p, n) for n in range(1, 10)]
    assert bounds == [S * b for b in (1, 2, 4, 8, 16, 32, 60, 60, 60)]
    p = policy(initial=1500 * MS, multiplier=3.0)
    assert [backoff_bound(p, n) for n in range(1, 6)] == [
        MS * b for b in (1500, 4500, 13_500, 40_500, 60_000)
    ]
    assert backoff_bound(policy(multiplier=1.0), 50) == S
    assert backoff_bound(policy(maximum=86_400 * S, multiplier=10.0), 100) == 86_400 * S
    assert backoff_bound(policy(initial=timedelta(0), multiplier=10.0), 400) == timedelta(0)
    assert backoff_bound(policy(initial=timedelta(0), maximum=timedelta(0)), 3) == timedelta(0)
    with pytest.raises(ValueError):
        backoff_bound(p, 0)


def test_backoff_is_seeded_full_jitter_in_whole_ms() -> None:
    p = policy()
    # attempt 3 failed: bound 4 s; one uniform draw from the rng, truncated to ms
    expected = math.floor(random.Random(42).random() * 4000) * MS
    assert backoff(p, 3, random.Random(42)) == expected
    rng = random.Random(1)
    draws = [backoff(p, 3, rng) for _ in range(5000)]
    assert all(timedelta(0) <= d <= 4 * S and d % MS == timedelta(0) for d in draws)
    assert min(draws) < 40 * MS and max(draws) > 3960 * MS  # full jitter spans [0, bound]
    assert backoff(policy(initial=timedelta(0)), 5, random.Random(0)) == timedelta(0)


def test_backoff_matches_tenacity_wait_random_exponential() -> None:
    # tenacity draws from the global `random`; seeded alike, it picks the same delay
    state = random.getstate()
    try:
        for attempt in range(1, 9):
            random.seed(attempt)
            wait = tenacity.wait_random_exponential(multiplier=1, max=60, exp_base=2)
            retry_state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
            retry_state.attempt_number = attempt
            theirs = math.floor(wait(retry_state) * 1000) * MS
            assert backoff(policy(), attempt, random.Random(attempt)) == theirs
    finally:
        random.setstate(state)


# --- next attempt --------------------------------------------------------------------------------


def test_retries_until_max_attempts() -> None:
    p, now = policy(max_attempts=3), F + 2 * S
    delay = backoff(p, 1, random.Random(5))
    assert next_attempt(p, 1, "timeout", F, now, random.Random(5)) == now + delay
    assert next_attempt(p, 2, "timeout", F, now, random.Random(5)) is not None
    assert next_attempt(p, 3, "timeout", F, now, random.Random(5)) is None
    assert next_attempt(NO_RETRY, 1, "timeout", F, now, random.Random(5)) is None


@pytest.mark.parametrize("failure", sorted(DEFAULT_RETRY_ON))
def test_default_classes_are_retried(failure: str) -> None:
    assert next_attempt(policy(), 1, failure, F, F, random.Random(0)) is not None


@pytest.mark.parametrize("failure", ["http_4xx", "config", "cancelled", "", "unknown"])
def test_other_classes_are_not_retried(failure: str) -> None:
    rng = random.Random(0)
    state = rng.getstate()
    assert next_attempt(policy(), 1, failure, F, F, rng) is None
    assert rng.getstate() == state  # nothing drawn


def test_config_and_cancelled_never_retried_even_if_listed() -> None:
    p = policy(retry_on=frozenset({"config", "cancelled", "http_4xx"}))
    assert not retryable(p, "config") and not retryable(p, "cancelled")
    assert next_attempt(p, 1, "config", F, F, random.Random(0)) is None
    assert next_attempt(p, 1, "cancelled", F, F, random.Random(0)) is None
    assert next_attempt(p, 1, "http_4xx", F, F, random.Random(0)) is not None
    assert next_attempt(p, 1, "timeout", F, F, random.Random(0)) is None  # not listed


def test_deadline_is_exact() -> None:
    # no backoff: the next attempt would start now; deadline 60 s after the fire instant
    p = policy(initial=timedelta(0), maximum=timedelta(0), deadline=60 * S)
    assert next_attempt(p, 1, "timeout", F, F + 60 * S - MS, random.Random(0)) == F + 60 * S - MS
    assert next_attempt(p, 1, "timeout", F, F + 60 * S, random.Random(0)) is None
    assert next_attempt(p, 1, "timeout", F, F + 90 * S, random.Random(0)) is None
    # with a backoff: the start (now + backoff) is what is compared with the deadline
    p = policy(deadline=60 * S)
    delay = backoff(p, 4, random.Random(9))  # bound 8 s
    assert delay > timedelta(0)
    at_deadline = F + 60 * S - delay
    assert next_attempt(p, 4, "timeout", F, at_deadline, random.Random(9)) is None
    before = at_deadline - MS
    assert next_attempt(p, 4, "timeout", F, before, random.Random(9)) == F + 60 * S - MS


def test_deadline_zero_allows_no_retry() -> None:
    p = policy(initial=timedelta(0), deadline=timedelta(0))
    assert next_attempt(p, 1, "timeout", F, F, random.Random(0)) is None


def test_next_attempt_bad_arguments() -> None:
    with pytest.raises(ValueError):
        next_attempt(policy(), 0, "timeout", F, F, random.Random(0))
    with pytest.raises(ValueError):
        next_attempt(policy(), 1, "timeout", datetime(2026, 1, 1), F, random.Random(0))


# --- attempt timeout -----------------------------------------------------------------------------


def test_attempt_timeout() -> None:
    no_deadline = policy()
    assert attempt_timeout(no_deadline, 30 * S, F, F + timedelta(days=3)) == 30 * S
    p = policy(deadline=60 * S)
    assert attempt_timeout(p, 30 * S, F, F + 10 * S) == 30 * S
    assert attempt_timeout(p, 30 * S, F, F + 30 * S) == 30 * S
    assert attempt_timeout(p, 30 * S, F, F + 50 * S) == 10 * S
    assert attempt_timeout(p, 30 * S, F, F + 60 * S - MS) == MS
    assert attempt_timeout(p, 30 * S, F, F + 60 * S) == timedelta(0)
    assert attempt_timeout(p, 30 * S, F, F + 70 * S) == timedelta(0)  # never negative
    with pytest.raises(ValueError):
        attempt_timeout(p, 30 * S, F, datetime(2026, 1, 1))
