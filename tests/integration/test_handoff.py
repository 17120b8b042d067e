"""Planned moves over gRPC (drain on SIGTERM, handoff on join) and zombie safety."""

from __future__ import annotations

import itertools
import json
import re
import time
from datetime import UTC, datetime

import pytest

from peerd.client import SchedulerClient
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually

LEASE_TTL_S = 4


def fired_since(sink: WebhookSink, ids: list[str], after: float, times: int = 1) -> None:
    """Every task of ``ids`` was delivered at least ``times`` times after ``after`` (epoch s)."""
    count = dict.fromkeys(ids, 0)
    for d in sink.deliveries():
        task_id = json.loads(d.body)["task_id"]
        if d.received_at > after and task_id in count:
            count[task_id] += 1
    short = [t for t, n in count.items() if n < times]
    assert not short, f"{len(short)} tasks delivered fewer than {times} times since {after:.3f}"


def delivered_by(sink: WebhookSink, node_id: str, after: float) -> None:
    """``node_id`` delivered a run after ``after`` (epoch s)."""
    assert any(
        d.received_at > after and json.loads(d.body)["node_id"] == node_id
        for d in sink.deliveries()
    ), f"{node_id} delivered nothing since {after:.3f}"


def every_second(task_id: str, url: str) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=url))
    spec.schedule.every.FromSeconds(1)
    spec.timeout.FromSeconds(5)
    return spec


@pytest.mark.slow
def test_rolling_restart_misses_and_duplicates_nothing(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    cluster = nodes(3, lease_ttl_s=LEASE_TTL_S, extra_args=["--runs-keep", "500"])
    ids = [f"roll-{i:03d}" for i in range(100)]
    with SchedulerClient(cluster[0].address) as client:
        client.create_tasks([every_second(t, f"{sink.url}/r/{t}") for t in ids])
    assert_eventually(
        lambda: (
            {d.idempotency_key.split("/")[0] for d in sink.deliveries() if d.idempotency_key}
            >= set(ids)
        ),
        timeout=15,
    )
    for node in cluster:
        assert node.terminate(timeout_s=40) == 0, node.log_tail()
        assert "handoff_done" in node.log_text()
        node.start()
        time.sleep(2)
    time.sleep(3)
    with SchedulerClient(cluster[0].address) as client:
        skipped = 0
        for t in ids:
            runs = client.list_runs(t, 500)
            slots = sorted(r.scheduled_at.ToMilliseconds() for r in runs)
            assert all(b - a == 1000 for a, b in itertools.pairwise(slots)), t
            skipped += sum(r.status == pb.SKIPPED for r in runs)
        assert skipped == 0, f"{skipped} slots skipped during the rolling restart"
    keys = [d.idempotency_key for d in sink.deliveries()]
    assert len(keys) == len(set(keys)), "duplicate deliveries"


def test_join_hands_tasks_over(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    first = nodes(2, lease_ttl_s=LEASE_TTL_S)
    ids = [f"join-{i:02d}" for i in range(30)]
    with SchedulerClient(first[0].address) as client:
        client.create_tasks([every_second(t, f"{sink.url}/j/{t}") for t in ids])
    assert_eventually(lambda: fired_since(sink, ids, 0.0, times=2), timeout=15)
    (joiner,) = nodes(1, lease_ttl_s=LEASE_TTL_S)

    def joiner_fires() -> None:
        senders = {json.loads(d.body)["node_id"] for d in sink.deliveries()[-60:]}
        assert joiner.node_id in senders

    assert_eventually(joiner_fires, timeout=10)
    assert_eventually(lambda: any("handoff_done" in n.log_text() for n in first), timeout=10)
    joined_at = time.time()
    assert_eventually(lambda: fired_since(sink, ids, joined_at, times=2), timeout=10)  # run on
    with SchedulerClient(joiner.address) as client:
        for t in ids:
            assert not [r for r in client.list_runs(t, 30) if r.status == pb.SKIPPED], t
    keys = [d.idempotency_key for d in sink.deliveries()]
    assert len(keys) == len(set(keys))


def test_paused_zombie_claims_nothing_until_reregistered(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    cluster = nodes(3, lease_ttl_s=LEASE_TTL_S)
    ids = [f"z-{i:02d}" for i in range(20)]
    with SchedulerClient(cluster[0].address) as client:
        client.create_tasks([every_second(t, f"{sink.url}/z/{t}") for t in ids])
        assert_eventually(lambda: fired_since(sink, ids, 0.0, times=2), timeout=15)
        zombie = cluster[2]
        zombie.pause()

        def lease_gone() -> None:  # its lease expires while it is stopped
            assert zombie.node_id not in {m.node_id for m in client.get_cluster().members}

        assert_eventually(lease_gone, timeout=LEASE_TTL_S + 10)
        expired_at = time.time()
        assert_eventually(lambda: fired_since(sink, ids, expired_at), timeout=10)  # taken over
    resumed_at = time.time()
    zombie.resume()

    def reregistered() -> float:
        stamps = [
            datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC).timestamp()
            for line in zombie.log_text().splitlines()
            if '"member_registered"' in line
            and (m := re.search(r'"timestamp": "([^"]+?)Z?"', line))
        ]
        assert len(stamps) >= 2, "zombie has not re-registered yet"
        return stamps[-1]

    registered_at = assert_eventually(reregistered, timeout=15)
    # Back at work: what it claimed before re-registering is in the ledger by now.
    assert_eventually(lambda: delivered_by(sink, zombie.node_id, registered_at), timeout=10)
    with SchedulerClient(cluster[0].address) as client:
        early = []
        for t in ids:
            for r in client.list_runs(t, 40):
                claimed = r.claimed_at.ToDatetime(UTC).timestamp()
                if r.node_id == zombie.node_id and resumed_at < claimed < registered_at:
                    early.append((t, claimed))
        assert not early, f"the zombie claimed before re-registering: {early[:3]}"
        # A key delivered twice is only allowed as the documented owner-lost retry: the zombie
        # delivered it before it was stopped, and the new owner ran the slot again as attempt 2
        # with a higher fencing token (on_owner_lost RETRY).
        tokens: dict[str, list[int]] = {}
        for d in sink.deliveries():
            tokens.setdefault(d.idempotency_key or "", []).append(d.fencing_token or 0)
        for key, seen in tokens.items():
            if len(seen) == 1:
                continue
            task_id, slot_ms = key.rsplit("/", 1)
            (run,) = [
                r
                for r in client.list_runs(task_id, 40)
                if r.scheduled_at.ToMilliseconds() == int(slot_ms)
            ]
            assert run.attempt == 2 and run.history[0].status == pb.LOST, run
            assert run.history[0].node_id == zombie.node_id, run
            # one delivery per claim: the zombie's token and the retry's (higher) token
            assert sorted(seen) == [run.history[0].fencing_token, run.fencing_token], (key, seen)
            assert run.fencing_token > run.history[0].fencing_token
