"""A webhook sink that records every delivery: for the demo, the integration tests and chaos runs.

Any method on any path is recorded as a :class:`Delivery` and answered with the sink's status
(``200`` by default), except two read-only endpoints:

* ``GET /_deliveries``: JSON list of every delivery so far (oldest first);
* ``GET /_summary``: JSON ``{"total", "unique_keys", "duplicate_keys"}``.

Per-request overrides in the query string (the query string is recorded, not interpreted further):

* ``?status=503`` answers that status instead of the sink's;
* ``?delay_s=2.5`` waits that many seconds before answering (for executor timeout tests);
* ``?delay_first_s=30`` waits only when this is the first delivery of its idempotency key (the
  first attempt of a slot hangs, its retries do not: a deterministic "killed mid-attempt");
* ``?hold=NAME`` waits until :meth:`WebhookSink.release` is called with ``NAME`` (at most
  ``MAX_DELAY_S``); once released, requests naming it are answered at once (a run that stays in
  progress exactly until a test has seen what it waits for, with no guessed duration).

peerd passes the slot's idempotency key and the claim's fencing token as the HTTP headers
``Idempotency-Key`` and ``Peerd-Fencing-Token``; :meth:`WebhookSink.duplicates` reports keys
delivered more than once.

Command line: ``python -m peerd.devtools.sink --listen 127.0.0.1:8099 [--jsonl FILE]
[--status 200]`` prints one line per delivery; Ctrl-C or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from peerd.devtools.spawn import StartStop, host_port

IDEMPOTENCY_HEADER = "idempotency-key"
FENCING_HEADER = "peerd-fencing-token"
MAX_DELAY_S = 300.0
_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Delivery:
    """One request the sink received.

    Attributes:
        received_at: epoch seconds when the request line and headers had been read.
        method: HTTP method, e.g. ``"POST"``.
        path: the URL path without the query string, e.g. ``"/hook"``.
        idempotency_key: the ``Idempotency-Key`` header, or ``None``.
        fencing_token: the ``Peerd-Fencing-Token`` header as an int, or ``None`` if missing or
            not an integer.
        headers: all headers, names lower-cased; repeated headers joined with ``", "``.
        body: the request body decoded as UTF-8 (invalid bytes replaced).
        query: the raw query string ("" if none).
    """

    received_at: float
    method: str
    path: str
    idempotency_key: str | None
    fencing_token: int | None
    headers: dict[str, str]
    body: str
    query: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return asdict(self)


def _parse_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # bursts of late slots arrive at once; the default backlog is 5
    allow_reuse_address = True
    sink: WebhookSink

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about senders that vanish mid-request (killed nodes); report the rest."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Without this, headers and body leave in separate segments and Nagle + delayed ACK add
    # ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    timeout = 60.0  # idle keep-alive connections are closed after this many seconds

    def setup(self) -> None:
        super().setup()
        self.server.sink._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sink._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr line."""

    def __getattr__(self, name: str) -> Any:
        # http.server dispatches to do_<METHOD>; accept every method.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise ConnectionResetError("request body cut short")
                chunks.append(chunk)
                self.rfile.readline(1024)
        length = _parse_int(self.headers.get("Content-Length")) or 0
        if length < 0 or length > _MAX_BODY_BYTES:
            raise ValueError(f"Content-Length {length} out of range")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The sender died mid-request (e.g. kill -9): not a delivery, nothing to record.
            raise ConnectionResetError("request body cut short")
        return body

    def _handle(self) -> None:
        sink = self.server.sink
        received_at = time.time()
        url = urlsplit(self.path)
        try:
            raw_body = self._read_body()
        except ValueError as exc:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            self.close_connection = True
            return
        except OSError:  # connection reset or body cut short: the request never arrived whole
            self.close_connection = True
            return
        if self.command == "GET" and url.path == "/_deliveries":
            self._reply(200, [d.to_json() for d in sink.deliveries()])
            return
        if self.command == "GET" and url.path == "/_summary":
            self._reply(200, sink.summary())
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        delivery = Delivery(
            received_at=received_at,
            method=self.command,
            path=url.path,
            idempotency_key=headers.get(IDEMPOTENCY_HEADER),
            fencing_token=_parse_int(headers.get(FENCING_HEADER)),
            headers=headers,
            body=raw_body.decode("utf-8", errors="replace"),
            query=url.query,
        )
        first = sink._record(delivery)
        query = parse_qs(url.query)
        status = _parse_int(query.get("status", [""])[-1]) or 0
        if not 200 <= status <= 599:
            status = sink.status
        delay_s = query.get("delay_s", [""])[-1]
        if first and not delay_s:
            delay_s = query.get("delay_first_s", [""])[-1]
        with contextlib.suppress(ValueError):
            if delay_s:
                time.sleep(min(max(float(delay_s), 0.0), MAX_DELAY_S))
        hold = query.get("hold", [""])[-1]
        if hold:
            sink._hold(hold).wait(MAX_DELAY_S)
        self._reply(status, {"ok": 200 <= status < 300, "status": status})

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        body_allowed = status >= 200 and status not in (204, 304)
        self.send_response(status)
        if body_allowed:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body_allowed and self.command != "HEAD":
            self.wfile.write(body)


class WebhookSink(StartStop):
    """An HTTP server in a background thread that records every request (thread-safe).

    Args:
        host: address to bind.
        port: port to bind; ``0`` picks a free one (see :attr:`url`).
        jsonl_path: if set, every delivery is also appended to this file as one JSON line.
        status: the HTTP status answered by default (settable later through :attr:`status`).
        on_delivery: called (in the request's thread) with every delivery after it is recorded.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        jsonl_path: Path | None = None,
        status: int = 200,
        *,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._jsonl_path = Path(jsonl_path) if jsonl_path is not None else None
        self._status = status
        self._on_delivery = on_delivery
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._keys: set[str] = set()
        self._jsonl: IO[str] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._holds: dict[str, threading.Event] = {}

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running sink.

        Raises:
            RuntimeError: the sink has not been started.
        """
        if self._server is None:
            raise RuntimeError("sink not started")
        return f"http://{host_port(self._host, self._port)}"

    @property
    def port(self) -> int:
        """The bound port (the requested one until :meth:`start`)."""
        return self._port

    @property
    def status(self) -> int:
        """The status answered when the request has no ``?status=`` override."""
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        self._status = value

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            RuntimeError: already started.
            OSError: the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("sink already started")
        server_cls = _Server6 if ":" in self._host else _Server
        server = server_cls((self._host, self._port), _Handler)
        server.sink = self
        self._port = server.server_address[1]
        if self._jsonl_path is not None:
            self._jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = self._jsonl_path.open("a", encoding="utf-8")
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"webhook-sink-{self._port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close open connections and the JSONL file. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            conns = list(self._connections)
            holds = list(self._holds.values())
        for held in holds:  # answer held requests now instead of after MAX_DELAY_S
            held.set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._lock:
            if self._jsonl is not None:
                self._jsonl.close()
                self._jsonl = None

    def deliveries(self) -> list[Delivery]:
        """A snapshot of every delivery so far, oldest first."""
        with self._lock:
            return list(self._deliveries)

    def duplicates(self) -> dict[str, list[Delivery]]:
        """Idempotency keys delivered more than once, each with all its deliveries."""
        by_key: dict[str, list[Delivery]] = {}
        for d in self.deliveries():
            if d.idempotency_key is not None:
                by_key.setdefault(d.idempotency_key, []).append(d)
        return {k: v for k, v in by_key.items() if len(v) > 1}

    def summary(self) -> dict[str, int]:
        """``{"total", "unique_keys", "duplicate_keys"}`` (deliveries without a key count only
        towards ``total``)."""
        deliveries = self.deliveries()
        counts: dict[str, int] = {}
        for d in deliveries:
            if d.idempotency_key is not None:
                counts[d.idempotency_key] = counts.get(d.idempotency_key, 0) + 1
        return {
            "total": len(deliveries),
            "unique_keys": len(counts),
            "duplicate_keys": sum(1 for n in counts.values() if n > 1),
        }

    def release(self, name: str) -> None:
        """Answer the requests held with ``?hold=NAME`` (``name``), and from now on answer such
        requests at once. Releasing a name no request has used yet is allowed."""
        self._hold(name).set()

    def _hold(self, name: str) -> threading.Event:
        """The event that releases ``?hold=NAME`` requests (created unset on first use)."""
        with self._lock:
            return self._holds.setdefault(name, threading.Event())

    def clear(self) -> None:
        """Forget the deliveries recorded so far (the JSONL file is kept)."""
        with self._lock:
            self._deliveries.clear()
            self._keys.clear()

    def _record(self, delivery: Delivery) -> bool:
        """Keep ``delivery``; True when it is the first with its idempotency key."""
        with self._lock:
            key = delivery.idempotency_key
            first = key is None or key not in self._keys
            if key is not None:
                self._keys.add(key)
            self._deliveries.append(delivery)
            if self._jsonl is not None:
                self._jsonl.write(json.dumps(delivery.to_json()) + "\n")
                self._jsonl.flush()
        if self._on_delivery is not None:
            self._on_delivery(delivery)
        return first

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def format_delivery(d: Delivery) -> str:
    """One human-readable line, e.g.
    ``2026-11-21T06:00:01.123Z POST /hook key=t1/1763704801000 token=42 bytes=87``."""
    ts = datetime.fromtimestamp(d.received_at, UTC)
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    target = f"{d.path}?{d.query}" if d.query else d.path
    key = d.idempotency_key if d.idempotency_key is not None else "-"
    token = d.fencing_token if d.fencing_token is not None else "-"
    size = len(d.body.encode("utf-8"))
    return f"{stamp} {d.method} {target} key={key} token={token} bytes={size}"


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sink in the foreground until Ctrl-C or SIGTERM.

    Returns:
        0 after a clean stop, 1 if the address cannot be bound (argparse exits 2 on bad usage).
    """
    parser = argparse.ArgumentParser(
        prog="python -m peerd.devtools.sink", description="Record and print every webhook delivery."
    )
    parser.add_argument(
        "--listen", type=_parse_listen, default=("127.0.0.1", 8099), help="HOST:PORT to bind"
    )
    parser.add_argument("--jsonl", type=Path, default=None, help="append deliveries to this file")
    parser.add_argument("--status", type=int, default=200, help="HTTP status to answer")
    args = parser.parse_args(list(argv) if argv is not None else None)
    host, port = args.listen

    def _print(d: Delivery) -> None:
        print(format_delivery(d), flush=True)

    sink = WebhookSink(host, port, jsonl_path=args.jsonl, status=args.status, on_delivery=_print)
    try:
        sink.start()
    except OSError as exc:
        print(f"peerd.devtools.sink: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
    print(f"peerd.devtools.sink listening on {sink.url}", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    summary = sink.summary()
    print(
        f"peerd.devtools.sink stopped: {summary['total']} deliveries, "
        f"{summary['unique_keys']} unique keys, {summary['duplicate_keys']} duplicated",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
