"""``peerd dev``: a throw-away local cluster (one embedded etcd + N ``peerd serve`` processes).

Nodes run as ``python -m peerd serve ...`` children (:class:`PeerdProcess`) in their own sessions
(a Ctrl-C in the terminal reaches only this process, which then stops them in order), each
logging to ``<dir>/node<i>.log``. SIGINT/SIGTERM stop everything: SIGTERM to every node, up to
10 s grace, then SIGKILL; then etcd; exit 0.

``--tls`` (:func:`dev_security`): a throw-away CA in ``<dir>/tls`` signs a certificate per node
and one client certificate ``dev-admin``; the nodes serve mutual TLS under an auth policy
(``<dir>/auth-policy.toml``) that makes the client certificate and a new bearer token admins.
The ``PEERD_CA``/``PEERD_CERT``/``PEERD_KEY``/``PEERD_TOKEN`` a client needs are printed. etcd
stays plaintext on loopback.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from peerd.core.policy import token_sha256
from peerd.devtools.etcd_server import EmbeddedEtcd, EtcdNotInstalled
from peerd.devtools.process import PeerdProcess, ProcessError, stop_all
from peerd.devtools.spawn import free_port
from peerd.errors import PeerdError
from peerd.exitcodes import EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE
from peerd.security.authn import new_token
from peerd.security.certs import write_set
from peerd.security.tls import ClientTls

READY_TIMEOUT_S = 30.0
"""How long each node has to answer grpc.health.v1 SERVING."""
STOP_GRACE_S = 10.0
"""How long nodes get after SIGTERM before SIGKILL."""
LOG_TAIL_LINES = 30
POLL_S = 0.5
ETCD_QUOTA_BYTES = 256 * 1024 * 1024
"""``--quota-backend-bytes`` of the dev etcd: room for about 1,000 tasks at the default
``--runs-keep`` plus the history of 100 fires/s between compactions, twice over (sizing in
docs/operations.md), while a runaway experiment meets NOSPACE before it fills the disk."""


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


DEV_CLIENT = "dev-admin"
"""The name of the client certificate and of the admin principal of ``peerd dev --tls``."""


@dataclass(frozen=True)
class DevSecurity:
    """What ``peerd dev --tls`` made: per node its ``--tls-*``/``--auth-policy`` settings, and
    the environment a client needs."""

    node_settings: dict[str, dict[str, str]]
    client_env: dict[str, str]

    def client_tls(self) -> ClientTls:
        """The dev client's TLS (its certificate, trusting the dev CA)."""
        env = self.client_env
        return ClientTls(Path(env["PEERD_CA"]), Path(env["PEERD_CERT"]), Path(env["PEERD_KEY"]))


def dev_security(workdir: Path, node_ids: list[str]) -> DevSecurity:
    """A CA, node certificates, the ``dev-admin`` client certificate, a bearer token and an
    auth policy making both admins, under ``workdir`` (see the module docstring).

    Raises:
        OSError: a file cannot be written.
    """
    tls_dir = workdir / "tls"
    _, files = write_set(
        tls_dir, datetime.now(UTC), nodes={n: [] for n in node_ids}, clients=[DEV_CLIENT]
    )
    token = new_token()
    token_file = tls_dir / f"{DEV_CLIENT}.token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    policy = workdir / "auth-policy.toml"
    policy.write_text(
        "# peerd dev --tls: the dev client certificate and token are admins (docs/security.md)\n"
        "[[principals]]\n"
        f'name = "{DEV_CLIENT}"\n'
        f'token_sha256 = ["{token_sha256(token)}"]\n'
        f'certificate = ["{DEV_CLIENT}"]\n'
        'grants = [{ role = "admin", tasks = ["*"] }]\n'
    )
    ca = str(files["ca"].cert)
    settings = {
        n: {
            "tls_cert": str(files[n].cert),
            "tls_key": str(files[n].key),
            "tls_client_ca": ca,
            "auth_policy": str(policy),
            "http_tls": "true",  # HTTPS: REST calls present the dev certificate and token
        }
        for n in node_ids
    }
    client = files[DEV_CLIENT]
    env = {
        "PEERD_CA": ca,
        "PEERD_CERT": str(client.cert),
        "PEERD_KEY": str(client.key),
        "PEERD_TOKEN": token,
    }
    return DevSecurity(settings, env)


def dev_node(
    name: str,
    port: int,
    etcd: str,
    cluster: str,
    lease_ttl_s: int,
    allow_shell: list[str],
    workdir: Path,
    security: DevSecurity | None = None,
) -> PeerdProcess:
    """The handle of one dev node listening on ``127.0.0.1:port`` (gRPC) and on a free port for
    HTTP (metrics, health), logging to ``workdir/<name>.log``; it runs in this process's
    working directory. With ``security`` it serves mutual TLS under the dev auth policy."""
    settings: dict[str, str | list[str]] = {"allow_shell": allow_shell}
    if security is not None:
        settings.update(security.node_settings[name])
    return PeerdProcess(
        name,
        etcd,
        cluster,
        workdir,
        lease_ttl_s=lease_ttl_s,
        port=port,
        http_port=0,
        settings=settings,
        label="peerd dev",
        tls=security.client_tls() if security is not None else None,
    )


def _start_etcd(etcd: EmbeddedEtcd) -> int | None:
    """Start etcd; None when it runs, else the exit code (after printing why)."""
    try:
        etcd.start()
    except EtcdNotInstalled as exc:
        _error(str(exc))
        return EXIT_UNAVAILABLE
    except (PeerdError, OSError) as exc:
        _error(f"etcd failed to start: {exc}")
        return EXIT_ERROR
    return None


def _wait_ready(nodes: list[PeerdProcess], stop: threading.Event) -> int | None:
    """Wait until every node is SERVING; None then, else the exit code (after printing why):
    0 when interrupted, 1 when a node exited or did not become SERVING in time."""
    for node in nodes:
        try:
            if not node.wait_ready(READY_TIMEOUT_S, cancel=stop):
                return EXIT_OK
        except ProcessError:
            _error(f"{node.node_id} exited with code {node.returncode} during startup")
        except TimeoutError:
            _error(f"{node.node_id} did not report SERVING within {READY_TIMEOUT_S:g}s")
        else:
            continue
        print(f"--- last lines of {node.log_path}:", file=sys.stderr)
        print(node.log_tail(LOG_TAIL_LINES), file=sys.stderr, flush=True)
        return EXIT_ERROR
    return None


def _watch(nodes: list[PeerdProcess], stop: threading.Event) -> None:
    """Until ``stop`` is set, say once when a node exits."""
    reported: set[str] = set()
    while not stop.wait(POLL_S):
        for node in nodes:
            code = node.returncode
            if code is not None and node.node_id not in reported:
                reported.add(node.node_id)
                _say(f"peerd dev: {node.node_id} exited with code {code} (log: {node.log_path})")


def _print_ready(
    nodes: list[PeerdProcess], etcd_endpoint: str, security: DevSecurity | None
) -> None:
    _say("")
    scheme = "https" if security is not None else "http"
    for node in nodes:
        _say(f"  {node.node_id}  {node.address}  {scheme}://{node.http_address}/metrics")
    _say(f"  etcd   {etcd_endpoint}")
    _say("")
    _say(f"dashboard: {scheme}://{nodes[0].http_address}/  (any node's HTTP port serves it)")
    _say(f"export PEERD_SERVER={nodes[0].address}")
    for name, value in (security.client_env if security is not None else {}).items():
        _say(f"export {name}={value}")
    _say("peerd dev: ready (Ctrl-C to stop)")


def run_dev(
    nodes: int,
    base_port: int,
    allow_shell: list[str],
    lease_ttl_s: int,
    cluster: str,
    data_dir: Path | None,
    tls: bool = False,
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
        tls: mutual TLS and an auth policy (:func:`dev_security`).

    Returns:
        0 after a clean stop; 4 when etcd is not installed; 1 when etcd or a node failed to start.
    """
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)

    workdir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="peerd-dev-"))
    etcd: EmbeddedEtcd | None = None
    running: list[PeerdProcess] = []
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        etcd = EmbeddedEtcd(
            workdir / "etcd",
            name="peerd-dev",
            log_path=workdir / "etcd.log",
            quota_backend_bytes=ETCD_QUOTA_BYTES,
        )
        failed = _start_etcd(etcd)
        if failed is not None:
            return failed
        _say(f"peerd dev: etcd at {etcd.endpoint} (log: {workdir / 'etcd.log'})")

        security = dev_security(workdir, [f"node{i}" for i in range(nodes)]) if tls else None
        for i, port in enumerate(choose_ports(base_port, nodes, free_port)):
            node = dev_node(
                f"node{i}",
                port,
                etcd.endpoint,
                cluster,
                lease_ttl_s,
                allow_shell,
                workdir,
                security,
            )
            node.start(wait=False)
            running.append(node)
            _say(
                f"peerd dev: started {node.node_id} (pid {node.pid}) on {node.address} "
                f"(http {node.http_address}), log {node.log_path}"
            )
        failed = _wait_ready(running, stop)
        if failed is not None:
            return failed
        _print_ready(running, etcd.endpoint, security)
        _watch(running, stop)
        _say("peerd dev: stopping")
        return EXIT_OK
    finally:
        for node in stop_all(running, STOP_GRACE_S):
            _say(f"peerd dev: {node.node_id} did not stop within {STOP_GRACE_S:g}s; killed it")
        if etcd is not None:
            etcd.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if running:
            _say(f"peerd dev: stopped (logs in {workdir})")


__all__ = [
    "DEV_CLIENT",
    "DevSecurity",
    "choose_ports",
    "dev_node",
    "dev_security",
    "port_is_free",
    "run_dev",
]
