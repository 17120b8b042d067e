"""Token bucket and the per-node share of a cluster-wide rate (fake monotonic seconds)."""

from __future__ import annotations

import math
import random

import pytest

from peerd.core.ratelimit import TokenBucket, share


def test_starts_full_and_grants_at_most_what_it_holds() -> None:
    b = TokenBucket(rate_per_s=2.0, burst=5, now_s=100.0)
    assert b.available(100.0) == 5
    assert b.take(3, 100.0) == 3
    assert b.take(3, 100.0) == 2  # only 2 left
    assert b.take(3, 100.0) == 0
    assert b.available(100.0) == 0


def test_refills_at_the_rate_up_to_the_burst() -> None:
    b = TokenBucket(2.0, 5, 0.0)
    assert b.take(5, 0.0) == 5
    assert b.available(0.25) == 0  # half a token
    assert b.available(0.5) == 1
    assert b.available(1.75) == 3  # 3.5 tokens
    assert b.take(10, 1.75) == 3
    assert b.available(2.0) == 1  # 0.5 + 0.5
    assert b.available(1000.0) == 5  # capped at the burst


def test_next_at_is_when_the_next_whole_token_is_there() -> None:
    b = TokenBucket(4.0, 2, 10.0)
    assert b.next_at_s(10.0) == 10.0  # a token is there now
    b.take(2, 10.0)
    assert b.next_at_s(10.0) == 10.25
    assert b.next_at_s(10.125) == 10.25  # half-way: still 10.25
    assert b.available(10.25) == 1
    assert b.next_at_s(10.25) == 10.25


def test_next_at_is_exact_under_floating_point_rounding() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        rate = rng.uniform(0.001, 1000.0)
        now = rng.uniform(0.0, 1e6)
        b = TokenBucket(rate, rng.randint(1, 20), now)
        b.take(1000, now)
        now += rng.uniform(0.0, 0.5 / rate)  # part of a token accrued
        at = b.next_at_s(now)
        assert at > now
        assert b.available(at) == 1, (rate, now, at)


def test_zero_rate_never_refills() -> None:
    b = TokenBucket(0.0, 3, 0.0)
    assert b.take(2, 0.0) == 2
    assert b.available(1e9) == 1
    b.take(1, 1e9)
    assert b.next_at_s(1e9) == math.inf


def test_fractional_burst_rounds_down() -> None:
    b = TokenBucket(1.0, 2.5, 0.0)
    assert b.available(0.0) == 2
    b.take(2, 0.0)
    assert b.available(2.0) == 2  # 2.5 capped: still 2 whole
    assert b.take(2, 2.0) == 2
    assert b.next_at_s(2.0) == 2.5  # the 0.5 left needs half a second


def test_set_rate_keeps_accrued_tokens() -> None:
    b = TokenBucket(1.0, 10, 0.0)
    b.take(10, 0.0)
    b.set_rate(4.0, 2.0)  # 2 tokens accrued at the old rate are kept
    assert b.available(2.0) == 2
    assert b.available(2.5) == 4  # then 4/s
    b.set_rate(0.5, 2.5)
    assert b.available(4.5) == 5
    assert b.rate_per_s == 0.5


def test_clock_going_backwards_adds_nothing() -> None:
    b = TokenBucket(1.0, 5, 10.0)
    b.take(5, 10.0)
    assert b.available(9.0) == 0
    assert b.available(11.0) == 1  # measured from 10.0, not from 9.0
    assert b.take(1, 5.0) == 1  # a token already there can be taken
    assert b.available(11.5) == 0
    assert b.next_at_s(3.0) == 12.0  # from the latest time seen (11.5 with half a token)


def test_take_zero_and_bad_arguments() -> None:
    b = TokenBucket(1.0, 1, 0.0)
    assert b.take(0, 0.0) == 0
    with pytest.raises(ValueError, match="n must be"):
        b.take(-1, 0.0)
    for rate, burst in [(-1.0, 1.0), (math.nan, 1.0), (math.inf, 1.0), (1.0, 0.5), (1.0, math.inf)]:
        with pytest.raises(ValueError):
            TokenBucket(rate, burst, 0.0)
    with pytest.raises(ValueError, match="rate_per_s"):
        b.set_rate(-0.5, 1.0)
    assert b.rate_per_s == 1.0


def test_share_splits_the_cluster_rate() -> None:
    assert share(10.0, 1) == 10.0
    assert share(10.0, 4) == 2.5
    assert share(0.0, 3) == 0.0
    with pytest.raises(ValueError, match="live_members"):
        share(10.0, 0)
    with pytest.raises(ValueError, match="cluster_rate"):
        share(-1.0, 2)


def test_n_nodes_with_their_share_replay_at_most_the_cluster_rate() -> None:
    # 3 nodes, cluster rate 6/s, per-node burst 1: over 10 s the cluster grants at most
    # 6 * 10 + 3 (the initial bursts), polling every 10 ms
    nodes = [TokenBucket(share(6.0, 3), 1, 0.0) for _ in range(3)]
    granted = 0
    for step in range(1001):
        t = step / 100
        granted += sum(b.take(100, t) for b in nodes)
    assert granted == 6 * 10 + 3


def test_set_rate_with_a_new_burst_caps_the_tokens_kept() -> None:
    bucket = TokenBucket(10.0, 10.0, 0.0)
    assert bucket.available(0.0) == 10
    bucket.set_rate(2.0, 0.0, burst=2.0)
    assert bucket.available(0.0) == 2
    assert bucket.take(5, 0.0) == 2
    assert bucket.available(0.5) == 1  # refills at the new rate, up to the new burst
    assert bucket.available(100.0) == 2


def test_a_bucket_can_start_empty() -> None:
    bucket = TokenBucket(4.0, 4.0, 10.0, tokens=0.0)
    assert bucket.available(10.0) == 0
    assert bucket.next_at_s(10.0) == pytest.approx(10.25)
    assert bucket.take(3, 10.5) == 2
    assert TokenBucket(4.0, 4.0, 0.0, tokens=99.0).available(0.0) == 4  # clamped to the burst
