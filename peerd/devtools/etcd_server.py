"""Throw-away etcd for ``peerd dev``, the test suite and the chaos harness.

:class:`EmbeddedEtcd` runs the real ``etcd`` binary (3.4 or newer) as a child process on loopback
ports, waits until ``GET /health`` reports healthy, and can kill, pause, resume and restart it on
the same ports and data directory. :class:`EtcdCluster` does the same for an N-member cluster
(one :class:`EmbeddedEtcd` per member) and finds the raft leader.

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
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

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


class _StartStop:
    """Context-manager protocol shared by :class:`EmbeddedEtcd` and :class:`EtcdCluster`:
    ``with`` calls :meth:`start` (with its default timeout) and, on exit, :meth:`stop`."""

    def start(self, timeout_s: float = 20.0) -> None:
        """Start and wait until healthy, at most ``timeout_s`` seconds (see subclasses)."""
        raise NotImplementedError

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop and clean up, SIGKILL after ``timeout_s`` seconds (see subclasses)."""
        raise NotImplementedError

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


class EmbeddedEtcd(_StartStop):
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

    def __repr__(self) -> str:
        port = self._client_port or "?"
        return f"EmbeddedEtcd(name={self._name!r}, endpoint={self._host}:{port}, pid={self.pid})"

    # ----------------------------------------------------------------------------- internals

    def _address(self, port: int, what: str) -> str:
        if port == 0:
            raise PeerdError(f"etcd {what} port not chosen yet: call start() first")
        return _host_port(self._host, port)

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


class _ClusterMember(EmbeddedEtcd):
    """One member of an :class:`EtcdCluster`: an :class:`EmbeddedEtcd` whose
    ``--initial-cluster`` names every member of the cluster."""

    def __init__(
        self,
        data_dir: Path,
        *,
        name: str,
        host: str,
        binary: str | None,
        log_path: Path,
        initial_cluster: Callable[[], str],
        token: str,
    ) -> None:
        super().__init__(data_dir, name=name, host=host, binary=binary, log_path=log_path)
        self._initial_cluster = initial_cluster
        self._token = token

    @property
    def name(self) -> str:
        """The member name (``--name``)."""
        return self._name

    def _cluster_args(self) -> list[str]:
        # On a restart etcd finds its member in the data dir and ignores all three flags, so
        # "new" is right for the first start and harmless afterwards.
        return [
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-token", self._token,
            "--initial-cluster-state", "new",
        ]  # fmt: skip


class EtcdCluster(_StartStop):
    """A throw-away etcd cluster of ``size`` members on free loopback ports (default 3).

    Each member is an etcd process with its own data dir and log under ``root`` (``member-<i>/``),
    started with ``--initial-cluster`` naming every member and a per-cluster
    ``--initial-cluster-token``. Members are indexed ``0 .. size-1``; each can be killed, paused,
    resumed and restarted on its ports and data (:meth:`kill`, :meth:`pause`, :meth:`resume`,
    :meth:`start_member`). Process hygiene is that of :class:`EmbeddedEtcd` (own session, SIGKILL
    on parent death: start from a long-lived thread).

    The leader is found through each member's v3 HTTP/JSON gateway, ``POST /v3/maintenance/status``
    (etcd 3.4 serves it on the client port): the member whose ``header.member_id`` equals the
    ``leader`` it reports is the leader. (The gateway needs only httpx; the gRPC Maintenance
    stubs would mean importing aetcd outside :mod:`peerd.coord.etcd`.)

    Args:
        size: number of members (>= 1).
        root: parent of the members' data dirs and logs; created if missing and kept by
            :meth:`stop`. It must not hold data of another cluster. ``None`` uses a temporary
            directory that :meth:`stop` removes.
        name: member ``i`` is named ``<name>-<i>``.
        host: the loopback address to listen on.
        binary: the etcd executable (see :func:`find_etcd_binary`); ``None`` = ``etcd`` on PATH.
        token: ``--initial-cluster-token``; ``None`` makes one unique to this instance.

    Raises:
        ValueError: ``size`` < 1.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        root: Path | None = None,
        name: str = "peerd-etcd",
        host: str = "127.0.0.1",
        binary: str | None = None,
        token: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster needs at least one member, not {size}")
        self._given_root = Path(root) if root is not None else None
        self._tmp_root: Path | None = None
        self._name = name
        self._host = host
        self._binary = binary
        self._token = token if token is not None else f"{name}-{os.getpid()}-{id(self):x}"
        self._size = size
        self._members: list[_ClusterMember] = []
        self._member_ids: dict[int, str] = {}
        self._started_once = False

    # ----------------------------------------------------------------------------- properties

    @property
    def size(self) -> int:
        """The number of members."""
        return self._size

    @property
    def members(self) -> list[EmbeddedEtcd]:
        """The members in index order (empty before the first :meth:`start`); each has
        ``endpoint``, ``pid``, ``log_path``, ``log_tail()``, ``is_running()``."""
        return list(self._members)

    @property
    def endpoints(self) -> list[str]:
        """``HOST:PORT`` of every member's client URL, in index order.

        Raises:
            PeerdError: :meth:`start` has not chosen the ports yet.
        """
        if not self._members:
            raise PeerdError("etcd cluster not started yet: call start() first")
        return [m.endpoint for m in self._members]

    @property
    def endpoint_csv(self) -> str:
        """:attr:`endpoints` joined with ``,``: the form ``peerd serve --etcd`` takes.

        Raises:
            PeerdError: :meth:`start` has not chosen the ports yet.
        """
        return ",".join(self.endpoints)

    @property
    def root(self) -> Path | None:
        """The directory holding the members' data and logs (``None`` before :meth:`start` for a
        temporary one)."""
        return self._given_root if self._given_root is not None else self._tmp_root

    def member(self, i: int) -> EmbeddedEtcd:
        """Member ``i``.

        Raises:
            IndexError: no such member (or not started yet).
        """
        return self._members[i]

    def is_running(self, i: int) -> bool:
        """True while member ``i``'s process exists (including while paused)."""
        return self._members[i].is_running()

    # ----------------------------------------------------------------------------- lifecycle

    def start(self, timeout_s: float = 30.0) -> None:
        """Launch every member at once and wait until each answers ``GET /health`` healthy.

        Args:
            timeout_s: seconds to wait for the whole cluster.

        Raises:
            EtcdNotInstalled: the binary cannot be found.
            PeerdError: a member is already running, exited during startup, or the cluster was not
                healthy within ``timeout_s`` (the message carries that member's log tail; every
                member is killed).
        """
        running = [m.name for m in self._members if m.is_running()]
        if running:
            raise PeerdError(f"etcd cluster already running (members {running})")
        binary = find_etcd_binary(self._binary)
        if not self._members:
            self._create_members()
        deadline = time.monotonic() + timeout_s
        # As in EmbeddedEtcd.start: a port taken by someone else before etcd binds it is picked
        # again, but only on the very first start; the failed attempt's data dirs are wiped
        # because they already name the old peer URLs.
        for attempt in range(1, _BIND_RETRIES + 1):
            taken: set[int] = set()
            for m in self._members:
                m._pick_ports(taken)
            for m in self._members:
                m._launch(binary)
            try:
                for m in self._members:
                    m._wait_healthy(deadline)
            except PeerdError:
                self._kill_all()
                repicked = [m._repick(m._launch_log_tail()) for m in self._members]
                if attempt < _BIND_RETRIES and not self._started_once and any(repicked):
                    for m in self._members:
                        if m.data_dir is not None:
                            shutil.rmtree(m.data_dir, ignore_errors=True)
                    continue
                raise
            break
        self._started_once = True

    def start_member(self, i: int, timeout_s: float = 20.0) -> None:
        """Restart member ``i`` (after :meth:`kill`) on its ports and data dir and wait until it is
        healthy, which needs a quorum of the cluster to be up.

        etcd ignores ``--initial-cluster*`` when the data dir holds a member, so the member
        rejoins as itself without ``--initial-cluster-state existing``.

        Raises:
            PeerdError: it is running, exited, or was not healthy within ``timeout_s`` seconds
                (then it is killed again).
            IndexError: no such member.
        """
        if not self._started_once:
            raise PeerdError("etcd cluster never started: call start() first")
        self._members[i].start(timeout_s)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` and reap it; its data, log and ports stay for
        :meth:`start_member`.

        Raises:
            IndexError: no such member.
        """
        self._members[i].kill()

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``: it stops answering (clients and peers) but keeps its sockets.

        Raises:
            PeerdError: it is not running.
            IndexError: no such member.
        """
        self._members[i].pause()

    def resume(self, i: int) -> None:
        """SIGCONT member ``i`` after :meth:`pause`.

        Raises:
            PeerdError: it is not running.
            IndexError: no such member.
        """
        self._members[i].resume()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every member and remove the temporary directory if this instance made one.

        Paused members are SIGKILLed first: a leader stopping gracefully hands leadership to a
        connected peer, and a frozen one makes that hand-off hang for etcd's request timeout (7 s
        here). The others then get SIGTERM one after the other (SIGKILL after ``timeout_s``
        seconds each). Safe to call more than once.
        """
        for m in self._members:
            if m.is_paused():
                m.kill()
        for m in self._members:
            m.stop(timeout_s)
        if self._tmp_root is not None:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
            self._tmp_root = None
            self._members = []
            self._member_ids = {}
            self._started_once = False

    # ----------------------------------------------------------------------------- raft state

    def status(self, i: int, timeout_s: float = 1.0) -> dict[str, Any]:
        """Member ``i``'s ``Maintenance.Status`` as JSON (``POST /v3/maintenance/status``).

        uint64 fields come as decimal strings (``header.member_id``, ``leader``, ``raftTerm``,
        ...), as the gateway's JSON mapping has them.

        Raises:
            PeerdError: the member did not answer within ``timeout_s`` seconds or answered an
                error (killed, paused, starting).
            IndexError: no such member.
        """
        m = self._members[i]
        try:
            resp = httpx.post(
                f"{m.client_url}/v3/maintenance/status", json={}, timeout=timeout_s, trust_env=False
            )
            resp.raise_for_status()
            body: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PeerdError(f"etcd member {i} ({m.endpoint}): no status: {exc}") from exc
        member_id = str(body.get("header", {}).get("member_id", ""))
        if member_id:
            self._member_ids[i] = member_id
        return body

    def member_id(self, i: int) -> str:
        """Member ``i``'s raft member id (decimal string), as learnt from its status.

        Raises:
            PeerdError: not known yet and the member does not answer.
        """
        if i not in self._member_ids:
            self.status(i)
        return self._member_ids[i]

    def leader_index(self, timeout_s: float = 1.0) -> int:
        """The index of the member that currently leads.

        Every running member is asked (each for at most ``timeout_s`` seconds); the leader is the
        one that reports itself as leader. When two do (an old leader cut off from the others),
        the one with the higher raft term wins.

        Raises:
            PeerdError: no answering member is leader (an election is in progress, or no quorum).
        """
        best: tuple[int, int] | None = None  # (raft term, index)
        errors = []
        for i, m in enumerate(self._members):
            if not m.is_running():
                continue
            try:
                st = self.status(i, timeout_s)
            except PeerdError as exc:
                errors.append(str(exc))
                continue
            leader = str(st.get("leader", "0"))
            if leader != "0" and leader == self._member_ids.get(i):
                term = int(st.get("raftTerm", 0))
                if best is None or term > best[0]:
                    best = (term, i)
        if best is None:
            detail = f" ({'; '.join(errors)})" if errors else ""
            raise PeerdError(f"no etcd member is leader{detail}")
        return best[1]

    def wait_for_leader(self, timeout_s: float = 10.0, *, other_than: int | None = None) -> int:
        """Poll :meth:`leader_index` until a leader (other than member ``other_than``) is known.

        Returns:
            The leader's index.

        Raises:
            PeerdError: none within ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            try:
                i = self.leader_index()
                if i != other_than:
                    return i
                last = f"member {i} still leads"
            except PeerdError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise PeerdError(f"no etcd leader within {timeout_s:.1f}s: {last}")
            time.sleep(0.05)

    def move_leader(self, i: int, timeout_s: float = 10.0) -> None:
        """Hand leadership to member ``i`` (``POST /v3/maintenance/transfer-leadership`` on the
        current leader) and wait until it leads.

        Raises:
            PeerdError: the transfer failed, or member ``i`` did not lead within ``timeout_s``
                seconds.
            IndexError: no such member.
        """
        deadline = time.monotonic() + timeout_s
        target = self.member_id(i)
        while True:
            current = self.wait_for_leader(max(0.1, deadline - time.monotonic()))
            if current == i:
                return
            url = f"{self._members[current].client_url}/v3/maintenance/transfer-leadership"
            try:
                resp = httpx.post(url, json={"targetID": target}, timeout=5.0, trust_env=False)
                error = "" if resp.status_code == 200 else f"HTTP {resp.status_code}: {resp.text}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise PeerdError(f"leadership not moved to etcd member {i}: {error or 'timeout'}")
            time.sleep(0.05)

    def __repr__(self) -> str:
        eps = ",".join(m.endpoint if m.client_port else "?" for m in self._members)
        return f"EtcdCluster(size={self._size}, endpoints={eps or '?'})"

    # ----------------------------------------------------------------------------- internals

    def _create_members(self) -> None:
        root = self._given_root
        if root is None:
            self._tmp_root = root = Path(tempfile.mkdtemp(prefix="peerd-etcd-cluster-"))
        root.mkdir(parents=True, exist_ok=True)

        def initial_cluster() -> str:
            return ",".join(f"{m.name}={m.peer_url}" for m in self._members)

        self._members = [
            _ClusterMember(
                root / f"member-{i}" / "data",
                name=f"{self._name}-{i}",
                host=self._host,
                binary=self._binary,
                log_path=root / f"member-{i}" / "etcd.log",
                initial_cluster=initial_cluster,
                token=self._token,
            )
            for i in range(self._size)
        ]

    def _kill_all(self) -> None:
        for m in self._members:
            m.kill()
