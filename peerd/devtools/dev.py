"""``peerd dev``: a throw-away local cluster (one embedded etcd + N ``peerd serve`` processes).

Nodes run as ``python -m peerd serve ...`` children in their own sessions (a Ctrl-C in the
terminal reaches only this process, which then stops them in order), each logging to
``<dir>/node<i>.log``. SIGINT/SIGTERM stop everything: SIGTERM to each node, up to 10 s grace,
then SIGKILL; then etcd; exit 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import peerd
from peerd.errors import PeerdError
from peerd.exitcodes import EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE

READY_TIMEOUT_S = 30.0
"""How long each node has to answer grpc.health.v1 SERVING."""
STOP_GRACE_S = 10.0
"""How long nodes get after SIGTERM before SIGKILL."""
LOG_TAIL_LINES = 30
POLL_S = 0.5


@dataclass
class _Node:
    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]
    reported: bool = field(default=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _say(msg: str) -> None:
    print(msg, flush=True)


def _error(msg: str) -> None:
    print(f"peerd: error: {msg}", file=sys.stderr, flush=True)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if ``host:port`` can be bound right now (with SO_REUSEADDR, as gRPC binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_ports(base_port: int, count: int, free_port: Callable[[], int]) -> list[int]:
    """``count`` ports starting at ``base_port``; a busy one is replaced by ``free_port()``
    (and a line saying so is printed)."""
    ports: list[int] = []
    for i in range(count):
        port = base_port + i
        if not port_is_free(port) or port in ports:
            replacement = free_port()
            while replacement in ports or replacement in range(base_port, base_port + count):
                replacement = free_port()
            _say(f"peerd dev: port {port} is busy; node{i} uses {replacement} instead")
            port = replacement
        ports.append(port)
    return ports


def node_command(
    name: str, port: int, etcd: str, cluster: str, lease_ttl_s: int, allow_shell: list[str]
) -> list[str]:
    """argv of one dev node: ``python -m peerd serve ...`` listening on ``127.0.0.1:port``."""
    shell_flags = [arg for pattern in allow_shell for arg in ("--allow-shell", pattern)]
    return [
        sys.executable, "-m", "peerd", "serve",
        "--node-id", name,
        "--listen", f"127.0.0.1:{port}",
        "--etcd", etcd,
        "--cluster", cluster,
        "--lease-ttl", str(lease_ttl_s),
        *shell_flags,
    ]  # fmt: skip


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        data = path.read_bytes()[-64 * 1024 :]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(peerd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PEERD_NODE_ID", None)
    return env


def _health_serving(address: str, timeout_s: float) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def _wait_ready(node: _Node, stop: threading.Event, timeout_s: float) -> str | None:
    """None once the node is SERVING; else why not (exited, timed out, interrupted)."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = node.proc.poll()
        if code is not None:
            node.reported = True
            return f"{node.name} exited with code {code} during startup"
        if _health_serving(node.address, 1.0):
            return None
        if stop.is_set():
            return "interrupted"
        if time.monotonic() >= deadline:
            return f"{node.name} did not report SERVING within {timeout_s:g}s"
        stop.wait(0.2)


def _stop_nodes(nodes: list[_Node]) -> None:
    for node in nodes:
        if node.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for node in nodes:
        try:
            node.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"peerd dev: {node.name} did not stop within {STOP_GRACE_S:g}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                node.proc.kill()
            node.proc.wait()


def run_dev(
    nodes: int,
    base_port: int,
    allow_shell: list[str],
    lease_ttl_s: int,
    cluster: str,
    data_dir: Path | None,
) -> int:
    """Run etcd plus ``nodes`` peerd nodes on loopback until SIGINT/SIGTERM.

    Args:
        nodes: number of nodes (named ``node0`` ...).
        base_port: gRPC port of ``node0``; node i listens on ``base_port + i`` (or a free port
            when that one is busy).
        allow_shell: ``--allow-shell`` patterns passed to every node.
        lease_ttl_s: membership lease TTL, seconds.
        cluster: cluster name.
        data_dir: where etcd data and node logs go; ``None`` = a new temporary directory (kept,
            so the logs can be read afterwards).

    Returns:
        0 after a clean stop; 4 when etcd is not installed; 1 when etcd or a node failed to start.
    """
    from peerd.devtools.etcd_server import (
        EmbeddedEtcd,
        EtcdNotInstalled,
        free_port,
        parent_death_preexec,
    )

    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)

    workdir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="peerd-dev-"))
    etcd: EmbeddedEtcd | None = None
    running: list[_Node] = []
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        etcd = EmbeddedEtcd(workdir / "etcd", name="peerd-dev", log_path=workdir / "etcd.log")
        try:
            etcd.start()
        except EtcdNotInstalled as exc:
            _error(str(exc))
            return EXIT_UNAVAILABLE
        except (PeerdError, OSError) as exc:
            _error(f"etcd failed to start: {exc}")
            return EXIT_ERROR
        _say(f"peerd dev: etcd at {etcd.endpoint} (log: {workdir / 'etcd.log'})")

        ports = choose_ports(base_port, nodes, free_port)
        env = _child_env()
        for i, port in enumerate(ports):
            name = f"node{i}"
            log_path = workdir / f"{name}.log"
            cmd = node_command(name, port, etcd.endpoint, cluster, lease_ttl_s, allow_shell)
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=parent_death_preexec(),
                    close_fds=True,
                )
            running.append(_Node(name, port, log_path, proc))
            _say(f"peerd dev: started {name} (pid {proc.pid}) on 127.0.0.1:{port}, log {log_path}")

        for node in running:
            problem = _wait_ready(node, stop, READY_TIMEOUT_S)
            if problem == "interrupted":
                return EXIT_OK
            if problem is not None:
                _error(problem)
                print(f"--- last lines of {node.log_path}:", file=sys.stderr)
                print(_tail(node.log_path), file=sys.stderr, flush=True)
                return EXIT_ERROR

        _say("")
        for node in running:
            _say(f"  {node.name}  {node.address}")
        _say(f"  etcd   {etcd.endpoint}")
        _say("")
        _say(f"export PEERD_SERVER={running[0].address}")
        _say("peerd dev: ready (Ctrl-C to stop)")

        while not stop.wait(POLL_S):
            for node in running:
                code = node.proc.poll()
                if code is not None and not node.reported:
                    node.reported = True
                    _say(f"peerd dev: {node.name} exited with code {code} (log: {node.log_path})")
        _say("peerd dev: stopping")
        return EXIT_OK
    finally:
        _stop_nodes(running)
        if etcd is not None:
            etcd.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if running:
            _say(f"peerd dev: stopped (logs in {workdir})")


__all__ = ["choose_ports", "node_command", "port_is_free", "run_dev"]
