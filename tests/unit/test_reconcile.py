"""peerd.engine.reconcile: the owned set follows the members, in steps that yield the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from peerd.core.placement import Placement
from peerd.core.ring import owner
from peerd.engine.ownership import OwnershipView
from peerd.engine.reconcile import INLINE_TASKS, Reconciler
from tests.unit.test_ownership import Members


class NoExclusions:
    def excluded(self) -> set[str]:
        return set()

    def on_change(self, fn: Callable[[], None]) -> None:
        pass


class TickClock:
    """Monotonic time that advances 1 ms at each reading (a pass yields every 20 readings)."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def monotonic(self) -> float:
        self.now_s += 0.001
        return self.now_s


def setup(n: int, *members: str) -> tuple[Reconciler, Members, set[str]]:
    placements = {f"t{i:05d}": Placement() for i in range(n)}
    placements["paused"] = Placement(paused=True)
    view = Members(*members)
    ownership = OwnershipView("a", view, NoExclusions())
    ownership.refresh()
    owned: set[str] = set()
    rec = Reconciler(
        "a",
        placements,
        ownership,
        lambda: owned,
        owned.add,
        owned.discard,
        TickClock(),  # type: ignore[arg-type]
    )
    ownership.on_change(rec.request)
    return rec, view, owned


async def settle(rec: Reconciler) -> int:
    """Run the loop until the pass is done; returns how many times it yielded meanwhile."""
    turns = 0
    while rec.busy:
        await asyncio.sleep(0)
        turns += 1
    return turns


def test_a_small_view_is_reconciled_at_once() -> None:
    rec, _, owned = setup(100, "a", "b")
    rec.request()
    assert not rec.busy
    assert owned == {t for t in rec.placements if t != "paused" and owner(t, ["a", "b"]) == "a"}
    assert rec.owners["paused"] is None


def test_a_large_view_is_reconciled_in_steps_and_follows_the_members() -> None:
    async def go() -> None:
        n = INLINE_TASKS * 3
        rec, members, owned = setup(n, "a", "b", "c")
        rec.request()
        assert rec.busy and not owned  # nothing done before the loop runs it
        # the clock advances 1 ms per 64 tasks: a yield every 20 ms, i.e. every 1,280 tasks
        assert await settle(rec) >= n // 1280
        ids = [t for t in rec.placements if t != "paused"]
        assert owned == {t for t in ids if owner(t, ["a", "b", "c"]) == "a"}
        before = dict(rec.owners)
        members.set("a", "b")  # c leaves: only its tasks move
        await settle(rec)
        moved = [t for t in ids if rec.owners[t] != before[t]]
        assert moved and all(before[t] == "c" for t in moved)
        assert owned == {t for t in ids if owner(t, ["a", "b"]) == "a"}
        assert rec.passes == 2

    asyncio.run(go())


def test_a_change_during_a_pass_restarts_it() -> None:
    async def go() -> None:
        rec, members, owned = setup(INLINE_TASKS * 3, "a", "b", "c")
        rec.request()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        members.set("a", "b")
        await settle(rec)
        ids = [t for t in rec.placements if t != "paused"]
        assert owned == {t for t in ids if owner(t, ["a", "b"]) == "a"}
        assert rec.passes == 1  # the first pass never finished

    asyncio.run(go())


def test_place_releases_a_task_gone_from_the_view() -> None:
    rec, _, owned = setup(10, "a")
    rec.request()
    assert "t00003" in owned
    del rec.placements["t00003"]  # type: ignore[attr-defined]
    assert rec.place("t00003") is False
    assert "t00003" not in owned and "t00003" not in rec.owners


def test_a_pass_ends_with_the_tasks_created_and_deleted_during_it() -> None:
    async def go() -> None:
        rec, _, owned = setup(INLINE_TASKS * 3, "a")
        rec.request()
        await asyncio.sleep(0)  # the first step placed some tasks
        placements = rec.placements
        first = next(t for t in placements if t in owned)
        del placements[first]  # type: ignore[attr-defined]  # deleted, its event not seen
        placements["new"] = Placement()  # type: ignore[index]  # created, its event placed it
        assert rec.place("new")
        await settle(rec)
        assert rec.passes == 1
        assert first not in owned and first not in rec.owners  # released at the end
        assert "new" in owned and rec.owners["new"] == "a"  # not in the pass, still known

    asyncio.run(go())
