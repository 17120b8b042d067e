"""Synchronous gRPC client for the peerd public API, used by the CLI.

Every call carries a deadline (``timeout_s``). Failures surface as :class:`grpc.RpcError`;
:func:`exit_code_for_status` and :func:`describe_rpc_error` turn one into the CLI's exit code and
one-line message.

With :class:`peerd.security.tls.ClientTls` the channel is TLS (mutual when it has a client
certificate); a bearer token rides on every call as ``authorization: Bearer <token>`` metadata.
A token is sent in plaintext only to a loopback server (``peerd dev`` without ``--tls``); to any
other server it needs TLS.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

import grpc

from peerd.errors import InvalidArgument
from peerd.exitcodes import (
    EXIT_ALREADY_EXISTS,
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_NO_SPACE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PERMISSION_DENIED,
    EXIT_UNAVAILABLE,
)
from peerd.security.tls import ClientTls
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
"""Servers a token may be sent to without TLS."""

MAX_TASKS_PAGE = 1000
"""Largest ``page_size`` the server accepts for ListTasks."""
MAX_RUNS_PAGE = 1000
"""Largest ``page_size`` asked for in one ListRuns call."""


def exit_code_for_status(code: grpc.StatusCode | None) -> int:
    """The CLI exit code for a gRPC status code (the one place this mapping lives).

    INVALID_ARGUMENT/OUT_OF_RANGE -> 2, NOT_FOUND -> 3, UNAVAILABLE/DEADLINE_EXCEEDED -> 4,
    ALREADY_EXISTS -> 5, PERMISSION_DENIED/UNAUTHENTICATED -> 6, RESOURCE_EXHAUSTED -> 8 (etcd's
    NOSPACE alarm), ABORTED -> 9 (changed since read), OK -> 0, anything else -> 1.
    """
    mapping = {
        grpc.StatusCode.OK: EXIT_OK,
        grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
        grpc.StatusCode.OUT_OF_RANGE: EXIT_INVALID,
        grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
        grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
        grpc.StatusCode.ALREADY_EXISTS: EXIT_ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED: EXIT_PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED: EXIT_PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_NO_SPACE,
        grpc.StatusCode.ABORTED: EXIT_CONFLICT,
    }
    return mapping.get(code, EXIT_ERROR) if code is not None else EXIT_ERROR


def rpc_status(err: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    """``(status code, details)`` of a failed call; ``(None, str(err))`` if it carries neither."""
    code = err.code() if isinstance(err, grpc.Call) else None
    details = err.details() if isinstance(err, grpc.Call) else None
    return code, (details or str(err))


def describe_rpc_error(err: grpc.RpcError, server: str, timeout_s: float) -> tuple[int, str]:
    """``(exit code, one-line message)`` for a failed call to ``server``.

    The message is the status details (which name the field and reason for INVALID_ARGUMENT),
    prefixed with the server address for transport failures, squashed onto one line.
    """
    code, details = rpc_status(err)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"no answer from {server} within {timeout_s:g}s ({details})"
    elif code == grpc.StatusCode.UNAVAILABLE:
        message = f"{server} unavailable: {details}"
    else:
        message = details
    return exit_code_for_status(code), " ".join(message.split())


class RunStream(Protocol):
    """A WatchRuns call: iterate for records; :meth:`cancel` ends it (the iterator then raises
    :class:`grpc.RpcError` with status CANCELLED)."""

    def __iter__(self) -> Iterator[pb.RunRecord]: ...

    def __next__(self) -> pb.RunRecord: ...

    def cancel(self) -> bool: ...


class _Token(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self.entry = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self.entry])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def open_channel(server: str, tls: ClientTls | None, token: str | None) -> grpc.Channel:
    """A channel to ``server``: TLS when ``tls`` is given, carrying ``token`` when given.

    Raises:
        InvalidArgument: ``--token`` without TLS to a non-loopback server, or unreadable TLS
            files (naming ``--ca``/``--cert``/``--key``).
    """
    if tls is None:
        if token and server.rpartition(":")[0] not in LOOPBACK_HOSTS:
            raise InvalidArgument(
                "--token", f"needs TLS (--ca) to {server}: a token sent in plaintext can be read"
            )
        channel = grpc.insecure_channel(server)
    else:
        channel = grpc.secure_channel(server, tls.credentials())
    return grpc.intercept_channel(channel, _Token(token)) if token else channel


class SchedulerClient:
    """Blocking client for ``peerd.v1.Scheduler`` on one server.

    Args:
        server: gRPC target, ``HOST:PORT``.
        timeout_s: deadline of each RPC, seconds.
        tls: TLS to present (None: plaintext).
        token: bearer token sent with every call (None: none).

    Raises:
        InvalidArgument: see :func:`open_channel`.

    All methods raise :class:`grpc.RpcError` when the call fails. Use as a context manager (or
    call :meth:`close`) to release the channel.
    """

    def __init__(
        self,
        server: str,
        timeout_s: float = 10.0,
        tls: ClientTls | None = None,
        token: str | None = None,
    ) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self._channel = open_channel(server, tls, token)
        self._stub = pb_grpc.SchedulerStub(self._channel)

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the channel is connected; ``False`` if it is not within ``timeout_s``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            return False
        return True

    def create_task(self, spec: pb.TaskSpec) -> pb.TaskSpec:
        """Create one task; returns it as stored (id filled in when it was empty)."""
        return self._stub.CreateTask(pb.CreateTaskRequest(task=spec), timeout=self.timeout_s)

    def create_tasks(self, specs: list[pb.TaskSpec]) -> list[pb.TaskSpec]:
        """Create up to 100 tasks atomically (all or none); returns them as stored."""
        resp = self._stub.CreateTasks(pb.CreateTasksRequest(tasks=specs), timeout=self.timeout_s)
        return list(resp.tasks)

    def get_task(self, task_id: str) -> pb.TaskSpec:
        """One task by id (NOT_FOUND if missing)."""
        return self._stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=self.timeout_s)

    def list_tasks(self, limit: int | None = None, label_selector: str = "") -> list[pb.TaskSpec]:
        """All tasks (or the first ``limit``), paging through ListTasks until done; with
        ``label_selector`` only those whose labels match it (filtered by the server)."""
        out: list[pb.TaskSpec] = []
        token = ""
        seen: set[str] = set()
        while limit is None or len(out) < limit:
            size = MAX_TASKS_PAGE if limit is None else min(MAX_TASKS_PAGE, limit - len(out))
            resp = self._stub.ListTasks(
                pb.ListTasksRequest(
                    page_size=size, page_token=token, label_selector=label_selector
                ),
                timeout=self.timeout_s,
            )
            out.extend(resp.tasks)
            token = resp.next_page_token
            if not token or token in seen:
                break
            seen.add(token)
        return out if limit is None else out[:limit]

    def update_task(self, spec: pb.TaskSpec, expected_revision: int = 0) -> pb.TaskSpec:
        """Replace the task ``spec.id`` (ABORTED when ``expected_revision`` is non-zero and no
        longer the task's revision); returns it as stored."""
        req = pb.UpdateTaskRequest(task=spec, expected_revision=expected_revision)
        return self._stub.UpdateTask(req, timeout=self.timeout_s)

    def apply_tasks(self, request: pb.ApplyTasksRequest) -> pb.ApplyTasksResponse:
        """Creates, updates and deletes in one transaction (all or nothing)."""
        return self._stub.ApplyTasks(request, timeout=self.timeout_s)

    def task_history(self, task_id: str) -> list[pb.TaskChange]:
        """The accepted changes of a task, newest first."""
        req = pb.ListTaskHistoryRequest(task_id=task_id)
        return list(self._stub.ListTaskHistory(req, timeout=self.timeout_s).changes)

    def delete_task(self, task_id: str) -> None:
        """Delete a task (NOT_FOUND if missing)."""
        self._stub.DeleteTask(pb.DeleteTaskRequest(id=task_id), timeout=self.timeout_s)

    def pause_task(self, task_id: str, note: str = "") -> pb.TaskSpec:
        """Pause a task, with an optional note (<= 1024 characters); returns it as stored."""
        return self._stub.PauseTask(
            pb.PauseTaskRequest(id=task_id, note=note), timeout=self.timeout_s
        )

    def resume_task(self, task_id: str) -> pb.TaskSpec:
        """Resume a paused task; returns it as stored."""
        return self._stub.ResumeTask(pb.ResumeTaskRequest(id=task_id), timeout=self.timeout_s)

    def trigger_task(self, task_id: str) -> pb.RunRecord:
        """Run a task once now on the answering node; returns the run record."""
        return self._stub.TriggerTask(pb.TriggerTaskRequest(id=task_id), timeout=self.timeout_s)

    def list_runs(self, task_id: str, limit: int) -> list[pb.RunRecord]:
        """The newest ``limit`` runs of a task (newest first), paging through ListRuns."""
        out: list[pb.RunRecord] = []
        token = ""
        seen: set[str] = set()
        while len(out) < limit:
            req = pb.ListRunsRequest(
                task_id=task_id, page_size=min(MAX_RUNS_PAGE, limit - len(out)), page_token=token
            )
            resp = self._stub.ListRuns(req, timeout=self.timeout_s)
            out.extend(resp.runs)
            token = resp.next_page_token
            if not token or token in seen:
                break
            seen.add(token)
        return out[:limit]

    def preview(
        self,
        *,
        task_id: str | None = None,
        schedule: pb.Schedule | None = None,
        count: int = 0,
        after: datetime | None = None,
    ) -> pb.PreviewScheduleResponse:
        """The next ``count`` (0 = 10) slots of a stored task (``task_id``) or an ad-hoc
        ``schedule`` (exactly one), strictly after ``after`` (aware; default: the server's now).

        Raises:
            ValueError: neither or both of ``task_id`` and ``schedule``.
        """
        if (task_id is None) == (schedule is None):
            raise ValueError("give exactly one of task_id and schedule")
        req = pb.PreviewScheduleRequest(count=count)
        if schedule is not None:
            req.schedule.CopyFrom(schedule)
        else:
            req.task_id = task_id or ""
        if after is not None:
            getattr(req, "from").FromDatetime(after)
        return self._stub.PreviewSchedule(req, timeout=self.timeout_s)

    def audit_task(self, task_id: str, since: datetime | None = None) -> pb.AuditTaskResponse:
        """Audit a task's runs since ``since`` (aware; default: see AuditTaskRequest)."""
        req = pb.AuditTaskRequest(task_id=task_id)
        if since is not None:
            req.since.FromDatetime(since)
        return self._stub.AuditTask(req, timeout=self.timeout_s)

    def watch_runs(self, task_id: str = "", replay: int = 0) -> RunStream:
        """Follow run records: the newest ``replay`` (0..1000) first, then every change. The
        call has no deadline; it ends when cancelled (``.cancel()``) or the server goes away.
        Errors (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE) surface while iterating."""
        call: RunStream = self._stub.WatchRuns(pb.WatchRunsRequest(task_id=task_id, replay=replay))
        return call

    def get_cluster(self) -> pb.GetClusterResponse:
        """The answering node's view of the cluster."""
        return self._stub.GetCluster(pb.GetClusterRequest(), timeout=self.timeout_s)

    def pin_tzdata(
        self, version: str = "", *, force: bool = False, unpin: bool = False
    ) -> pb.PinTzdataResponse:
        """Pin the cluster's tzdata version (``unpin``: remove the pin)."""
        request = pb.PinTzdataRequest(version=version, force=force, unpin=unpin)
        return self._stub.PinTzdata(request, timeout=self.timeout_s)

    def who_am_i(self) -> pb.WhoAmIResponse:
        """Who the answering node takes this client for, and its grants."""
        return self._stub.WhoAmI(pb.WhoAmIRequest(), timeout=self.timeout_s)


__all__ = [
    "RunStream",
    "SchedulerClient",
    "describe_rpc_error",
    "exit_code_for_status",
    "open_channel",
    "rpc_status",
]
