"""A throw-away single-member etcd for ``peerd dev``, the test suite and the chaos harness.

:class:`EmbeddedEtcd` runs the real ``etcd`` binary (3.4 or newer) as a child process on loopback
ports, waits until ``GET /health`` reports healthy, and can kill, pause, resume and restart it on
the same ports and data directory.

Process hygiene:

* etcd runs in its own session (``start_new_session=True``), so a Ctrl-C in the parent's terminal
  does not reach it directly; whoever owns the :class:`EmbeddedEtcd` stops it.
* On Linux the child asks the kernel for ``SIGKILL`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in ``preexec_fn``, see :func:`parent_death_preexec`), so a
  ``kill -9`` of the Python process does not leave etcd running. Caveat: Linux delivers that signal
  when the *thread* that forked the child exits, so call :meth:`EmbeddedEtcd.start` from a
  long-lived thread (normally the main thread), not from a short-lived worker thread.
* Nothing is registered globally at import time (no atexit hooks, no signal handlers).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from peerd.errors import PeerdError

INSTALL_HINT = (
    "etcd not found on PATH; install it with: "
    "sudo apt-get update && sudo apt-get install -y etcd-server"
)

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 40
_BIND_RETRIES = 3


class EtcdNotInstalled(PeerdError):
    """The ``etcd`` binary cannot be found (or is not executable)."""

    def __init__(self, message: str = INSTALL_HINT) -> None:
        super().__init__(message)


def find_etcd_binary(path: str | None = None) -> str:
    """Locate the ``etcd`` executable.

    Args:
        path: an explicit binary: a path (absolute or containing ``/``) or a command name looked
            up on ``PATH``. ``None`` looks up ``etcd`` on ``PATH``.

    Returns:
        The absolute path of the executable.

    Raises:
        EtcdNotInstalled: nothing executable was found.
    """
    if path is None:
        found = shutil.which("etcd")
        if found is None:
            raise EtcdNotInstalled()
        return os.path.abspath(found)
    if os.sep in path or (os.altsep is not None and os.altsep in path):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
        raise EtcdNotInstalled(f"etcd binary {path!r} not found or not executable; {INSTALL_HINT}")
    found = shutil.which(path)
    if found is None:
        raise EtcdNotInstalled(f"etcd binary {path!r} not found on PATH; {INSTALL_HINT}")
    return os.path.abspath(found)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it by binding port 0).

    Another process may take it before the caller binds it; callers that can retry should.

    Raises:
        OSError: ``host`` cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``SIGKILL`` when its parent dies (Linux only).

    It calls ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through ctypes in the forked child before
    ``exec``; the setting survives ``exec``. If the parent already died between ``fork`` and the
    ``prctl`` call, the child exits at once. The kernel sends the signal when the *thread* that
    forked the child exits, so spawn from a long-lived thread.

    Returns:
        The function, or ``None`` where ``prctl`` is unavailable (non-Linux, no libc).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent_pid = os.getpid()

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return _preexec


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tail(path: Path, lines: int = _LOG_TAIL_LINES, since: int = 0) -> str:
    """The last ``lines`` lines of ``path`` after byte offset ``since`` ("" if unreadable)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(since, size - 64 * 1024, 0))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedEtcd:
    """A single-member etcd in a temp (or given) data dir on free loopback ports.

    Ports given as ``0`` are chosen on the first :meth:`start` and then kept, so :meth:`kill`
    followed by :meth:`start` restarts etcd on the same endpoint with the same data. Use it as a
    context manager or call :meth:`stop` to end it.

    Args:
        data_dir: etcd's ``--data-dir``; created (mode 0700) if missing and kept by :meth:`stop`.
            ``None`` uses a fresh temporary directory that :meth:`stop` removes.
        name: the member name (``--name``).
        host: the loopback address to listen on.
        client_port: the client port; ``0`` picks a free one.
        peer_port: the peer port; ``0`` picks a free one.
        binary: the etcd executable (see :func:`find_etcd_binary`); ``None`` = ``etcd`` on PATH.
        log_path: where etcd's stdout/stderr are appended; ``None`` = ``etcd.log`` in a temporary
            directory that :meth:`stop` removes.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        name: str = "peerd-dev",
        host: str = "127.0.0.1",
        client_port: int = 0,
        peer_port: int = 0,
        binary: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self._name = name
        self._host = host
        self._client_port = client_port
        self._peer_port = peer_port
        self._auto_client_port = client_port == 0
        self._auto_peer_port = peer_port == 0
        self._binary = binary
        self._given_log_path = Path(log_path) if log_path is not None else None
        self._tmp_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._started_once = False
        self._log_offset = 0

    # ----------------------------------------------------------------------------- properties

    @property
    def endpoint(self) -> str:
        """``HOST:PORT`` of the client URL, e.g. ``127.0.0.1:40123``.

        Raises:
            PeerdError: the client port is ``0`` and :meth:`start` has not chosen one yet.
        """
        if self._client_port == 0:
            raise PeerdError("etcd client port not chosen yet: call start() first")
        return _host_port(self._host, self._client_port)

    @property
    def client_url(self) -> str:
        """``http://HOST:PORT`` of the client listener (see :attr:`endpoint`)."""
        return f"http://{self.endpoint}"

    @property
    def host(self) -> str:
        """The listen address."""
        return self._host

    @property
    def client_port(self) -> int:
        """The client port (``0`` until :meth:`start` picks one)."""
        return self._client_port

    @property
    def peer_port(self) -> int:
        """The peer port (``0`` until :meth:`start` picks one)."""
        return self._peer_port

    @property
    def pid(self) -> int | None:
        """The etcd process id while it runs (also while paused), else ``None``."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    @property
    def data_dir(self) -> Path | None:
        """etcd's data directory; ``None`` for a temporary one not created yet."""
        if self._given_data_dir is not None:
            return self._given_data_dir
        return self._tmp_dir / "data" if self._tmp_dir is not None else None

    @property
    def log_path(self) -> Path | None:
        """The file etcd's output goes to; ``None`` for a temporary one not created yet."""
        if self._given_log_path is not None:
            return self._given_log_path
        return self._tmp_dir / "etcd.log" if self._tmp_dir is not None else None

    def is_running(self) -> bool:
        """True while the etcd process exists (including while paused)."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of etcd's log ("" if there is none)."""
        path = self.log_path
        return _tail(path, lines) if path is not None else ""

    # ----------------------------------------------------------------------------- lifecycle

    def start(self, timeout_s: float = 20.0) -> None:
        """Launch etcd and wait until ``GET /health`` answers ``{"health": "true"}``.

        Restarting after :meth:`kill` reuses the ports and the data directory (etcd ignores
        ``--initial-cluster*`` flags when the data directory already holds a member).

        Args:
            timeout_s: seconds to wait for health before giving up.

        Raises:
            EtcdNotInstalled: the binary cannot be found.
            PeerdError: etcd is already running, exited during startup, or was not healthy within
                ``timeout_s`` (the message carries the tail of etcd's log; the process is killed).
        """
        if self.is_running():
            raise PeerdError(f"etcd already running (pid {self.pid}) at {self.endpoint}")
        binary = find_etcd_binary(self._binary)
        deadline = time.monotonic() + timeout_s
        # A freshly picked port may be grabbed by someone else before etcd binds it: pick a new
        # one, but only for ports chosen here and only while nobody has seen the endpoint yet.
        for attempt in range(1, _BIND_RETRIES + 1):
            self._pick_ports()
            self._launch(binary)
            try:
                self._wait_healthy(deadline)
            except PeerdError as exc:
                if attempt < _BIND_RETRIES and not self._started_once and self._repick(str(exc)):
                    continue
                raise
            break
        self._started_once = True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop etcd (SIGTERM, then SIGKILL after ``timeout_s`` seconds) and clean up.

        Removes the temporary directory this instance created (temporary data and log); a given
        ``data_dir``/``log_path`` is kept. Safe to call more than once or when not running.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
                if self._paused:
                    proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._proc = None
        self._paused = False
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def kill(self) -> None:
        """SIGKILL etcd and reap it; keeps data, log and ports so :meth:`start` can restart it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP etcd: it stops answering but keeps its sockets open.

        Raises:
            PeerdError: etcd is not running.
        """
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT etcd after :meth:`pause`.

        Raises:
            PeerdError: etcd is not running.
        """
        self._signal(signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._client_port or "?"
        return f"EmbeddedEtcd(name={self._name!r}, endpoint={self._host}:{port}, pid={self.pid})"

    # ----------------------------------------------------------------------------- internals

    def _launch_log_tail(self) -> str:
        path = self.log_path
        return _tail(path, since=self._log_offset) if path is not None else ""

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise PeerdError("etcd is not running")
        proc.send_signal(sig)

    def _repick(self, error: str) -> bool:
        """Forget an auto-chosen port that etcd failed to bind; False if none applies."""
        repicked = False
        if self._auto_client_port and f"{self.endpoint}: bind" in error:
            self._client_port = 0
            repicked = True
        if self._auto_peer_port and f"{_host_port(self._host, self._peer_port)}: bind" in error:
            self._peer_port = 0
            repicked = True
        return repicked

    def _pick_ports(self) -> None:
        if self._client_port == 0:
            self._client_port = free_port(self._host)
        while self._peer_port == 0 or self._peer_port == self._client_port:
            self._peer_port = free_port(self._host)

    def _ensure_dirs(self) -> tuple[Path, Path]:
        if (self._given_data_dir is None or self._given_log_path is None) and self._tmp_dir is None:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="peerd-etcd-"))
        data_dir = self.data_dir
        log_path = self.log_path
        assert data_dir is not None and log_path is not None
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return data_dir, log_path

    def _command(self, binary: str, data_dir: Path) -> list[str]:
        client = f"http://{_host_port(self._host, self._client_port)}"
        peer = f"http://{_host_port(self._host, self._peer_port)}"
        return [
            binary,
            "--name", self._name,
            "--data-dir", str(data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self._name}={peer}",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--logger", "zap",
            "--log-level", "warn",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    def _launch(self, binary: str) -> None:
        data_dir, log_path = self._ensure_dirs()
        with log_path.open("ab") as log:
            self._log_offset = log.tell()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"--- peerd: starting etcd at {stamp} on {self.endpoint}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._command(binary, data_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=parent_death_preexec(),
                close_fds=True,
            )
        self._paused = False

    def _wait_healthy(self, deadline: float) -> None:
        url = f"{self.client_url}/health"
        last_error = "no answer yet"
        with httpx.Client(timeout=1.0, trust_env=False) as http:
            while True:
                proc = self._proc
                assert proc is not None
                code = proc.poll()
                if code is not None:
                    raise PeerdError(
                        f"etcd exited with code {code} during startup on {self.endpoint}; "
                        f"log tail ({self.log_path}):\n{self._launch_log_tail()}"
                    )
                try:
                    resp = http.get(url)
                    if resp.status_code == 200 and resp.json().get("health") == "true":
                        return
                    last_error = f"HTTP {resp.status_code}: {resp.text.strip()}"
                except (httpx.HTTPError, ValueError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    self.kill()
                    raise PeerdError(
                        f"etcd on {self.endpoint} not healthy in time (last: {last_error}); "
                        f"log tail ({self.log_path}):\n{self._launch_log_tail()}"
                    )
                time.sleep(0.05)
