"""HTTP executor: fire a task by sending one HTTP request to its target URL.

Every request carries ``Idempotency-Key: <task_id>/<slot epoch ms>`` and
``Peerd-Fencing-Token: <etcd revision of the claim>`` so targets can deduplicate retries and
reject stale claims, and ``traceparent`` (W3C Trace Context, derived from the slot and the
attempt: :mod:`peerd.core.trace`). A compensation run (``TaskSpec.on_failure``) also carries
``Peerd-Cause-Idempotency-Key: <idempotency key of the failed run>``. Run failures never raise;
they are reported in the returned :class:`~peerd.runner.base.Outcome` with a failure class
(:data:`~peerd.runner.base.FAILURE_CLASSES`).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import structlog

from peerd import __version__
from peerd.clock import Clock, SystemClock
from peerd.core.records import rfc3339
from peerd.runner.base import (
    FAILURE_CONFIG,
    FAILURE_CONNECTION,
    FAILURE_HTTP_4XX,
    FAILURE_HTTP_5XX,
    FAILURE_HTTP_429,
    FAILURE_TIMEOUT,
    OUTPUT_TAIL_BYTES,
    Execution,
    Outcome,
    tail,
)
from peerd.v1 import scheduler_pb2 as pb

if TYPE_CHECKING:
    from peerd.config import NodeConfig

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
FENCING_HEADER = "Peerd-Fencing-Token"
CAUSE_KEY_HEADER = "Peerd-Cause-Idempotency-Key"
TRACEPARENT_HEADER = "traceparent"
USER_AGENT = f"peerd/{__version__}"
DEFAULT_METHOD = "POST"

_RESERVED = frozenset(
    {
        IDEMPOTENCY_HEADER.lower(),
        FENCING_HEADER.lower(),
        CAUSE_KEY_HEADER.lower(),
        TRACEPARENT_HEADER,
    }
)


def _seconds(execution: Execution) -> float:
    return execution.timeout.total_seconds()


def parse_cause(cause_json: str) -> dict[str, Any] | None:
    """The failed run behind a compensation run, as a dict; ``None`` when ``cause_json`` is "".

    Args:
        cause_json: :attr:`Execution.cause_json`, a ``RunRecord`` in the protobuf JSON mapping.

    Raises:
        ValueError: ``cause_json`` is not empty and not a JSON object.
    """
    if not cause_json:
        return None
    try:
        cause = json.loads(cause_json)
    except ValueError as exc:
        raise ValueError(f"cause_json is not valid JSON: {exc}") from None
    if not isinstance(cause, dict):
        raise ValueError(f"cause_json must be a JSON object, got {type(cause).__name__}")
    return cause


def cause_idempotency_key(cause: dict[str, Any]) -> str:
    """The idempotency key of a parsed cause, "" if it has none.

    Accepts both spellings of the protobuf JSON mapping (``idempotency_key`` with
    ``preserving_proto_field_name``, ``idempotencyKey`` without).
    """
    value = cause.get("idempotency_key", cause.get("idempotencyKey", ""))
    return value if isinstance(value, str) else ""


def default_body(execution: Execution, cause: dict[str, Any] | None = None) -> bytes:
    """The JSON document sent when a target has no body of its own.

    Keys: ``task_id``, ``scheduled_at`` (RFC 3339 UTC, ms), ``attempt``, ``node_id``,
    ``fencing_token``, plus ``cause`` (the failed run, a JSON object) when ``cause`` is given.
    """
    doc: dict[str, Any] = {
        "task_id": execution.task_id,
        "scheduled_at": rfc3339(execution.scheduled_at),
        "attempt": execution.attempt,
        "node_id": execution.node_id,
        "fencing_token": execution.fencing_token,
    }
    if cause is not None:
        doc["cause"] = cause
    return json.dumps(doc, separators=(",", ":")).encode()


def build_headers(
    target: pb.HttpTarget,
    execution: Execution,
    *,
    json_body: bool,
    cause: dict[str, Any] | None = None,
) -> httpx.Headers:
    """Request headers: ``User-Agent``, the target's headers, then the peerd headers.

    User headers may replace ``User-Agent`` (and ``Content-Type`` for a custom body) but never
    ``Idempotency-Key``, ``Peerd-Fencing-Token``, ``traceparent`` or
    ``Peerd-Cause-Idempotency-Key`` (matched
    case-insensitively; a user's copy is dropped). For the default JSON body ``Content-Type`` is
    always ``application/json``. ``Peerd-Cause-Idempotency-Key`` is sent when ``cause`` has an
    idempotency key, whatever the body.
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
    headers[TRACEPARENT_HEADER] = execution.traceparent
    if cause is not None and (key := cause_idempotency_key(cause)):
        headers[CAUSE_KEY_HEADER] = key
    return headers


def status_failure(status: int) -> str:
    """Failure class of a non-2xx status: 5xx, 429, or 4xx (any other non-2xx, incl. 1xx/3xx)."""
    if 500 <= status < 600:
        return FAILURE_HTTP_5XX
    if status == 429:
        return FAILURE_HTTP_429
    return FAILURE_HTTP_4XX


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

    kind: ClassVar[str] = "http"
    """The ``TaskSpec.target`` this executor runs (and the name of its pool)."""
    limit_setting: ClassVar[str] = "max_http_runs"
    """The node setting that caps its concurrent runs."""

    @classmethod
    def from_config(cls, cfg: NodeConfig, clock: Clock) -> HttpExecutor:
        """The executor a node with ``cfg`` runs."""
        return cls(clock=clock)

    def check(self, spec: pb.TaskSpec, field: str) -> None:
        """API validation on the answering node: nothing beyond :mod:`peerd.core.validate`."""

    def configure(self, cfg: NodeConfig) -> None:
        """Nothing of the HTTP executor changes on a config reload."""

    async def run(self, spec: pb.TaskSpec, execution: Execution) -> Outcome:
        """Run one attempt of ``spec`` (its ``http`` target): see :meth:`run_target`."""
        return await self.run_target(spec.http, execution)

    async def close(self) -> None:
        """Close the HTTP client if this executor created it. Idempotent."""
        if self._owns_client:
            clients, self._clients = list(self._clients.values()), {}
            for client in clients:
                await client.aclose()

    async def run_target(self, target: pb.HttpTarget, execution: Execution) -> Outcome:
        """Send one request for ``execution`` and report how it went.

        The method defaults to POST. ``execution.timeout`` bounds the whole request (connect,
        send, and reading the full response body). Success means a 2xx status; 3xx (not
        followed), 4xx and 5xx are failures carrying ``http_status``. ``output_tail`` holds the
        last :data:`OUTPUT_TAIL_BYTES` of the response body; the body is streamed, so large
        responses are not buffered.

        For a compensation run (``execution.cause_json`` set) the default JSON body gains
        ``cause`` and the request carries ``Peerd-Cause-Idempotency-Key``.

        Never raises for a failed run (timeout, connection error, bad URL, non-2xx): those are
        returned as ``Outcome(succeeded=False, error=..., failure=...)`` with ``failure``
        :data:`FAILURE_HTTP_5XX`, :data:`FAILURE_HTTP_429`, :data:`FAILURE_HTTP_4XX` (any other
        non-2xx), :data:`FAILURE_TIMEOUT` (even when the status line had arrived),
        :data:`FAILURE_CONNECTION` (connect or transport error) or :data:`FAILURE_CONFIG`
        (invalid URL or unparseable ``cause_json``: retrying cannot help).
        ``asyncio.CancelledError`` propagates.
        """
        async with self._in_flight:
            return await self._run(target, execution)

    async def _run(self, target: pb.HttpTarget, execution: Execution) -> Outcome:
        started = self._clock.now()
        seconds = _seconds(execution)
        method = (target.method or DEFAULT_METHOD).upper()
        has_body = target.HasField("body")
        try:
            cause = parse_cause(execution.cause_json)
        except ValueError as exc:
            return Outcome(
                succeeded=False,
                started_at=started,
                finished_at=self._clock.now(),
                error=str(exc),
                failure=FAILURE_CONFIG,
            )
        content = target.body.encode() if has_body else default_body(execution, cause)

        status = 0
        body = bytearray()
        error = ""
        failure = ""
        try:
            headers = build_headers(target, execution, json_body=not has_body, cause=cause)
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
            error, failure = f"timeout after {seconds}s", FAILURE_TIMEOUT
        except httpx.ConnectError as exc:
            error, failure = f"connect error: {exc or type(exc).__name__}", FAILURE_CONNECTION
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            error, failure = f"invalid url {target.url!r}: {exc}", FAILURE_CONFIG
        except httpx.HTTPError as exc:
            error = f"request error: {type(exc).__name__}: {exc}"
            failure = FAILURE_CONNECTION
        except Exception as exc:  # never raise for a run failure
            log.warning(
                "http.run_unexpected_error",
                task_id=execution.task_id,
                trace_id=execution.trace_id,
                exc_info=True,
            )
            # Unknown: treated as transport trouble, so a retry policy may try again.
            error = f"request error: {type(exc).__name__}: {exc}"
            failure = FAILURE_CONNECTION

        if not error and not 200 <= status < 300:
            error, failure = f"HTTP {status}", status_failure(status)
        finished = self._clock.now()
        return Outcome(
            succeeded=not error,
            started_at=started,
            finished_at=finished,
            http_status=status,
            output_tail=tail(bytes(body)),
            error=error,
            failure=failure,
        )
