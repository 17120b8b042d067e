"""A node that acquires many tasks reads their cursors from the ledger in batched reads
(:meth:`peerd.engine.fireloop.FireLoop._load_cursors`, 128 tasks per read-only transaction):
each task gets the cursor of its own newest scheduled record, across several reads and with
tasks that have none, on a real etcd (:mod:`tests.engine_harness`).

The records are of future yearly slots (as claim-ahead writes them), so no slot comes due
during the test and each cursor stays where the load put it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from peerd.core.records import claim_record
from peerd.v1 import scheduler_pb2 as pb
from tests.engine_harness import EngineHarness
from tests.helpers import assert_eventually_async, run_async

pytestmark = pytest.mark.integration

TASKS = 300
"""More than two reads of 128 tasks."""


def _slot(year: int) -> datetime:
    """The yearly slot (``17 3 1 1 *``, UTC) of ``year``."""
    return datetime(year, 1, 1, 3, 17, tzinfo=UTC)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def test_cursors_of_many_tasks_come_from_each_tasks_newest_record(
    etcd_endpoint: str, cluster_name: str
) -> None:
    async def main() -> None:
        async with EngineHarness(etcd_endpoint, cluster_name) as h:
            now = datetime.now(UTC)
            specs = []
            for i in range(TASKS):
                spec = pb.TaskSpec(id=f"t{i:03d}", python=pb.PythonTarget(name="peerd.echo"))
                spec.schedule.cron = "17 3 1 1 *"
                spec.created_at.FromDatetime(now)
                specs.append(spec)
            await h.put_specs(specs)
            # Every third task has records of future slots, its newest in a year of its own,
            # and half of those a newer manual run (not a schedule slot: never the cursor).
            newest: dict[str, datetime] = {}
            for i in range(0, TASKS, 3):
                task_id = f"t{i:03d}"
                last = now.year + 2 + i % 7
                for year in (now.year + 1, last):
                    rec = claim_record(task_id, _slot(year), "gone", 1, now)
                    rec.status = pb.SUCCEEDED
                    await h.etcd.put(h.keys.run(task_id, _ms(_slot(year))), rec.SerializeToString())
                newest[task_id] = _slot(last)
                if i % 2 == 0:
                    at = _slot(last + 1).replace(month=3)
                    manual = claim_record(task_id, at, "gone", 1, now)
                    manual.status, manual.manual = pb.SUCCEEDED, True
                    await h.etcd.put(h.keys.run(task_id, _ms(at)), manual.SerializeToString())
            await h.start()

            async def loaded() -> dict[str, datetime | None]:
                found = h.cursors()
                assert found is not None and len(found) == TASKS
                return found

            cursors = await assert_eventually_async(loaded, timeout=20)
            for task_id, cursor in cursors.items():
                if task_id in newest:
                    assert cursor == newest[task_id], task_id
                else:  # the schedule's floor: before the next slot
                    assert cursor is not None and cursor < _slot(now.year + 1), task_id
            assert not h.started

    run_async(main, 60)
