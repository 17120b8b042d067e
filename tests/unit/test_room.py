"""The fire loop's room (:meth:`peerd.engine.fireloop.FireLoop.room_per_kind`): runs claimed
ahead that wait for their fire instant take no room of the pools, and every run counts against
the node's configured room."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from peerd.clock import FakeClock
from peerd.config import NodeConfig
from peerd.core.records import claim_record
from peerd.engine.fireloop import QUEUE_FACTOR, FireLoop
from peerd.engine.registry import Run, RunRegistry
from peerd.runner.pools import Pools
from peerd.v1 import scheduler_pb2 as pb

T0 = datetime(2026, 11, 30, tzinfo=UTC)


def fire_loop(cfg: NodeConfig, registry: RunRegistry) -> FireLoop:
    """A fire loop with the parts the room needs (settings, pools, registry); none other used."""
    unused = cast(Any, None)
    return FireLoop(
        "n1", lambda: cfg, unused, unused, unused, registry, Pools(cfg), unused, unused, unused,
        unused, asyncio.Event(), FakeClock(T0),
    )  # fmt: skip


def python_runs(registry: RunRegistry, n: int, first: int = 0) -> list[Run]:
    """``n`` python runs registered, of tasks ``t<first>``... (their execution does nothing)."""

    async def idle(_: Run) -> None:
        return None

    runs = []
    for i in range(first, first + n):
        rec = claim_record(f"t{i}", T0, "n1", 7, T0)
        run = Run(pb.TaskSpec(id=f"t{i}"), rec, kind="python")
        registry.spawn(run, idle)
        runs.append(run)
    return runs


def test_runs_waiting_for_their_fire_instant_take_no_room() -> None:
    async def body() -> None:
        registry = RunRegistry()
        loop = fire_loop(NodeConfig(node_id="n1", max_python_runs=4), registry)
        full = QUEUE_FACTOR * 4
        runs = python_runs(registry, full)
        assert loop.room_per_kind()["python"] == 0  # all due: the pool's room is taken
        for run in runs:
            registry.waiting_instant(run, True)
        # All claimed ahead: none of the in-flight room is taken, but the kind's budget for
        # runs claimed ahead (the same size) is.
        assert loop.room_per_kind()["python"] == 0
        for run in runs[:3]:
            registry.waiting_instant(run, False)  # their fire instant came
        assert loop.room_per_kind()["python"] == full - 5  # 3 in flight, 5 still ahead
        assert registry.in_flight("python") == registry.in_flight() == 3
        registry.transition(runs[0], "abandon")  # leaves: counted once, never below zero
        registry.transition(runs[5], "abandon")
        assert registry.in_flight() == 2 and registry.active() == full - 2

    asyncio.run(body())


def test_every_run_counts_against_the_configured_room_of_the_node() -> None:
    async def body() -> None:
        registry = RunRegistry()
        cfg = NodeConfig(node_id="n1", max_python_runs=64, max_concurrent_runs=5)
        loop = fire_loop(cfg, registry)
        for run in python_runs(registry, 7):
            registry.waiting_instant(run, True)
        assert loop.room_per_kind()["python"] == QUEUE_FACTOR * 5 - 7

    asyncio.run(body())


def test_load_counts_the_runs_that_count_against_capacity() -> None:
    """``peerd cluster`` and Ping answers show active runs against the capacity: runs claimed
    ahead that wait for their fire instant are in neither, so active never exceeds capacity
    while the node is not saturated (before, every run in the registry was shown)."""

    async def body() -> None:
        registry = RunRegistry()
        cfg = NodeConfig(node_id="n1", max_python_runs=4, max_concurrent_runs=4)
        loop = fire_loop(cfg, registry)
        loop.planner = cast(Any, SimpleNamespace(backlog=0))
        runs = python_runs(registry, QUEUE_FACTOR * 4 + 6)
        for run in runs:
            registry.waiting_instant(run, True)
        for run in runs[:2]:
            registry.waiting_instant(run, False)
        load = loop.load()
        assert (load.active, load.backlog) == (2, 0)
        assert load.active <= load.capacity < len(registry)

    asyncio.run(body())


def test_a_burst_claims_ahead_no_more_than_the_pool_can_queue() -> None:
    """Runs claimed ahead of one kind are bounded by that kind's room (:data:`QUEUE_FACTOR` x
    its limit), not only by the node's: 400 shell tasks due at one instant with 4 shell slots
    are claimed 8 at a time, and the rest wait in the backlog, where the misfire threshold and
    the catch-up policy apply (a run claimed ahead is never checked again; it would queue behind
    4 slots and start arbitrarily late)."""

    async def body() -> None:
        registry = RunRegistry()
        cfg = NodeConfig(node_id="n1", max_python_runs=4, max_concurrent_runs=200)
        loop = fire_loop(cfg, registry)
        claimed = 0
        while (room := loop.room_per_kind()["python"]) > 0 and claimed < 400:
            for run in python_runs(registry, room, first=claimed):
                registry.waiting_instant(run, True)
            claimed += room
        assert claimed == QUEUE_FACTOR * 4

    asyncio.run(body())
