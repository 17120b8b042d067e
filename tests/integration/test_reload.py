"""SIGHUP against a real ``peerd serve``: the config file is re-read and its reloadable fields
apply without a restart; an invalid file is rejected and changes nothing (not even the lease)."""

from __future__ import annotations

import json
import os
import shlex
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest

from peerd.client import SchedulerClient
from peerd.v1 import scheduler_pb2 as pb
from tests.conftest import NodesFactory
from tests.helpers import PeerdNode, assert_eventually

SH = "/bin/sh"
SCRIPT = "echo reloaded-ok"


def log_events(node: PeerdNode, event: str) -> list[dict[str, Any]]:
    """The node's JSON log lines whose ``event`` is ``event``."""
    found = []
    for line in node.log_text().splitlines():
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == event:
            found.append(doc)
    return found


def lease_of(client: SchedulerClient, node_id: str) -> int:
    [member] = [m for m in client.get_cluster().members if m.node_id == node_id]
    return member.lease_id


def shell_spec(task_id: str) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, shell=pb.ShellTarget(argv=[SH, "-c", SCRIPT]))
    spec.schedule.every.FromSeconds(1)
    return spec


def succeeded(client: SchedulerClient, task_id: str) -> list[pb.RunRecord]:
    return [r for r in client.list_runs(task_id, 50) if r.status == pb.SUCCEEDED]


def hup(node: PeerdNode) -> None:
    assert node.pid is not None, "node is not running"
    os.kill(node.pid, signal.SIGHUP)


def test_sighup_reloads_allow_list_and_rejects_an_invalid_file(
    nodes: NodesFactory, tmp_path: Path
) -> None:
    config = tmp_path / "peerd.toml"
    config.write_text("allow_shell = []\nruns_keep = 50\n")
    (node,) = nodes(1, extra_args=["--config", str(config)])

    with SchedulerClient(node.address) as client:
        lease = lease_of(client, node.node_id)
        assert lease != 0

        # Not allow-listed: the create is refused and nothing is stored.
        with pytest.raises(grpc.RpcError) as denied:
            client.create_task(shell_spec("hello"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert client.list_tasks() == []

        # Allow it in the file (plus a non-reloadable change), then SIGHUP.
        allow = shlex.join([SH, "-c", "echo *"])  # /bin/sh -c 'echo *'
        config.write_text(f"allow_shell = [{json.dumps(allow)}]\nruns_keep = 50\nclaim_batch = 8\n")
        hup(node)

        def created() -> None:
            try:
                client.create_task(shell_spec("hello"))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc
                raise AssertionError(f"still denied: {exc.details()}") from exc

        assert_eventually(created, timeout=10, message="create after SIGHUP")

        def ran() -> None:
            runs = succeeded(client, "hello")
            assert runs, "no SUCCEEDED run yet"
            assert runs[0].output_tail == "reloaded-ok\n"
            assert runs[0].exit_code == 0

        assert_eventually(ran, timeout=15, message="the shell task runs on the reloaded node")
        [reloaded] = assert_eventually(lambda: log_events(node, "config_reloaded"), timeout=5)
        assert reloaded["changed"] == ["allow_shell"]
        [restart] = log_events(node, "config_reload_restart_needed")
        assert restart["detail"] == "claim_batch changed in the file; restart to apply"
        assert lease_of(client, node.node_id) == lease

        # An invalid file: rejected, logged, the old configuration stays in force.
        config.write_text("allow_shell = [\n")
        hup(node)
        [rejected] = assert_eventually(
            lambda: log_events(node, "config_reload_rejected"), timeout=5
        )
        assert rejected["reason"].startswith("--config: cannot read")
        assert len(log_events(node, "config_reloaded")) == 1

        config.write_text("max_shell_runs = 0\n")  # valid TOML, invalid value
        hup(node)
        second = assert_eventually(
            lambda: log_events(node, "config_reload_rejected")[1:], timeout=5
        )
        assert second[0]["reason"] == "--max-shell-runs: must be >= 1, got 0"

        assert node.is_running()
        assert node.health() == "SERVING"
        assert lease_of(client, node.node_id) == lease
        # Still allowed (old config kept) and still running the task.
        client.create_task(shell_spec("hello-again"))
        before = len(succeeded(client, "hello"))
        assert_eventually(
            lambda: len(succeeded(client, "hello")) > before,
            timeout=10,
            message="runs continue after the rejected reloads",
        )
        assert [m.node_id for m in client.get_cluster().members] == [node.node_id]
