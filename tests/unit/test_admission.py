"""peerd.core.admission: the AIMD execution limit driven by the event loop's lag."""

from __future__ import annotations

import pytest

from peerd.core.admission import AdaptiveLimit


def test_starts_low_and_grows_while_the_loop_keeps_up_and_work_waits() -> None:
    a = AdaptiveLimit(512)
    assert a.limit == 32  # slow start: a burst at start-up cannot flood the loop
    seen = [a.step(0.001, waiting=True) for _ in range(60)]
    assert seen == sorted(seen) and seen[-1] == 512  # grows to the configured limit, no more
    assert a.step(0.001, waiting=False) == 512  # nothing waiting: no reason to change


def test_backs_off_multiplicatively_and_keeps_a_floor() -> None:
    a = AdaptiveLimit(512, start=512)
    assert a.step(0.5, waiting=True) == 384  # a quarter off per lagging window
    for _ in range(50):
        a.step(0.5, waiting=True)
    assert a.limit == 16  # the floor: the node keeps running at a useful pace


def test_lag_between_the_thresholds_holds_the_limit() -> None:
    a = AdaptiveLimit(100, start=50)
    assert a.step(0.07, waiting=True) == 50


def test_small_and_reloaded_maximums() -> None:
    a = AdaptiveLimit(3)
    assert a.minimum == 3 and a.limit == 3
    b = AdaptiveLimit(512, start=400)
    b.set_maximum(64)
    assert b.limit == 64 and b.step(0.0, waiting=True) == 64
    with pytest.raises(ValueError, match="maximum"):
        AdaptiveLimit(0)
