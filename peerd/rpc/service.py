"""``peerd.v1.Scheduler`` servicer: any node serves any call, reading and writing etcd directly.

Every request is validated completely before anything is written; errors are raised as peerd
errors and mapped to gRPC status codes by :func:`peerd.rpc.errors.grpc_errors` (and
:func:`~peerd.rpc.errors.grpc_stream_errors` for the one streaming call, WatchRuns).
"""

from __future__ import annotations

import contextlib
import shlex
from collections import Counter
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
from google.protobuf import timestamp_pb2

from peerd.coord.runs_view import RunsView
from peerd.core import audit as audit_core
from peerd.core import preview as preview_core
from peerd.core.ring import owner
from peerd.core.schedule import (
    CompiledSchedule,
    normalise_cron,
    spec_from_proto,
    validate_schedule,
)
from peerd.core.validate import (
    new_task_id,
    validate_pause_note,
    validate_task,
    validate_task_id,
)
from peerd.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unavailable
from peerd.rpc.errors import grpc_errors, grpc_stream_errors
from peerd.runner import python as python_runner
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from peerd.node import Node

DEFAULT_PAGE = 100
MAX_PAGE = 1000
DEFAULT_PREVIEW = 10
MAX_PREVIEW = 1000
MAX_REPLAY = 1000


def _page_size(value: int, default: int) -> int:
    if value < 0 or value > MAX_PAGE:
        raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE}, got {value}")
    return value or default


def _timestamp(ts: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(field, f"invalid timestamp: {exc}") from None


def _compile(schedule: pb.Schedule, created_at: datetime, field: str) -> CompiledSchedule:
    """The schedule as the engine compiles it (:meth:`peerd.runner.engine.Engine._acquire`)."""
    return CompiledSchedule(spec_from_proto(schedule, created_at, field))


class SchedulerService(pb_grpc.SchedulerServicer):
    """The public API of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.runs = RunsView(node.etcd, node.keys)

    # -- helpers ---------------------------------------------------------------------------------

    def _check_shell(self, spec: pb.TaskSpec, field: str) -> None:
        # The engine's allow-list: the one the node runs shell tasks with (SIGHUP replaces it).
        allow = self.node.engine.executors.shell.allow_list
        if spec.WhichOneof("target") == "shell" and not allow.allows(spec.shell.argv):
            raise PermissionDenied(
                f"{field}.shell.argv: command {shlex.join(spec.shell.argv)[:200]!r} is not allowed "
                f"on node {self.node.cfg.node_id} (start nodes with --allow-shell PATTERN)"
            )

    def _check_python(self, spec: pb.TaskSpec, field: str) -> None:
        """A python target must name an entry point installed on this node (the answering one;
        a node without it fails such runs with the reason)."""
        if spec.WhichOneof("target") != "python":
            return
        name = spec.python.name
        if name in python_runner.available() or name in python_runner.available(refresh=True):
            return
        installed = ", ".join(sorted(python_runner.available())) or "none"
        raise InvalidArgument(
            f"{field}.python.name",
            f"no entry point {name!r} in group {python_runner.GROUP} on node "
            f"{self.node.cfg.node_id}; installed: {installed}",
        )

    def _prepare(self, given: pb.TaskSpec, field: str) -> pb.TaskSpec:
        spec = pb.TaskSpec()
        spec.CopyFrom(given)
        if not spec.id:
            spec.id = new_task_id()
        now = self.node.clock.now()
        if spec.schedule.WhichOneof("kind") == "cron":
            cron, every = normalise_cron(spec.schedule.cron, f"{field}.schedule.cron")
            if every is not None:
                spec.schedule.every.FromTimedelta(every)
            elif cron is not None:
                spec.schedule.cron = cron
        validate_task(spec, now, field)
        self._check_shell(spec, field)
        self._check_python(spec, field)
        if spec.WhichOneof("target") == "http":
            spec.http.method = spec.http.method.upper() or "POST"
        spec.created_at.FromDatetime(now)
        spec.updated_at.FromDatetime(now)
        spec.ClearField("resumed_at")
        spec.pause_note = ""  # server-set: only PauseTask writes it
        return spec

    # -- tasks -----------------------------------------------------------------------------------

    @grpc_errors
    async def CreateTask(
        self, request: pb.CreateTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        spec = self._prepare(request.task, "task")
        await self.node.store.create([spec])
        return spec

    @grpc_errors
    async def CreateTasks(
        self, request: pb.CreateTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTasksResponse:
        if not request.tasks:
            raise InvalidArgument("tasks", "at least one task is required")
        specs = [self._prepare(t, f"tasks[{i}]") for i, t in enumerate(request.tasks)]
        await self.node.store.create(specs)
        return pb.CreateTasksResponse(tasks=specs)

    @grpc_errors
    async def GetTask(
        self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        validate_task_id(request.id, "id")
        spec, _ = await self.node.store.get(request.id)
        return spec

    @grpc_errors
    async def ListTasks(
        self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTasksResponse:
        size = _page_size(request.page_size, DEFAULT_PAGE)
        if request.page_token:
            validate_task_id(request.page_token, "page_token")
        specs, token = await self.node.store.list(size, request.page_token)
        return pb.ListTasksResponse(tasks=specs, next_page_token=token)

    @grpc_errors
    async def DeleteTask(
        self, request: pb.DeleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTaskResponse:
        validate_task_id(request.id, "id")
        await self.node.store.delete(request.id)
        return pb.DeleteTaskResponse()

    async def _set_paused(self, task_id: str, paused: bool, note: str = "") -> pb.TaskSpec:
        validate_task_id(task_id, "id")
        validate_pause_note(note, "note")
        now = self.node.clock.now()

        def mutate(spec: pb.TaskSpec) -> None:
            if paused and not spec.paused:
                spec.paused = True
                spec.pause_note = note
            elif paused and note and note != spec.pause_note:
                # Pausing a paused task again replaces its note. updated_at keeps marking the
                # moment it was paused (AuditTask expects no slot after it).
                spec.pause_note = note
                return
            elif not paused and spec.paused:
                spec.paused = False
                spec.pause_note = ""
                spec.resumed_at.FromDatetime(now)
            else:
                return
            spec.updated_at.FromDatetime(now)

        return await self.node.store.update(task_id, mutate)

    @grpc_errors
    async def PauseTask(
        self, request: pb.PauseTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        """Pause a task; ``note`` (<= 1024 characters, INVALID_ARGUMENT ``note`` otherwise) is
        stored in ``pause_note``. Pausing a paused task with a (different) note replaces the
        note (``updated_at`` stays the pause time); without one it changes nothing."""
        return await self._set_paused(request.id, True, request.note)

    @grpc_errors
    async def ResumeTask(
        self, request: pb.ResumeTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        """Resume a paused task: sets ``resumed_at`` and clears ``pause_note``."""
        return await self._set_paused(request.id, False)

    @grpc_errors
    async def TriggerTask(
        self, request: pb.TriggerTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunRecord:
        validate_task_id(request.id, "id")
        spec, _ = await self.node.store.get(request.id)
        self._check_shell(spec, "task")
        if self.node.alarms.nospace:  # a claim is a nested txn: etcd would let it past the quota
            detail = "no node claims while the alarm is on"
            raise ResourceExhausted(detail, self.node.etcd.space_hint)
        return await self.node.engine.trigger(spec)

    # -- runs and cluster ------------------------------------------------------------------------

    @grpc_errors
    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        validate_task_id(request.task_id, "task_id")
        size = _page_size(request.page_size, 20)
        if request.page_token and not request.page_token.isdigit():
            raise InvalidArgument("page_token", "not a token returned by ListRuns")
        runs, token = await self.node.ledger.list(request.task_id, size, request.page_token)
        if not runs and not request.page_token:
            await self.node.store.get(request.task_id)  # NOT_FOUND for an unknown task
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
        now = self.node.clock.now()
        after = _timestamp(getattr(request, "from"), "from") if request.HasField("from") else now
        source = request.WhichOneof("source")
        if source == "task_id":
            validate_task_id(request.task_id, "task_id")
            spec, _ = await self.node.store.get(request.task_id)
            schedule, task_id = spec.schedule, spec.id
            compiled = _compile(schedule, spec.created_at.ToDatetime(tzinfo=UTC), "task.schedule")
        elif source == "schedule":
            schedule, task_id = request.schedule, ""
            validate_schedule(schedule, now, "schedule", creating=False)
            compiled = _compile(schedule, after, "schedule")
        else:
            raise InvalidArgument("source", "set task_id or schedule")
        slots = preview_core.preview(compiled, task_id, after, count)
        return pb.PreviewScheduleResponse(
            slots=[preview_core.to_proto(s) for s in slots], time_zone=schedule.time_zone or "UTC"
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
        now = self.node.clock.now()
        requested = _timestamp(request.since, "since") if request.HasField("since") else None
        if requested is not None and requested >= now:
            raise InvalidArgument("since", "must be in the past")
        spec, _ = await self.node.store.get(request.task_id)
        entries, _ = await self.runs.entries(spec.id)
        created_at = spec.created_at.ToDatetime(tzinfo=UTC)
        compiled = _compile(spec.schedule, created_at, "task.schedule")
        threshold = (
            spec.misfire_threshold.ToTimedelta()
            if spec.HasField("misfire_threshold")
            else self.node.cfg.misfire_threshold
        )
        jitter = (
            spec.schedule.jitter.ToTimedelta() if spec.schedule.HasField("jitter") else timedelta(0)
        )
        oldest = entries[0].record.scheduled_at.ToDatetime(tzinfo=UTC) if entries else None
        since, truncated = audit_core.audit_window(
            requested, created_at, oldest, len(entries) >= self.node.cfg.runs_keep
        )
        report = audit_core.audit(
            compiled,
            [audit_core.LedgerEntry(e.record, e.create_revision) for e in entries],
            since,
            now,
            threshold,
            jitter=jitter,
            paused_at=spec.updated_at.ToDatetime(tzinfo=UTC) if spec.paused else None,
            truncated=truncated,
        )
        return audit_core.to_proto(report, spec.id)

    @grpc_stream_errors
    async def WatchRuns(
        self, request: pb.WatchRunsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[pb.RunRecord, None]:
        """Stream run records: first the newest ``replay`` (0..1000) existing ones, oldest
        first, then every write of a record (claim, start, attempt, finish) as it happens.
        Deletions (trims) are not sent. ``task_id`` empty = every task (replay then means the
        most recently written records of all tasks).

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
            await self.node.store.get(task_id)
        entries, revision = await self.runs.newest(task_id, request.replay)
        for e in entries:
            yield e.filled()
        seen = {e.key: e.mod_revision for e in entries if e.mod_revision > revision}
        async with contextlib.aclosing(self.runs.watch(task_id, revision + 1, seen)) as changes:
            async for e in changes:
                yield e.filled()

    @grpc_errors
    async def GetCluster(
        self, request: pb.GetClusterRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetClusterResponse:
        membership = self.node.membership
        if not membership.view_ready.is_set():
            raise Unavailable("membership view not loaded yet")
        members = membership.members()
        owners = self.node.engine.ownership_members() or members
        excluded = self.node.peers.excluded()
        tasks = self.node.cache.tasks
        counts = Counter(owner(t, owners) for t, s in tasks.items() if not s.paused)
        out = pb.GetClusterResponse(
            cluster=self.node.cfg.cluster,
            node_id=self.node.cfg.node_id,
            task_count=len(tasks),
            revision=membership.view_revision,
            etcd_compactor=self.node.compactor.holder or "",
        )
        for alarm in self.node.alarms.alarms:
            out.etcd_alarms.add(member_id=alarm.member_id, alarm=alarm.kind)
        if self.node.alarms.status is not None:
            out.etcd_db_size_bytes = self.node.alarms.status.db_size
            out.etcd_db_size_in_use_bytes = self.node.alarms.status.db_size_in_use
        for node_id in members:
            m = out.members.add()
            m.CopyFrom(membership.view[node_id])
            m.owned_tasks = counts.get(node_id, 0)
            m.suspected_dead = node_id in self.node.peers.detector.dead()
            m.draining = m.draining or (node_id in excluded and not m.suspected_dead)
        return out
