"""Test helpers: polling assertions and a handle on one real ``peerd serve`` process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from peerd.devtools.etcd_server import free_port, parent_death_preexec

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]


def assert_eventually(
    fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.1, message: str = ""
) -> T:
    """Call ``fn()`` until it returns without raising ``AssertionError`` and, if it returns a value
    other than ``None``, until that value is truthy.

    Args:
        fn: the check; raise ``AssertionError`` (e.g. a bare ``assert``) while not yet true.
        timeout: seconds before giving up.
        interval: seconds between calls.
        message: added to the error raised on timeout.

    Returns:
        The last value ``fn()`` returned.

    Raises:
        AssertionError: at the deadline: the last ``AssertionError`` from ``fn`` (with ``message``
            prepended when given), or a new one if ``fn`` kept returning a falsy value.
    """
    deadline = time.monotonic() + timeout
    while True:
        last_error: AssertionError | None = None
        result: T | None = None
        try:
            result = fn()
        except AssertionError as exc:
            last_error = exc
        else:
            if result is None or result:
                return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            prefix = f"{message}: " if message else ""
            if last_error is not None:
                if message:
                    raise AssertionError(f"{prefix}{last_error}") from last_error
                raise last_error
            raise AssertionError(
                f"{prefix}condition still false after {timeout:.1f}s (last value: {result!r})"
            )
        time.sleep(interval)


def run_async(main: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """``asyncio.run(main())`` under a hard timeout: a hung async test fails with
    ``TimeoutError`` after ``timeout_s`` seconds instead of hanging the run."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await main()

    return asyncio.run(bounded())


async def until(cond: Callable[[], bool], interval_s: float = 0.0) -> None:
    """Await until ``cond()`` is true, checking it every ``interval_s`` seconds (0: after every
    turn of the event loop). No deadline of its own: use it under :func:`run_async`."""
    while not cond():
        await asyncio.sleep(interval_s)


class PeerdNode:
    """One real ``peerd serve`` process, its log file and its (stable) gRPC port.

    Output (stdout and stderr) is appended to ``workdir/<node_id>.log`` across restarts. The child
    runs in its own session and, on Linux, is SIGKILLed if the test process dies.

    Args:
        node_id: ``--node-id``.
        etcd: ``--etcd`` endpoint(s), ``HOST:PORT[,HOST:PORT...]``.
        cluster: ``--cluster``.
        workdir: where the log goes (and the process's working directory).
        lease_ttl_s: ``--lease-ttl`` in seconds.
        port: gRPC port; ``None`` picks a free one now and keeps it for every restart.
        allow_shell: one ``--allow-shell`` per pattern.
        extra_args: appended to the command line.
        env: extra environment variables (on top of ``os.environ`` and ``PEERD_LOG_FORMAT=json``).
    """

    def __init__(
        self,
        node_id: str,
        etcd: str,
        cluster: str,
        workdir: Path,
        *,
        lease_ttl_s: int = 3,
        port: int | None = None,
        allow_shell: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.etcd = etcd
        self.cluster = cluster
        self.workdir = Path(workdir)
        self.lease_ttl_s = lease_ttl_s
        self.port = port if port is not None else free_port()
        self.allow_shell = list(allow_shell)
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.log_path = self.workdir / f"{node_id}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of the node's gRPC server."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while it runs, else ``None``."""
        return self._proc.pid if self._proc is not None and self.is_running() else None

    @property
    def returncode(self) -> int | None:
        """Exit code of the last process once it has exited, else ``None``."""
        return self._proc.poll() if self._proc is not None else None

    def command(self) -> list[str]:
        """The ``peerd serve`` command line."""
        cmd = [
            sys.executable, "-m", "peerd", "serve",
            "--node-id", self.node_id,
            "--listen", self.address,
            "--etcd", self.etcd,
            "--cluster", self.cluster,
            "--lease-ttl", str(self.lease_ttl_s),
        ]  # fmt: skip
        for pattern in self.allow_shell:
            cmd += ["--allow-shell", pattern]
        return cmd + self.extra_args

    def start(self, wait: bool = True, timeout: float = 20.0) -> None:
        """Launch the process; with ``wait``, block until its health check says SERVING.

        Raises:
            RuntimeError: already running, or the process exited while starting.
            TimeoutError: not SERVING within ``timeout`` seconds (the process keeps running).
        """
        if self.is_running():
            raise RuntimeError(f"node {self.node_id} already running (pid {self.pid})")
        env = dict(os.environ)
        env["PEERD_LOG_FORMAT"] = "json"
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.update(self.env)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%H:%M:%S")
            log.write(f"--- test harness: starting {self.node_id} at {stamp}\n".encode())
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
        self._paused = False
        if wait:
            self.wait_ready(timeout)

    def health(self, timeout: float = 1.0) -> str | None:
        """The node's ``grpc.health.v1`` status for service ``""`` (e.g. ``"SERVING"``), or
        ``None`` if it cannot be reached."""
        options = [("grpc.enable_http_proxy", 0)]
        with grpc.insecure_channel(self.address, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            except grpc.RpcError:
                return None
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        return name

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll the health check until SERVING.

        Raises:
            RuntimeError: the process is not running or exited meanwhile.
            TimeoutError: not SERVING within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last: str | None = None
        while True:
            if not self.is_running():
                raise RuntimeError(
                    f"node {self.node_id} exited with code {self.returncode} while starting; "
                    f"log tail:\n{self.log_tail(40)}"
                )
            last = self.health(timeout=1.0)
            if last == "SERVING":
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"node {self.node_id} not SERVING after {timeout:.1f}s (health: {last}); "
                    f"log tail:\n{self.log_tail(40)}"
                )
            time.sleep(0.1)

    def is_running(self) -> bool:
        """True while the process exists (including while paused)."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and reap it (no-op if not running)."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
        self._paused = False

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM (graceful drain) and wait for the exit.

        Returns:
            The exit code.

        Raises:
            RuntimeError: the node was never started.
            TimeoutError: still running after ``timeout`` seconds (it is SIGKILLed first).
        """
        if self._proc is None:
            raise RuntimeError(f"node {self.node_id} was never started")
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
                if self._paused:
                    self._proc.send_signal(signal.SIGCONT)
            self._paused = False
            try:
                return self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise TimeoutError(
                    f"node {self.node_id} ignored SIGTERM for {timeout:.1f}s; killed"
                ) from None
        return self._proc.returncode

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate gracefully, falling back to SIGKILL; never raises."""
        if not self.is_running():
            return
        with contextlib.suppress(TimeoutError):
            self.terminate(timeout)

    def pause(self) -> None:
        """SIGSTOP the process (it keeps its sockets and lease until the TTL runs out)."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT the process after :meth:`pause`."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit on its own.

        Returns:
            The exit code.

        Raises:
            RuntimeError: the node was never started.
            TimeoutError: still running after ``timeout`` seconds (it is left running).
        """
        if self._proc is None:
            raise RuntimeError(f"node {self.node_id} was never started")
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"node {self.node_id} still running after {timeout:.1f}s") from None

    def log_text(self) -> str:
        """Everything the node wrote so far (all runs), "" if nothing."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        """The last ``lines`` lines of :meth:`log_text`."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        if not self.is_running() or self._proc is None:
            raise RuntimeError(f"node {self.node_id} is not running")
        self._proc.send_signal(sig)

    def __repr__(self) -> str:
        return f"PeerdNode({self.node_id!r}, address={self.address!r}, pid={self.pid})"
