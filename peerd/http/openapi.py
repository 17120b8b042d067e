"""The OpenAPI 3.1 document of the HTTP/JSON API (``GET /v1/openapi.json``), generated from the
route table (:data:`peerd.http.rest_routes.ROUTES`) and the protobuf descriptors, so it cannot
drift from what the gateway serves.

Schemas follow protobuf's JSON mapping (https://protobuf.dev/programming-guides/json/): field
names in lowerCamelCase, 64-bit integers as strings, enums as their names, ``Timestamp`` as an
RFC 3339 string, ``Duration`` as ``"1.5s"``, maps as objects. Each message is one component
named by its full name (``peerd.v1.TaskSpec``); errors are ``google.rpc.Status``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from peerd import __version__
from peerd.http.rest_routes import ROUTES, Route, is_map, message_type

STATUS_SCHEMA = "google.rpc.Status"
_INT32 = {"type": "integer", "format": "int32"}
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_UINT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_FIXED64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_UINT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_FIXED32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.Empty": {"type": "object"},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    """Component schemas of every message reached from the routes."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {
            STATUS_SCHEMA: {
                "type": "object",
                "properties": {
                    "code": {"type": "integer", "description": "google.rpc.Code number"},
                    "status": {"type": "string", "description": "the code's name"},
                    "message": {"type": "string"},
                },
                "required": ["code", "message"],
            }
        }

    def message(self, desc: Descriptor) -> dict[str, Any]:
        """A schema (or ``$ref``) for ``desc``, adding its component on first sight."""
        if desc.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[desc.full_name])
        if desc.full_name not in self.schemas:
            self.schemas[desc.full_name] = {}  # placeholder: recursive messages end here
            properties = {f.json_name: self._field(f) for f in desc.fields}
            self.schemas[desc.full_name] = {"type": "object", "properties": properties}
        return _ref(desc.full_name)

    def _value(self, fd: FieldDescriptor) -> dict[str, Any]:
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message(message_type(fd))
        if fd.type == FieldDescriptor.TYPE_ENUM:
            assert fd.enum_type is not None
            return {"type": "string", "enum": [v.name for v in fd.enum_type.values]}
        return dict(_SCALARS[fd.type])

    def _field(self, fd: FieldDescriptor) -> dict[str, Any]:
        if is_map(fd):
            value = self._value(message_type(fd).fields_by_name["value"])
            return {"type": "object", "additionalProperties": value}
        if fd.is_repeated:
            return {"type": "array", "items": self._value(fd)}
        return self._value(fd)


def _query_parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    """The request's top-level fields not bound by the path or the body (nested fields are
    dotted parameters too, ``schedule.cron``; the document lists the top level)."""
    if route.body == "*":
        return []
    desc = route.method.input_type
    bound = {route.path_field.split(".")[0], route.body}
    params = []
    for fd in desc.fields:
        if fd.name in bound:
            continue
        schema = schemas._field(fd)
        if "$ref" in schema:
            continue
        params.append({"name": fd.json_name, "in": "query", "required": False, "schema": schema})
    return params


def _operation(route: Route, operation_id: str, schemas: _Schemas) -> dict[str, Any]:
    params = []
    if "{id}" in route.path:
        params.append({"name": "id", "in": "path", "required": True, "schema": {"type": "string"}})
    params += _query_parameters(route, schemas)
    out_schema = schemas.message(route.method.output_type)
    if route.stream:
        content = {"text/event-stream": {"schema": {"type": "string"}, "x-event-data": out_schema}}
        ok = "server-sent events: `event: run`, `data:` one record as JSON per event"
    else:
        content = {"application/json": {"schema": out_schema}}
        ok = "OK"
    error = {"application/json": {"schema": _ref(STATUS_SCHEMA)}}
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": route.summary,
        "description": f"gRPC `peerd.v1.Scheduler/{route.rpc}`.",
        "parameters": params,
        "responses": {"200": {"description": ok, "content": content},
                      "default": {"description": "an error (google.rpc.Status)",
                                  "content": error}},
    }  # fmt: skip
    if route.body:
        input_desc = route.method.input_type
        if route.body != "*":
            input_desc = message_type(input_desc.fields_by_name[route.body])
        op["requestBody"] = {
            "required": route.body != "*",
            "content": {"application/json": {"schema": schemas.message(input_desc)}},
        }
    return op


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document: one operation per route (``operationId`` the method's name,
    suffixed with the path's first word after ``/v1/`` when two routes share a method)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for route in ROUTES:
        operation_id = route.rpc
        if operation_id in seen:
            operation_id = f"{route.rpc}_{route.path.split('/')[2].split(':')[0]}"
        seen.add(operation_id)
        ops = paths.setdefault(route.path, {})
        ops[route.verb.lower()] = _operation(route, operation_id, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "peerd HTTP/JSON API",
            "version": __version__,
            "description": "The peerd.v1.Scheduler gRPC API as REST resources (docs/http-api.md).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }


__all__ = ["STATUS_SCHEMA", "document"]
