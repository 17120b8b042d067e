"""Bounded fan-out (:mod:`peerd.engine.batches`) and the owner-lost rescan that uses it: a failed
batch keeps its tasks for the next pass."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from peerd.clock import SystemClock
from peerd.engine.batches import in_batches
from peerd.engine.recovery import OwnerLostRecovery
from peerd.engine.registry import RunRegistry
from peerd.errors import Unavailable
from peerd.v1 import scheduler_pb2 as pb


def test_batches_are_sized_bounded_and_all_run() -> None:
    seen: list[list[int]] = []
    running, peak = [0], [0]

    async def work(batch: list[int]) -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(batch)
        running[0] -= 1

    failed = asyncio.run(in_batches(list(range(250)), 100, 2, work))
    assert failed == []
    assert sorted(len(b) for b in seen) == [50, 100, 100]
    assert sorted(i for b in seen for i in b) == list(range(250))
    assert peak[0] == 2


def test_a_failed_batch_comes_back_and_the_others_finish() -> None:
    done: list[list[int]] = []

    async def work(batch: list[int]) -> None:
        if 3 in batch:
            raise Unavailable("etcd timed out")
        await asyncio.sleep(0)
        done.append(batch)

    failed = asyncio.run(in_batches(list(range(10)), 3, 4, work))
    assert [(b, str(e)) for b, e in failed] == [([3, 4, 5], "etcd timed out")]
    assert sorted(i for b in done for i in b) == [0, 1, 2, 6, 7, 8, 9]


def test_bad_sizes_are_refused() -> None:
    async def work(batch: list[int]) -> None:
        return None

    for size, in_flight in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match="must be >= 1"):
            asyncio.run(in_batches([1], size, in_flight, work))


class _Ledger:
    """``recent_of`` as the rescan calls it; the batch holding ``fail_id`` fails once."""

    def __init__(self, fail_id: str) -> None:
        self.fail_id = fail_id
        self.reads: list[list[str]] = []

    async def recent_of(self, ids: list[str], limit: int) -> dict[str, list[Any]]:
        self.reads.append(list(ids))
        if self.fail_id in ids:
            self.fail_id = ""
            raise Unavailable("etcd timed out")
        return {}


def test_rescan_keeps_the_tasks_of_a_failed_read() -> None:
    ledger = _Ledger(fail_id="t150")
    owned = {f"t{i}" for i in range(300)}
    recovery = OwnerLostRecovery(
        "n1",
        cast(Any, ledger),
        cast(Any, None),
        RunRegistry(),
        owned.__contains__,
        lambda t: pb.TaskSpec(id=t) if t in owned else None,
        dict,
        lambda: True,
        lambda spec, rec: None,
        lambda task_id, rec: None,
        SystemClock(),
    )
    recovery._to_scan = set(owned)
    asyncio.run(recovery._scan())
    failed = next(b for b in ledger.reads if "t150" in b)
    assert recovery._to_scan == set(failed) and len(failed) > 1
    assert {t for b in ledger.reads for t in b} == owned  # every task was read once
    asyncio.run(recovery._scan())  # the next pass reads the failed batch again
    assert recovery._to_scan == set()
    assert set(ledger.reads[-1]) == set(failed)
