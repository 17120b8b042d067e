"""OpenTelemetry export: the span descriptions (peerd.core.spans), the SDK spans they become
(peerd.observe.otel, with the SDK's in-memory exporter and with the real OTLP/HTTP exporter
against a real HTTP server), the setting, and nothing of the SDK loaded while export is off."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from structlog.testing import capture_logs

from peerd.clock import SystemClock
from peerd.config import build_config
from peerd.core import spans
from peerd.core.records import idempotency_key
from peerd.core.trace import span_id, trace_id
from peerd.devtools.sink import WebhookSink
from peerd.engine.claims import Claim
from peerd.engine.registry import Run
from peerd.errors import InvalidArgument
from peerd.observe.otel import OtelExport, resource_attributes
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import REPO_ROOT

SLOT = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
KEY = idempotency_key("nightly", int(SLOT.timestamp() * 1000))
TRACE, SPAN1, SPAN2 = int(trace_id(KEY), 16), int(span_id(KEY, 1), 16), int(span_id(KEY, 2), 16)


def ts(seconds: float) -> datetime:
    return SLOT + timedelta(seconds=seconds)


def final_record() -> pb.RunRecord:
    """Attempt 1 on n1 failed (HTTP 500), attempt 2 on n1 succeeded (HTTP 200), same claim; an
    attempt of an earlier claimant (n0, token 7) is in the history too."""
    rec = pb.RunRecord(
        task_id="nightly", node_id="n1", attempt=2, fencing_token=9, status=pb.SUCCEEDED,
        http_status=200, idempotency_key=KEY,
    )  # fmt: skip
    rec.scheduled_at.FromDatetime(SLOT)
    rec.lateness.FromMilliseconds(12)
    rec.started_at.FromDatetime(ts(2.0))
    rec.finished_at.FromDatetime(ts(2.5))
    other = rec.history.add(attempt=1, node_id="n0", fencing_token=7, status=pb.FAILED)
    other.started_at.FromDatetime(ts(0.0))
    first = rec.history.add(
        attempt=1,
        node_id="n1",
        fencing_token=9,
        status=pb.FAILED,
        http_status=500,
        error="HTTP 500",
    )
    first.started_at.FromDatetime(ts(0.5))
    first.finished_at.FromDatetime(ts(0.75))
    return rec


def ns(seconds: float) -> int:
    return int(SLOT.timestamp()) * 10**9 + round(seconds * 10**9)


def test_execute_spans_are_the_attempts_of_this_claim_on_this_node() -> None:
    plans = spans.execute_spans(final_record(), "http", "n1")

    assert [(p.trace_id, p.span_id, p.parent_span_id) for p in plans] == [
        (TRACE, SPAN1, None),
        (TRACE, SPAN2, None),
    ]
    first, last = plans
    assert (first.start_ns, first.end_ns, last.start_ns, last.end_ns) == (
        ns(0.5), ns(0.75), ns(2.0), ns(2.5)
    )  # fmt: skip
    assert first.error == "HTTP 500" and last.error is None
    assert first.kind == last.kind == spans.CLIENT
    assert dict(last.attributes) == {
        "peerd.task.id": "nightly",
        "peerd.run.slot": "2026-11-30T12:00:00.000Z",
        "peerd.run.fencing_token": 9,
        "peerd.node.id": "n1",
        "peerd.executor": "http",
        "peerd.run.lateness_ms": 12,
        "peerd.run.attempt": 2,
        "peerd.run.status": "succeeded",
        "http.response.status_code": 200,
    }
    assert first.attributes["peerd.run.status"] == "failed"
    assert first.attributes["http.response.status_code"] == 500


def test_shell_exit_code_and_runs_that_never_started() -> None:
    rec = pb.RunRecord(task_id="nightly", attempt=1, status=pb.FAILED, exit_code=3, error="exit 3")
    rec.scheduled_at.FromDatetime(SLOT)
    assert spans.execute_spans(rec, "shell", "n1") == []  # never started: no execute span
    rec.started_at.FromDatetime(ts(1))
    rec.finished_at.FromDatetime(ts(2))
    (plan,) = spans.execute_spans(rec, "shell", "n1")
    assert plan.attributes["process.exit.code"] == 3
    assert "http.response.status_code" not in plan.attributes
    assert (plan.kind, plan.error) == (spans.INTERNAL, "exit 3")


def test_record_span_is_a_child_of_the_last_attempt() -> None:
    plan = spans.record_span(final_record(), "n1", True, ns(2.6))
    assert (plan.trace_id, plan.span_id, plan.parent_span_id) == (TRACE, None, SPAN2)
    assert (plan.start_ns, plan.end_ns, plan.error) == (ns(2.5), ns(2.6), None)
    assert plan.attributes["peerd.record.written"] is True
    fenced = spans.record_span(final_record(), "n1", False, ns(2.6))
    assert fenced.error and fenced.attributes["peerd.record.written"] is False


def test_claim_span_counts_and_links_the_slots_it_won() -> None:
    won = pb.RunRecord(task_id="nightly", attempt=1, status=pb.CLAIMED)
    won.scheduled_at.FromDatetime(SLOT)
    lost = pb.RunRecord(task_id="other", attempt=1, status=pb.CLAIMED)
    skipped = pb.RunRecord(task_id="third", attempt=1, status=pb.SKIPPED)
    plan = spans.claim_span([won, lost, skipped], [True, False, True], "n1", 10, 5)
    assert plan.links == ((TRACE, SPAN1),)
    assert (plan.trace_id, plan.span_id, plan.start_ns, plan.end_ns) == (None, None, 10, 10)
    assert dict(plan.attributes) == {
        "peerd.node.id": "n1",
        "peerd.claim.count": 3,
        "peerd.claim.claimed": 1,
        "peerd.claim.skipped": 1,
        "peerd.claim.lost": 1,
    }


def _run(rec: pb.RunRecord) -> Run:
    return Run(pb.TaskSpec(id=rec.task_id), rec, kind="http")


def test_sdk_spans_carry_the_deterministic_ids() -> None:
    memory = InMemorySpanExporter()
    export = OtelExport("n1", "http://unused:4318", SystemClock(), {}, exporter=memory)
    run = _run(final_record())
    claim = pb.RunRecord(task_id="nightly", attempt=1, status=pb.CLAIMED)
    claim.scheduled_at.FromDatetime(SLOT)
    export.claim_transaction(0.003, [Claim(run.spec, claim, None)], [_Won()])
    export.run_finished(run)
    export.run_recorded(run, True)
    export.provider.force_flush()

    got = {(s.name, s.context.span_id): s for s in memory.get_finished_spans()}
    assert len(got) == 4
    first, last = got[(spans.EXECUTE, SPAN1)], got[(spans.EXECUTE, SPAN2)]
    assert first.context.trace_id == last.context.trace_id == TRACE
    assert first.parent is None and last.kind == SpanKind.CLIENT
    assert first.status.status_code == StatusCode.ERROR and first.status.description == "HTTP 500"
    assert (last.start_time, last.end_time) == (ns(2.0), ns(2.5))
    (record,) = [s for (name, _), s in got.items() if name == spans.RECORD]
    assert record.context.trace_id == TRACE and record.parent is not None
    assert record.parent.span_id == SPAN2
    assert record.context.span_id not in (SPAN1, SPAN2)
    (claim_span,) = [s for (name, _), s in got.items() if name == spans.CLAIM]
    assert claim_span.context.trace_id != TRACE
    assert [(ln.context.trace_id, ln.context.span_id) for ln in claim_span.links] == [
        (TRACE, SPAN1)
    ]
    assert claim_span.end_time - claim_span.start_time == 3_000_000
    assert record.resource.attributes["service.name"] == "peerd"
    assert record.resource.attributes["service.instance.id"] == "n1"


class _Won:
    claimed = True


def test_service_name_is_peerd_unless_the_environment_names_one() -> None:
    assert resource_attributes("n1", {})["service.name"] == "peerd"
    assert "service.name" not in resource_attributes("n1", {"OTEL_SERVICE_NAME": "sched"})
    named = {"OTEL_RESOURCE_ATTRIBUTES": "team=a, service.name=sched"}
    assert "service.name" not in resource_attributes("n1", named)
    assert resource_attributes("n1", {})["service.instance.id"] == "n1"


def test_export_errors_are_logged_once_per_outage() -> None:
    with WebhookSink(status=400) as sink:
        export = OtelExport("n1", sink.url, SystemClock(), {})
        run = _run(final_record())
        with capture_logs() as logs:
            for _ in range(5):
                export.run_recorded(run, True)
                export.provider.force_flush()
            sink.status = 200
            export.run_recorded(run, True)
            export.provider.force_flush()
        events = [e for e in logs if e["event"].startswith("otel_")]
        assert [e["event"] for e in events] == ["otel_export_failed", "otel_export_recovered"]
        assert "400" in events[0]["error"]
        assert events[1]["suppressed"] == 4
        asyncio.run(export.close())
        bodies = [d for d in sink.deliveries() if d.path == "/v1/traces"]
        assert len(bodies) == 6
        assert bodies[0].headers["content-type"] == "application/x-protobuf"


def test_spans_go_to_the_traces_path_under_the_base_url() -> None:
    with WebhookSink() as sink:
        export = OtelExport("n1", sink.url + "/otlp", SystemClock(), {})
        export.run_finished(_run(final_record()))
        export.provider.force_flush()
        (delivery,) = sink.deliveries()
    assert (delivery.method, delivery.path) == ("POST", "/otlp/v1/traces")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("collector:4318", "must be an http:// or https:// URL"),
        ("ftp://collector", "must be an http:// or https:// URL"),
        ("http://collector:4318/v1/traces", "give the base URL"),
        ("http://collector:4318/?x=1", "no query"),
    ],
)
def test_bad_endpoints_name_the_flag(value: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as err:
        build_config({"node_id": "n1", "otel_endpoint": value}, {})
    assert err.value.field == "--otel-endpoint"


def test_endpoint_from_flag_or_environment() -> None:
    cfg = build_config({"node_id": "n1"}, {"PEERD_OTEL_ENDPOINT": "https://c.example:4318/"})
    assert cfg.otel_endpoint == "https://c.example:4318"
    assert build_config({"node_id": "n1"}, {}).otel_endpoint == ""


def test_export_off_loads_no_sdk() -> None:
    code = (
        "import sys, peerd.cli, peerd.node, peerd.config as c\n"
        "cfg = c.build_config({'node_id': 'n1'}, {})\n"
        "peerd.node.Node(cfg)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_an_error_in_a_listener_is_logged_once_and_never_reaches_the_run() -> None:
    export = OtelExport("n1", "http://x", SystemClock(), {}, exporter=InMemorySpanExporter())
    rec = final_record()
    rec.status = 99  # type: ignore[assignment]  # no such RunStatus: RunStatus.Name raises
    with capture_logs() as logs:
        export.run_finished(_run(rec))
        export.run_finished(_run(rec))
    assert [e["event"] for e in logs] == ["otel_span_failed"]
