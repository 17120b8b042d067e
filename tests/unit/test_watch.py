"""list_then_watch (and the TaskCache built on it) against a real etcd: the first list, events,
a compaction between list and watch (re-list, consistent state), a compaction under a live
watch, a broken stream (backoff on a FakeClock, re-list), and a callback's exception."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aetcd import rpc
from structlog.testing import capture_logs

from peerd.clock import FakeClock
from peerd.coord.etcd import KV, Etcd, Event, prefix_end
from peerd.coord.keys import Keys
from peerd.coord.store import TaskCache, TaskStore
from peerd.coord.watch import list_prefix, list_then_watch
from peerd.core.backoff import Backoff
from peerd.core.placement import COMMON
from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.errors import Unavailable
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import run_async, until

TIMEOUT_S = 20.0
POLL_S = 0.01
"""How often a condition that waits on etcd is checked (seconds)."""


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return run_async(main, TIMEOUT_S)


E = TypeVar("E", bound=Etcd)


class Mirror:
    """A consumer of list_then_watch: its copy of the prefix, and what it was told, in order."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.state: dict[str, bytes] = {}
        self.revision = 0
        self.lists: list[tuple[dict[str, bytes], int]] = []
        self.events: list[tuple[str, str, int]] = []

    def on_list(self, kvs: list[KV], revision: int) -> None:
        self.state = {kv.key[len(self.prefix) :].decode(): kv.value for kv in kvs}
        self.revision = revision
        self.lists.append((dict(self.state), revision))

    def follow(self, e: Etcd, clock: FakeClock) -> Coroutine[Any, Any, None]:
        """list_then_watch into this mirror: backoff 0.2 s doubling to 2 s, events ``test_*``."""
        return list_then_watch(
            e, self.prefix, self.on_list, self.on_event, Backoff(0.2, 2.0), clock, "test"
        )

    def on_event(self, ev: Event) -> None:
        name = ev.kv.key[len(self.prefix) :].decode()
        assert ev.revision > self.revision, "events arrive in revision order after the list"
        if ev.kind == "put":
            self.state[name] = ev.kv.value
        else:
            self.state.pop(name, None)
        self.revision = ev.revision
        self.events.append((ev.kind, name, ev.revision))


async def etcd_state(e: Etcd, prefix: bytes) -> tuple[dict[str, bytes], int]:
    kvs, _, revision = await e.range(prefix, prefix_end(prefix))
    return {kv.key[len(prefix) :].decode(): kv.value for kv in kvs}, revision


async def delete(e: Etcd, key: bytes) -> None:
    op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
    await e.txn(rpc.TxnRequest(success=[op]))


async def compact_all(e: Etcd) -> int:
    """Compact etcd at its current revision (physical: done when this returns)."""
    _, _, revision = await e.range(b"\0", count_only=True)
    assert await e.compact(revision)
    return revision


class ChangeBeforeFirstWatch(Etcd):
    """The real client, plus a hook that runs ``change`` once, right before the first watch is
    opened: the window between a list and its watch, where a compaction makes the watch fail."""

    def __init__(self, endpoints: list[str], change: Callable[[Etcd], Awaitable[None]]) -> None:
        super().__init__(endpoints)
        self._change: Callable[[Etcd], Awaitable[None]] | None = change
        self.watch_starts: list[int] = []

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> AsyncIterator[Event]:
        self.watch_starts.append(start_revision)
        change, self._change = self._change, None
        if change is not None:
            await change(self)
        async for ev in super().watch_prefix(prefix, start_revision):
            yield ev


@contextlib.asynccontextmanager
async def connected(e: E) -> AsyncIterator[E]:
    """``e``, connected, and closed on the way out."""
    await e.connect()
    try:
        yield e
    finally:
        await e.close()


@contextlib.asynccontextmanager
async def running(coro: Awaitable[None]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_compaction_between_list_and_watch_relists_the_whole_state(
    etcd_endpoint: str, cluster_name: str
) -> None:
    """Compaction is etcd-wide, but it only drops history older than this test; every other
    test lists before it watches."""
    prefix = f"/peerd/{cluster_name}/watched/".encode()

    async def change(e: Etcd) -> None:  # after the first list, before its watch
        await e.put(prefix + b"b", b"2")
        await delete(e, prefix + b"c")
        await e.put(prefix + b"d", b"1")
        await compact_all(e)

    async def main() -> None:
        async with connected(ChangeBeforeFirstWatch([etcd_endpoint], change)) as e:
            clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
            mirror = Mirror(prefix)
            for name in (b"a", b"b", b"c"):
                await e.put(prefix + name, b"1")
            await e.put(b"/peerd/" + cluster_name.encode() + b"/elsewhere", b"x")  # not watched
            with capture_logs() as logs:
                async with running(mirror.follow(e, clock)):
                    await until(lambda: len(mirror.lists) == 2, POLL_S)
                    first, second = mirror.lists
                    assert first[0] == {"a": b"1", "b": b"1", "c": b"1"}
                    assert second == await etcd_state(e, prefix)  # the whole state, re-listed
                    assert second[0] == {"a": b"1", "b": b"2", "d": b"1"}
                    assert e.watch_starts[:2] == [first[1] + 1, second[1] + 1]
                    assert mirror.events == []  # nothing in between: the re-list covers it

                    await e.put(prefix + b"e", b"1")
                    await e.put(prefix + b"a", b"2")
                    want = await etcd_state(e, prefix)
                    await until(lambda: (mirror.state, mirror.revision) == want, POLL_S)
            compacted = [x for x in logs if x["event"] == "test_watch_compacted_relisting"]
            assert len(compacted) == 1 and compacted[0]["compact_revision"] > first[1] + 1
            assert [x for x in logs if x["event"] == "test_watch_broken"] == []
            assert clock.sleepers == 0  # a compaction re-lists at once, without backoff
            assert [kind for kind, _, _ in mirror.events] == ["put", "put"]

    run(main)


def test_compaction_under_a_live_watch_changes_nothing(
    etcd_endpoint: str, cluster_name: str
) -> None:
    """A watch that is caught up keeps going when older history is compacted away."""
    prefix = f"/peerd/{cluster_name}/live/".encode()

    async def main() -> None:
        async with connected(Etcd([etcd_endpoint])) as e:
            mirror = Mirror(prefix)
            clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
            await e.put(prefix + b"a", b"1")
            async with running(mirror.follow(e, clock)):
                await until(lambda: len(mirror.lists) == 1, POLL_S)
                await e.put(prefix + b"b", b"1")
                await until(lambda: len(mirror.events) == 1, POLL_S)
                await compact_all(e)
                await e.put(prefix + b"c", b"1")
                want = await etcd_state(e, prefix)
                await until(lambda: (mirror.state, mirror.revision) == want, POLL_S)
            assert len(mirror.lists) == 1
            assert [name for _, name, _ in mirror.events] == ["b", "c"]

    run(main)


def test_a_callback_exception_ends_the_loop(etcd_endpoint: str, cluster_name: str) -> None:
    prefix = f"/peerd/{cluster_name}/bad/".encode()

    def bad_event(ev: Event) -> None:
        raise KeyError(ev.kv.key)

    async def main() -> None:
        async with connected(Etcd([etcd_endpoint])) as e:
            mirror = Mirror(prefix)
            clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
            loop = asyncio.ensure_future(
                list_then_watch(e, prefix, mirror.on_list, bad_event, Backoff(1, 1), clock, "t")
            )
            await until(lambda: len(mirror.lists) == 1, POLL_S)
            await e.put(prefix + b"x", b"1")
            with pytest.raises(KeyError):
                await loop
            assert clock.sleepers == 0  # not retried

    run(main)


def test_task_cache_relists_after_compaction_and_tells_its_listeners(
    etcd_endpoint: str, cluster_name: str
) -> None:
    keys = Keys(f"/peerd/{cluster_name}/")

    def spec(task_id: str, description: str = "") -> pb.TaskSpec:
        s = pb.TaskSpec(id=task_id, description=description)
        s.schedule.cron = "* * * * *"
        return s

    async def change(e: Etcd) -> None:
        store = TaskStore(e, keys)
        await store.create([spec("t3")])
        await store.delete("t1")
        await compact_all(e)

    async def main() -> None:
        async with connected(ChangeBeforeFirstWatch([etcd_endpoint], change)) as e:
            store = TaskStore(e, keys)
            cache = TaskCache(e, keys, FakeClock(datetime(2030, 1, 1, tzinfo=UTC)))
            heard: list[tuple[str, str | None]] = []
            cache.on_change(
                lambda tid, s: heard.append((tid, None if s is None else s.description))
            )
            await store.create([spec("t1"), spec("t2")])
            async with running(cache.run()):
                await until(lambda: heard.count(("", None)) == 2, POLL_S)
                assert sorted(cache.tasks) == ["t2", "t3"] and cache.ready.is_set()
                await store.update("t2", lambda s: setattr(s, "description", "changed"))
                await store.delete("t3")
                await until(lambda: len(heard) == 4, POLL_S)
            assert heard == [("", None), ("", None), ("t2", "changed"), ("t3", None)]
            assert list(cache.tasks) == ["t2"]
            assert cache.tasks["t2"].description == "changed"
            _, revision = await etcd_state(e, keys.tasks)
            assert cache.revision == revision

    run(main)


# -- a broken stream: needs an etcd of its own to kill -----------------------------------------


@pytest.fixture
def own_etcd(etcd_server: EmbeddedEtcd, tmp_path: Path) -> Iterator[EmbeddedEtcd]:
    """A private etcd (``etcd_server`` only to skip when etcd is not installed)."""
    server = EmbeddedEtcd(tmp_path / "etcd", log_path=tmp_path / "etcd.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def put_when_up(e: Etcd, key: bytes, value: bytes) -> None:
    """Put, retrying while the channel reconnects (bounded by the test's hard timeout)."""
    while True:
        try:
            await e.put(key, value)
            return
        except Unavailable:
            await asyncio.sleep(0.05)


async def advance_whenever_asleep(clock: FakeClock) -> None:
    """Move the clock to each sleeper's deadline as soon as one sleeps (until cancelled)."""
    while True:
        await clock.wait_for_sleepers(1)
        clock.advance(max(0.0, clock.deadlines()[0] - clock.monotonic()))
        await asyncio.sleep(0)


def test_broken_stream_backs_off_on_the_clock_and_relists(own_etcd: EmbeddedEtcd) -> None:
    prefix = b"/peerd/outage/"

    async def main() -> None:
        async with connected(Etcd([own_etcd.endpoint], timeout_s=2.0)) as e:
            mirror = Mirror(prefix)
            clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
            await e.put(prefix + b"x", b"1")
            with capture_logs() as logs:
                async with running(mirror.follow(e, clock)):
                    await until(lambda: len(mirror.lists) == 1, POLL_S)
                    await e.put(prefix + b"y", b"1")
                    await until(lambda: len(mirror.events) == 1, POLL_S)

                    await asyncio.to_thread(own_etcd.kill)
                    await clock.wait_for_sleepers(1)  # backing off, on the fake clock only
                    assert clock.deadlines() == [pytest.approx(0.2)]
                    await asyncio.to_thread(own_etcd.start)
                    await put_when_up(e, prefix + b"z", b"1")  # changed while not watched
                    await delete(e, prefix + b"x")
                    assert len(mirror.lists) == 1  # nothing happens until the clock moves

                    async with running(advance_whenever_asleep(clock)):
                        await until(lambda: len(mirror.lists) == 2, POLL_S)
                    assert mirror.lists[1] == await etcd_state(e, prefix)
                    assert mirror.lists[1][0] == {"y": b"1", "z": b"1"}
                    await e.put(prefix + b"w", b"1")
                    want = await etcd_state(e, prefix)
                    await until(lambda: (mirror.state, mirror.revision) == want, POLL_S)
            broken = [x for x in logs if x["event"] == "test_watch_broken"]
            delays = [x["retry_in_s"] for x in broken]
            assert delays[:1] == [pytest.approx(0.2)]  # the stream broke at least once
            assert delays == pytest.approx([min(2.0, 0.2 * 2**i) for i in range(len(delays))])
            assert all(x["log_level"] == "warning" for x in broken)
            assert [name for _, name, _ in mirror.events] == ["y", "w"]

    run(main)


def test_task_cache_keeps_placements_of_listed_and_changed_tasks(
    etcd_endpoint: str, cluster_name: str
) -> None:
    """Only uncommon placements are stored per task: the view answers COMMON for the others,
    through a list, updates that make a placement common or uncommon, and a delete."""
    keys = Keys(f"/peerd/{cluster_name}/")

    def spec(task_id: str, paused: bool = False) -> pb.TaskSpec:
        s = pb.TaskSpec(id=task_id, paused=paused)
        s.schedule.cron = "* * * * *"
        return s

    async def main() -> None:
        async with connected(Etcd([etcd_endpoint])) as e:
            store = TaskStore(e, keys)
            await store.create([spec("a", paused=True), spec("b")])
            cache = TaskCache(e, keys, FakeClock(datetime(2030, 1, 1, tzinfo=UTC)))
            heard: list[str] = []
            cache.on_change(lambda tid, _: heard.append(tid))
            async with running(cache.run()):
                await until(lambda: cache.ready.is_set(), POLL_S)
                assert cache.placements["a"].paused and cache.placements["b"] is COMMON
                await store.update("a", lambda s: setattr(s, "paused", False))
                await store.update("b", lambda s: setattr(s, "node_selector", "zone=x"))
                await until(lambda: len(heard) == 3, POLL_S)
                assert cache.placements["a"] is COMMON
                assert cache.placements["b"].node_selector == "zone=x"
                await store.delete("b")
                await until(lambda: len(heard) == 4, POLL_S)
            assert sorted(cache.placements) == ["a"] and "b" not in cache.placements
            assert dict(cache.placements) == {"a": COMMON}

    run(main)


def test_a_list_converted_in_chunks_is_the_whole_prefix_in_key_order(
    etcd_endpoint: str, cluster_name: str
) -> None:
    """list_prefix yields to the loop between chunks and still gives exactly one read."""
    prefix = f"/peerd/{cluster_name}/chunked/".encode()

    async def main() -> None:
        async with connected(Etcd([etcd_endpoint])) as e:
            for i in range(23):
                await e.put(prefix + f"k{i:02d}".encode(), f"v{i}".encode())
            await e.put(prefix[:-1] + b"0", b"outside")  # just past the prefix
            kvs, revision = await list_prefix(e, prefix, chunk=5)
            whole, _, at = await e.range(prefix, prefix_end(prefix))
            assert revision == at and kvs == whole
            assert [kv.key for kv in kvs] == [prefix + f"k{i:02d}".encode() for i in range(23)]
            assert [kv.value for kv in kvs] == [f"v{i}".encode() for i in range(23)]

    run(main)
