"""A real node with real etcd and its HTTP port: /metrics agrees with the ledger after a known
workload, /livez and /readyz answer, and every grpc.health.v1 service has its own status.

The workload ends by itself (``max_runs``), so once every record in the ledger is final the
node's counters must stop and equal what the ledger (listed over gRPC) says.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections import Counter

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from peerd.client import SchedulerClient
from peerd.core.health import SERVICES
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import REPO_ROOT, assert_eventually

MAX_RUNS = 4
FINAL = {pb.SUCCEEDED, pb.FAILED, pb.CANCELLED, pb.SKIPPED, pb.LOST}


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: ``(name, sorted labels) -> value``."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def python_task(task_id: str, name: str, args: dict[str, object] | None = None) -> pb.TaskSpec:
    spec = pb.TaskSpec(
        id=task_id, python=pb.PythonTarget(name=name, args_json=json.dumps(args or {}))
    )
    spec.schedule.every.FromSeconds(1)
    spec.schedule.max_runs = MAX_RUNS
    spec.timeout.FromSeconds(10)
    return spec


def workload(sink_url: str) -> list[pb.TaskSpec]:
    http = pb.TaskSpec(id="obs-http", http=pb.HttpTarget(url=f"{sink_url}/hook", method="POST"))
    http.schedule.every.FromSeconds(1)
    http.schedule.max_runs = MAX_RUNS
    # Runs for 2.5 s every second under FORBID: the slots in between are SKIPPED (overlap).
    slow = python_task("obs-slow", "peerd.sleep", {"seconds": 2.5})
    slow.overlap = pb.OVERLAP_FORBID
    return [
        http,
        python_task("obs-ok", "peerd.echo"),
        python_task("obs-fail", "peerd.fail"),
        slow,
    ]


def test_metrics_match_the_ledger(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1, http_port=0)
    assert node.http_address is not None
    assert get(node.http_address, "/livez") == (200, "ok\n")
    specs = workload(sink.url)
    with SchedulerClient(node.address) as client:
        client.create_tasks(specs)

        def ledger_final() -> dict[str, list[pb.RunRecord]]:
            runs = {s.id: client.list_runs(s.id, 100) for s in specs}
            for task_id, records in runs.items():
                slots = sum(max(1, r.skipped_slots) for r in records)
                assert slots == MAX_RUNS, f"{task_id}: {slots} of {MAX_RUNS} slots recorded"
                assert all(r.status in FINAL for r in records), f"{task_id} not final yet"
            return runs

        runs = assert_eventually(ledger_final, timeout=40, interval=0.5)
    kinds = {s.id: s.WhichOneof("target") for s in specs}
    records = [(kinds[t], r) for t, rs in runs.items() for r in rs]
    executed = [(k, r) for k, r in records if r.status != pb.SKIPPED]
    by_status = Counter((k, pb.RunStatus.Name(r.status).lower()) for k, r in executed)
    skipped = sum(max(1, r.skipped_slots) for _, r in records if r.status == pb.SKIPPED)
    assert skipped > 0 and by_status[("python", "failed")] == MAX_RUNS

    def counters_match() -> None:
        m = scrape(node.http_address)  # type: ignore[arg-type]
        for (kind, status), n in by_status.items():
            labels = (("executor", kind), ("status", status))
            assert m[("peerd_runs_total", labels)] == n, (kind, status, m)
        runs_total = sum(v for (name, _), v in m.items() if name == "peerd_runs_total")
        assert runs_total == len(executed)
        fires = sum(v for (name, _), v in m.items() if name == "peerd_fires_total")
        assert fires == len(executed)
        assert m[("peerd_claims_total", ())] == len(executed)
        assert m[("peerd_claim_races_lost_total", ())] == 0
        assert m[("peerd_slots_skipped_total", (("reason", "overlap"),))] == skipped
        for kind in ("http", "python"):
            n = sum(v for (k, _), v in by_status.items() if k == kind)
            assert m[("peerd_run_lateness_seconds_count", (("executor", kind),))] == n
            assert m[("peerd_run_duration_seconds_count", (("executor", kind),))] == n
        assert m[("peerd_owned_tasks", ())] == len(specs)
        assert m[("peerd_claim_duration_seconds_count", ())] >= 1
        txn = (("method", "Txn"),)
        assert m[("peerd_etcd_request_duration_seconds_count", txn)] >= 1
        assert m[("peerd_ready", ())] == 1
        build = [labels for (name, labels) in m if name == "peerd_build_info"]
        assert build and dict(build[0])["version"]

    assert_eventually(counters_match, timeout=10, interval=0.5)


def test_health_per_service_and_readyz(nodes) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1, http_port=0)
    address = node.http_address
    assert address is not None
    serving = health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(node.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def all_serving() -> None:
            for service in SERVICES:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == serving, service

        assert_eventually(all_serving, timeout=10)
    assert_eventually(lambda: get(address, "/readyz") == (200, "ok\n"))
    long = python_task("obs-long", "peerd.sleep", {"seconds": 30})
    long.schedule.every.FromSeconds(3600)
    with SchedulerClient(node.address) as client:
        client.create_task(long)
        client.trigger_task(long.id)
        assert_eventually(lambda: client.list_runs(long.id, 1)[0].status == pb.RUNNING, timeout=10)
    # Draining (SIGTERM) waits for the running run: the node is alive but not ready.
    node.send_sigterm()

    def draining() -> None:
        status, body = get(address, "/readyz")
        assert status == 503 and "draining" in body, (status, body)
        assert get(address, "/livez") == (200, "ok\n")

    assert_eventually(draining, timeout=10)


DOCS = REPO_ROOT / "docs" / "observability.md"
DASHBOARD = REPO_ROOT / "docs" / "grafana" / "peerd.json"
METRIC_RE = re.compile(r"\bpeerd_[a-z_]+\b")


def exposed_names(address: str) -> set[str]:
    """Every name a query may use: families (also those without samples yet) and samples."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def test_docs_and_dashboard_name_only_metrics_a_node_exports(nodes) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1, http_port=0, extra_args=["--metrics-per-task", "true"])
    address = node.http_address
    assert address is not None
    documented = {
        METRIC_RE.search(line).group(0)  # type: ignore[union-attr]
        for line in DOCS.read_text().splitlines()
        if line.startswith("| `peerd_")
    }
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"]]
    in_dashboard = {name for q in queries for name in METRIC_RE.findall(q)}
    assert len(documented) >= 30 and len(in_dashboard) >= 20
    with SchedulerClient(node.address) as client:
        client.create_task(python_task("obs-once", "peerd.echo"))

    def all_exported() -> None:
        names = exposed_names(address)
        assert documented <= names, f"documented, not exported: {sorted(documented - names)}"
        missing = in_dashboard - names
        assert not missing, f"in the dashboard, not exported: {sorted(missing)}"

    assert_eventually(all_exported, timeout=20, interval=0.5)
