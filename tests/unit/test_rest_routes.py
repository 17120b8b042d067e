"""The HTTP/JSON API's route table and its pure request mapping (peerd/http/rest_routes.py)."""

from __future__ import annotations

import grpc
import pytest

from peerd.errors import InvalidArgument
from peerd.http.rest_routes import ROUTES, SERVICE, build_request, http_status, match
from peerd.v1 import scheduler_pb2 as pb


def test_every_scheduler_method_has_a_route() -> None:
    assert {r.rpc for r in ROUTES} == set(SERVICE.methods_by_name)
    assert len({(r.verb, r.path) for r in ROUTES}) == len(ROUTES)


@pytest.mark.parametrize(
    ("path", "verb", "rpc", "task_id"),
    [
        ("/v1/tasks", "GET", "ListTasks", None),
        ("/v1/tasks:batchCreate", "POST", "CreateTasks", None),
        ("/v1/tasks/a%2Db", "GET", "GetTask", "a-b"),
        ("/v1/tasks/a.b:trigger", "POST", "TriggerTask", "a.b"),
        ("/v1/tasks/x/runs:watch", "GET", "WatchRuns", "x"),
        ("/v1/runs:watch", "GET", "WatchRuns", None),
    ],
)
def test_match(path: str, verb: str, rpc: str, task_id: str | None) -> None:
    route, found_id, allowed = match(path, verb)
    assert route is not None and (route.rpc, found_id, allowed) == (rpc, task_id, [])


def test_match_other_methods_and_no_route() -> None:
    assert match("/v1/tasks/x", "POST") == (None, None, ["DELETE", "GET", "PATCH"])
    assert match("/v1/tasks/x:pause", "GET") == (None, None, ["POST"])
    assert match("/v1/tasks/x/y", "GET") == (None, None, [])


def _route(path: str, verb: str):  # type: ignore[no-untyped-def]
    route, task_id, _ = match(path, verb)
    assert route is not None
    return route, task_id


def test_query_maps_onto_fields_by_either_name() -> None:
    route, _ = _route("/v1/tasks", "GET")
    query = [("pageSize", "5"), ("page_token", "t"), ("labelSelector", "a=b")]
    assert build_request(route, None, query, b"") == pb.ListTasksRequest(
        page_size=5, page_token="t", label_selector="a=b"
    )
    route, task_id = _route("/v1/tasks/x/preview", "GET")
    request = build_request(route, task_id, [("count", "3"), ("from", "2030-01-01T00:00:00Z")], b"")
    assert (request.task_id, request.count, request.WhichOneof("source")) == ("x", 3, "task_id")
    assert request.HasField("from")
    route, _ = _route("/v1/tasks", "GET")
    with pytest.raises(InvalidArgument, match=r"^pageSise: no such field"):
        build_request(route, None, [("pageSise", "5")], b"")


def test_body_and_path() -> None:
    route, task_id = _route("/v1/tasks/x", "PATCH")
    body = b'{"task": {"schedule": {"every": "5s"}}, "expected_revision": "7"}'
    request = build_request(route, task_id, [], body)
    assert (request.task.id, request.expected_revision) == ("x", 7)
    assert request.task.schedule.every.seconds == 5
    with pytest.raises(InvalidArgument, match=r"^task\.id: 'y' in the body differs"):
        build_request(route, task_id, [], b'{"task": {"id": "y"}}')
    route, _ = _route("/v1/tasks", "POST")
    with pytest.raises(InvalidArgument, match=r'^body: .*no field named "colour"'):
        build_request(route, None, [], b'{"id": "a", "colour": 1}')
    with pytest.raises(InvalidArgument, match=r"^body: expected a JSON object"):
        build_request(route, None, [], b"[1]")


def test_http_status_per_google_rpc() -> None:
    assert http_status(grpc.StatusCode.INVALID_ARGUMENT) == 400
    assert http_status(grpc.StatusCode.ABORTED) == 409
    assert http_status(grpc.StatusCode.RESOURCE_EXHAUSTED) == 429
    assert http_status(grpc.StatusCode.CANCELLED) == 499
    assert http_status(grpc.StatusCode.INTERNAL) == 500
    assert http_status(grpc.StatusCode.DATA_LOSS) == 500
