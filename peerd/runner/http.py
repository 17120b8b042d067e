"""HTTP executor: fire a task by sending one HTTP request to its target URL (aiohttp).

Every request carries ``Idempotency-Key: <task_id>/<slot epoch ms>`` and
``Peerd-Fencing-Token: <etcd revision of the claim>`` so targets can deduplicate retries and
reject stale claims, and ``traceparent`` (W3C Trace Context, derived from the slot and the
attempt: :mod:`peerd.core.trace`). A compensation run (``TaskSpec.on_failure``) also carries
``Peerd-Cause-Idempotency-Key: <idempotency key of the failed run>``. Run failures never raise;
they are reported in the returned :class:`~peerd.runner.base.Outcome` with a failure class
(:data:`~peerd.runner.base.FAILURE_CLASSES`).

Safe targets: the node's policy (``--http-allow``/``--http-deny``, :mod:`peerd.core.targets`)
is checked on the URL when a task is created (:meth:`HttpExecutor.check`), again before each
request, and on every address a host name resolves to, at connect time
(:mod:`peerd.runner.http_transport`). A refusal at run time fails the run with
:data:`FAILURE_CONFIG` (never retried). Secret headers (``header_secrets``) are read from the
node's secrets at run time (:mod:`peerd.runner.secrets`); their values, and those of
credential-named literal headers, are redacted from the output tail and the error.

Cost: aiohttp spends about a tenth of the CPU per request that httpx did (``bench/http_client.py``
against nginx; figures in docs/security.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii as _json_str
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import structlog
import yarl
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict

from peerd import __version__
from peerd.clock import Clock, SystemClock
from peerd.core.records import rfc3339
from peerd.core.redact import credential_fragments, literal_credentials, redact_values
from peerd.core.targets import Target, TargetError, TargetPolicy, parse_target
from peerd.errors import InvalidArgument, PermissionDenied
from peerd.runner.base import (
    FAILURE_CONFIG,
    FAILURE_CONNECTION,
    FAILURE_HTTP_4XX,
    FAILURE_HTTP_5XX,
    FAILURE_HTTP_429,
    FAILURE_TIMEOUT,
    Execution,
    Outcome,
    OutputTail,
)
from peerd.runner.http_transport import PER_ORIGIN, EnvProxies, Sessions, TargetDenied
from peerd.runner.secrets import MissingSecret, SecretStore
from peerd.v1 import scheduler_pb2 as pb

if TYPE_CHECKING:
    from peerd.node_config import NodeConfig

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
_NO_AUTO_HEADERS = frozenset({"Content-Type"})
"""aiohttp would label a custom body ``application/octet-stream``; peerd sends a custom body
with the Content-Type its target gives, or none."""


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
    if cause is None:  # the same bytes as json.dumps below, without its encoder's overhead
        return (
            f'{{"task_id":{_json_str(execution.task_id)},'
            f'"scheduled_at":"{rfc3339(execution.scheduled_at)}",'
            f'"attempt":{execution.attempt:d},"node_id":{_json_str(execution.node_id)},'
            f'"fencing_token":{execution.fencing_token:d}}}'
        ).encode()
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
    secrets: Mapping[str, str] | None = None,
) -> CIMultiDict[str]:
    """Request headers: ``User-Agent``, the target's headers, its secret headers (``secrets``:
    name -> resolved value), then the peerd headers.

    User headers may replace ``User-Agent`` (and ``Content-Type`` for a custom body) but never
    ``Idempotency-Key``, ``Peerd-Fencing-Token``, ``traceparent`` or
    ``Peerd-Cause-Idempotency-Key`` (matched
    case-insensitively; a user's copy is dropped). For the default JSON body ``Content-Type`` is
    always ``application/json``. ``Peerd-Cause-Idempotency-Key`` is sent when ``cause`` has an
    idempotency key, whatever the body.
    """
    headers: CIMultiDict[str] = CIMultiDict({"User-Agent": USER_AGENT})
    for source in (target.headers, secrets or {}):
        for name, value in source.items():
            if name.lower() not in _RESERVED:
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
"""Requests one node sends at once; further runs wait (their wait shows as lateness). Also the
upper bound of ``--max-http-runs``."""


class _Refused(Exception):
    """A run refused before anything was sent (FAILURE_CONFIG); the message is the error."""


class HttpExecutor:
    """Runs :class:`pb.HttpTarget` tasks with one aiohttp session (:mod:`.http_transport`).

    Args:
        clock: source of ``started_at``/``finished_at`` (default :class:`SystemClock`).
            Timeouts are enforced by the event loop, not by this clock.
        policy: the node's target policy (default: the built-in denies only).
        secrets: where secret headers are read (default: none, only ``PEERD_SECRET_*`` of an
            empty environment, so every secret is missing).
        proxies: proxies by scheme (default: none).
        resolver_factory: the DNS resolver under the policy (default aiohttp's).
        max_in_flight: requests at once.
        per_origin: connections per origin.
    """

    kind: ClassVar[str] = "http"
    """The ``TaskSpec.target`` this executor runs (and the name of its pool)."""
    limit_setting: ClassVar[str] = "max_http_runs"
    """The node setting that caps its concurrent runs."""
    node_id = ""
    """The node it runs on (named in API errors)."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        policy: TargetPolicy | None = None,
        secrets: SecretStore | None = None,
        proxies: EnvProxies | None = None,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        per_origin: int = PER_ORIGIN,
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._policy = policy or TargetPolicy()
        self._secrets = secrets or SecretStore("", {}, "http")
        self._proxies = proxies or EnvProxies({})
        self._sessions = Sessions(per_origin, max_in_flight, self._proxies.hosts, resolver_factory)
        self._in_flight = asyncio.Semaphore(max_in_flight)

    @classmethod
    def from_config(cls, cfg: NodeConfig, clock: Clock) -> HttpExecutor:
        """The executor a node with ``cfg`` runs: its target policy and secrets file, the
        proxies of the process environment."""
        executor = cls(
            clock,
            policy=TargetPolicy(cfg.http_allow, cfg.http_deny),
            secrets=SecretStore(cfg.secrets_file, os.environ, "http"),
            proxies=EnvProxies(os.environ),
        )
        executor.node_id = cfg.node_id
        return executor

    def check(self, spec: pb.TaskSpec, field: str) -> None:
        """API validation on the answering node: the URL must pass its target policy (the
        addresses a host name resolves to are checked when it runs).

        Raises:
            InvalidArgument: ``{field}.http.url`` cannot be parsed.
            PermissionDenied: ``{field}.http.url`` and the rule that refuses it.
        """
        try:
            decision = self._policy.check_url(spec.http.url)
        except TargetError as exc:
            raise InvalidArgument(f"{field}.http.url", str(exc)) from None
        if not decision.allowed:
            raise PermissionDenied(
                f"{field}.http.url: {spec.http.url[:200]!r} {decision.reason} (node {self.node_id})"
            )

    def configure(self, cfg: NodeConfig) -> None:
        """Apply a reloaded policy and secrets file to requests that start from now on (a
        changed policy retires the session: its DNS cache and pooled connections go)."""
        policy = TargetPolicy(cfg.http_allow, cfg.http_deny)
        if policy.key != self._policy.key:
            self._policy = policy
            self._sessions.retire()
        self._secrets.set_path(cfg.secrets_file)

    async def run(self, spec: pb.TaskSpec, execution: Execution) -> Outcome:
        """Run one attempt of ``spec`` (its ``http`` target): see :meth:`run_target`."""
        return await self.run_target(spec.http, execution)

    async def close(self) -> None:
        """Close every session. Idempotent."""
        await self._sessions.close()

    async def run_target(self, target: pb.HttpTarget, execution: Execution) -> Outcome:
        """Send one request for ``execution`` and report how it went.

        The method defaults to POST. ``execution.timeout`` bounds the whole request (waiting for
        a connection, connect, send, and reading the full response body). Success means a 2xx
        status; 3xx (not followed), 4xx and 5xx are failures carrying ``http_status``.
        ``output_tail`` holds the last :data:`OUTPUT_TAIL_BYTES` of the response body with
        credentials redacted; the body is streamed, so large responses are not buffered.

        For a compensation run (``execution.cause_json`` set) the default JSON body gains
        ``cause`` and the request carries ``Peerd-Cause-Idempotency-Key``.

        Never raises for a failed run (timeout, connection error, bad URL, non-2xx): those are
        returned as ``Outcome(succeeded=False, error=..., failure=...)`` with ``failure``
        :data:`FAILURE_HTTP_5XX`, :data:`FAILURE_HTTP_429`, :data:`FAILURE_HTTP_4XX` (any other
        non-2xx), :data:`FAILURE_TIMEOUT` (even when the status line had arrived),
        :data:`FAILURE_CONNECTION` (connect or transport error) or :data:`FAILURE_CONFIG`
        (invalid URL, a target the node's policy refuses, before the request or for a resolved
        address, a missing secret, or an unparseable ``cause_json``: retrying cannot help).
        ``asyncio.CancelledError`` propagates.
        """
        async with self._in_flight:
            return await self._run(target, execution)

    def _prepare(
        self, target: pb.HttpTarget, execution: Execution
    ) -> tuple[Target, bytes, CIMultiDict[str], list[str]]:
        """The parsed URL, the body, the headers and the credentials to redact.

        Raises:
            _Refused: bad ``cause_json`` or URL, a policy refusal, a missing secret.
        """
        try:
            parsed = _parse(target.url)
        except TargetError as exc:
            raise _Refused(f"invalid url: {exc}") from None
        try:
            cause = parse_cause(execution.cause_json)
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        decision = self._policy.check_target(parsed)
        if not decision.allowed:
            raise _Refused(f"target refused by this node's policy: {decision.reason}")
        try:
            secrets = self._secrets.resolve(target.header_secrets)
        except MissingSecret as exc:
            raise _Refused(str(exc)) from None
        has_body = target.HasField("body")
        content = target.body.encode() if has_body else default_body(execution, cause)
        headers = build_headers(
            target, execution, json_body=not has_body, cause=cause, secrets=secrets
        )
        hidden = literal_credentials(target.headers)
        for value in secrets.values():
            hidden.extend(credential_fragments(value))
        return parsed, content, headers, hidden

    async def _run(self, target: pb.HttpTarget, execution: Execution) -> Outcome:
        started = self._clock.now()
        try:
            parsed, content, headers, hidden = self._prepare(target, execution)
        except _Refused as exc:
            now = self._clock.now()
            return Outcome(False, started, now, error=str(exc), failure=FAILURE_CONFIG)
        seconds = execution.timeout.total_seconds()
        method = (target.method or DEFAULT_METHOD).upper()
        body = OutputTail(secrets=hidden)
        status, error, failure = 0, "", ""
        await self._sessions.close_idle()
        lease = self._sessions.acquire(self._policy)
        try:
            async with (
                asyncio.timeout(seconds),
                lease.session.request(
                    method,
                    _url(target.url),
                    headers=headers,
                    data=content,
                    allow_redirects=False,
                    timeout=_timeout(seconds),
                    proxy=self._proxies.proxy_for(parsed),
                    skip_auto_headers=_NO_AUTO_HEADERS,
                ) as response,
            ):
                status = response.status
                async for chunk in response.content.iter_any():
                    body.add(chunk)
        except Exception as exc:  # never raise for a run failure
            error, failure = _failure(exc, seconds, target.url, execution)
        finally:
            await self._sessions.release(lease)
        if not error and not 200 <= status < 300:
            error, failure = f"HTTP {status}", status_failure(status)
        return Outcome(
            succeeded=not error,
            started_at=started,
            finished_at=self._clock.now(),
            http_status=status,
            output_tail=body.text(),
            error=redact_values(error, hidden),
            failure=failure,
        )


_parse: Callable[[str], Target] = functools.lru_cache(maxsize=4096)(parse_target)
""":func:`parse_target`, cached: a task's URL is parsed once, not at every fire."""
_yarl: Callable[[str], yarl.URL] = functools.lru_cache(maxsize=4096)(yarl.URL)


def _url(url: str) -> yarl.URL:
    """The ``yarl.URL`` aiohttp would build from ``url`` at every request, built once per URL.

    Raises:
        aiohttp.InvalidURL: ``url`` does not parse (as aiohttp would raise it).
    """
    try:
        return _yarl(url)
    except ValueError as exc:
        raise aiohttp.InvalidURL(url) from exc


_timeout: Callable[[float], aiohttp.ClientTimeout] = functools.lru_cache(maxsize=256)(
    lambda seconds: aiohttp.ClientTimeout(total=seconds)
)
"""aiohttp's timeout object (immutable) per timeout in seconds, built once."""


def _failure(exc: Exception, seconds: float, url: str, execution: Execution) -> tuple[str, str]:
    """``(error, failure class)`` of an exception a request raised."""
    if isinstance(exc, TimeoutError):
        return f"timeout after {seconds}s", FAILURE_TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, TargetDenied):
            return f"target refused by this node's policy: {exc.os_error}", FAILURE_CONFIG
        return f"connect error: {exc}", FAILURE_CONNECTION
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return f"invalid url {url!r}: {exc}", FAILURE_CONFIG
    if not isinstance(exc, aiohttp.ClientError):
        log.warning("http.run_unexpected_error", task_id=execution.task_id, exc_info=True)
    # Unknown errors are treated as transport trouble, so a retry policy may try again.
    return f"request error: {type(exc).__name__}: {exc}", FAILURE_CONNECTION
