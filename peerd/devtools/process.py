"""A handle on one ``peerd serve`` process, for the tests, the chaos harness, the benchmarks and
``peerd dev``.

:class:`PeerdProcess` keeps a node's id, port and log file across restarts. Its life::

    start() ──► running ──wait_ready()──► SERVING (grpc.health.v1, :func:`peerd.healthcheck.check`)
                 │  pause() / resume(): SIGSTOP / SIGCONT (still running, lease ticking away)
                 │  terminate(): SIGTERM (+ SIGCONT when paused), wait; SIGKILL after the grace
                 │  kill(): SIGKILL and reap
                 ▼
               exited ──start()──► running again: same id, port and log (a banner line per start)

The command line is ``python -m peerd serve`` with ``--node-id``, ``--listen``, ``--etcd``,
``--cluster`` and ``--lease-ttl`` from the handle, one flag per entry of ``settings``
(``{"runs_keep": 500}`` is ``--runs-keep 500``; a list repeats the flag), then ``extra_args``,
all behind an optional ``command_prefix`` (e.g. ``ip netns exec NAME``, which execs in place, so
the pid is still the node's).

Process hygiene: the child runs in its own session (a Ctrl-C in the terminal reaches only the
parent, which stops its nodes in order) and, on Linux, gets SIGKILL when the thread that started
it dies (:func:`peerd.devtools.spawn.parent_death_preexec`): start from a long-lived
thread. stdout and stderr are appended to ``workdir/<node_id>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import peerd
from peerd.devtools.spawn import free_port, parent_death_preexec
from peerd.healthcheck import check
from peerd.security.tls import ClientTls

Setting = str | int | float | Sequence[str]
"""A value of ``settings``: one flag value, or a list of values (the flag repeated)."""

READY_POLL_S = 0.1
"""Seconds between health checks while waiting for SERVING."""
PROBE_TIMEOUT_S = 1.0
"""Deadline of one health check while waiting for SERVING (a node that is still starting may
not answer at all)."""

_FIXED_FLAGS = ("node_id", "listen", "etcd", "cluster", "lease_ttl", "http_listen")
_PACKAGE_ROOT = str(Path(peerd.__file__).resolve().parent.parent)


class ProcessError(RuntimeError):
    """The process is not in the state the call needs (already running, never started, not
    running, or it exited while starting)."""


def setting_args(settings: Mapping[str, Setting]) -> list[str]:
    """Flags for ``settings``: ``{"runs_keep": 500, "allow_shell": ["a", "b"]}`` ->
    ``["--runs-keep", "500", "--allow-shell", "a", "--allow-shell", "b"]``.

    Raises:
        ValueError: a key names a flag the handle sets itself (``node_id``, ``listen``, ``etcd``,
            ``cluster``, ``lease_ttl``, ``http_listen``).
    """
    args: list[str] = []
    for key, value in settings.items():
        if key in _FIXED_FLAGS:
            raise ValueError(f"settings[{key!r}]: set by the process handle itself")
        flag = "--" + key.replace("_", "-")
        values = [value] if isinstance(value, str | int | float) else list(value)
        for item in values:
            args += [flag, str(item)]
    return args


class PeerdProcess:
    """One ``peerd serve`` process with a stable node id, address and log file.

    Args:
        node_id: ``--node-id``.
        etcd: ``--etcd`` endpoint(s), ``HOST:PORT[,HOST:PORT...]``.
        cluster: ``--cluster``.
        workdir: where ``<node_id>.log`` goes (created on start).
        lease_ttl_s: ``--lease-ttl`` in seconds.
        host: address to listen on (``--listen HOST:PORT``).
        port: gRPC port; ``None`` picks a free one on ``host`` now and keeps it for every restart.
        http_port: ``--http-listen`` port on ``host`` (metrics, health); ``None``: no HTTP port;
            0 picks a free one now and keeps it for every restart.
        settings: more flags, see :func:`setting_args`.
        extra_args: appended to the command line as they are.
        env: on top of this process's environment; a ``None`` value removes the variable.
            Always set: ``PYTHONUNBUFFERED=1`` and ``PYTHONPATH`` starting with the directory this
            ``peerd`` package was imported from; removed: ``PEERD_NODE_ID`` (the flag names it).
        command_prefix: argv put in front of the command (``["ip", "netns", "exec", NAME]``).
        label: who starts the node, in the banner line ``--- LABEL: starting ID at HH:MM:SS``
            written to the log before each start.
        cwd: the node's working directory (shell tasks without one run there); ``None`` = this
            process's.
        tls: what the health checks present to a TLS node (``None``: plaintext).
    """

    def __init__(
        self,
        node_id: str,
        etcd: str,
        cluster: str,
        workdir: Path,
        *,
        lease_ttl_s: int = 3,
        host: str = "127.0.0.1",
        port: int | None = None,
        http_port: int | None = None,
        settings: Mapping[str, Setting] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        command_prefix: Sequence[str] = (),
        label: str = "peerd.devtools",
        cwd: Path | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self.node_id = node_id
        self.etcd = etcd
        self.cluster = cluster
        self.workdir = Path(workdir)
        self.lease_ttl_s = lease_ttl_s
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.http_port = (http_port or free_port(host)) if http_port is not None else None
        self.settings = dict(settings or {})
        setting_args(self.settings)  # reject a bad key now, not at the first start
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.command_prefix = list(command_prefix)
        self.label = label
        self.cwd = cwd
        self.tls = tls
        self.log_path = self.workdir / f"{node_id}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def address(self) -> str:
        """``HOST:PORT`` of the node's gRPC server."""
        return f"{self.host}:{self.port}"

    @property
    def http_address(self) -> str | None:
        """``HOST:PORT`` of the node's HTTP port (``/metrics``, ``/readyz``), None when off."""
        return None if self.http_port is None else f"{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """The process id while it runs, else ``None``."""
        return self._proc.pid if self._proc is not None and self.is_running() else None

    @property
    def returncode(self) -> int | None:
        """Exit code of the last process once it has exited, else ``None``."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume` (or the next stop or start)."""
        return self._paused

    def command(self) -> list[str]:
        """The full command line, prefix included."""
        cmd = [
            sys.executable, "-m", "peerd", "serve",
            "--node-id", self.node_id,
            "--listen", self.address,
            "--etcd", self.etcd,
            "--cluster", self.cluster,
            "--lease-ttl", str(self.lease_ttl_s),
        ]  # fmt: skip
        if self.http_address is not None:
            cmd += ["--http-listen", self.http_address]
        return [*self.command_prefix, *cmd, *setting_args(self.settings), *self.extra_args]

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The child's environment: ``base`` (default ``os.environ``) changed as ``env`` in the
        class docstring says."""
        env = dict(os.environ if base is None else base)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        env.pop("PEERD_NODE_ID", None)
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def start(self, wait: bool = True, timeout_s: float = 20.0) -> None:
        """Launch the process; with ``wait``, block until its health check says SERVING.

        Raises:
            ProcessError: already running, or (with ``wait``) it exited while starting.
            TimeoutError: (with ``wait``) not SERVING within ``timeout_s`` (it keeps running).
        """
        if self.is_running():
            raise ProcessError(f"node {self.node_id} already running (pid {self.pid})")
        env = self.environment()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%H:%M:%S")
            log.write(f"--- {self.label}: starting {self.node_id} at {stamp}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=parent_death_preexec(),
            )
        self._paused = False
        if wait:
            self.wait_ready(timeout_s)

    def health(self, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
        """The node's ``grpc.health.v1`` status name (e.g. ``"SERVING"``), or ``None`` if it does
        not answer (:func:`peerd.healthcheck.check`)."""
        creds = self.tls.credentials() if self.tls is not None else None
        return check(self.address, timeout_s, credentials=creds)

    def wait_ready(self, timeout_s: float = 20.0, cancel: threading.Event | None = None) -> bool:
        """Poll the health check every :data:`READY_POLL_S` until SERVING.

        Args:
            timeout_s: how long to wait.
            cancel: when set (e.g. by a signal handler), stop waiting and return False.

        Returns:
            True once SERVING; False if ``cancel`` was set first.

        Raises:
            ProcessError: the process is not running or exited meanwhile (the log tail is in the
                message).
            TimeoutError: not SERVING within ``timeout_s`` (the process keeps running).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.is_running():
                raise ProcessError(
                    f"node {self.node_id} exited with code {self.returncode} while starting; "
                    f"log tail:\n{self.log_tail(40)}"
                )
            last = self.health()
            if last == "SERVING":
                return True
            if cancel is not None and cancel.is_set():
                return False
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"node {self.node_id} not SERVING after {timeout_s:.1f}s (health: {last}); "
                    f"log tail:\n{self.log_tail(40)}"
                )
            if cancel is not None:
                cancel.wait(READY_POLL_S)
            else:
                time.sleep(READY_POLL_S)

    def is_running(self) -> bool:
        """True while the process exists (including while paused)."""
        return self._proc is not None and self._proc.poll() is None

    def send_sigterm(self) -> None:
        """SIGTERM (a graceful drain), and SIGCONT when paused so the node can act on it; does
        not wait. No-op when not running."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
                if self._paused:
                    self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for the process to exit (on its own or after a signal).

        Returns:
            The exit code.

        Raises:
            ProcessError: it was never started.
            TimeoutError: still running after ``timeout_s`` (it is left running).
        """
        if self._proc is None:
            raise ProcessError(f"node {self.node_id} was never started")
        try:
            return self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"node {self.node_id} still running after {timeout_s:.1f}s"
            ) from None

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM (graceful drain) and wait for the exit.

        Returns:
            The exit code (also when it had already exited).

        Raises:
            ProcessError: it was never started.
            TimeoutError: still running after ``timeout_s``; it is SIGKILLed first.
        """
        self.send_sigterm()
        try:
            return self.wait_exit(timeout_s)
        except TimeoutError:
            self.kill()
            raise TimeoutError(
                f"node {self.node_id} ignored SIGTERM for {timeout_s:.1f}s; killed"
            ) from None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate gracefully, falling back to SIGKILL; never raises."""
        if self.is_running():
            with contextlib.suppress(TimeoutError):
                self.terminate(timeout_s)

    def kill(self) -> None:
        """SIGKILL the process and reap it (no-op if not running)."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
        self._paused = False

    def restart(self, grace_s: float = 10.0, wait: bool = True, timeout_s: float = 20.0) -> None:
        """:meth:`stop` (SIGKILL after ``grace_s``), then :meth:`start` on the same id, port and
        log; raises what :meth:`start` raises."""
        self.stop(grace_s)
        self.start(wait, timeout_s)

    def pause(self) -> None:
        """SIGSTOP the process (it keeps its sockets and lease until the TTL runs out).

        Raises:
            ProcessError: it is not running.
        """
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT the process after :meth:`pause`.

        Raises:
            ProcessError: it is not running.
        """
        self._signal(signal.SIGCONT)
        self._paused = False

    def log_text(self) -> str:
        """Everything the node wrote so far (all runs), "" if nothing."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        """The last ``lines`` lines of :meth:`log_text`."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise ProcessError(f"node {self.node_id} is not running")
        self._proc.send_signal(sig)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.node_id!r}, address={self.address!r}, pid={self.pid})"


def stop_all(procs: Iterable[PeerdProcess], grace_s: float) -> list[PeerdProcess]:
    """Stop several nodes at once: SIGTERM to every one, then wait for all of them against one
    deadline ``grace_s`` seconds away, and SIGKILL whichever is still running then.

    Returns:
        The processes that had to be killed (in the order given).
    """
    handles = list(procs)
    for proc in handles:
        proc.send_sigterm()
    deadline = time.monotonic() + grace_s
    killed = []
    for proc in handles:
        if not proc.is_running():
            continue
        try:
            proc.wait_exit(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            proc.kill()
            killed.append(proc)
    return killed
