"""``peerd.devtools.process``: the command line and environment of a ``peerd serve`` handle, and
its life cycle with a real process (a node whose etcd is a closed port: it runs, never SERVING).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from peerd.cli import parse_args, serve_flags
from peerd.config import build_config
from peerd.devtools.process import PeerdProcess, ProcessError, setting_args, stop_all
from peerd.devtools.spawn import free_port
from tests.helpers import REPO_ROOT, assert_eventually


def test_command_has_the_handle_flags_then_settings_then_extra_args(tmp_path: Path) -> None:
    node = PeerdProcess(
        "n1",
        "127.0.0.1:2379,127.0.0.1:2381",
        "c1",
        tmp_path,
        lease_ttl_s=5,
        host="10.0.0.3",
        port=7071,
        settings={"allow_shell": ["/bin/echo *", "x"], "runs_keep": 500, "advertise": "a:1"},
        extra_args=["--log-level", "debug"],
        command_prefix=["ip", "netns", "exec", "ns1"],
    )
    cmd = node.command()
    assert cmd[:4] == ["ip", "netns", "exec", "ns1"]
    assert cmd[5:8] == ["-m", "peerd", "serve"]
    assert cmd[-2:] == ["--log-level", "debug"]
    cfg = build_config(serve_flags(parse_args(cmd[7:])), {})
    assert (cfg.node_id, cfg.listen, cfg.etcd, cfg.cluster) == (
        "n1", "10.0.0.3:7071", ("127.0.0.1:2379", "127.0.0.1:2381"), "c1"
    )  # fmt: skip
    assert cfg.lease_ttl_s == 5 and cfg.runs_keep == 500 and cfg.advertise == "a:1"
    assert list(cfg.allow_shell) == ["/bin/echo *", "x"] and cfg.log_level == "debug"
    assert node.address == "10.0.0.3:7071"
    assert node.log_path == tmp_path / "n1.log"


def test_settings_naming_a_handle_flag_are_refused(tmp_path: Path) -> None:
    assert setting_args({"log_format": "json", "allow_shell": []}) == ["--log-format", "json"]
    with pytest.raises(ValueError, match=r"settings\['lease_ttl'\]"):
        PeerdProcess("n1", "e:1", "c", tmp_path, port=1, settings={"lease_ttl": 9})


def test_environment(tmp_path: Path) -> None:
    node = PeerdProcess(
        "n1", "e:1", "c", tmp_path, port=1, env={"http_proxy": None, "PEERD_LOG_FORMAT": "json"}
    )
    base = {"PATH": "/bin", "PYTHONPATH": "/elsewhere", "PEERD_NODE_ID": "x", "http_proxy": "p"}
    env = node.environment(base)
    assert env["PATH"] == "/bin" and env["PEERD_LOG_FORMAT"] == "json"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/elsewhere"]
    assert "PEERD_NODE_ID" not in env and "http_proxy" not in env
    assert base["PEERD_NODE_ID"] == "x"  # the base is not changed


@pytest.fixture
def unreachable_node(tmp_path: Path) -> Iterator[PeerdProcess]:
    """A node whose etcd does not exist: it keeps running, retrying, and never reports SERVING."""
    node = PeerdProcess("u1", f"127.0.0.1:{free_port()}", "c", tmp_path, label="unit test")
    try:
        yield node
    finally:
        node.kill()


def test_life_cycle(unreachable_node: PeerdProcess) -> None:
    node = unreachable_node
    with pytest.raises(ProcessError, match="never started"):
        node.terminate()
    node.start(wait=False)
    assert node.is_running() and node.pid is not None and node.returncode is None
    with pytest.raises(ProcessError, match="already running"):
        node.start(wait=False)
    with pytest.raises(TimeoutError, match=r"u1 not SERVING after 0\.5s"):
        node.wait_ready(0.5)
    cancel = threading.Event()
    cancel.set()
    assert node.wait_ready(30.0, cancel=cancel) is False

    node.pause()
    assert node.paused and node.is_running()
    assert_eventually(lambda: _state(node.pid) == "T", timeout=5, message="not stopped")
    code = node.terminate(timeout_s=30.0)  # SIGTERM reaches a stopped node through SIGCONT
    assert code == node.returncode and not node.is_running()
    assert node.pid is None and not node.paused
    with pytest.raises(ProcessError, match="not running"):
        node.pause()

    port = node.port
    node.start(wait=False)
    assert node.port == port and node.is_running()
    node.kill()
    assert node.returncode == -signal.SIGKILL
    assert node.log_text().count("--- unit test: starting u1 at ") == 2


def test_exit_while_starting_is_reported_with_the_log(tmp_path: Path) -> None:
    node = PeerdProcess("bad", "127.0.0.1:1", "c", tmp_path, lease_ttl_s=0)
    node.start(wait=False)
    with pytest.raises(ProcessError, match="bad exited with code 2 while starting") as info:
        node.wait_ready(30.0)
    assert "lease" in str(info.value).split("log tail:", 1)[1].lower()


def test_stop_all_stops_paused_and_running_nodes(tmp_path: Path) -> None:
    etcd = f"127.0.0.1:{free_port()}"
    nodes = [PeerdProcess(f"s{i}", etcd, "c", tmp_path) for i in range(2)]
    try:
        for node in nodes:
            node.start(wait=False)
        nodes[0].pause()
        assert stop_all(nodes, 30.0) == []
        assert not any(n.is_running() for n in nodes)
    finally:
        for node in nodes:
            node.kill()


def _state(pid: int | None) -> str:
    """The one-letter state of ``pid`` from /proc (``T`` = stopped)."""
    assert pid is not None
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]
