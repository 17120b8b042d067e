"""The public API against real nodes and real etcd: status codes, and that rejected requests
leave etcd unchanged."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from peerd.client import SchedulerClient
from peerd.coord.etcd import Etcd, prefix_end
from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import PeerdNode, assert_eventually


def etcd_state(endpoint: str, prefix: str) -> list[tuple[bytes, bytes, int]]:
    """Every task and run key under the cluster prefix, with its value and mod revision (member
    keys are left out: keepalives and lease expiries of other tests are not writes of ours)."""

    async def read() -> list[tuple[bytes, bytes, int]]:
        e = Etcd([endpoint])
        await e.connect()
        try:
            kvs, _, _ = await e.range(prefix.encode(), prefix_end(prefix.encode()))
            return [(kv.key, kv.value, kv.mod_revision) for kv in kvs if b"/members/" not in kv.key]
        finally:
            await e.close()

    return asyncio.run(read())


def http_spec(task_id: str, url: str = "http://127.0.0.1:9/hook") -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=url))
    spec.schedule.cron = "*/5 * * * *"
    return spec


def _mutate(fn: Callable[[pb.TaskSpec], None]) -> pb.TaskSpec:
    spec = http_spec("bad-one")
    fn(spec)
    return spec


BAD_CREATES: list[tuple[str, pb.TaskSpec, grpc.StatusCode, str]] = [
    (
        "bad cron",
        _mutate(lambda s: setattr(s.schedule, "cron", "61 * * * *")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "task.schedule.cron",
    ),
    (
        "cron fields",
        _mutate(lambda s: setattr(s.schedule, "cron", "* * *")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "task.schedule.cron",
    ),
    (
        "unknown zone",
        _mutate(lambda s: setattr(s.schedule, "time_zone", "Mars/Olympus")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "task.schedule.time_zone",
    ),
    (
        "bad id",
        _mutate(lambda s: setattr(s, "id", "Bad_ID!")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "task.id",
    ),
    (
        "bad url",
        _mutate(lambda s: setattr(s.http, "url", "ftp://example/x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "task.http.url",
    ),
    (
        "no host",
        _mutate(lambda s: setattr(s.http, "url", "http://")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "task.http.url",
    ),
    (
        "huge spec",
        _mutate(lambda s: s.http.headers.__setitem__("x-big", "a" * 300_000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "256 KiB",
    ),
    (
        "at in the past",
        _mutate(lambda s: s.schedule.at.FromDatetime(datetime(2020, 1, 1, tzinfo=UTC))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "task.schedule.at",
    ),
    (
        "no target",
        _mutate(lambda s: s.ClearField("http")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "task.target",
    ),
    (
        "reserved header",
        _mutate(lambda s: s.http.headers.__setitem__("Idempotency-Key", "x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "task.http.headers",
    ),
    (
        "shell not allowed",
        _mutate(lambda s: s.shell.argv.extend(["/bin/echo", "hi"])),
        grpc.StatusCode.PERMISSION_DENIED,
        "not allowed",
    ),
]


@pytest.fixture
def api(nodes, etcd_endpoint: str, cluster_name: str):  # type: ignore[no-untyped-def]
    (node,) = nodes(1)
    with SchedulerClient(node.address) as client:
        yield client, f"/peerd/{cluster_name}/"


@pytest.mark.parametrize(
    ("name", "spec", "code", "mention"), BAD_CREATES, ids=[b[0] for b in BAD_CREATES]
)
def test_bad_create_is_rejected_and_writes_nothing(
    api, etcd_endpoint: str, name: str, spec: pb.TaskSpec, code: grpc.StatusCode, mention: str
) -> None:  # type: ignore[no-untyped-def]
    client, prefix = api
    before = etcd_state(etcd_endpoint, prefix)
    with pytest.raises(grpc.RpcError) as info:
        client.create_task(spec)
    assert info.value.code() == code, info.value.details()
    assert mention in info.value.details()
    assert etcd_state(etcd_endpoint, prefix) == before


def test_not_found_and_already_exists(api, etcd_endpoint: str) -> None:  # type: ignore[no-untyped-def]
    client, prefix = api
    for call in (client.get_task, client.delete_task, client.pause_task, client.trigger_task):
        with pytest.raises(grpc.RpcError) as info:
            call("missing")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        client.list_runs("missing", 5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    client.create_task(http_spec("once"))
    before = etcd_state(etcd_endpoint, prefix)
    with pytest.raises(grpc.RpcError) as info:
        client.create_task(http_spec("once"))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # a batch with one existing id writes none of the others
    with pytest.raises(grpc.RpcError) as info:
        client.create_tasks([http_spec("new-a"), http_spec("once"), http_spec("new-b")])
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # a batch with one invalid spec writes nothing either
    bad = http_spec("new-c")
    bad.schedule.time_zone = "Nowhere/Land"
    with pytest.raises(grpc.RpcError) as info:
        client.create_tasks([http_spec("new-d"), bad])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tasks[1].schedule.time_zone" in info.value.details()
    assert etcd_state(etcd_endpoint, prefix) == before


def test_task_lifecycle_and_paging(api, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    created = client.create_tasks([http_spec(f"page-{i:03d}") for i in range(25)])
    assert [t.id for t in created] == [f"page-{i:03d}" for i in range(25)]
    resp = client._stub.ListTasks(pb.ListTasksRequest(page_size=10))
    assert len(resp.tasks) == 10 and resp.next_page_token
    assert [t.id for t in client.list_tasks()] == [f"page-{i:03d}" for i in range(25)]
    generated = pb.TaskSpec(http=pb.HttpTarget(url=sink.url))
    generated.schedule.cron = "@every 1h"
    got = client.create_task(generated)
    assert got.id.startswith("t-") and got.schedule.every.seconds == 3600
    assert client.pause_task("page-001").paused
    resumed = client.resume_task("page-001")
    assert not resumed.paused and resumed.HasField("resumed_at")
    client.delete_task("page-002")
    with pytest.raises(grpc.RpcError):
        client.get_task("page-002")
    # trigger runs once now and lands in the ledger with a fencing token
    spec = http_spec("trig", url=f"{sink.url}/trig")
    spec.schedule.cron = "0 0 1 1 *"
    client.create_task(spec)
    run = client.trigger_task("trig")
    assert run.manual and run.fencing_token > 0

    def delivered() -> None:
        keys = [d.idempotency_key for d in sink.deliveries()]
        assert run.idempotency_key in keys
        runs = client.list_runs("trig", 5)
        assert runs[0].status == pb.SUCCEEDED, runs[0]
        assert runs[0].http_status == 200

    assert_eventually(delivered, timeout=10)
    token = [d.fencing_token for d in sink.deliveries() if d.idempotency_key == run.idempotency_key]
    assert token == [run.fencing_token]
    cluster = client.get_cluster()
    assert [m.node_id for m in cluster.members] == ["n1"]
    assert cluster.task_count == 26


def test_shell_task_executes_on_allowing_node(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1, allow_shell=["/bin/sh -c *"])
    out = tmp_path / "out.txt"
    spec = pb.TaskSpec(
        id="sh",
        shell=pb.ShellTarget(
            argv=["/bin/sh", "-c", f"echo $PEERD_IDEMPOTENCY_KEY >> {out}; echo done"]
        ),
    )
    spec.schedule.every.FromSeconds(1)
    with SchedulerClient(node.address) as client:
        client.create_task(spec)

        def ran() -> None:
            runs = [r for r in client.list_runs("sh", 10) if r.status == pb.SUCCEEDED]
            assert runs
            assert runs[0].exit_code == 0 and runs[0].output_tail == "done\n"
            assert runs[0].idempotency_key in out.read_text()

        assert_eventually(ran, timeout=10)
        denied = pb.TaskSpec(id="rm", shell=pb.ShellTarget(argv=["/bin/rm", "-rf", "/tmp/x"]))
        denied.schedule.every.FromSeconds(1)
        with pytest.raises(grpc.RpcError) as info:
            client.create_task(denied)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_unavailable_when_etcd_is_down(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path / "etcd")
    etcd.start()
    node = PeerdNode("solo", etcd.endpoint, "down", tmp_path, lease_ttl_s=3)
    try:
        node.start()
        etcd.kill()
        with SchedulerClient(node.address, timeout_s=15) as client:
            with pytest.raises(grpc.RpcError) as info:
                client.create_task(http_spec("x"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert node.is_running()
            etcd.start()
            assert_eventually(lambda: client.create_task(http_spec("y")), timeout=20)
    finally:
        node.kill()
        etcd.stop()


def test_duplicate_node_id_refuses_to_start(
    nodes, etcd_endpoint: str, cluster_name: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    (first,) = nodes(1)
    dup = PeerdNode("n1", etcd_endpoint, cluster_name, tmp_path / "dup", lease_ttl_s=3)
    (tmp_path / "dup").mkdir()
    dup.start(wait=False)
    code = dup.wait_exit(timeout_s=20)
    assert code != 0
    assert "already registered" in dup.log_text()
    assert first.is_running()


def test_cli_exit_codes(nodes) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "peerd", "--server", node.address, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    ok = cli(
        "task", "create", "cli-a", "--cron", "*/10 * * * * *", "--http-post", "http://127.0.0.1:9/x"
    )
    assert ok.returncode == 0, ok.stderr
    bad = cli(
        "task", "create", "cli-b", "--cron", "99 * * * *", "--http-post", "http://127.0.0.1:9/x"
    )
    assert bad.returncode == 2 and "task.schedule.cron" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = cli("task", "get", "nope")
    assert missing.returncode == 3
    listed = cli("-o", "json", "task", "list")
    assert listed.returncode == 0 and '"cli-a"' in listed.stdout
    t0 = time.monotonic()
    down = subprocess.run(
        [sys.executable, "-m", "peerd", "--server", "127.0.0.1:1", "--timeout", "2", "cluster"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode == 4 and time.monotonic() - t0 < 15


def test_disallowed_shell_run_is_recorded_failed(nodes) -> None:  # type: ignore[no-untyped-def]
    """A shell task accepted by an allowing node but owned by a node without the allow-list
    records FAILED runs with the reason, and executes nothing."""
    allowing, strict = nodes(1, allow_shell=["/bin/true*"]) + nodes(1)
    members = [allowing.node_id, strict.node_id]
    from peerd.core.ring import owner

    task_id = next(f"sh-{i}" for i in range(100) if owner(f"sh-{i}", members) == strict.node_id)
    spec = pb.TaskSpec(id=task_id, shell=pb.ShellTarget(argv=["/bin/true"]))
    spec.schedule.every.FromSeconds(1)
    with SchedulerClient(allowing.address) as client:
        client.create_task(spec)

        def failed_with_reason() -> None:
            runs = client.list_runs(task_id, 5)
            done = [r for r in runs if r.status in (pb.FAILED, pb.SUCCEEDED)]
            assert done
            assert all(r.status == pb.FAILED and r.node_id == strict.node_id for r in done)
            assert "not allowed" in done[0].error

        assert_eventually(failed_with_reason, timeout=10)


def test_health_and_reflection(nodes) -> None:  # type: ignore[no-untyped-def]
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    (node,) = nodes(1)
    with grpc.insecure_channel(node.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
        assert {"peerd.v1.Scheduler", "grpc.health.v1.Health"} <= names
