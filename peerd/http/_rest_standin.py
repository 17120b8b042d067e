"""TEMPORARY stand-in for the REST API of ``peerd/http/rest.py`` (branch ``rest``): the five GET
routes the dashboard reads, answered by calling the node's Scheduler servicer in process.

To be deleted when the ``rest`` branch is merged (together with its one wiring line in
``peerd/node.py``). It does not authenticate: the servicer's auth interceptor is not in the
path, so this file must never reach a release.

==================================  =======================================================
route                               answer (protobuf JSON mapping, lowerCamelCase)
==================================  =======================================================
``GET /v1/cluster``                 GetClusterResponse
``GET /v1/tasks``                   ListTasksResponse; query parameters are ListTasksRequest
                                    fields by JSON name
``GET /v1/tasks/{id}``              TaskSpec
``GET /v1/tasks/{id}/runs``         ListRunsResponse (``pageSize``, ``pageToken``)
``GET /v1/runs:watch``              ``text/event-stream``: ``event: run`` per RunRecord
                                    (``taskId``, ``replay``)
==================================  =======================================================

Errors: ``{"code", "status", "message"}`` with the HTTP status of the gRPC code.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from peerd.rpc.service import SchedulerService
from peerd.v1 import scheduler_pb2 as pb

_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Context:
    """The part of ``grpc.aio.ServicerContext`` the servicer's error decorators use."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise _Aborted(code, details)


def _json(msg: Message) -> web.Response:
    return web.json_response(json_format.MessageToDict(msg))


def _error(exc: _Aborted) -> web.Response:
    status = _HTTP.get(exc.code, 500)
    body = {"code": exc.code.value[0], "status": exc.code.name, "message": exc.message}
    return web.json_response(body, status=status)


def _request(query: Any, message: Message) -> Message:
    """``message`` filled from query parameters by JSON name (strings parsed as JSON values
    where the field is not a string)."""
    fields = {f.json_name: f for f in message.DESCRIPTOR.fields}
    body: dict[str, Any] = {}
    for name, value in query.items():
        f = fields.get(name)
        if f is None:
            raise _Aborted(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: unknown parameter")
        if f.type in (f.TYPE_BOOL, f.TYPE_INT32, f.TYPE_INT64):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        body[name] = value
    try:
        return json_format.ParseDict(body, message)
    except json_format.ParseError as exc:
        raise _Aborted(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None


def standin_routes(api: SchedulerService) -> Callable[[web.Application], None]:
    """``app -> None``: adds the routes of the module table, answered by ``api``."""
    ctx: Any = _Context()

    def unary(call: Callable[[Any], Awaitable[Message]]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            try:
                return _json(await call(request))
            except _Aborted as exc:
                return _error(exc)

        return handler

    async def tasks(r: web.Request) -> Message:
        return await api.ListTasks(_request(r.query, pb.ListTasksRequest()), ctx)

    async def task(r: web.Request) -> Message:
        return await api.GetTask(pb.GetTaskRequest(id=r.match_info["id"]), ctx)

    async def runs(r: web.Request) -> Message:
        req = _request(r.query, pb.ListRunsRequest())
        req.task_id = r.match_info["id"]  # type: ignore[attr-defined]
        return await api.ListRuns(req, ctx)

    async def cluster(r: web.Request) -> Message:
        return await api.GetCluster(pb.GetClusterRequest(), ctx)

    async def watch(r: web.Request) -> web.StreamResponse:
        try:
            req = _request(r.query, pb.WatchRunsRequest())
        except _Aborted as exc:
            return _error(exc)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(r)
        try:
            async for record in api.WatchRuns(req, ctx):
                data = json.dumps(json_format.MessageToDict(record))
                await resp.write(f"event: run\ndata: {data}\n\n".encode())
        except _Aborted as exc:
            await resp.write(f"event: error\ndata: {json.dumps(exc.message)}\n\n".encode())
        return resp

    def add(app: web.Application) -> None:
        app.router.add_get("/v1/cluster", unary(cluster))
        app.router.add_get("/v1/tasks", unary(tasks))
        app.router.add_get("/v1/tasks/{id}", unary(task))
        app.router.add_get("/v1/tasks/{id}/runs", unary(runs))
        app.router.add_get("/v1/runs:watch", watch)

    return add
