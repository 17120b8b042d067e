"""Process handles: ``peerd serve`` nodes and etcd (one member, or a 3-member cluster).

:class:`NodeProc` runs one node with a stable id, address and log file across restarts
(optionally inside a network namespace, through ``ip netns exec``, which execs in place so the
pid is the node's). :class:`EtcdHandle` gives the fault injector one interface over
:class:`peerd.devtools.etcd_server.EmbeddedEtcd` and the (lazily imported) ``EtcdCluster``.

Every child runs in its own session and gets SIGKILL if the harness dies
(:func:`peerd.devtools.etcd_server.parent_death_preexec`); spawn from the main thread.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from peerd.devtools.etcd_server import EmbeddedEtcd, parent_death_preexec

REPO_ROOT = Path(__file__).resolve().parents[1]


class ChaosError(RuntimeError):
    """The harness itself could not do what it needed (not a finding about peerd)."""


def health_status(address: str, timeout_s: float = 1.0) -> str | None:
    """The ``grpc.health.v1`` status name of service ``""`` at ``address``, or ``None``."""
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError:
            return None
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    return name


class NodeProc:
    """One ``peerd serve`` process; output is appended to ``workdir/<node_id>.log``.

    Args:
        node_id: ``--node-id``.
        host: address to listen on and advertise (loopback, or the namespace's IP).
        port: gRPC port, the same on every restart.
        etcd_csv: ``--etcd``.
        cluster: ``--cluster``.
        lease_ttl_s: ``--lease-ttl``.
        workdir: where the log goes.
        runs_keep: ``--runs-keep`` (large enough to hold the whole run).
        netns: run inside this network namespace (``ip netns exec``), or ``None``.
    """

    def __init__(
        self,
        node_id: str,
        host: str,
        port: int,
        etcd_csv: str,
        cluster: str,
        lease_ttl_s: int,
        workdir: Path,
        runs_keep: int,
        netns: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.etcd_csv = etcd_csv
        self.cluster = cluster
        self.lease_ttl_s = lease_ttl_s
        self.workdir = workdir
        self.runs_keep = runs_keep
        self.netns = netns
        self.log_path = workdir / f"{node_id}.log"
        self.paused = False
        self.expected_down = False
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT`` of the node's gRPC server."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while it runs, else ``None``."""
        return self._proc.pid if self._proc is not None and self.is_running() else None

    @property
    def returncode(self) -> int | None:
        """Exit code of the last process once it exited, else ``None``."""
        return self._proc.poll() if self._proc is not None else None

    def command(self) -> list[str]:
        """The full command line (with the ``ip netns exec`` prefix when namespaced)."""
        cmd = [
            sys.executable, "-m", "peerd", "serve",
            "--node-id", self.node_id,
            "--listen", self.address,
            "--advertise", self.address,
            "--etcd", self.etcd_csv,
            "--cluster", self.cluster,
            "--lease-ttl", str(self.lease_ttl_s),
            "--runs-keep", str(self.runs_keep),
            "--log-format", "json",
        ]  # fmt: skip
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self) -> None:
        """Launch the process (does not wait; see :meth:`wait_ready`).

        Raises:
            ChaosError: it is already running.
        """
        if self.is_running():
            raise ChaosError(f"{self.node_id} already running (pid {self.pid})")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
            env.pop(var, None)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%H:%M:%S")
            log.write(f"--- chaos: starting {self.node_id} at {stamp}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=parent_death_preexec(),
            )
        self.paused = False
        self.expected_down = False

    def health(self, timeout_s: float = 1.0) -> str | None:
        """The node's health status name, or ``None`` when it does not answer."""
        return health_status(self.address, timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        """Poll the health check until SERVING.

        Raises:
            ChaosError: the process exited, or it is not SERVING within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        last: str | None = None
        while True:
            if not self.is_running():
                raise ChaosError(
                    f"{self.node_id} exited with code {self.returncode} while starting; "
                    f"log tail:\n{self.log_tail(30)}"
                )
            last = self.health()
            if last == "SERVING":
                return
            if time.monotonic() >= deadline:
                raise ChaosError(
                    f"{self.node_id} not SERVING after {timeout_s:.0f}s (health {last}); "
                    f"log tail:\n{self.log_tail(30)}"
                )
            time.sleep(0.2)

    def is_running(self) -> bool:
        """True while the process exists (also while SIGSTOPped)."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap (no-op when not running)."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP the process."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT the process."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def terminate(self, timeout_s: float) -> int | None:
        """SIGTERM (graceful drain) and wait.

        Returns:
            The exit code, or ``None`` if it did not exit within ``timeout_s`` (it is then
            SIGKILLed).
        """
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
                if self.paused:
                    self._proc.send_signal(signal.SIGCONT)
            self.paused = False
            try:
                return self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self._proc.returncode

    def stop(self, timeout_s: float = 15.0) -> None:
        """Terminate gracefully, SIGKILL as a fallback; never raises."""
        if self.is_running():
            self.terminate(timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the node's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise ChaosError(f"{self.node_id} is not running")
        self._proc.send_signal(sig)

    def __repr__(self) -> str:
        return f"NodeProc({self.node_id!r}, {self.address}, pid={self.pid})"


class EtcdHandle:
    """etcd for a chaos run: one :class:`EmbeddedEtcd`, or an ``EtcdCluster`` of ``members``.

    ``EtcdCluster`` is imported only when more than one member is asked for; when it cannot be
    imported or built, :attr:`fallback_reason` says why and a single member is used instead.

    Args:
        members: 1 or 3.
        host: the address etcd listens on.
        workdir: data and logs go under ``workdir/etcd``.
    """

    def __init__(self, members: int, host: str, workdir: Path) -> None:
        self.host = host
        self.workdir = workdir
        self.fallback_reason = ""
        self._single: EmbeddedEtcd | None = None
        self._cluster: Any = None
        if members > 1:
            try:
                self._cluster = _make_cluster(members, host, workdir / "etcd")
            except Exception as exc:  # ImportError, or an API still in flux
                self.fallback_reason = f"EtcdCluster unavailable ({type(exc).__name__}: {exc})"
        if self._cluster is None:
            self._single = self._make_single()

    @property
    def members(self) -> int:
        """How many members actually run."""
        return 1 if self._cluster is None else len(self.endpoints)

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints, ``HOST:PORT`` each."""
        if self._cluster is not None:
            return list(self._cluster.endpoints)
        assert self._single is not None
        return [self._single.endpoint]

    @property
    def endpoint_csv(self) -> str:
        """The endpoints joined with commas, for ``--etcd``."""
        return ",".join(self.endpoints)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every member and wait until healthy.

        A cluster that fails to start is stopped and replaced by a single member
        (:attr:`fallback_reason` says why).
        """
        if self._cluster is not None:
            try:
                self._cluster.start(timeout_s=timeout_s)
                return
            except Exception as exc:
                with contextlib.suppress(Exception):
                    self._cluster.stop()
                self._cluster = None
                self.fallback_reason = f"EtcdCluster failed to start ({type(exc).__name__}: {exc})"
                self._single = self._make_single()
        assert self._single is not None
        self._single.start(timeout_s=timeout_s)

    def _make_single(self) -> EmbeddedEtcd:
        return EmbeddedEtcd(
            self.workdir / "etcd-single" / "data",
            name="chaos",
            host=self.host,
            log_path=self.workdir / "etcd.log",
        )

    def stop(self) -> None:
        """Stop every member (data is kept in the workdir); never raises."""
        with contextlib.suppress(Exception):
            if self._cluster is not None:
                self._cluster.stop()
            elif self._single is not None:
                self._single.stop()

    def leader_index(self) -> int:
        """The index of the current leader (0 with a single member)."""
        return int(self._cluster.leader_index()) if self._cluster is not None else 0

    def kill(self, index: int) -> None:
        """SIGKILL one member (the only one when single)."""
        if self._cluster is not None:
            self._cluster.kill(index)
        else:
            assert self._single is not None
            self._single.kill()

    def start_member(self, index: int, timeout_s: float = 30.0) -> None:
        """Restart a killed member on its old ports and data."""
        if self._cluster is not None:
            if "timeout_s" in inspect.signature(self._cluster.start_member).parameters:
                self._cluster.start_member(index, timeout_s=timeout_s)
            else:
                self._cluster.start_member(index)
        else:
            assert self._single is not None
            self._single.start(timeout_s=timeout_s)


def _make_cluster(members: int, host: str, root: Path) -> Any:
    """Build an ``EtcdCluster``, passing only the keyword arguments its signature accepts."""
    from peerd.devtools import etcd_server

    cls = getattr(etcd_server, "EtcdCluster", None)
    if cls is None:
        raise ImportError("peerd.devtools.etcd_server has no EtcdCluster yet")
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "host" in params:
        kwargs["host"] = host
    elif host != "127.0.0.1":
        raise TypeError("EtcdCluster takes no host= argument; cannot listen on the bridge")
    for name in ("root", "data_dir", "base_dir", "workdir", "root_dir"):
        if name in params:
            kwargs[name] = root
            break
    for name in ("log_dir",):
        if name in params:
            kwargs[name] = root
    for name in ("n", "size", "members"):
        if name in params:
            kwargs[name] = members
            return cls(**kwargs)
    return cls(members, **kwargs)
