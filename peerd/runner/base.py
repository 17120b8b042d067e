"""What an executor receives and returns. Executors never raise for a failed run: every failure
(timeout, connection error, non-2xx, non-zero exit, a command not allow-listed) is an
:class:`Outcome` with ``succeeded=False`` and a reason in ``error``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Protocol

from peerd.core.records import idempotency_key as _key
from peerd.core.records import slot_ms
from peerd.core.redact import REDACTED
from peerd.core.trace import trace_id, traceparent
from peerd.v1 import scheduler_pb2 as pb

if TYPE_CHECKING:
    from peerd.clock import Clock
    from peerd.node_config import NodeConfig

FAILURE_HTTP_5XX = "http_5xx"
FAILURE_HTTP_429 = "http_429"
FAILURE_HTTP_4XX = "http_4xx"
"""Any other non-2xx HTTP status (1xx, 3xx, 4xx other than 429)."""
FAILURE_TIMEOUT = "timeout"
"""The per-attempt timeout (or the overall deadline) expired."""
FAILURE_CONNECTION = "connection"
"""Connect/transport error, or a process that could not be started."""
FAILURE_NONZERO_EXIT = "nonzero_exit"
"""A process exited non-zero or was killed by a signal."""
FAILURE_EXCEPTION = "exception"
"""A Python callable raised."""
FAILURE_CANCELLED = "cancelled"
"""The run was cancelled (overlap REPLACE, drain)."""
FAILURE_CONFIG = "config"
"""Not runnable on this node (command not allow-listed, unknown entry point, bad user): never
retried."""
FAILURE_CLASSES = (
    FAILURE_HTTP_5XX,
    FAILURE_HTTP_429,
    FAILURE_HTTP_4XX,
    FAILURE_TIMEOUT,
    FAILURE_CONNECTION,
    FAILURE_NONZERO_EXIT,
    FAILURE_EXCEPTION,
    FAILURE_CANCELLED,
    FAILURE_CONFIG,
)
"""Values of :attr:`Outcome.failure` for a failed attempt ("" when it succeeded)."""

OUTPUT_TAIL_BYTES = 4096
"""Output kept per run (the last bytes of stdout+stderr or of the HTTP response body)."""


def tail(data: bytes, limit: int = OUTPUT_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``data`` decoded as UTF-8 (invalid bytes replaced)."""
    return data[-limit:].decode("utf-8", errors="replace")


class OutputTail:
    """Keeps the last ``limit`` bytes of a stream (a process's output, a response body), with
    credentials redacted.

    Every occurrence of each of ``secrets`` is replaced by ``<redacted>``. So that a secret cut
    by the window is never shown in part, the buffer keeps ``limit`` bytes plus the longest
    secret's length; once the stream outgrew that, its first bytes, where a secret may begin
    outside the window, are dropped unless they belong to a whole occurrence (so the tail may
    be a little shorter than ``limit``).

    Args:
        limit: bytes kept (default :data:`OUTPUT_TAIL_BYTES`).
        secrets: values to redact (e.g. the secrets the run resolved).
    """

    def __init__(self, limit: int = OUTPUT_TAIL_BYTES, secrets: Sequence[str] = ()) -> None:
        self._limit = limit
        self._secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)
        self._margin = len(self._secrets[0]) if self._secrets else 0
        self._keep = limit + self._margin
        self._buf = bytearray()
        self._cut = False

    def add(self, chunk: bytes) -> None:
        """Append ``chunk``; only the newest bytes are kept."""
        if len(chunk) > self._keep:
            chunk, self._cut = chunk[-self._keep :], True
        self._buf += chunk
        if len(self._buf) > self._keep:
            del self._buf[: -self._keep]
            self._cut = True

    def text(self) -> str:
        """The tail, decoded as UTF-8 (invalid bytes replaced), secrets redacted."""
        data = bytes(self._buf)
        if not self._secrets:
            return tail(data, self._limit)
        owner = [-1] * len(data)  # index of the secret covering each byte, -1 for none
        for i, secret in enumerate(self._secrets):
            at = data.find(secret)
            while at >= 0:
                if all(o < 0 for o in owner[at : at + len(secret)]):
                    owner[at : at + len(secret)] = [i] * len(secret)
                at = data.find(secret, at + 1)
        out = bytearray()
        unsure = self._margin - 1 if self._cut else 0  # may hold the end of a cut-off secret
        pos = 0
        while pos < len(data):
            if owner[pos] >= 0:
                out += REDACTED.encode()
                pos += len(self._secrets[owner[pos]])
            else:
                if pos >= unsure:
                    out.append(data[pos])
                pos += 1
        return tail(bytes(out), len(out))[-self._limit :]


@dataclass(frozen=True)
class Execution:
    """One attempt of one slot, as handed to an executor.

    Attributes:
        task_id: the task.
        scheduled_at: the slot (aware UTC).
        attempt: 1 for the first attempt.
        node_id: the executing node.
        fencing_token: etcd revision of the claim; targets may reject smaller tokens.
        timeout: per-attempt time limit.
        fire_at: when the slot was due (slot + jitter; None = the slot).
        cause_json: for a compensation run (``TaskSpec.on_failure``), the failed run that
            triggered it as a JSON object (protobuf JSON mapping of ``RunRecord``); else "".
    """

    task_id: str
    scheduled_at: datetime
    attempt: int
    node_id: str
    fencing_token: int
    timeout: timedelta
    cause_json: str = ""
    fire_at: datetime | None = None

    @functools.cached_property
    def idempotency_key(self) -> str:
        """``<task_id>/<slot epoch ms>`` (:func:`peerd.core.records.idempotency_key`)."""
        return _key(self.task_id, slot_ms(self.scheduled_at))

    @property
    def trace_id(self) -> str:
        """W3C trace id of the slot (every attempt shares it); log lines carry it."""
        return trace_id(self.idempotency_key)

    @property
    def traceparent(self) -> str:
        """W3C ``traceparent`` of this attempt: the slot's trace, the attempt's span
        (:mod:`peerd.core.trace`)."""
        return traceparent(self.idempotency_key, self.attempt)


@dataclass
class Outcome:
    """Result of one attempt. ``started_at``/``finished_at`` are aware UTC. ``failure`` is one
    of :data:`FAILURE_CLASSES` when ``succeeded`` is false (it decides whether a retry policy
    retries), "" otherwise."""

    succeeded: bool
    started_at: datetime
    finished_at: datetime
    http_status: int = 0
    exit_code: int | None = None
    output_tail: str = ""
    error: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    failure: str = ""


class Executor(Protocol):
    """What every executor implements (one module each; found through
    :mod:`peerd.runner.executors`).

    Attributes:
        kind: the ``TaskSpec.target`` oneof field it runs (``"http"``), also its pool's name.
        limit_setting: the :class:`~peerd.node_config.NodeConfig` field capping its concurrent runs.
    """

    kind: ClassVar[str]
    limit_setting: ClassVar[str]

    @classmethod
    def from_config(cls, cfg: NodeConfig, clock: Clock) -> Executor:
        """The executor a node with ``cfg`` runs."""
        ...

    async def run(self, spec: pb.TaskSpec, execution: Execution) -> Outcome:
        """Run one attempt; never raises for a failed run (see :class:`Outcome`)."""
        ...

    def check(self, spec: pb.TaskSpec, field: str) -> None:
        """Whether this node can run ``spec`` (API validation on the answering node).

        Raises:
            InvalidArgument, PermissionDenied: naming ``{field}.<target>...`` and the reason.
        """
        ...

    def configure(self, cfg: NodeConfig) -> None:
        """Apply a reloaded configuration to runs that start from now on."""
        ...

    async def close(self) -> None:
        """Release clients and threads (node shutdown)."""
        ...
