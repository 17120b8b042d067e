"""A fast webhook receiver for the benchmarks: Debian's nginx, unprivileged, generated config.

The Python sink (:mod:`peerd.devtools.sink`) costs about as much CPU per request as a node's
HTTP client, so on a 2-core machine it competes with the nodes it measures. nginx answers a
request in a few microseconds of CPU. :class:`NginxReceiver` writes a config into a temp dir,
starts ``nginx`` in the foreground on a free loopback port (no root needed: every path is in the
temp dir, the error log too via ``-e``), answers ``200`` to any method on any path, and logs one
access-log line per request::

    $msec $status $request_method $uri $http_idempotency_key $http_peerd_fencing_token

which :meth:`NginxReceiver.deliveries` (all) and :meth:`NginxReceiver.read_new` (since the last
call, for live counts) parse into :class:`Delivery` rows (time, path, idempotency key, fencing
token). A missing header is ``-`` in the log and ``None`` here.

Sizing: one process with 4,096 connections (``master_process off``: nginx serves from the process
it starts as, so the parent-death signal that stops it when the benchmark dies reaches the
process that serves; a master's worker would outlive a killed master). The nodes keep a small
pool of keep-alive connections each (httpx, one pool per origin), so a few hundred connections
is the most the benchmarks open; one nginx process serves tens of thousands of such requests
per second on one core, and the benchmarks send at most a few thousand. :func:`measure_ceiling`
measures it here: requests/s answered to one Python asyncio client (raw HTTP/1.1 keep-alive
connections, a POST like peerd's) at a small concurrency; that client, not nginx, is then the
limit (about 11,000-14,000/s on this 2-core machine), which is enough to show that the receiver
is not the benchmark's bottleneck. The access log is written unbuffered (one ``write`` per
request), so a live reader sees every request at once.

Needs ``nginx`` on the PATH or in /usr/sbin (Debian: ``apt-get install -y nginx-light``).

    .venv/bin/python bench/receiver.py [--seconds 3] [--concurrency 8]   # prints the ceiling
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from peerd.devtools.etcd_server import free_port, parent_death_preexec

CEILING_PATH = "/_ceiling"
"""Requests of :func:`measure_ceiling` go under this path; :class:`Delivery` parsing skips them."""
START_TIMEOUT_S = 10.0

_CONFIG = """\
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format peerd '$msec $status $request_method $uri '
                     '$http_idempotency_key $http_peerd_fencing_token';
    access_log {dir}/access.log peerd;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen {host}:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


class ReceiverError(RuntimeError):
    """nginx is not installed, or did not start (the error log is in the message)."""


@dataclass(frozen=True)
class Delivery:
    """One request nginx answered.

    Attributes:
        at_s: epoch seconds (millisecond resolution) when nginx logged the request.
        path: the URL path, e.g. ``"/bench-00001"``.
        key: the ``Idempotency-Key`` header (``<task_id>/<slot epoch ms>``), or ``None``.
        token: the ``Peerd-Fencing-Token`` header as an int, or ``None``.
    """

    at_s: float
    path: str
    key: str | None
    token: int | None


def parse_line(line: str) -> Delivery | None:
    """One access-log line as a :class:`Delivery`; ``None`` for a ceiling request or a line
    that is not in the receiver's format."""
    parts = line.split()
    if len(parts) != 6 or parts[3].startswith(CEILING_PATH):
        return None
    try:
        at_s = float(parts[0])
    except ValueError:
        return None
    key = None if parts[4] == "-" else parts[4]
    token = int(parts[5]) if parts[5].isdigit() else None
    return Delivery(at_s, parts[3], key, token)


def nginx_binary() -> str:
    """The nginx executable.

    Raises:
        ReceiverError: not found (with the install command).
    """
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise ReceiverError("nginx not found: apt-get install -y nginx-light")
    return found


class NginxReceiver:
    """nginx answering ``200`` to everything on ``host:port``, logging each request.

    Args:
        workdir: parent of the receiver's temp dir (config, logs); a new temp dir if ``None``.
        host: address to listen on.
        port: port to listen on; ``None`` picks a free one.
    """

    def __init__(
        self, workdir: Path | None = None, host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="receiver-", dir=workdir))
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.access_log = self.dir / "access.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """nginx's process id (for CPU accounting), while running."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        """Write the config, start nginx and wait until it accepts connections.

        Raises:
            ReceiverError: nginx missing, exited, or not listening within 10 s.
        """
        binary = nginx_binary()
        conf = self.dir / "nginx.conf"
        conf.write_text(_CONFIG.format(dir=self.dir, host=self.host, port=self.port))
        self.access_log.touch()
        self._proc = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=parent_death_preexec(),
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ReceiverError(f"nginx exited ({self._proc.returncode}): {self._errors()}")
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            time.sleep(0.05)
        self.stop()
        raise ReceiverError(f"nginx not listening on {self.host}:{self.port}: {self._errors()}")

    def stop(self) -> None:
        """Stop nginx (SIGTERM, SIGKILL after 5 s); no-op when stopped."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def read_new(self) -> list[Delivery]:
        """Deliveries logged since the previous call (the first call: since the start)."""
        with self.access_log.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written stays for the next call
        self._offset += end
        return [d for line in data[:end].decode().splitlines() if (d := parse_line(line))]

    def deliveries(self) -> list[Delivery]:
        """Every delivery logged so far, in log order."""
        text = self.access_log.read_text()
        return [d for line in text.splitlines() if (d := parse_line(line))]

    def _errors(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "error.log").read_text()[-2000:]
        return ""

    def __enter__(self) -> NginxReceiver:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _client(host: str, port: int, until: float, n: int) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    body = b'{"task_id":"x"}'
    done = 0
    try:
        while time.monotonic() < until:
            writer.write(
                f"POST {CEILING_PATH}/{n} HTTP/1.1\r\nHost: {host}\r\n"
                f"Idempotency-Key: ceiling/{done}\r\nPeerd-Fencing-Token: {done}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            done += 1
    finally:
        writer.close()
    return done


def measure_ceiling(receiver: NginxReceiver, seconds: float = 3.0, concurrency: int = 8) -> float:
    """Requests/s ``receiver`` answers to one Python asyncio client with ``concurrency``
    keep-alive connections for ``seconds`` (requests go to :data:`CEILING_PATH`, which the
    delivery parser skips)."""

    async def run() -> int:
        until = time.monotonic() + seconds
        counts = await asyncio.gather(
            *(_client(receiver.host, receiver.port, until, i) for i in range(concurrency))
        )
        return sum(counts)

    start = time.monotonic()
    total = asyncio.run(run())
    return total / (time.monotonic() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with NginxReceiver() as receiver:
        rate = measure_ceiling(receiver, args.seconds, args.concurrency)
        print(
            f"receiver ceiling: {rate:.0f} requests/s (one asyncio client, "
            f"{args.concurrency} connections, {args.seconds:.0f}s)"
        )
    shutil.rmtree(receiver.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
