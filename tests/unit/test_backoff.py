"""Backoff: the delay sequence, its cap, reset, seeded jitter and argument checks (pure)."""

from __future__ import annotations

import random

import pytest

from peerd.coord.etcd import RETRY_INITIAL_S, RETRY_MAX_S, retry_backoff
from peerd.core.backoff import Backoff


def delays(b: Backoff, n: int) -> list[float]:
    return [b.next_delay_s() for _ in range(n)]


def test_doubles_from_initial_and_stops_at_the_cap() -> None:
    b = Backoff(0.2, 2.0)
    assert delays(b, 7) == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    assert b.attempts == 7


def test_reset_starts_again_from_initial() -> None:
    b = Backoff(1.0, 60.0, multiplier=3.0)
    assert delays(b, 4) == pytest.approx([1.0, 3.0, 9.0, 27.0])
    b.reset()
    assert b.attempts == 0
    assert delays(b, 3) == pytest.approx([1.0, 3.0, 9.0])


def test_multiplier_one_is_constant_and_initial_equal_to_cap_is_allowed() -> None:
    assert delays(Backoff(0.5, 10.0, multiplier=1.0), 4) == [0.5] * 4
    assert delays(Backoff(3.0, 3.0), 3) == [3.0] * 3


def test_long_runs_stay_at_the_cap() -> None:
    b = Backoff(0.001, 5.0, multiplier=10.0)
    for _ in range(5000):  # no overflow to inf, no drift above the cap
        d = b.next_delay_s()
    assert d == 5.0


def test_etcd_retry_backoff_is_the_documented_sequence() -> None:
    assert (RETRY_INITIAL_S, RETRY_MAX_S) == (0.2, 2.0)
    assert delays(retry_backoff(), 6) == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    # a fresh one each time: advancing one does not advance the next
    first = retry_backoff()
    first.next_delay_s()
    assert retry_backoff().next_delay_s() == pytest.approx(0.2)


def test_jitter_stays_within_its_band_below_each_bound() -> None:
    b = Backoff(1.0, 8.0, jitter=0.25, rng=random.Random(3))
    bounds = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for bound in bounds:
        d = b.next_delay_s()
        assert 0.75 * bound <= d <= bound


def test_full_jitter_is_uniform_below_the_bound_and_seeded() -> None:
    def run(seed: int) -> list[float]:
        b = Backoff(2.0, 2.0, jitter=1.0, rng=random.Random(seed))
        return delays(b, 4000)

    draws = run(11)
    assert draws == run(11)  # same seed, same delays
    assert draws != run(12)
    assert all(0.0 <= d <= 2.0 for d in draws)
    assert len(set(draws)) > 3900  # drawn, not constant
    mean = sum(draws) / len(draws)
    assert 0.95 < mean < 1.05  # uniform on [0, 2]: mean 1, standard error ~0.009
    assert sum(d < 0.5 for d in draws) / len(draws) == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_s": 0, "max_s": 1}, "initial_s must be > 0, got 0"),
        ({"initial_s": -1, "max_s": 1}, "initial_s must be > 0"),
        ({"initial_s": float("nan"), "max_s": 1}, "initial_s must be > 0"),
        ({"initial_s": 2, "max_s": 1}, r"max_s must be >= initial_s \(2\), got 1"),
        ({"initial_s": 1, "max_s": 2, "multiplier": 0.5}, "multiplier must be >= 1, got 0.5"),
        ({"initial_s": 1, "max_s": 2, "jitter": 1.5, "rng": random.Random()}, "jitter must be"),
        ({"initial_s": 1, "max_s": 2, "jitter": -0.1}, r"jitter must be in \[0, 1\]"),
        ({"initial_s": 1, "max_s": 2, "jitter": 0.5}, "needs an rng"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)  # type: ignore[arg-type]
