"""PriorityLimiter and Pools: admission order under saturation, cancellation, live limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from peerd.node_config import NodeConfig
from peerd.runner.pools import Pools, PriorityLimiter
from tests.helpers import run_async

TIMEOUT_S = 3.0


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return run_async(main, TIMEOUT_S)


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(10):
        await asyncio.sleep(0)


class Holder:
    """A task that holds a limiter slot until released; records when it got in."""

    def __init__(
        self,
        enter: Callable[[], Any],
        name: str,
        order: list[str],
        *,
        hold: bool = True,
    ) -> None:
        self.name = name
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.entered = asyncio.Event()
        self._order = order
        self.task = asyncio.create_task(self._run(enter))

    async def _run(self, enter: Callable[[], Any]) -> None:
        async with enter():
            self._order.append(self.name)
            self.entered.set()
            await self.release.wait()


def test_fast_path_and_limit() -> None:
    async def main() -> None:
        lim = PriorityLimiter(2)
        order: list[str] = []
        a = Holder(lambda: lim.slot(0, 0.0), "a", order)
        b = Holder(lambda: lim.slot(0, 0.0), "b", order)
        c = Holder(lambda: lim.slot(0, 0.0), "c", order)
        await settle()
        assert order == ["a", "b"]
        assert (lim.in_use, lim.waiting, lim.limit) == (2, 1, 2)
        a.release.set()
        await c.entered.wait()
        assert order == ["a", "b", "c"]
        b.release.set()
        c.release.set()
        await asyncio.gather(a.task, b.task, c.task)
        assert (lim.in_use, lim.waiting) == (0, 0)

    run(main)


def test_waiters_admitted_by_priority_then_fire_time_then_arrival() -> None:
    async def main() -> list[str]:
        lim = PriorityLimiter(1)
        order: list[str] = []
        blocker = Holder(lambda: lim.slot(0, 0.0), "blocker", order)
        await settle()
        waiters = []
        # (name, priority, fire_at_s), arriving in this order.
        for name, prio, fire in [
            ("low-early", -5, 100.0),
            ("mid-late", 0, 300.0),
            ("high", 50, 400.0),
            ("mid-early", 0, 200.0),
            ("mid-early-2", 0, 200.0),  # same key: after its twin (FIFO)
            ("top", 100, 999.0),
        ]:
            # Each leaves as soon as it gets in, so the next one is admitted.
            enter = lambda p=prio, f=fire: lim.slot(p, f)  # noqa: E731
            waiters.append(Holder(enter, name, order, hold=False))
            await settle()
        assert lim.waiting == 6
        blocker.release.set()
        await asyncio.gather(blocker.task, *(w.task for w in waiters))
        return order

    assert run(main) == [
        "blocker",
        "top",
        "high",
        "mid-early",
        "mid-early-2",
        "mid-late",
        "low-early",
    ]


def test_newcomer_does_not_overtake_waiters_when_a_slot_frees() -> None:
    async def main() -> list[str]:
        lim = PriorityLimiter(1)
        order: list[str] = []
        a = Holder(lambda: lim.slot(0, 0.0), "a", order)
        await settle()
        b = Holder(lambda: lim.slot(0, 5.0), "b", order)
        await settle()
        a.release.set()
        # "c" asks in the same loop iteration the slot frees; the waiter "b" already owns it.
        c = Holder(lambda: lim.slot(100, 0.0), "c", order)
        await b.entered.wait()
        b.release.set()
        await c.entered.wait()
        c.release.set()
        await asyncio.gather(a.task, b.task, c.task)
        return order

    assert run(main) == ["a", "b", "c"]


def test_cancelled_waiter_leaves_queue_and_leaks_nothing() -> None:
    async def main() -> None:
        lim = PriorityLimiter(1)
        order: list[str] = []
        a = Holder(lambda: lim.slot(0, 0.0), "a", order)
        await settle()
        doomed = Holder(lambda: lim.slot(100, 0.0), "doomed", order)
        b = Holder(lambda: lim.slot(0, 0.0), "b", order)
        await settle()
        assert lim.waiting == 2
        doomed.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed.task
        assert lim.waiting == 1
        assert lim.in_use == 1
        a.release.set()
        await b.entered.wait()
        assert order == ["a", "b"]
        b.release.set()
        await asyncio.gather(a.task, b.task)
        assert (lim.in_use, lim.waiting) == (0, 0)

    run(main)


def test_waiter_cancelled_after_being_granted_returns_the_slot() -> None:
    async def main() -> None:
        lim = PriorityLimiter(1)
        order: list[str] = []
        held = lim.slot(0, 0.0)
        await held.__aenter__()
        granted = Holder(lambda: lim.slot(0, 0.0), "granted", order)
        c = Holder(lambda: lim.slot(0, 0.0), "c", order)
        await settle()
        # Free the slot and cancel the waiter it goes to before that waiter can resume
        # (__aexit__ releases without yielding to the loop).
        await held.__aexit__(None, None, None)
        assert lim.in_use == 1 and lim.waiting == 1  # handed to "granted", not yet running
        granted.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await granted.task
        await c.entered.wait()
        assert order == ["c"]
        assert lim.in_use == 1
        c.release.set()
        await c.task
        assert (lim.in_use, lim.waiting) == (0, 0)

    run(main)


def test_body_exception_and_cancellation_release_the_slot() -> None:
    async def main() -> None:
        lim = PriorityLimiter(1)
        with pytest.raises(RuntimeError):
            async with lim.slot(0, 0.0):
                raise RuntimeError("boom")
        assert lim.in_use == 0
        order: list[str] = []
        h = Holder(lambda: lim.slot(0, 0.0), "h", order)
        await h.entered.wait()
        h.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await h.task
        assert lim.in_use == 0

    run(main)


def test_raising_the_limit_admits_waiters_at_once() -> None:
    async def main() -> None:
        lim = PriorityLimiter(1)
        order: list[str] = []
        hs = [Holder(lambda: lim.slot(0, 0.0), f"h{i}", order) for i in range(4)]
        await settle()
        assert (lim.in_use, lim.waiting) == (1, 3)
        lim.set_limit(3)
        await settle()
        assert order == ["h0", "h1", "h2"]
        assert (lim.in_use, lim.waiting, lim.limit) == (3, 1, 3)
        for h in hs:
            h.release.set()
        await asyncio.gather(*(h.task for h in hs))

    run(main)


def test_lowering_the_limit_lets_holders_finish_and_admits_below_it() -> None:
    async def main() -> None:
        lim = PriorityLimiter(3)
        order: list[str] = []
        hs = [Holder(lambda: lim.slot(0, 0.0), f"h{i}", order) for i in range(3)]
        await settle()
        lim.set_limit(1)
        late = Holder(lambda: lim.slot(0, 0.0), "late", order)
        await settle()
        assert (lim.in_use, lim.waiting) == (3, 1)  # nobody was evicted
        hs[0].release.set()
        await hs[0].task
        hs[1].release.set()
        await hs[1].task
        await settle()
        assert not late.entered.is_set()  # 1 in use == the new limit
        hs[2].release.set()
        await late.entered.wait()
        assert lim.in_use == 1
        late.release.set()
        await asyncio.gather(hs[2].task, late.task)

    run(main)


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        PriorityLimiter(0)
    lim = PriorityLimiter(1)
    with pytest.raises(ValueError):
        lim.set_limit(-1)
    assert lim.limit == 1


# --- Pools ---------------------------------------------------------------------------------------


def cfg(**kw: Any) -> NodeConfig:
    base: dict[str, Any] = {
        "node_id": "n1",
        "max_concurrent_runs": 3,
        "max_http_runs": 2,
        "max_shell_runs": 1,
        "max_python_runs": 2,
    }
    base.update(kw)
    return NodeConfig(**base)


def test_pools_take_limits_from_config_and_apply_updates() -> None:
    pools = Pools(cfg())
    assert pools.node.limit == 3
    assert {k: p.limit for k, p in pools.kinds.items()} == {"http": 2, "shell": 1, "python": 2}

    pools.apply(cfg(max_concurrent_runs=10, max_http_runs=7, max_shell_runs=4, max_python_runs=5))

    assert pools.node.limit == 10
    assert {k: p.limit for k, p in pools.kinds.items()} == {"http": 7, "shell": 4, "python": 5}


def test_full_kind_pool_does_not_hold_node_slots() -> None:
    async def main() -> None:
        pools = Pools(cfg())
        order: list[str] = []
        s1 = Holder(lambda: pools.slot("shell", 0, 0.0), "shell-1", order)
        s2 = Holder(lambda: pools.slot("shell", 0, 0.0), "shell-2", order)  # waits: shell full
        await settle()
        assert pools.node.in_use == 1  # the waiting shell run holds no node slot
        h1 = Holder(lambda: pools.slot("http", 0, 0.0), "http-1", order)
        h2 = Holder(lambda: pools.slot("http", 0, 0.0), "http-2", order)
        await settle()
        assert order == ["shell-1", "http-1", "http-2"]
        assert pools.node.in_use == 3
        s1.release.set()
        await s1.task
        await s2.entered.wait()
        for h in (s2, h1, h2):
            h.release.set()
        await asyncio.gather(s2.task, h1.task, h2.task)
        assert pools.node.in_use == 0
        assert all(p.in_use == 0 for p in pools.kinds.values())

    run(main)


def test_node_pool_orders_kinds_by_priority() -> None:
    async def main() -> list[str]:
        pools = Pools(cfg(max_concurrent_runs=1))
        order: list[str] = []
        first = Holder(lambda: pools.slot("http", 0, 0.0), "first", order)
        await settle()
        low = Holder(lambda: pools.slot("python", -10, 1.0), "python-low", order)
        high = Holder(lambda: pools.slot("shell", 10, 2.0), "shell-high", order)
        await settle()
        first.release.set()
        for h in (high, low):
            await h.entered.wait()
            h.release.set()
        await asyncio.gather(first.task, low.task, high.task)
        return order

    assert run(main) == ["first", "shell-high", "python-low"]


def test_cancelled_while_waiting_for_node_slot_returns_kind_slot() -> None:
    async def main() -> None:
        pools = Pools(cfg(max_concurrent_runs=1))
        order: list[str] = []
        a = Holder(lambda: pools.slot("http", 0, 0.0), "a", order)
        await settle()
        b = Holder(lambda: pools.slot("http", 0, 0.0), "b", order)  # holds http, waits node
        await settle()
        assert pools.kinds["http"].in_use == 2
        b.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b.task
        assert pools.kinds["http"].in_use == 1
        assert pools.node.waiting == 0
        a.release.set()
        await a.task
        assert pools.node.in_use == 0 and pools.kinds["http"].in_use == 0

    run(main)


def test_unknown_kind_is_rejected() -> None:
    async def main() -> None:
        pools = Pools(cfg())
        with pytest.raises(ValueError, match="no executor pool"):
            async with pools.slot("ftp", 0, 0.0):
                pass

    run(main)
