"""The workload: ``--tasks`` HTTP tasks firing every second at the sink, and reading back the
tasks and their run ledger at the end.

Every call goes to the first node that answers (nodes come and go during a run) and is retried a
bounded number of times.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from chaos.checks import LedgerRecord
from chaos.cluster import ChaosError
from peerd.client import SchedulerClient
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb

T = TypeVar("T")
BATCH = 100
"""CreateTasks takes at most 100 tasks per call."""
TASK_TIMEOUT_S = 5


def task_ids(count: int) -> list[str]:
    """The workload's task ids: ``chaos-0000`` ..."""
    return [f"chaos-{i:04d}" for i in range(count)]


def task_spec(task_id: str, sink_url: str) -> pb.TaskSpec:
    """An ``@every 1s`` HTTP POST task aimed at ``<sink_url>/t/<task_id>``."""
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=f"{sink_url}/t/{task_id}", method="POST"))
    spec.schedule.every.FromSeconds(1)
    spec.timeout.FromSeconds(TASK_TIMEOUT_S)
    return spec


def call_any(
    addresses: Sequence[str],
    fn: Callable[[SchedulerClient], T],
    *,
    attempts: int = 10,
    timeout_s: float = 10.0,
) -> T:
    """``fn(client)`` on the first node that answers, trying each address in turn.

    Raises:
        ChaosError: every attempt failed (the last error is in the message).
    """
    last: Exception | None = None
    for attempt in range(attempts):
        address = addresses[attempt % len(addresses)]
        try:
            with SchedulerClient(address, timeout_s=timeout_s) as client:
                return fn(client)
        except grpc.RpcError as exc:
            last = exc
            time.sleep(min(0.2 * (attempt + 1), 2.0))
    raise ChaosError(f"no node answered after {attempts} attempts: {last}")


def create_tasks(addresses: Sequence[str], ids: Sequence[str], sink_url: str) -> None:
    """Create the tasks in batches of at most 100 (an ALREADY_EXISTS retry counts as done)."""
    for start in range(0, len(ids), BATCH):
        specs = [task_spec(t, sink_url) for t in ids[start : start + BATCH]]

        def create(client: SchedulerClient, specs: list[pb.TaskSpec] = specs) -> None:
            try:
                client.create_tasks(specs)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                    raise

        call_any(addresses, create)


def wait_all_fired(sink: WebhookSink, ids: Sequence[str], timeout_s: float) -> float:
    """Wait until every task was delivered at least once.

    Returns:
        Seconds waited.

    Raises:
        ChaosError: some task never fired within ``timeout_s``.
    """
    start = time.monotonic()
    wanted = set(ids)
    while True:
        fired = {
            d.idempotency_key.rpartition("/")[0] for d in sink.deliveries() if d.idempotency_key
        }
        missing = wanted - fired
        if not missing:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise ChaosError(
                f"{len(missing)} task(s) never fired in {timeout_s:.0f}s, "
                f"e.g. {sorted(missing)[:3]}"
            )
        time.sleep(0.2)


def pause_all(addresses: Sequence[str], ids: Sequence[str]) -> None:
    """Pause every task (the workload stops; paused tasks stay in ListTasks)."""
    for tid in ids:
        call_any(addresses, functools.partial(_pause, task_id=tid))


def _pause(client: SchedulerClient, task_id: str) -> None:
    client.pause_task(task_id)


def _runs(client: SchedulerClient, task_id: str, limit: int) -> list[pb.RunRecord]:
    return client.list_runs(task_id, limit)


def list_task_ids(addresses: Sequence[str]) -> list[str]:
    """Every task id ListTasks returns."""
    return call_any(addresses, lambda c: [t.id for t in c.list_tasks()])


def to_record(run: pb.RunRecord) -> LedgerRecord:
    """A RunRecord as the checks see it."""
    return LedgerRecord(
        task_id=run.task_id,
        slot_ms=run.scheduled_at.ToMilliseconds(),
        node_id=run.node_id,
        attempt=run.attempt,
        fencing_token=run.fencing_token,
        status=pb.RunStatus.Name(run.status),
        lateness_s=run.lateness.ToTimedelta().total_seconds() if run.HasField("lateness") else None,
        manual=run.manual,
    )


def read_ledger(addresses: Sequence[str], ids: Sequence[str], limit: int) -> list[LedgerRecord]:
    """Every run record of every task (newest ``limit`` per task)."""
    out: list[LedgerRecord] = []
    for tid in ids:
        runs = call_any(
            addresses, functools.partial(_runs, task_id=tid, limit=limit), timeout_s=30.0
        )
        out.extend(to_record(r) for r in runs)
    return out


def unfinished_runs(addresses: Sequence[str], ids: Sequence[str]) -> int:
    """How many of the newest few runs per task are still CLAIMED or RUNNING."""
    busy = 0
    for tid in ids:
        runs = call_any(addresses, functools.partial(_runs, task_id=tid, limit=5))
        busy += sum(1 for r in runs if r.status in (pb.CLAIMED, pb.RUNNING))
    return busy
