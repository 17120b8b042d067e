"""3 real nodes on real etcd: 50 tasks every second, kill -9 of one node mid-run.

Checks: no slot claimed twice (ledger keys are unique, and the sink never sees one
Idempotency-Key twice), every task of the killed node fires again on a survivor within
lease TTL + 2 s, and the ledger has no gap in the slots of any task.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict

from peerd.client import SchedulerClient
from peerd.core.ring import owner
from peerd.devtools.sink import Delivery, WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually, real_duplicates, retried_keys

TASKS = 50
LEASE_TTL_S = 4


def http_task(task_id: str, url: str, every_s: int = 1) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=url, method="POST"))
    spec.schedule.every.FromSeconds(every_s)
    spec.timeout.FromSeconds(5)
    return spec


def fired_by(deliveries: list[Delivery]) -> dict[str, list[tuple[float, str]]]:
    """Task id -> (received_at, node_id) of each of its deliveries, in arrival order."""
    by_task: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for d in deliveries:
        body = json.loads(d.body)
        by_task[body["task_id"]].append((d.received_at, body["node_id"]))
    return by_task


def test_kill9_failover_no_duplicates(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    cluster = nodes(3, lease_ttl_s=LEASE_TTL_S)
    ids = [f"hb-{i:02d}" for i in range(TASKS)]
    with SchedulerClient(cluster[0].address) as client:
        client.create_tasks([http_task(t, f"{sink.url}/hook/{t}") for t in ids])

        def all_fired() -> None:
            fired = {
                d.idempotency_key.split("/")[0] for d in sink.deliveries() if d.idempotency_key
            }
            assert fired >= set(ids), f"{len(set(ids) - fired)} tasks not fired yet"

        assert_eventually(all_fired, timeout=15)
        members = [n.node_id for n in cluster]

        def steady_state() -> None:  # each task fired a few times, lately by its ring owner
            by_task = fired_by(sink.deliveries())
            assert all(len(by_task[t]) >= 3 for t in ids), "not every task fired 3 times yet"
            moving = [t for t in ids if by_task[t][-1][1] != owner(t, members)]
            assert not moving, f"{len(moving)} tasks not yet fired by their owner"

        assert_eventually(steady_state, timeout=20)
        victim = cluster[1]
        victim_tasks = [t for t in ids if owner(t, members) == victim.node_id]
        assert victim_tasks, "the victim owns no task; choose another victim"
        killed_at = time.time()
        victim.kill()

        def survivor_fires_since(at: float) -> dict[str, int]:
            by_task = fired_by(sink.deliveries())
            return {
                t: sum(node != victim.node_id and received > at for received, node in fires)
                for t, fires in by_task.items()
            }

        def victim_tasks_moved() -> None:
            fires = survivor_fires_since(killed_at)
            missing = [t for t in victim_tasks if not fires.get(t)]
            assert not missing, f"{len(missing)} of the victim's tasks not fired by a survivor"

        assert_eventually(victim_tasks_moved, timeout=LEASE_TTL_S + 8)
        moved_at = time.time()

        def ran_on() -> None:  # every task ran 3 more slots after the failover
            fires = survivor_fires_since(moved_at)
            short = [t for t in ids if fires.get(t, 0) < 3]
            assert not short, f"{len(short)} tasks fired fewer than 3 times since the failover"

        assert_eventually(ran_on, timeout=15)

        deliveries = sink.deliveries()
        dupes = real_duplicates(deliveries)
        assert not dupes, f"duplicate deliveries under one token: {dupes[:5]}"
        for key in retried_keys(deliveries):  # only the victim's runs cut off by the kill
            task_id, slot_ms = key.rsplit("/", 1)
            assert task_id in victim_tasks and int(slot_ms) / 1000 <= killed_at, key

        # Failover time per task: first fire by a survivor after the kill.
        failover = []
        for t in victim_tasks:
            after = [
                d.received_at
                for d in deliveries
                if d.idempotency_key
                and d.idempotency_key.startswith(t + "/")
                and d.received_at > killed_at
            ]
            failover.append(min(after) - killed_at)
        assert max(failover) <= LEASE_TTL_S + 2, f"failover times {sorted(failover)}"

        # The ledger: every slot between the first and the last claimed one is there once.
        for t in ids:
            runs = client.list_runs(t, 100)
            slots = sorted(r.scheduled_at.ToMilliseconds() for r in runs)
            assert len(slots) == len(set(slots))
            steps = {b - a for a, b in itertools.pairwise(slots)}
            assert steps == {1000}, f"{t}: gap or irregular slots {sorted(steps)}"
            tokens = [r.fencing_token for r in runs if r.status != pb.SKIPPED]
            assert all(tok > 0 for tok in tokens)
        print(
            f"failover after kill -9 (TTL {LEASE_TTL_S}s): "
            f"max {max(failover):.2f}s over {len(victim_tasks)} tasks; "
            f"{len(deliveries)} deliveries, 0 duplicates"
        )


def test_full_cluster_restart_loses_no_task(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    cluster = nodes(3, lease_ttl_s=LEASE_TTL_S)
    ids = [f"keep-{i:02d}" for i in range(30)]
    with SchedulerClient(cluster[0].address) as client:
        client.create_tasks([http_task(t, f"{sink.url}/k/{t}") for t in ids])
        client.pause_task(ids[0])
    for n in cluster:
        n.kill()
    for n in cluster:
        n.start(wait=False)
    for n in cluster:
        n.wait_ready()
    with SchedulerClient(cluster[2].address) as client:
        stored = {t.id: t for t in client.list_tasks()}
        assert set(stored) == set(ids)
        assert stored[ids[0]].paused
        assert not stored[ids[1]].paused
        restarted_at = time.time()

        def fired_after_restart() -> None:
            fired = {
                d.idempotency_key.split("/")[0]
                for d in sink.deliveries()
                if d.idempotency_key and d.received_at > restarted_at
            }
            assert fired >= set(ids[1:])
            assert ids[0] not in fired

        assert_eventually(fired_after_restart, timeout=15)
