"""``peerd.v1.Scheduler`` servicer: any node serves any call, reading and writing etcd directly.

Every request is validated completely before anything is written; errors are raised as peerd
errors and mapped to gRPC status codes by :func:`peerd.rpc.errors.grpc_errors`.
"""

from __future__ import annotations

import shlex
from collections import Counter
from typing import TYPE_CHECKING

import grpc

from peerd.core.ring import owner
from peerd.core.schedule import normalise_cron
from peerd.core.validate import new_task_id, validate_task, validate_task_id
from peerd.errors import InvalidArgument, PermissionDenied, Unavailable
from peerd.rpc.errors import grpc_errors
from peerd.runner.shell import ShellAllowList
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from peerd.node import Node

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _page_size(value: int, default: int) -> int:
    if value < 0 or value > MAX_PAGE:
        raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE}, got {value}")
    return value or default


class SchedulerService(pb_grpc.SchedulerServicer):
    """The public API of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.allow = ShellAllowList(node.cfg.allow_shell)

    # -- helpers ---------------------------------------------------------------------------------

    def _check_shell(self, spec: pb.TaskSpec, field: str) -> None:
        if spec.WhichOneof("target") == "shell" and not self.allow.allows(spec.shell.argv):
            raise PermissionDenied(
                f"{field}.shell.argv: command {shlex.join(spec.shell.argv)[:200]!r} is not allowed "
                f"on node {self.node.cfg.node_id} (start nodes with --allow-shell PATTERN)"
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
        if spec.WhichOneof("target") == "http":
            spec.http.method = spec.http.method.upper() or "POST"
        spec.created_at.FromDatetime(now)
        spec.updated_at.FromDatetime(now)
        spec.ClearField("resumed_at")
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

    async def _set_paused(self, task_id: str, paused: bool) -> pb.TaskSpec:
        validate_task_id(task_id, "id")
        now = self.node.clock.now()

        def mutate(spec: pb.TaskSpec) -> None:
            if spec.paused == paused:
                return
            spec.paused = paused
            spec.updated_at.FromDatetime(now)
            if not paused:
                spec.resumed_at.FromDatetime(now)

        return await self.node.store.update(task_id, mutate)

    @grpc_errors
    async def PauseTask(
        self, request: pb.PauseTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        return await self._set_paused(request.id, True)

    @grpc_errors
    async def ResumeTask(
        self, request: pb.ResumeTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskSpec:
        return await self._set_paused(request.id, False)

    @grpc_errors
    async def TriggerTask(
        self, request: pb.TriggerTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunRecord:
        validate_task_id(request.id, "id")
        spec, _ = await self.node.store.get(request.id)
        self._check_shell(spec, "task")
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
        )
        for node_id in members:
            m = out.members.add()
            m.CopyFrom(membership.view[node_id])
            m.owned_tasks = counts.get(node_id, 0)
            m.suspected_dead = node_id in self.node.peers.detector.dead()
            m.draining = m.draining or (node_id in excluded and not m.suspected_dead)
        return out
