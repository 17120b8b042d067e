"""Runs left unfinished by a node that died: retried with a new fencing token, or marked LOST."""

from __future__ import annotations

import json

from peerd.client import SchedulerClient
from peerd.core.ring import owner
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually

LEASE_TTL_S = 4


def slow_task(task_id: str, url: str, policy: int) -> pb.TaskSpec:
    # The sink holds every run until the test releases it: a run is in flight when the test
    # kills its node.
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=f"{url}?hold=lost"), on_owner_lost=policy)  # type: ignore[arg-type]
    spec.schedule.every.FromSeconds(2)
    spec.timeout.FromSeconds(10)
    return spec


def test_lost_runs_are_retried_or_marked_lost(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    cluster = nodes(3, lease_ttl_s=LEASE_TTL_S)
    members = [n.node_id for n in cluster]
    victim = cluster[1]
    mine = [f"lost-{i}" for i in range(200) if owner(f"lost-{i}", members) == victim.node_id]
    retry_id, mark_id = mine[0], mine[1]
    with SchedulerClient(cluster[0].address) as client:
        client.create_tasks(
            [
                slow_task(retry_id, f"{sink.url}/retry", pb.OWNER_LOST_RETRY),
                slow_task(mark_id, f"{sink.url}/mark", pb.OWNER_LOST_MARK_LOST),
            ]
        )

        def both_running() -> None:
            for t in (retry_id, mark_id):
                runs = client.list_runs(t, 3)
                assert any(r.status == pb.RUNNING and r.node_id == victim.node_id for r in runs)

        assert_eventually(both_running, timeout=15)
        in_flight = {
            t: next(r for r in client.list_runs(t, 3) if r.status == pb.RUNNING)
            for t in (retry_id, mark_id)
        }
        victim.kill()
        sink.release("lost")  # the victim got no answer; the retry gets one at once

        def resolved() -> None:
            retried = [
                r
                for r in client.list_runs(retry_id, 20)
                if r.idempotency_key == in_flight[retry_id].idempotency_key
            ]
            assert retried and retried[0].attempt == 2, retried
            assert retried[0].status == pb.SUCCEEDED
            assert retried[0].node_id != victim.node_id
            assert retried[0].fencing_token > in_flight[retry_id].fencing_token
            marked = [
                r
                for r in client.list_runs(mark_id, 20)
                if r.idempotency_key == in_flight[mark_id].idempotency_key
            ]
            assert marked and marked[0].status == pb.LOST, marked
            assert "lost its lease" in marked[0].error

        assert_eventually(resolved, timeout=LEASE_TTL_S + 15)
    by_key: dict[str, list[int]] = {}
    for d in sink.deliveries():
        by_key.setdefault(d.idempotency_key or "", []).append(d.fencing_token or 0)
    retry_key = in_flight[retry_id].idempotency_key
    assert len(by_key[retry_key]) == 2  # the victim's delivery, then the fenced retry
    assert by_key[retry_key][1] > by_key[retry_key][0]
    assert len(by_key[in_flight[mark_id].idempotency_key]) == 1
    senders = {
        json.loads(d.body)["node_id"] for d in sink.deliveries() if d.idempotency_key == retry_key
    }
    assert victim.node_id in senders and len(senders) == 2
