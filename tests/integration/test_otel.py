"""OpenTelemetry export from a real node (real etcd, real ``peerd serve`` process) to a real
OTLP/HTTP receiver: an aiohttp server in this test that decodes every request as an OTLP
``ExportTraceServiceRequest`` and also records the headers of the runs' own requests.

Three tasks run once each: an HTTP task and a ``peerd.post`` task that call the receiver's
``/hook`` (so their ``traceparent`` header is seen there) and a shell task that prints its
``TRACEPARENT`` and exits 3. Each run's execute span must carry the very trace id and span id
the target was given, its record span must be the execute span's child, and a claim span must
link to it. The node's ``OTEL_*`` environment is honoured (batch delay, resource attributes).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from peerd.client import SchedulerClient
from peerd.core.records import rfc3339
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually

STATUS_ERROR = 2
"""``Status.STATUS_CODE_ERROR`` in OTLP."""


def _value(kv: KeyValue) -> Any:
    which = kv.value.WhichOneof("value")
    return getattr(kv.value, which) if which else None


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    status_code: int
    resource: dict[str, Any]


class Receiver:
    """OTLP/HTTP traces at ``/v1/traces``; requests to ``/hook`` are recorded (``traceparent``)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.hooks: list[tuple[str, str]] = []
        """``(task, traceparent header)`` of every request to ``/hook``."""
        self.content_types: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    async def _traces(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        body = ExportTraceServiceRequest.FromString(await request.read())
        for rs in body.resource_spans:
            resource = {kv.key: _value(kv) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        Span(
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            {kv.key: _value(kv) for kv in s.attributes},
                            [(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                            s.status.code,
                            resource,
                        )
                    )
        payload = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=payload, content_type="application/x-protobuf")

    async def _hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.hooks.append((request.query.get("task", ""), request.headers.get("traceparent", "")))
        return web.Response(text="ok")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def once(task_id: str) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id)
    spec.schedule.every.FromSeconds(1)
    spec.schedule.max_runs = 1
    spec.timeout.FromSeconds(10)
    return spec


def tasks(url: str) -> list[pb.TaskSpec]:
    http = once("otel-http")
    http.http.url = f"{url}/hook?task=otel-http"
    http.http.method = "POST"
    post = once("otel-post")
    post.python.name = "peerd.post"
    post.python.args_json = json.dumps({"url": f"{url}/hook?task=otel-post"})
    shell = once("otel-shell")
    shell.shell.argv.extend(["/bin/sh", "-c", 'printf %s "$TRACEPARENT"; exit 3'])
    return [http, post, shell]


def test_spans_join_the_trace_the_target_saw(nodes, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    env = {
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
    }
    (node,) = nodes(
        1, allow_shell=["/bin/sh -c *"], settings={"otel_endpoint": receiver.url}, env=env
    )
    specs = tasks(receiver.url)
    with SchedulerClient(node.address) as client:
        client.create_tasks(specs)

        def finished() -> dict[str, pb.RunRecord]:
            runs = {}
            for spec in specs:
                records = client.list_runs(spec.id, 10)
                assert len(records) == 1, (spec.id, records)
                rec = records[0]
                assert rec.status in (pb.SUCCEEDED, pb.FAILED), (spec.id, rec.status, rec.error)
                runs[spec.id] = rec
            return runs

        runs = assert_eventually(finished, timeout=20, interval=0.2)
    assert runs["otel-http"].status == runs["otel-post"].status == pb.SUCCEEDED
    assert runs["otel-shell"].status == pb.FAILED
    seen = dict(receiver.hooks)
    seen["otel-shell"] = runs["otel-shell"].output_tail
    assert set(seen) == {s.id for s in specs}
    ids = {task: tuple(value.split("-")[1:3]) for task, value in seen.items()}

    def exported() -> dict[str, list[Span]]:
        by_name: dict[str, list[Span]] = {}
        for span in list(receiver.spans):
            by_name.setdefault(span.name, []).append(span)
        for task, (trace, parent) in ids.items():
            execute = [s for s in by_name.get("peerd.execute", []) if s.trace_id == trace]
            assert [s.span_id for s in execute] == [parent], task
            records = [s for s in by_name.get("peerd.record", []) if s.trace_id == trace]
            assert [s.parent_span_id for s in records] == [parent], task
            links = [ln for s in by_name.get("peerd.claim", []) for ln in s.links]
            assert (trace, parent) in links, task
        return by_name

    by_name = assert_eventually(exported, timeout=10, interval=0.1)
    assert receiver.content_types == {"application/x-protobuf"}
    execute = {s.attributes["peerd.task.id"]: s for s in by_name["peerd.execute"]}
    for task, rec in runs.items():
        attrs = execute[task].attributes
        assert attrs["peerd.run.slot"] == rfc3339(rec.scheduled_at.ToDatetime())
        assert attrs["peerd.run.attempt"] == 1
        assert attrs["peerd.node.id"] == "n1"
        assert attrs["peerd.run.fencing_token"] == rec.fencing_token
        assert attrs["peerd.run.status"] == pb.RunStatus.Name(rec.status).lower()
    assert execute["otel-http"].attributes["peerd.executor"] == "http"
    assert execute["otel-http"].attributes["http.response.status_code"] == 200
    assert execute["otel-post"].attributes["peerd.executor"] == "python"
    shell = execute["otel-shell"]
    assert shell.attributes["peerd.executor"] == "shell"
    assert shell.attributes["process.exit.code"] == 3
    assert shell.status_code == STATUS_ERROR
    assert all(s.attributes["peerd.record.written"] for s in by_name["peerd.record"])
    assert sum(s.attributes["peerd.claim.claimed"] for s in by_name["peerd.claim"]) == 3
    resource = by_name["peerd.claim"][0].resource
    assert resource["service.name"] == "peerd"
    assert resource["service.instance.id"] == "n1"
    assert resource["deployment.environment.name"] == "test"
