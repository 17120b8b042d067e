"""The HTTP/JSON API's routes, as one table, and the pure mapping of an HTTP request to the
request message of a ``peerd.v1.Scheduler`` method.

:data:`ROUTES` drives the routing (:func:`match`), the mapping of path, query and body onto the
request (:func:`build_request`) and the OpenAPI document (:mod:`peerd.http.openapi`); a route
is written once. The shape follows ``google.api.http`` (AIP-127, as grpc-gateway serves it):

* ``{id}`` in a path binds one request field (:attr:`Route.path_field`, a dotted path such as
  ``task.id``); the segment is percent-decoded; a path variable never holds ``/`` or ``:``
  (``:verb`` is the custom method of AIP-136, ``POST /v1/tasks/{id}:pause``).
* :attr:`Route.body` is ``"*"`` (the body is the whole request), a field name (the body is that
  field, ``POST /v1/tasks`` takes a ``TaskSpec`` as ``CreateTaskRequest.task``) or ``""`` (no
  body).
* Every query parameter names a request field by its JSON name (``pageSize``) or its proto
  name (``page_size``), dotted for nested fields (``schedule.cron``), repeated for repeated
  fields, generically: a field added to a request later is a query parameter at once. An
  unknown parameter is INVALID_ARGUMENT naming it.
* JSON is protobuf's JSON mapping (``google.protobuf.json_format``): lowerCamelCase out, both
  names in, an unknown field is INVALID_ARGUMENT naming it.

Errors raised here are :class:`peerd.errors.InvalidArgument`; their HTTP status comes from
:func:`http_status`, google.rpc's mapping of status codes to HTTP (``google/rpc/code.proto``).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Scheduler"]
"""The service every route calls a method of."""


@dataclass(frozen=True)
class Route:
    """One HTTP route onto one Scheduler method.

    Attributes:
        verb: ``GET``, ``POST``, ``PATCH`` or ``DELETE``.
        path: the template, ``/v1/tasks/{id}:pause`` (at most one variable, ``{id}``).
        rpc: the Scheduler method's name, ``PauseTask``.
        path_field: the request field ``{id}`` binds (dotted: ``task.id``); ``""`` without one.
        body: ``"*"`` (the whole request), a request field name, or ``""`` (no body).
        summary: one line for the OpenAPI document.
    """

    verb: str
    path: str
    rpc: str
    path_field: str = ""
    body: str = ""
    summary: str = ""
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"(\{id\})", self.path)
        regex = "".join("(?P<id>[^/:]+)" if p == "{id}" else re.escape(p) for p in parts)
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    @property
    def method(self) -> MethodDescriptor:
        """The Scheduler method's descriptor."""
        return SERVICE.methods_by_name[self.rpc]

    @property
    def stream(self) -> bool:
        """A server stream (served as server-sent events)."""
        return bool(self.method.server_streaming)

    def request_class(self) -> type[Message]:
        """The request message class."""
        return message_factory.GetMessageClass(self.method.input_type)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/cluster", "GetCluster", summary="Members, ownership and etcd's state"),
    Route("GET", "/v1/whoami", "WhoAmI", summary="The caller's principal and grants"),
    Route("GET", "/v1/tasks", "ListTasks", summary="List tasks, a page at a time"),
    Route("POST", "/v1/tasks", "CreateTask", body="task", summary="Create a task"),
    Route("POST", "/v1/tasks:batchCreate", "CreateTasks", body="*",
          summary="Create tasks, all or none"),
    Route("POST", "/v1/tasks:apply", "ApplyTasks", body="*",
          summary="Create, update and delete tasks in one transaction"),
    Route("GET", "/v1/tasks/{id}", "GetTask", "id", summary="Get a task"),
    Route("PATCH", "/v1/tasks/{id}", "UpdateTask", "task.id", body="*",
          summary="Replace a task's spec (optionally at an expected revision)"),
    Route("DELETE", "/v1/tasks/{id}", "DeleteTask", "id", summary="Delete a task"),
    Route("POST", "/v1/tasks/{id}:pause", "PauseTask", "id", body="*", summary="Pause a task"),
    Route("POST", "/v1/tasks/{id}:resume", "ResumeTask", "id", body="*",
          summary="Resume a task"),
    Route("POST", "/v1/tasks/{id}:trigger", "TriggerTask", "id", body="*",
          summary="Run a task now"),
    Route("GET", "/v1/tasks/{id}/runs", "ListRuns", "task_id",
          summary="A task's run records, newest first"),
    Route("GET", "/v1/tasks/{id}/history", "ListTaskHistory", "task_id",
          summary="A task's spec changes"),
    Route("GET", "/v1/tasks/{id}/preview", "PreviewSchedule", "task_id",
          summary="A task's next slots"),
    Route("GET", "/v1/tasks/{id}/audit", "AuditTask", "task_id",
          summary="Audit a task's run ledger"),
    Route("GET", "/v1/tasks/{id}/runs:watch", "WatchRuns", "task_id",
          summary="A task's run records as they are written (server-sent events)"),
    Route("GET", "/v1/runs:watch", "WatchRuns",
          summary="Run records of every readable task as they are written (server-sent events)"),
    Route("POST", "/v1/tzdata:pin", "PinTzdata", body="*",
          summary="Pin (or unpin) the cluster's tzdata version"),
)  # fmt: skip
"""Every route of the API (a unit test keeps every Scheduler method reachable)."""


def match(path: str, verb: str) -> tuple[Route | None, str | None, list[str]]:
    """The route for a raw (still percent-encoded) path and an HTTP method.

    Returns:
        ``(route, id, allowed)``: the route and its decoded ``{id}`` (``None`` without one);
        ``(None, None, allowed)`` when the path matches routes of other methods only
        (``allowed``, for 405 and its ``Allow`` header), ``(None, None, [])`` when no route
        has the path.
    """
    allowed: list[str] = []
    for route in ROUTES:
        m = route.pattern.match(path)
        if m is None:
            continue
        if route.verb != verb:
            allowed.append(route.verb)
            continue
        raw = m.groupdict().get("id")
        return route, urllib.parse.unquote(raw) if raw is not None else None, []
    return None, None, sorted(set(allowed))


def message_type(fd: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert fd.message_type is not None, fd.full_name
    return fd.message_type


def is_map(fd: FieldDescriptor) -> bool:
    """Whether ``fd`` is a map field."""
    return fd.type == FieldDescriptor.TYPE_MESSAGE and message_type(fd).GetOptions().map_entry


def _first_line(error: Exception) -> str:
    text = str(error).split("\n", 1)[0].strip()
    return text.removesuffix(".") if text.endswith("..") else text


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    by_json = {f.json_name: f for f in descriptor.fields}
    return descriptor.fields_by_name.get(name) or by_json.get(name)


def _scalar(fd: FieldDescriptor, value: str, param: str) -> Any:
    if fd.type == FieldDescriptor.TYPE_BOOL:
        if value.lower() in ("true", "1", ""):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise InvalidArgument(param, f"expected true or false, got {value!r}")
    if fd.type == FieldDescriptor.TYPE_MESSAGE and not message_type(fd).full_name.startswith(
        "google.protobuf."
    ):
        raise InvalidArgument(param, "a message: give its fields (param.field=...)")
    return value  # json_format parses numbers, enums, timestamps and durations from strings


def query_dict(descriptor: Descriptor, query: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Query parameters as a protobuf-JSON dict for ``descriptor`` (see the module docstring).

    Raises:
        InvalidArgument: a parameter names no field (``pageSiz: no such field of
            peerd.v1.ListTasksRequest``), or a value the field cannot take.
    """
    out: dict[str, Any] = {}
    for param, value in query:
        node, desc = out, descriptor
        names = param.split(".")
        for i, name in enumerate(names):
            fd = _field(desc, name)
            if fd is None:
                raise InvalidArgument(param, f"no such field of {desc.full_name}")
            key = fd.json_name
            if i < len(names) - 1:
                if fd.type != FieldDescriptor.TYPE_MESSAGE or is_map(fd):
                    raise InvalidArgument(param, f"{name} has no fields")
                node, desc = node.setdefault(key, {}), message_type(fd)
                continue
            item = _scalar(fd, value, param)
            if fd.is_repeated:
                node.setdefault(key, []).append(item)
            else:
                node[key] = item
    return out


def parse_body(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object (empty body: ``{}``).

    Raises:
        InvalidArgument: ``body`` is not UTF-8 JSON, or not an object.
    """
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("body", f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("body", f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _set_path_field(doc: dict[str, Any], dotted: str, descriptor: Descriptor, value: str) -> None:
    node, desc = doc, descriptor
    names = dotted.split(".")
    for name in names[:-1]:
        fd = desc.fields_by_name[name]
        node, desc = node.setdefault(fd.json_name, {}), message_type(fd)
    fd = desc.fields_by_name[names[-1]]
    given = node.get(fd.json_name, node.get(fd.name))
    if given not in (None, "", value):
        raise InvalidArgument(dotted, f"{given!r} in the body differs from {value!r} in the path")
    node.pop(fd.name, None)
    node[fd.json_name] = value


def build_request(
    route: Route, path_id: str | None, query: Sequence[tuple[str, str]], body: bytes
) -> Message:
    """The request message of ``route``'s method: query parameters, then the body, then the
    path's ``{id}`` (which a body may repeat but not contradict).

    Raises:
        InvalidArgument: naming the parameter or field (see :func:`query_dict`,
            :func:`parse_body`), or what protobuf's JSON parser refused, e.g. ``body: Message
            type "peerd.v1.TaskSpec" has no field named "foo" at "TaskSpec"``.
    """
    cls = route.request_class()
    descriptor = cast(Descriptor, cls.DESCRIPTOR)
    doc = query_dict(descriptor, query)
    if route.body == "*":
        doc.update(parse_body(body))
    elif route.body:
        doc[descriptor.fields_by_name[route.body].json_name] = parse_body(body)
    if route.path_field and path_id is not None:
        _set_path_field(doc, route.path_field, descriptor, path_id)
    try:
        return json_format.ParseDict(doc, cls())
    except json_format.ParseError as exc:
        raise InvalidArgument("body" if body.strip() else "query", _first_line(exc)) from None


def to_json(message: Message) -> dict[str, Any]:
    """``message`` in protobuf's JSON mapping (lowerCamelCase; default values left out)."""
    return json_format.MessageToDict(message)


HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""google.rpc's HTTP mapping of status codes (``google/rpc/code.proto``); others are 500."""


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status of a gRPC status code (500 for UNKNOWN, INTERNAL, DATA_LOSS)."""
    return HTTP_STATUS.get(code, 500)


def status_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    """A ``google.rpc.Status`` in JSON: ``{"code": 3, "status": "INVALID_ARGUMENT",
    "message": ...}`` (``status`` is the code's name, as Google's JSON APIs send it)."""
    return {"code": code.value[0], "status": code.name, "message": message}


__all__ = [
    "HTTP_STATUS",
    "ROUTES",
    "Route",
    "build_request",
    "http_status",
    "is_map",
    "match",
    "message_type",
    "parse_body",
    "query_dict",
    "status_body",
    "to_json",
]
