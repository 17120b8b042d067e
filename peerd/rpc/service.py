"""``peerd.v1.Scheduler`` servicer: any node serves any call, reading and writing etcd directly.

Every request is validated completely before anything is written; errors are raised as peerd
errors and mapped to gRPC status codes by :func:`peerd.rpc.errors.grpc_errors` (and
:func:`~peerd.rpc.errors.grpc_stream_errors` for the one streaming call, WatchRuns).

Authorisation happens before a handler runs (:mod:`peerd.rpc.auth`); the handlers only filter
what a List or Watch call returns to the tasks the caller may read (:func:`peerd.rpc.auth.visible`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import grpc
from google.protobuf import timestamp_pb2

from peerd.clock import Clock
from peerd.config import NodeConfig
from peerd.coord.ledger import Ledger
from peerd.coord.runs_view import RunsView
from peerd.coord.store import TaskStore
from peerd.core import audit as audit_core
from peerd.core import preview as preview_core
from peerd.core.policy import UNRESTRICTED
from peerd.core.redact import redact_spec
from peerd.core.schedule import CompiledSchedule, spec_from_proto, validate_schedule
from peerd.core.task_schedule import task_schedule
from peerd.core.tzrules import TimeZoneRules
from peerd.core.validate import validate_task_id
from peerd.errors import InvalidArgument
from peerd.rpc.auth import current_principal, visible
from peerd.rpc.caller import sees_credentials
from peerd.rpc.errors import grpc_errors, grpc_stream_errors
from peerd.rpc.task_list import TaskLister, page_size
from peerd.rpc.task_writes import TargetCheck, TaskWrites
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc

DEFAULT_PREVIEW = 10
MAX_PREVIEW = 1000
MAX_REPLAY = 1000


def _timestamp(ts: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(field, f"invalid timestamp: {exc}") from None


def shown(spec: pb.TaskSpec, context: grpc.aio.ServicerContext) -> pb.TaskSpec:
    """``spec`` as the caller may see it: credential-named literal values redacted unless
    :func:`peerd.rpc.caller.sees_credentials` (see :func:`peerd.core.redact.redact_spec`)."""
    return spec if sees_credentials(context) else redact_spec(spec)


def _compile(
    schedule: pb.Schedule, created_at: datetime, field: str, rules: TimeZoneRules
) -> CompiledSchedule:
    """The schedule as the engine compiles it (:meth:`peerd.engine.planner.Planner.acquire`)."""
    return CompiledSchedule(spec_from_proto(schedule, created_at, field), rules)


class Trigger(Protocol):
    """Runs a task once now on this node (:meth:`peerd.engine.Engine.trigger`)."""

    async def trigger(self, spec: pb.TaskSpec) -> pb.RunRecord: ...


class TzdataControl(Protocol):
    """Pins the cluster's tzdata version (:class:`peerd.coord.tzdata.TzdataAgreement`)."""

    async def pin(self, version: str, force: bool = False) -> str: ...

    async def unpin(self) -> str | None: ...


ClusterView = Callable[[], pb.GetClusterResponse]
"""``() -> the cluster as this node sees it`` (:func:`peerd.cluster.cluster_view`).

Raises:
    Unavailable: the member view is not loaded yet.
"""


def _paused_at(spec: pb.TaskSpec) -> datetime | None:
    """When a paused task was paused (``updated_at`` for tasks paused before ``paused_at``
    existed); None when it is not paused."""
    if not spec.paused:
        return None
    ts = spec.paused_at if spec.HasField("paused_at") else spec.updated_at
    return ts.ToDatetime(tzinfo=UTC)


class SchedulerService(pb_grpc.SchedulerServicer):
    """The public API of one node.

    Args:
        store: task specs in etcd.
        ledger: run records (ListRuns).
        runs: read views of the ledger (AuditTask, WatchRuns).
        targets: the executors' API checks.
        trigger: manual runs.
        cluster: the cluster view.
        settings: ``() -> the node's current configuration`` (hot reload).
        clock: time source.
        rules: the node's time-zone rules (validation, preview, audit).
        tzdata: the cluster's tzdata agreement (PinTzdata).
    """

    def __init__(
        self,
        store: TaskStore,
        ledger: Ledger,
        runs: RunsView,
        targets: TargetCheck,
        trigger: Trigger,
        cluster: ClusterView,
        settings: Callable[[], NodeConfig],
        clock: Clock,
        rules: TimeZoneRules,
        tzdata: TzdataControl,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.runs = runs
        self.targets = targets
        self.engine = trigger
        self.cluster = cluster
        self.settings = settings
        self.clock = clock
        self.rules = rules
        self.tzdata = tzdata
        self.writes = TaskWrites(store, targets, clock, lambda: settings().node_id, rules)
        self.lister = TaskLister(store, ledger, clock, rules)

    # -- tasks -----------------------------------------------------------------------------------

    @grpc_errors
    async def CreateTask(
        self, request: pb.CreateTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        spec = self.writes.prepare_create(request.task, "task")
        await self.store.create([spec])
        return shown(spec, context)

    @grpc_errors
    async def CreateTasks(
        self, request: pb.CreateTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTasksResponse:
        if not request.tasks:
            raise InvalidArgument("tasks", "at least one task is required")
        specs = [self.writes.prepare_create(t, f"tasks[{i}]") for i, t in enumerate(request.tasks)]
        await self.store.create(specs)
        return pb.CreateTasksResponse(tasks=[shown(s, context) for s in specs])

    @grpc_errors
    async def GetTask(
        self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        validate_task_id(request.id, "id")
        spec, _ = await self.store.get(request.id)
        return shown(spec, context)

    @grpc_errors
    async def ListTasks(
        self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTasksResponse:
        """Tasks in id order, a page at a time, filtered server-side by ``label_selector``,
        ``id_contains`` and ``paused``; with ``include_status``, each task's next fire time and
        newest run record too (:mod:`peerd.rpc.task_list`).

        Raises (as status codes):
            INVALID_ARGUMENT: ``page_size`` outside 0..1000, a malformed ``page_token``, a
                malformed ``label_selector`` (the message gives the position and the reason),
                ``id_contains`` over 128 characters or an unknown ``paused``.
        """
        specs, token = await self.lister.page(request)
        # Filtered after paging: a page may come back short (even empty) with a next token.
        specs = [s for s in specs if visible(s.id)]
        out = pb.ListTasksResponse(tasks=[shown(s, context) for s in specs], next_page_token=token)
        if request.include_status:
            out.statuses.extend(await self.lister.statuses(specs))
        return out

    @grpc_errors
    async def DeleteTask(
        self, request: pb.DeleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTaskResponse:
        validate_task_id(request.id, "id")
        await self.store.delete(request.id)
        return pb.DeleteTaskResponse()

    @grpc_errors
    async def UpdateTask(
        self, request: pb.UpdateTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        """Replace a task's spec (:meth:`peerd.rpc.task_writes.TaskWrites.update`)."""
        return shown(await self.writes.update(request.task, request.expected_revision), context)

    @grpc_errors
    async def ApplyTasks(
        self, request: pb.ApplyTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyTasksResponse:
        """Creates, updates and deletes in one transaction
        (:meth:`peerd.rpc.task_writes.TaskWrites.apply`)."""
        out = await self.writes.apply(request)
        for specs in (out.created, out.updated):
            for spec in specs:
                redacted = shown(spec, context)
                if redacted is not spec:
                    spec.CopyFrom(redacted)
        return out

    @grpc_errors
    async def ListTaskHistory(
        self, request: pb.ListTaskHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTaskHistoryResponse:
        """A task's change records, newest first (NOT_FOUND for an unknown task)."""
        validate_task_id(request.task_id, "task_id")
        await self.store.get(request.task_id)
        return pb.ListTaskHistoryResponse(changes=await self.store.history(request.task_id))

    @grpc_errors
    async def PauseTask(
        self, request: pb.PauseTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        """Pause a task; ``note`` (<= 1024 characters, INVALID_ARGUMENT ``note`` otherwise) is
        stored in ``pause_note``. Pausing a paused task with a (different) note replaces the
        note; without one it changes nothing. ``paused_at`` is the time it was paused."""
        return shown(await self.writes.set_paused(request.id, True, request.note), context)

    @grpc_errors
    async def ResumeTask(
        self, request: pb.ResumeTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        """Resume a paused task: sets ``resumed_at`` and clears ``pause_note``."""
        return shown(await self.writes.set_paused(request.id, False), context)

    @grpc_errors
    async def TriggerTask(
        self, request: pb.TriggerTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunRecord:
        validate_task_id(request.id, "id")
        spec, _ = await self.store.get(request.id)
        if spec.WhichOneof("target") in ("shell", "http"):
            self.targets.check(spec, "task")  # this node runs it: it must allow the target
        return await self.engine.trigger(spec)

    # -- runs and cluster ------------------------------------------------------------------------

    @grpc_errors
    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        validate_task_id(request.task_id, "task_id")
        size = page_size(request.page_size, 20)
        if request.page_token and not request.page_token.isdigit():
            raise InvalidArgument("page_token", "not a token returned by ListRuns")
        runs, token = await self.ledger.list(request.task_id, size, request.page_token)
        if not runs and not request.page_token:
            await self.store.get(request.task_id)  # NOT_FOUND for an unknown task
        return pb.ListRunsResponse(runs=runs, next_page_token=token)

    # -- preview, audit, watch -------------------------------------------------------------------

    @grpc_errors
    async def PreviewSchedule(
        self, request: pb.PreviewScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewScheduleResponse:
        """The next ``count`` slots strictly after ``from`` (default now).

        Source ``task_id``: the stored task's schedule compiled exactly as the engine compiles
        it (created_at anchor, bounds, max_runs, DST policies, jitter); NOT_FOUND if missing.
        Source ``schedule``: validated like a task's (but ``at``/``end_at`` may be in the past),
        errors name ``schedule.*``; compiled as if created at ``from`` (the ``every`` anchor).

        Raises (as status codes):
            INVALID_ARGUMENT: ``count`` outside 1..1000 (0 = 10), a bad ``from``, no source, or a
                bad schedule.
        """
        if not 0 <= request.count <= MAX_PREVIEW:
            raise InvalidArgument(
                "count", f"must be between 1 and {MAX_PREVIEW}, got {request.count}"
            )
        count = request.count or DEFAULT_PREVIEW
        now = self.clock.now()
        after = _timestamp(getattr(request, "from"), "from") if request.HasField("from") else now
        source = request.WhichOneof("source")
        if source == "task_id":
            validate_task_id(request.task_id, "task_id")
            spec, _ = await self.store.get(request.task_id)
            schedule, task_id = spec.schedule, spec.id
            compiled = _compile(
                schedule, spec.created_at.ToDatetime(tzinfo=UTC), "task.schedule", self.rules
            )
            if spec.HasField("schedule_since"):  # no slot of this schedule before it changed
                after = max(after, spec.schedule_since.ToDatetime(tzinfo=UTC))
        elif source == "schedule":
            schedule, task_id = request.schedule, ""
            validate_schedule(schedule, now, "schedule", rules=self.rules, creating=False)
            compiled = _compile(schedule, after, "schedule", self.rules)
        else:
            raise InvalidArgument("source", "set task_id or schedule")
        slots = preview_core.preview(compiled, task_id, after, count)
        return pb.PreviewScheduleResponse(
            slots=[preview_core.to_proto(s) for s in slots],
            time_zone=schedule.time_zone or "UTC",
            tzdata_version=self.rules.version,
            tzdata_source=self.rules.where,
        )

    @grpc_errors
    async def AuditTask(
        self, request: pb.AuditTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuditTaskResponse:
        """Audit a task's ledger up to now (pure core: :func:`peerd.core.audit.audit`).

        Window: slots in ``(since, now]``; expected slots in ``(since, now - misfire threshold -
        jitter]`` (the task's threshold, else this node's ``--misfire-threshold``; for a paused
        task, not after it was paused). ``since`` defaults to the task's creation. When the task
        has at least ``--runs-keep`` records (this node's setting) older ones may have been
        trimmed: then a ``since`` before the oldest record kept is moved to just before it and
        ``truncated`` is set.

        Gaps: expected slots with no record (manual runs are not expected slots); the first
        1000, ``gap_count`` exact.

        A slot is a **multi-claim** when (:func:`peerd.core.audit.multi_claim`), taking its
        attempts as ``history`` (oldest first) plus the record's own current attempt:

        1. the first attempt's fencing token (``history[0]``, else the record's), when set,
           differs from the create revision of the run key: the key was deleted and the slot
           claimed again;
        2. two attempts ran on different nodes with overlapping ``[started_at, finished_at)``
           (unset ``finished_at`` = still running) and the earlier one was not LOST, FAILED or
           CANCELLED before the later one started (finished_at unset or <= its start); or
        3. an attempt follows one that SUCCEEDED.

        ``fencing_tokens`` lists the distinct claims involved.

        Raises (as status codes):
            INVALID_ARGUMENT: bad ``task_id``, or ``since`` not in the past. NOT_FOUND: no
                such task.
        """
        validate_task_id(request.task_id, "task_id")
        now = self.clock.now()
        requested = _timestamp(request.since, "since") if request.HasField("since") else None
        if requested is not None and requested >= now:
            raise InvalidArgument("since", "must be in the past")
        spec, _ = await self.store.get(request.task_id)
        entries, _ = await self.runs.entries(spec.id)
        created_at = spec.created_at.ToDatetime(tzinfo=UTC)
        compiled = task_schedule(spec, rules=self.rules)
        threshold = (
            spec.misfire_threshold.ToTimedelta()
            if spec.HasField("misfire_threshold")
            else self.settings().misfire_threshold
        )
        jitter = (
            spec.schedule.jitter.ToTimedelta() if spec.schedule.HasField("jitter") else timedelta(0)
        )
        oldest = entries[0].record.scheduled_at.ToDatetime(tzinfo=UTC) if entries else None
        since, truncated = audit_core.audit_window(
            requested, created_at, oldest, len(entries) >= self.settings().runs_keep
        )
        report = audit_core.audit(
            compiled,
            [audit_core.LedgerEntry(e.record, e.create_revision) for e in entries],
            since,
            now,
            threshold,
            jitter=jitter,
            paused_at=_paused_at(spec),
            truncated=truncated,
        )
        return audit_core.to_proto(report, spec.id)

    @grpc_stream_errors
    async def WatchRuns(
        self, request: pb.WatchRunsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[pb.RunRecord, None]:
        """Stream run records: first the newest ``replay`` (0..1000) existing ones, oldest
        first, then every write of a record (claim, start, attempt, finish) as it happens.
        Deletions (trims) are not sent. ``task_id`` empty = every task the caller may read
        (replay then means the most recently written records of all tasks, before filtering).

        The stream never ends on its own: it survives etcd outages (re-watching from the last
        revision sent) and compaction (re-listing); it ends when the client cancels or the node
        stops.

        Raises (as status codes):
            INVALID_ARGUMENT: ``replay`` outside 0..1000 or a malformed ``task_id``.
            NOT_FOUND: ``task_id`` names no task.
        """
        if not 0 <= request.replay <= MAX_REPLAY:
            raise InvalidArgument(
                "replay", f"must be between 0 and {MAX_REPLAY}, got {request.replay}"
            )
        task_id = request.task_id or None
        if task_id is not None:
            validate_task_id(task_id, "task_id")
            await self.store.get(task_id)
        # Headers now: the stream is accepted (the REST gateway answers 200 on them).
        await context.send_initial_metadata(())
        entries, revision = await self.runs.newest(task_id, request.replay)
        for e in entries:
            if visible(e.record.task_id):
                yield e.filled()
        seen = {e.key: e.mod_revision for e in entries if e.mod_revision > revision}
        async with contextlib.aclosing(self.runs.watch(task_id, revision + 1, seen)) as changes:
            async for e in changes:
                if visible(e.record.task_id):
                    yield e.filled()

    @grpc_errors
    async def GetCluster(
        self, request: pb.GetClusterRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetClusterResponse:
        return self.cluster()

    @grpc_errors
    async def PinTzdata(
        self, request: pb.PinTzdataRequest, context: grpc.aio.ServicerContext
    ) -> pb.PinTzdataResponse:
        """Pin the cluster's tzdata version (or, with ``unpin``, let the cluster choose again).

        Raises (as status codes):
            INVALID_ARGUMENT: ``version`` malformed, or run by no live member (without
                ``force``). UNAVAILABLE: etcd cannot be reached.
        """
        if request.unpin:
            agreed = await self.tzdata.unpin()
            return pb.PinTzdataResponse(version=agreed or "", pinned=False)
        version = await self.tzdata.pin(request.version, request.force)
        return pb.PinTzdataResponse(version=version, pinned=True)

    async def WhoAmI(
        self, request: pb.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> pb.WhoAmIResponse:
        """The caller as :mod:`peerd.rpc.auth` authenticated it, and its grants."""
        principal = current_principal() or UNRESTRICTED
        return pb.WhoAmIResponse(
            principal=principal.name,
            source=principal.source,
            grants=[
                pb.Grant(role=g.role, task_prefixes=g.scope.describe()) for g in principal.grants
            ],
            permissions=[p.value for p in principal.permissions()],
        )
