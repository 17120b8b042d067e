"""Clocks: FakeClock sleeping and waking (order, cancellation), wait_event on both clocks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from peerd.clock import Clock, FakeClock, SystemClock, wait_event
from tests.helpers import run_async, until

TIMEOUT_S = 3.0
START = datetime(2030, 1, 1, tzinfo=UTC)


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return run_async(main, TIMEOUT_S)


def test_fake_clock_rejects_naive_start_and_going_backwards() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2030, 1, 1))
    clock = FakeClock(START)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-0.001)
    clock.advance(timedelta(minutes=1))
    clock.advance(0.5)
    assert clock.monotonic() == 60.5
    assert clock.now() == START + timedelta(seconds=60.5)


def test_both_clocks_satisfy_the_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), FakeClock(START)]
    for c in clocks:
        assert c.now().tzinfo is not None


def test_sleep_returns_only_once_advance_reaches_the_deadline() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        woke: list[float] = []

        async def sleeper() -> None:
            await clock.sleep(5.0)
            woke.append(clock.monotonic())

        task = asyncio.create_task(sleeper())
        await clock.wait_for_sleepers(1)
        assert clock.deadlines() == [5.0]
        clock.advance(4.999)
        for _ in range(5):
            await asyncio.sleep(0)
        assert woke == [] and not task.done()
        clock.advance(0.001)  # exactly the deadline
        await task
        assert woke == [5.0]
        assert clock.sleepers == 0

    run(main)


def test_one_advance_wakes_every_due_sleeper_in_deadline_order() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        order: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            order.append((name, clock.monotonic()))

        specs = [("c", 3.0), ("a", 1.0), ("late", 10.0), ("b1", 2.0), ("b2", 2.0)]
        tasks = [asyncio.create_task(sleeper(n, s)) for n, s in specs]
        await clock.wait_for_sleepers(5)
        clock.advance(5.0)
        await until(lambda: len(order) == 4)
        # deadline order, equal deadlines in the order they went to sleep; all see time 5
        assert order == [("a", 5.0), ("b1", 5.0), ("b2", 5.0), ("c", 5.0)]
        assert clock.sleepers == 1 and clock.deadlines() == [10.0]
        clock.advance(5.0)
        await asyncio.gather(*tasks)
        assert order[-1] == ("late", 10.0)

    run(main)


def test_a_sleeper_that_sleeps_again_gets_a_deadline_from_the_advanced_time() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        ticks: list[float] = []

        async def ticker() -> None:
            for _ in range(3):
                await clock.sleep(2.0)
                ticks.append(clock.monotonic())

        task = asyncio.create_task(ticker())
        await clock.wait_for_sleepers(1)
        clock.advance(3.0)  # one advance past the deadline wakes it once, not twice
        await until(lambda: clock.sleepers == 1 and len(ticks) == 1)
        assert clock.deadlines() == [5.0]
        clock.advance(2.0)
        await until(lambda: len(ticks) == 2 and clock.sleepers == 1)
        clock.advance(2.0)
        await task
        assert ticks == [3.0, 5.0, 7.0]

    run(main)


def test_zero_or_negative_sleep_yields_once_without_advance() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        steps: list[str] = []
        asyncio.get_running_loop().call_soon(lambda: steps.append("soon"))
        await clock.sleep(0)
        assert steps == ["soon"]  # the loop ran once while we yielded
        await clock.sleep(-3)
        assert clock.sleepers == 0 and clock.monotonic() == 0.0
        await SystemClock().sleep(-1)  # the real clock clamps too

    run(main)


def test_a_cancelled_sleeper_no_longer_counts_and_is_not_woken() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        task = asyncio.create_task(clock.sleep(1.0))
        keeper = asyncio.create_task(clock.sleep(2.0))
        await clock.wait_for_sleepers(2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert clock.sleepers == 1 and clock.deadlines() == [2.0]
        clock.advance(2.0)  # pops the cancelled entry without touching it
        await keeper
        assert clock.sleepers == 0

    run(main)


def test_wait_for_sleepers_returns_when_enough_are_asleep() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        await clock.wait_for_sleepers(0)  # trivially true
        waiter = asyncio.create_task(clock.wait_for_sleepers(2))
        first = asyncio.create_task(clock.sleep(1.0))
        await until(lambda: clock.sleepers == 1)
        await asyncio.sleep(0)
        assert not waiter.done()
        second = asyncio.create_task(clock.sleep(1.0))
        await waiter
        clock.advance(1.0)
        await asyncio.gather(first, second)

    run(main)


def test_wait_event_is_woken_by_the_event_before_the_timeout() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        event = asyncio.Event()
        waiting = asyncio.create_task(wait_event(clock, event, 30.0))
        await clock.wait_for_sleepers(1)
        event.set()
        assert await waiting is True
        assert clock.sleepers == 0  # its timeout sleep was cancelled
        assert clock.monotonic() == 0.0

    run(main)


def test_wait_event_times_out_on_the_clock() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        event = asyncio.Event()
        waiting = asyncio.create_task(wait_event(clock, event, 30.0))
        await clock.wait_for_sleepers(1)
        clock.advance(29.0)
        await asyncio.sleep(0)
        assert not waiting.done()
        clock.advance(1.0)
        assert await waiting is False
        assert not event.is_set()

    run(main)


def test_wait_event_already_set_or_zero_timeout() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        event = asyncio.Event()
        assert await wait_event(clock, event, 0) is False
        assert await wait_event(clock, event, -1) is False
        event.set()
        assert await wait_event(clock, event, 0) is True
        assert await wait_event(clock, event, 100.0) is True
        assert clock.sleepers == 0

    run(main)


def test_wait_event_cancelled_leaves_nothing_behind() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        event = asyncio.Event()
        waiting = asyncio.create_task(wait_event(clock, event, 30.0))
        await clock.wait_for_sleepers(1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert clock.sleepers == 0
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == []

    run(main)


def test_wait_event_on_the_system_clock() -> None:
    async def main() -> None:
        event = asyncio.Event()
        asyncio.get_running_loop().call_soon(event.set)
        assert await wait_event(SystemClock(), event, 10.0) is True
        assert await wait_event(SystemClock(), asyncio.Event(), 0.01) is False

    run(main)
