"""Labels and node selectors on real etcd with real nodes.

* ListTasks filters by label selector (server side, across pages), and bad labels or selectors
  are refused naming the field.
* 3 nodes in two zones: a task with ``node_selector zone=b`` runs only on the zone-b node; kill
  -9 of it leaves the task unschedulable (``peerd cluster``, ``peerd task get``) and nobody runs
  its slots; a new zone-b node acquires it and the missed slots follow the catch-up policy, the
  skipped ones recorded with SKIP_UNSCHEDULABLE.
* Failover (kill -9) and handoff (restart, drain) of zone-a tasks stay within zone a.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict

import grpc
import pytest

from peerd import cli
from peerd.client import SchedulerClient
from peerd.core.ring import owner
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually, real_duplicates, retried_keys

LEASE_TTL_S = 3


def task(
    task_id: str, url: str, selector: str = "", catch_up: int = 0, **labels: str
) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=url), node_selector=selector)
    spec.labels.update(labels)
    spec.schedule.every.FromSeconds(1)
    spec.timeout.FromSeconds(5)
    spec.misfire_threshold.FromSeconds(1)
    spec.catch_up = catch_up  # type: ignore[assignment]
    return spec


def zone(name: str) -> dict[str, list[str]]:
    return {"extra_args": ["--label", f"zone={name}"]}


def senders(sink: WebhookSink) -> dict[str, set[str]]:
    """task id -> the nodes that delivered a run of it."""
    out: dict[str, set[str]] = defaultdict(set)
    for d in sink.deliveries():
        body = json.loads(d.body)
        out[body["task_id"]].add(body["node_id"])
    return out


def run_cli(capsys: pytest.CaptureFixture[str], server: str, *argv: str) -> str:
    code = cli.main(["--server", server, *argv], env={})
    out, err = capsys.readouterr()
    assert code == cli.EXIT_OK, err
    return out


def test_list_tasks_by_label_selector(nodes) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1)
    url = "http://127.0.0.1:9/"
    specs = [
        task(f"t-{i:02d}", url, team="payments" if i % 2 else "search", env="dev" if i < 6 else "")
        for i in range(12)
    ]
    specs.append(task("t-plain", url))
    with SchedulerClient(node.address) as client:
        client.create_tasks(specs)

        def ids(selector: str) -> list[str]:
            return [t.id for t in client.list_tasks(label_selector=selector)]

        assert ids("team=payments,env!=dev") == ["t-07", "t-09", "t-11"]
        assert ids("team in (payments,search),env=") == [f"t-{i:02d}" for i in range(6, 12)]
        assert ids("!team") == ["t-plain"]
        assert ids("team notin (payments)") == [f"t-{i:02d}" for i in range(0, 12, 2)] + ["t-plain"]
        assert len(ids("")) == 13
        stub_page = client._stub.ListTasks
        page = stub_page(pb.ListTasksRequest(page_size=2, label_selector="team=search"))
        assert ([t.id for t in page.tasks], page.next_page_token) == (["t-00", "t-02"], "t-02")
        after = stub_page(pb.ListTasksRequest(page_size=2, label_selector="team=search",
                                              page_token="t-08"))  # fmt: skip
        assert ([t.id for t in after.tasks], after.next_page_token) == (["t-10"], "")
        assert [t.id for t in client.list_tasks(2, "team=search")] == ["t-00", "t-02"]
        with pytest.raises(grpc.RpcError) as err:
            client.list_tasks(label_selector="team in payments")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("label_selector: 'team in payments': expected '('")
        bad = task("bad", url, selector="zone in (a")
        bad.labels["Team Name"] = "x"
        with pytest.raises(grpc.RpcError) as err:
            client.create_task(bad)
        assert err.value.details().startswith("task.labels: key 'Team Name'")
        bad.labels.clear()
        with pytest.raises(grpc.RpcError) as err:
            client.create_task(bad)
        assert err.value.details().startswith("task.node_selector: 'zone in (a'")
        stored = client.get_task("t-07")
        assert (dict(stored.labels), stored.node_selector) == ({"team": "payments", "env": ""}, "")


def unschedulable(client: SchedulerClient) -> dict[str, str]:
    return {u.task_id: u.reason for u in client.get_cluster().unschedulable_tasks}


def test_a_zone_selector_waits_for_a_matching_node(  # type: ignore[no-untyped-def]
    nodes, sink: WebhookSink, capsys: pytest.CaptureFixture[str]
) -> None:
    a1, a2 = nodes(2, lease_ttl_s=LEASE_TTL_S, **zone("a"))
    (b,) = nodes(1, lease_ttl_s=LEASE_TTL_S, **zone("b"))
    policies = {"b-once": pb.CATCH_UP_RUN_ONCE, "b-skip": pb.CATCH_UP_SKIP}
    policies["b-all"] = pb.CATCH_UP_RUN_ALL
    with SchedulerClient(a1.address) as client:
        client.create_tasks(
            [task(t, f"{sink.url}/{t}", "zone=b", p, team="db") for t, p in policies.items()]
            + [task("a-only", f"{sink.url}/a", "zone in (a)")]
        )
        assert_eventually(lambda: set(senders(sink)) == {*policies, "a-only"}, timeout=15)
        b.kill()
        killed_at = time.time()
        reason = "no live node matches zone=b"
        assert_eventually(
            lambda: unschedulable(client) == dict.fromkeys(policies, reason), timeout=10
        )
        line = f"\nscheduling:         unschedulable: {reason}\n"
        assert_eventually(lambda: line in run_cli(capsys, a2.address, "task", "get", "b-once"))
        text = run_cli(capsys, a2.address, "cluster")
        assert f"task b-skip: unschedulable: {reason}" in text
        time.sleep(4)  # slots pass while no node matches
        for t in policies:
            assert senders(sink)[t] == {b.node_id}, t  # nobody else ran it
            assert {r.node_id for r in client.list_runs(t, 100)} == {b.node_id}, t
        (b2,) = nodes(1, lease_ttl_s=LEASE_TTL_S, **zone("b"))
        assert_eventually(lambda: all(b2.node_id in senders(sink)[t] for t in policies), 15)
        assert unschedulable(client) == {}
        started = next(m for m in client.get_cluster().members if m.node_id == b2.node_id)
        b2_start = started.started_at.ToMilliseconds()
        time.sleep(2)
        for t, policy in policies.items():
            check_catch_up(client.list_runs(t, 100), policy, b.node_id, b2_start, killed_at)
        assert senders(sink)["a-only"] <= {a1.node_id, a2.node_id}
    deliveries = sink.deliveries()
    assert not real_duplicates(deliveries), "a slot was delivered twice under one token"
    for key, tokens in retried_keys(deliveries).items():  # only b's runs cut off by kill -9
        task_id, slot_ms = key.rsplit("/", 1)
        assert task_id in policies and int(slot_ms) / 1000 <= killed_at, (key, tokens)


def check_catch_up(
    runs: list[pb.RunRecord], policy: int, dead: str, b2_start_ms: int, killed_at: float
) -> None:
    """The ledger of one zone-b task around the outage of its only node."""
    by_slot = {r.scheduled_at.ToMilliseconds(): r for r in runs}
    slots = sorted(by_slot)
    assert all(y - x == 1000 for x, y in itertools.pairwise(slots)), "a gap in the ledger"
    missed = [s for s in slots if by_slot[s].node_id != dead and s / 1000 > killed_at + 1]
    before = [by_slot[s] for s in missed if s < b2_start_ms - 1000]
    assert len(before) >= 3, "too few slots passed while unschedulable"
    if policy == pb.CATCH_UP_RUN_ALL:  # replayed, oldest first, by the new node
        assert {r.status for r in before} <= {pb.SUCCEEDED, pb.CLAIMED, pb.RUNNING}
        return
    assert all(r.status == pb.SKIPPED for r in before[:-1])
    reasons = {r.skip_reason for r in before if r.status == pb.SKIPPED}
    assert reasons == {pb.SKIP_UNSCHEDULABLE}, reasons
    assert "no live node matched the node selector 'zone=b'" in before[0].error
    later = [by_slot[s] for s in missed if s >= b2_start_ms]
    assert {r.skip_reason for r in later if r.status == pb.SKIPPED} <= {pb.SKIP_MISFIRE}
    fired = [r for r in before + later if r.status != pb.SKIPPED]
    assert fired, "nothing ran after the new node came"
    if policy == pb.CATCH_UP_SKIP:
        assert all(r.status == pb.SKIPPED for r in before)


def test_failover_and_handoff_stay_within_the_zone(  # type: ignore[no-untyped-def]
    nodes, sink: WebhookSink
) -> None:
    a1, a2 = nodes(2, lease_ttl_s=LEASE_TTL_S, **zone("a"))
    (b,) = nodes(1, lease_ttl_s=LEASE_TTL_S, **zone("b"))
    zone_a = {a1.node_id, a2.node_id}
    ids = [f"za-{i:02d}" for i in range(12)]
    on_a1 = [t for t in ids if owner(t, sorted(zone_a)) == a1.node_id]
    assert on_a1 and len(on_a1) < len(ids), "rendezvous put every task on one node"
    with SchedulerClient(a2.address) as client:
        client.create_tasks([task(t, f"{sink.url}/{t}", "zone=a") for t in ids])
        assert_eventually(lambda: all(senders(sink)[t] for t in ids), timeout=15)
        a1.kill()  # failover within zone a: a2, never b
        killed_at = time.time()
        assert_eventually(lambda: newest_from(sink, a2.node_id, on_a1, killed_at), timeout=15)
        a1.start()  # back (a new incarnation): a2 hands its tasks back
        a1.wait_ready()
        restarted_at = time.time()
        assert_eventually(lambda: newest_from(sink, a1.node_id, on_a1, restarted_at), timeout=15)
        assert "handoff_done" in a2.log_text()
    assert a2.terminate(timeout_s=40) == 0  # drain: everything to a1, nothing to b
    drained_at = time.time()
    assert_eventually(lambda: newest_from(sink, a1.node_id, ids, drained_at), timeout=15)
    with SchedulerClient(a1.address) as client:
        for t in ids:
            runs = client.list_runs(t, 100)
            slots = sorted(r.scheduled_at.ToMilliseconds() for r in runs)
            assert all(y - x == 1000 for x, y in itertools.pairwise(slots)), f"{t}: a gap"
            assert {r.node_id for r in runs} <= zone_a, t
        members = {m.node_id: m for m in client.get_cluster().members}
        assert (members[b.node_id].owned_tasks, members[a1.node_id].owned_tasks) == (0, len(ids))
    assert set().union(*senders(sink).values()) <= zone_a  # b never ran a zone-a task
    deliveries = sink.deliveries()
    assert not real_duplicates(deliveries), "a slot was delivered twice under one token"
    for key, tokens in retried_keys(deliveries).items():  # only a1's runs cut off by kill -9
        task_id, slot_ms = key.rsplit("/", 1)
        assert task_id in on_a1 and int(slot_ms) / 1000 <= killed_at, (key, tokens)


def newest_from(sink: WebhookSink, node_id: str, tasks: list[str], after: float) -> None:
    """The newest 2 deliveries of each of ``tasks`` came after ``after``, from ``node_id``."""
    newest: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for d in sink.deliveries():
        body = json.loads(d.body)
        newest[body["task_id"]].append((d.received_at, body["node_id"]))
    for t in tasks:
        last = sorted(newest[t])[-2:]
        assert len(last) == 2 and all(at > after and n == node_id for at, n in last), (t, last)
