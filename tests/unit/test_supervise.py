"""Supervisor: restart with backoff, health degraded and recovered, fatal errors, cancellation
and stop, all driven by a FakeClock (no real time passes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from peerd.clock import FakeClock
from peerd.core.backoff import Backoff
from peerd.errors import DuplicateNode
from peerd.supervise import HEALTHY_AFTER_S, RESTART_INITIAL_S, RESTART_MAX_S, Supervisor
from tests.helpers import run_async, until

TIMEOUT_S = 3.0


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return run_async(main, TIMEOUT_S)


class Scripted:
    """A loop whose every incarnation waits for the test to tell it how to end."""

    def __init__(self) -> None:
        self.starts = 0
        self.ended: list[str] = []  # how each incarnation ended ("cancelled" via finally)
        self._orders: asyncio.Queue[BaseException | None] = asyncio.Queue()

    def factory(self) -> Any:
        return self._body()

    async def _body(self) -> None:
        self.starts += 1
        try:
            order = await self._orders.get()
        except asyncio.CancelledError:
            self.ended.append("cancelled")
            raise
        if order is None:
            self.ended.append("returned")
            return
        self.ended.append(type(order).__name__)
        raise order

    def end(self, order: BaseException | None) -> None:
        self._orders.put_nowait(order)


async def starts(loop: Scripted, n: int) -> None:
    """Wait until ``loop`` has been started ``n`` times."""
    await until(lambda: loop.starts == n)


async def crashes(loop: Scripted, n: int) -> None:
    """Wait until ``n`` incarnations of ``loop`` ended. The supervisor handles an ending in the
    same step (the loop runs inside its task), so its restart sleep is registered by then."""
    await until(lambda: len(loop.ended) == n)


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def new(clock: FakeClock, **kw: Any) -> Supervisor:
    kw.setdefault("backoff", lambda: Backoff(1.0, 4.0))
    kw.setdefault("healthy_after_s", 10.0)
    return Supervisor(clock, **kw)


def test_defaults_are_the_documented_figures() -> None:
    async def main() -> None:
        clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
        sup = Supervisor(clock)
        loop = Scripted()
        sup.spawn("l", loop.factory)
        await until(lambda: loop.starts == 1)
        delays = []
        for n in range(1, 8):
            loop.end(RuntimeError("x"))
            await crashes(loop, n)
            delays.append(clock.deadlines()[0] - clock.monotonic())
            clock.advance(delays[-1])
            await starts(loop, n + 1)
        assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        assert (RESTART_INITIAL_S, RESTART_MAX_S, HEALTHY_AFTER_S) == (1.0, 30.0, 10.0)
        await sup.stop()

    run(main)


def test_crash_degrades_restarts_after_backoff_and_recovers() -> None:
    async def main() -> None:
        clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
        sup = new(clock)
        seen: list[tuple[bool, dict[str, Exception]]] = []
        sup.on_change(lambda: seen.append((sup.healthy, dict(sup.failures))))
        loop = Scripted()
        boom = RuntimeError("boom")
        with capture_logs() as logs:
            sup.spawn("members", loop.factory)
            await until(lambda: loop.starts == 1)
            assert sup.healthy and sup.running() == ["members"]

            loop.end(boom)
            await clock.wait_for_sleepers(1)  # the supervisor sleeps its backoff
            assert not sup.healthy and sup.failures == {"members": boom}
            assert seen == [(False, {"members": boom})]
            assert clock.deadlines() == [1.0]
            crashed = events(logs, "loop_crashed")
            assert len(crashed) == 1
            assert crashed[0]["loop"] == "members" and crashed[0]["exc_info"] is boom
            assert crashed[0]["restart_in_s"] == 1.0 and crashed[0]["log_level"] == "error"

            clock.advance(0.5)
            await asyncio.sleep(0)
            assert loop.starts == 1  # not before the delay
            clock.advance(0.5)
            await until(lambda: loop.starts == 2)
            await clock.wait_for_sleepers(1)  # the healthy-again timer
            assert clock.deadlines() == [11.0]
            assert not sup.healthy  # running again is not healthy yet

            clock.advance(9.999)
            await asyncio.sleep(0)
            assert not sup.healthy
            clock.advance(0.001)
            await until(lambda: sup.healthy)
            assert sup.failures == {} and seen[-1] == (True, {})
            assert len(events(logs, "loop_recovered")) == 1
            assert loop.starts == 2 and loop.ended == ["RuntimeError"]
            assert len(events(logs, "loop_crashed")) == 1  # logged once per crash
            await sup.stop()
        assert loop.ended == ["RuntimeError", "cancelled"]

    run(main)


def test_crashes_in_a_row_lengthen_the_delay_until_the_loop_recovers() -> None:
    async def main() -> None:
        clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
        sup = new(clock)
        loop = Scripted()
        with capture_logs() as logs:
            sup.spawn("tasks", loop.factory)
            for n in range(1, 6):
                await starts(loop, n)
                loop.end(ValueError(f"crash {n}"))
                await crashes(loop, n)
                assert clock.sleepers == 1  # the restart delay (no recovery timer left)
                clock.advance(clock.deadlines()[0] - clock.monotonic())
            delays = [e["restart_in_s"] for e in events(logs, "loop_crashed")]
            assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
            assert str(sup.failures["tasks"]) == "crash 5"  # the last error

            await until(lambda: loop.starts == 6)
            await clock.wait_for_sleepers(1)
            clock.advance(10.0)  # runs long enough: healthy, backoff reset
            await until(lambda: sup.healthy)
            loop.end(ValueError("again"))
            await clock.wait_for_sleepers(1)
            assert events(logs, "loop_crashed")[-1]["restart_in_s"] == 1.0
            assert not sup.healthy
        await sup.stop()

    run(main)


def test_a_loop_that_returns_is_finished_and_clears_its_failure() -> None:
    async def main() -> None:
        clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
        sup = new(clock)
        loop = Scripted()
        with capture_logs() as logs:
            sup.spawn("once", loop.factory)
            await until(lambda: loop.starts == 1)
            loop.end(OSError("disk"))
            await clock.wait_for_sleepers(1)
            clock.advance(1.0)
            await until(lambda: loop.starts == 2)
            assert not sup.healthy
            loop.end(None)
            await until(lambda: sup.running() == [])
        assert sup.healthy and loop.starts == 2
        assert [e["loop"] for e in events(logs, "loop_finished")] == ["once"]
        assert clock.sleepers == 0  # no restart, no recovery timer left
        sup.spawn("once", loop.factory)  # the name is free again
        await until(lambda: loop.starts == 3)
        await sup.stop()

    run(main)


def test_cancelled_error_from_the_loop_is_not_a_crash() -> None:
    async def main() -> None:
        clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
        sup = new(clock)
        changes: list[bool] = []
        sup.on_change(lambda: changes.append(sup.healthy))
        loop = Scripted()
        with capture_logs() as logs:
            sup.spawn("watch", loop.factory)
            await until(lambda: loop.starts == 1)
            loop.end(asyncio.CancelledError())
            await until(lambda: sup.running() == [])
        assert sup.healthy and changes == [] and loop.starts == 1
        assert events(logs, "loop_crashed") == []
        assert [e["loop"] for e in events(logs, "loop_cancelled")] == ["watch"]
        assert clock.sleepers == 0
        await sup.stop()

    run(main)


def test_a_fatal_error_is_not_restarted_and_is_reported() -> None:
    async def main() -> None:
        clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
        sup = new(clock, fatal=(DuplicateNode,))
        keepalive, other = Scripted(), Scripted()
        fatal_wait = asyncio.create_task(sup.wait_fatal())
        with capture_logs() as logs:
            sup.spawn("keepalive", keepalive.factory)
            sup.spawn("other", other.factory)
            await until(lambda: keepalive.starts == 1 and other.starts == 1)
            dup = DuplicateNode("node id 'n1' is taken")
            keepalive.end(dup)
            assert await fatal_wait is dup
        assert sup.failures == {"keepalive": dup} and not sup.healthy
        assert sup.running() == ["other"] and keepalive.starts == 1
        assert [e["loop"] for e in events(logs, "loop_fatal")] == ["keepalive"]
        assert events(logs, "loop_crashed") == [] and clock.sleepers == 0
        await sup.stop()

    run(main)


def test_stop_cancels_running_and_backing_off_loops_and_waits() -> None:
    async def main() -> None:
        clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
        sup = new(clock)
        running, crashed = Scripted(), Scripted()
        with capture_logs() as logs:
            sup.spawn("running", running.factory)
            sup.spawn("crashed", crashed.factory)
            await until(lambda: running.starts == 1 and crashed.starts == 1)
            crashed.end(RuntimeError("x"))
            await clock.wait_for_sleepers(1)  # "crashed" waits for its restart
            await sup.stop()
        assert running.ended == ["cancelled"]  # its finally ran before stop() returned
        assert crashed.starts == 1 and clock.sleepers == 0
        assert sup.running() == []
        assert events(logs, "loop_cancelled") == []  # stop() is not news
        with pytest.raises(RuntimeError, match="stopped"):
            sup.spawn("late", running.factory)
        await sup.stop()  # twice is fine

    run(main)


def test_spawn_rejects_a_running_name_and_listener_bugs_are_contained() -> None:
    async def main() -> None:
        clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
        sup = new(clock)
        loop = Scripted()
        sup.spawn("a", loop.factory)
        with pytest.raises(ValueError, match="'a' is already running"):
            sup.spawn("a", loop.factory)

        def broken() -> None:
            raise KeyError("listener bug")

        later: list[bool] = []
        sup.on_change(broken)
        sup.on_change(lambda: later.append(sup.healthy))
        await until(lambda: loop.starts == 1)
        with capture_logs() as logs:
            loop.end(RuntimeError("x"))
            await clock.wait_for_sleepers(1)
        assert later == [False]  # the next listener still ran
        assert len(events(logs, "supervisor_listener_failed")) == 1
        clock.advance(1.0)
        await until(lambda: loop.starts == 2)  # and the loop was still restarted
        await sup.stop()

    run(main)


def test_a_factory_that_raises_is_a_crash_too() -> None:
    async def main() -> None:
        clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
        sup = new(clock)
        calls = 0

        def factory() -> Any:
            nonlocal calls
            calls += 1
            raise TypeError("bad wiring")

        with capture_logs() as logs:
            sup.spawn("bad", factory)
            await clock.wait_for_sleepers(1)
        assert calls == 1 and isinstance(sup.failures["bad"], TypeError)
        assert events(logs, "loop_crashed")[0]["restart_in_s"] == 1.0
        clock.advance(1.0)
        await until(lambda: calls == 2)
        await sup.stop()

    run(main)


def test_healthy_after_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="healthy_after_s must be >= 0, got -1"):
        Supervisor(FakeClock(datetime(2030, 1, 1, tzinfo=UTC)), healthy_after_s=-1)
