"""Throw-away etcd for ``peerd dev``, the test suite and the chaos harness.

:class:`EmbeddedEtcd` runs the real ``etcd`` binary (3.4 or newer) as a child process on loopback
ports, waits until ``GET /health`` reports healthy, and can kill, pause, resume and restart it on
the same ports and data directory. :class:`~peerd.devtools.etcd_cluster.EtcdCluster` does the
same for an N-member cluster (one :class:`EmbeddedEtcd` per member) and finds the raft leader.

Process hygiene:

* etcd runs in its own session (``start_new_session=True``), so a Ctrl-C in the parent's terminal
  does not reach it directly; whoever owns the :class:`EmbeddedEtcd` stops it.
* On Linux the child asks the kernel for ``SIGKILL`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in ``preexec_fn``, see
  :func:`~peerd.devtools.spawn.parent_death_preexec`), so a
  ``kill -9`` of the Python process does not leave etcd running. Caveat: Linux delivers that signal
  when the *thread* that forked the child exits, so call :meth:`EmbeddedEtcd.start` from a
  long-lived thread (normally the main thread), not from a short-lived worker thread.
* Nothing is registered globally at import time (no atexit hooks, no signal handlers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from peerd.devtools.spawn import (
    StartStop,
    free_port,
    host_port,
    parent_death_preexec,
    tail_file,
)
from peerd.errors import PeerdError

INSTALL_HINT = (
    "etcd not found on PATH; install it with: "
    "sudo apt-get update && sudo apt-get install -y etcd-server"
)

_LOG_TAIL_LINES = 40
BIND_RETRIES = 3
"""Starts tried when a port picked here was taken before etcd bound it."""


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


@dataclass(frozen=True)
class EtcdServerTls:
    """TLS on etcd's client port (``--cert-file``, ``--key-file``, ``--trusted-ca-file``).

    Attributes:
        ca: the CA that signed ``cert`` and the client certificates.
        cert, key: etcd's server certificate (valid for the listen host) and key.
        client_cert_auth: ``--client-cert-auth``: every client presents a certificate of
            ``ca``; the health check then presents ``health_cert``/``health_key``.
    """

    ca: Path
    cert: Path
    key: Path
    client_cert_auth: bool = True
    health_cert: Path | None = None
    health_key: Path | None = None

    def args(self) -> list[str]:
        """etcd's flags for this. ``--trusted-ca-file`` only with ``--client-cert-auth``: etcd
        3.4 then asks for a client certificate, and a gRPC C-core client without one fails
        after the handshake (``Unwrap failed (TSI_DATA_CORRUPTED)``, measured)."""
        flags = ["--cert-file", str(self.cert), "--key-file", str(self.key)]
        if self.client_cert_auth:
            flags += ["--trusted-ca-file", str(self.ca), "--client-cert-auth"]
        return flags

    def http_client(self, timeout_s: float) -> httpx.Client:
        """An HTTP client for the health check: trusts ``ca``, presents the health cert."""
        cert = (str(self.health_cert), str(self.health_key)) if self.health_cert else None
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return httpx.Client(timeout=timeout_s, trust_env=False, verify=ctx)


class EmbeddedEtcd(StartStop):
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
        quota_backend_bytes: etcd's ``--quota-backend-bytes`` (the database size at which it
            raises NOSPACE and refuses writes); ``0`` = etcd's default (2 GiB).
        tls: TLS on the client port (:class:`EtcdServerTls`); ``None``: plaintext.
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
        quota_backend_bytes: int = 0,
        tls: EtcdServerTls | None = None,
    ) -> None:
        self._quota_backend_bytes = quota_backend_bytes
        self._tls = tls
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
        return self._address(self._client_port, "client")

    @property
    def client_url(self) -> str:
        """``http://HOST:PORT`` (``https://`` with TLS) of the client listener (see
        :attr:`endpoint`)."""
        return f"{'https' if self._tls is not None else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        """``http://HOST:PORT`` of the peer (raft) listener.

        Raises:
            PeerdError: the peer port is ``0`` and :meth:`start` has not chosen one yet.
        """
        return f"http://{self._address(self._peer_port, 'peer')}"

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

    def is_paused(self) -> bool:
        """True while etcd runs but is stopped by :meth:`pause`."""
        return self._paused and self.is_running()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of etcd's log ("" if there is none)."""
        path = self.log_path
        return tail_file(path, lines) if path is not None else ""

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
        for attempt in range(1, BIND_RETRIES + 1):
            self._pick_ports()
            self._launch(binary)
            try:
                self._wait_healthy(deadline)
            except PeerdError as exc:
                if attempt < BIND_RETRIES and not self._started_once and self._repick(str(exc)):
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

    def __repr__(self) -> str:
        port = self._client_port or "?"
        return f"EmbeddedEtcd(name={self._name!r}, endpoint={self._host}:{port}, pid={self.pid})"

    # ----------------------------------------------------------------------------- internals

    def _address(self, port: int, what: str) -> str:
        if port == 0:
            raise PeerdError(f"etcd {what} port not chosen yet: call start() first")
        return host_port(self._host, port)

    def _launch_log_tail(self) -> str:
        path = self.log_path
        return tail_file(path, _LOG_TAIL_LINES, since=self._log_offset) if path is not None else ""

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
        if self._auto_peer_port and f"{host_port(self._host, self._peer_port)}: bind" in error:
            self._peer_port = 0
            repicked = True
        return repicked

    def _pick_ports(self, taken: set[int] | None = None) -> None:
        """Choose the ports still ``0``, avoiding each other and ``taken`` (updated in place)."""
        taken = set() if taken is None else taken
        while self._client_port == 0 or self._client_port in taken:
            self._client_port = free_port(self._host)
        taken.add(self._client_port)
        while self._peer_port == 0 or self._peer_port in taken:
            self._peer_port = free_port(self._host)
        taken.add(self._peer_port)

    def _ensure_dirs(self) -> tuple[Path, Path]:
        if (self._given_data_dir is None or self._given_log_path is None) and self._tmp_dir is None:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="peerd-etcd-"))
        data_dir = self.data_dir
        log_path = self.log_path
        assert data_dir is not None and log_path is not None
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return data_dir, log_path

    def _cluster_args(self) -> list[str]:
        """The ``--initial-cluster*`` flags: a cluster of this one member."""
        return [
            "--initial-cluster", f"{self._name}={self.peer_url}",
            "--initial-cluster-state", "new",
        ]  # fmt: skip

    def _command(self, binary: str, data_dir: Path) -> list[str]:
        client = self.client_url
        return [
            binary,
            "--name", self._name,
            "--data-dir", str(data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            *self._cluster_args(),
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--logger", "zap",
            "--log-level", "warn",
            "--log-outputs", "stderr",
            *(["--quota-backend-bytes", str(q)] if (q := self._quota_backend_bytes) else []),
            *(self._tls.args() if self._tls is not None else []),
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
        tls = self._tls
        http_client = tls.http_client(1.0) if tls else httpx.Client(timeout=1.0, trust_env=False)
        with http_client as http:
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


__all__ = [
    "BIND_RETRIES",
    "INSTALL_HINT",
    "EmbeddedEtcd",
    "EtcdNotInstalled",
    "EtcdServerTls",
    "find_etcd_binary",
    # from peerd.devtools.spawn; bench/ imports them from here
    "free_port",
    "parent_death_preexec",
]
