"""HTTP executor: fire a task by sending one HTTP request to its target URL.

Every request carries ``Idempotency-Key: <task_id>/<slot epoch ms>`` and
``Peerd-Fencing-Token: <etcd revision of the claim>`` so targets can deduplicate retries and
reject stale claims. Run failures never raise; they are reported in the returned
:class:`~peerd.runner.base.Outcome`.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import structlog

from peerd import __version__
from peerd.clock import Clock, SystemClock
from peerd.runner.base import OUTPUT_TAIL_BYTES, Execution, Outcome, rfc3339, tail
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
FENCING_HEADER = "Peerd-Fencing-Token"
USER_AGENT = f"peerd/{__version__}"
DEFAULT_METHOD = "POST"

_RESERVED = frozenset({IDEMPOTENCY_HEADER.lower(), FENCING_HEADER.lower()})


def _seconds(execution: Execution) -> float:
    return execution.timeout.total_seconds()


def default_body(execution: Execution) -> bytes:
    """The JSON document sent when a target has no body of its own.

    Keys: ``task_id``, ``scheduled_at`` (RFC 3339 UTC, ms), ``attempt``, ``node_id``,
    ``fencing_token``.
    """
    doc = {
        "task_id": execution.task_id,
        "scheduled_at": rfc3339(execution.scheduled_at),
        "attempt": execution.attempt,
        "node_id": execution.node_id,
        "fencing_token": execution.fencing_token,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def build_headers(target: pb.HttpTarget, execution: Execution, *, json_body: bool) -> httpx.Headers:
    """Request headers: ``User-Agent``, the target's headers, then the two peerd headers.

    User headers may replace ``User-Agent`` (and ``Content-Type`` for a custom body) but never
    ``Idempotency-Key`` or ``Peerd-Fencing-Token`` (matched case-insensitively). For the
    default JSON body ``Content-Type`` is always ``application/json``.
    """
    headers = httpx.Headers({"User-Agent": USER_AGENT})
    for name, value in target.headers.items():
        if name.lower() in _RESERVED:
            continue
        headers[name] = value
    if json_body:
        headers["Content-Type"] = "application/json"
    headers[IDEMPOTENCY_HEADER] = execution.idempotency_key
    headers[FENCING_HEADER] = str(execution.fencing_token)
    return headers


MAX_IN_FLIGHT = 256
"""Requests one node sends at once; further runs wait (their wait shows as lateness)."""
PER_ORIGIN = 32
"""Connections per origin (scheme, host, port)."""


class HttpExecutor:
    """Runs :class:`pb.HttpTarget` tasks with an :class:`httpx.AsyncClient`.

    Args:
        client: client to send requests with. When ``None`` the executor creates its own and
            closes it in :meth:`aclose`; an injected client is left open for its owner.
            Redirects are never followed, whatever the client's setting.
        clock: source of ``started_at``/``finished_at`` (default :class:`SystemClock`).
            Timeouts are enforced by the event loop, not by this clock.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        per_origin: int = PER_ORIGIN,
    ) -> None:
        self._owns_client = client is None
        self._client = client
        self._per_origin = per_origin
        self._clients: dict[tuple[str, str, int | None], httpx.AsyncClient] = {}
        self._clock: Clock = clock if clock is not None else SystemClock()
        # Requests wait on this semaphore, not inside httpcore, and each origin gets its own
        # small pool: httpcore re-scans every connection of a pool for every queued request, which
        # turned quadratic with hundreds of requests per pool and saturated the event loop
        # (measured with bench/cluster.py: 87% CPU at 100 fires/s per node).
        self._in_flight = asyncio.Semaphore(max_in_flight)

    def _client_for(self, url: str) -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        u = httpx.URL(url)
        origin = (u.scheme, u.host, u.port)
        client = self._clients.get(origin)
        if client is None:
            limits = httpx.Limits(
                max_connections=self._per_origin, max_keepalive_connections=self._per_origin
            )
            client = httpx.AsyncClient(follow_redirects=False, limits=limits)
            self._clients[origin] = client
        return client

    async def aclose(self) -> None:
        """Close the HTTP client if this executor created it. Idempotent."""
        if self._owns_client:
            clients, self._clients = list(self._clients.values()), {}
            for client in clients:
                await client.aclose()

    async def run(self, target: pb.HttpTarget, execution: Execution) -> Outcome:
        """Send one request for ``execution`` and report how it went.

        The method defaults to POST. ``execution.timeout`` bounds the whole request (connect,
        send, and reading the full response body). Success means a 2xx status; 3xx (not
        followed), 4xx and 5xx are failures carrying ``http_status``. ``output_tail`` holds the
        last :data:`OUTPUT_TAIL_BYTES` of the response body; the body is streamed, so large
        responses are not buffered.

        Never raises for a failed run (timeout, connection error, bad URL, non-2xx): those are
        returned as ``Outcome(succeeded=False, error=...)``. ``asyncio.CancelledError``
        propagates.
        """
        async with self._in_flight:
            return await self._run(target, execution)

    async def _run(self, target: pb.HttpTarget, execution: Execution) -> Outcome:
        started = self._clock.now()
        seconds = _seconds(execution)
        method = (target.method or DEFAULT_METHOD).upper()
        has_body = target.HasField("body")
        content = target.body.encode() if has_body else default_body(execution)

        status = 0
        body = bytearray()
        error = ""
        try:
            headers = build_headers(target, execution, json_body=not has_body)
            async with asyncio.timeout(seconds):
                async with self._client_for(target.url).stream(
                    method,
                    target.url,
                    headers=headers,
                    content=content,
                    timeout=httpx.Timeout(seconds),
                    follow_redirects=False,
                ) as response:
                    status = response.status_code
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > OUTPUT_TAIL_BYTES:
                            del body[:-OUTPUT_TAIL_BYTES]
        except (TimeoutError, httpx.TimeoutException):
            error = f"timeout after {seconds}s"
        except httpx.ConnectError as exc:
            error = f"connect error: {exc or type(exc).__name__}"
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            error = f"invalid url {target.url!r}: {exc}"
        except httpx.HTTPError as exc:
            error = f"request error: {type(exc).__name__}: {exc}"
        except Exception as exc:  # never raise for a run failure
            log.warning("http.run_unexpected_error", task_id=execution.task_id, exc_info=True)
            error = f"request error: {type(exc).__name__}: {exc}"

        if not error and not 200 <= status < 300:
            error = f"HTTP {status}"
        finished = self._clock.now()
        return Outcome(
            succeeded=not error,
            started_at=started,
            finished_at=finished,
            http_status=status,
            output_tail=tail(bytes(body)),
            error=error,
        )
