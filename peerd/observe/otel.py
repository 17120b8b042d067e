"""OpenTelemetry export of a node's spans (claim, execute, record), off unless ``--otel-endpoint``.

The only module that imports the OpenTelemetry SDK, and only :mod:`peerd.node` imports it, and
only when the setting is given: a node without it loads no SDK and registers no listener, so
its fire path pays nothing.

What the spans say is decided by :mod:`peerd.core.spans` from the run records. This module
listens where the engine already reports (``Claims.on_transaction``, ``RunRegistry.on_finish``
and ``RunRegistry.on_recorded``), turns the descriptions into SDK spans with explicit start and
end times, and hands them to a ``BatchSpanProcessor``: the event loop only builds a span and
appends it to the processor's queue; encoding and the HTTP request happen in the processor's
own thread (``OTEL_BSP_*`` size and pace it; a full queue drops spans, never blocks).

Span ids are deterministic where a target may hold them: an execute span carries the slot's
trace id and the attempt's parent-id from its ``traceparent`` (:mod:`peerd.core.trace`), so the
target's server span is its child. The SDK takes ids from its ``IdGenerator`` only, so
:class:`_PinnedIds` hands out the pinned ids for the one span being started, random ones
otherwise.

Exporter: OTLP over HTTP with protobuf bodies (``opentelemetry-exporter-otlp-proto-http``),
POSTed to ``<--otel-endpoint>/v1/traces``. Every ``OTEL_EXPORTER_OTLP_*`` variable (headers,
TLS, compression, timeout), ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``, ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` are read by the SDK itself.

Errors: the SDK's exporter logs every failed export batch on its own loggers. Those records are
routed to :class:`_ReportOnce`: the first problem is logged as ``otel_export_failed``, later ones
are counted, and the next successful export logs ``otel_export_recovered`` with that count: one
line per outage, not one per batch or span. (When the processor's queue is full it drops spans
and says so itself, at most every 20 s.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

import structlog
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from peerd import __version__
from peerd.clock import Clock
from peerd.coord.ledger import ClaimResult
from peerd.core import spans
from peerd.engine.claims import Claim
from peerd.engine.registry import Run

log = structlog.get_logger("peerd.otel")

TRACES_PATH = "/v1/traces"
"""The OTLP/HTTP path of traces (OTLP specification, "OTLP/HTTP Request")."""
CLOSE_TIMEOUT_S = 2.0
"""At node stop, queued spans get this long to leave; a collector that does not answer by then
costs the spans, not the shutdown."""
SDK_LOGGERS = ("opentelemetry.exporter",)
"""The SDK's loggers whose warnings :class:`_ReportOnce` takes over (the processor's own
"Queue full, dropping Span" is left to the SDK, which repeats it at most every 20 s)."""
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_KINDS = {spans.CLIENT: SpanKind.CLIENT, spans.INTERNAL: SpanKind.INTERNAL}


class _PinnedIds(IdGenerator):
    """Random ids, except the ones pinned for the next span (:meth:`pin`). Event loop only."""

    def __init__(self) -> None:
        self._rng = random.Random()
        self.trace_id: int | None = None
        self.span_id: int | None = None

    def pin(self, trace_id: int | None, span_id: int | None) -> None:
        self.trace_id, self.span_id = trace_id, span_id

    def generate_trace_id(self) -> int:
        if self.trace_id is not None:
            return self.trace_id
        return self._rng.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        if self.span_id is not None:
            return self.span_id
        return self._rng.getrandbits(64) or 1


class _ReportOnce(logging.Handler):
    """Logs the first export problem of an outage and counts the rest (module docstring).

    Takes the SDK exporter's log records emitted while this node's exporter is exporting (on
    the thread doing it), so several exports in one process (tests) do not report each other's.
    """

    def __init__(self, node_id: str, endpoint: str) -> None:
        super().__init__(logging.WARNING)
        self._log = log.bind(node_id=node_id, endpoint=endpoint)
        self._lock = threading.Lock()
        self.exporting: int | None = None
        """``threading.get_ident()`` of the thread in :meth:`_Reporting.export`."""
        self.failing = False
        self.suppressed = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.exporting:
            return
        self.problem(record.getMessage())

    def problem(self, error: str) -> None:
        """An export failed: logged if it opens an outage, counted otherwise."""
        with self._lock:
            if self.failing:
                self.suppressed += 1
                return
            self.failing = True
        self._log.warning("otel_export_failed", error=error)

    def succeeded(self) -> None:
        """An export succeeded: closes an outage (logged with the problems suppressed)."""
        with self._lock:
            if not self.failing:
                return
            suppressed, self.suppressed, self.failing = self.suppressed, 0, False
        self._log.info("otel_export_recovered", suppressed=suppressed)


class _Reporting(SpanExporter):
    """The OTLP exporter, telling :class:`_ReportOnce` how each batch went."""

    def __init__(self, inner: SpanExporter, report: _ReportOnce) -> None:
        self.inner = inner
        self.report = report

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.report.exporting = threading.get_ident()
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # the processor would log it per batch
            self.report.problem(repr(exc))
            return SpanExportResult.FAILURE
        finally:
            self.report.exporting = None
        if result == SpanExportResult.SUCCESS:
            self.report.succeeded()
        elif not self.report.failing:  # failed without a log record from the SDK
            self.report.problem("export failed")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def resource_attributes(node_id: str, env: Mapping[str, str]) -> dict[str, str]:
    """The node's resource attributes: ``service.instance.id`` (the node id),
    ``service.version``, and ``service.name`` = ``peerd`` unless ``OTEL_SERVICE_NAME`` or
    ``OTEL_RESOURCE_ATTRIBUTES`` names the service (the SDK merges those in itself)."""
    attrs = {"service.instance.id": node_id, "service.version": __version__}
    named = "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "").replace(" ", "")
    if not env.get("OTEL_SERVICE_NAME") and not named:
        attrs["service.name"] = "peerd"
    return attrs


class OtelExport:
    """Span export of one node (see the module docstring).

    Args:
        node_id: this node (``service.instance.id``, ``peerd.node.id``).
        endpoint: base URL of an OTLP/HTTP receiver (``--otel-endpoint``, e.g.
            ``http://collector:4318``); spans go to ``<endpoint>/v1/traces``.
        clock: wall time of claim and record spans.
        env: the process environment (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``;
            the SDK reads the other ``OTEL_*`` variables from ``os.environ`` itself).
        exporter: replaces the OTLP exporter (tests).
    """

    def __init__(
        self,
        node_id: str,
        endpoint: str,
        clock: Clock,
        env: Mapping[str, str],
        exporter: SpanExporter | None = None,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.report = _ReportOnce(node_id, endpoint)
        for name in SDK_LOGGERS:
            sdk_log = logging.getLogger(name)
            sdk_log.addHandler(self.report)
            sdk_log.propagate = False
        self._ids = _PinnedIds()
        self.provider = TracerProvider(
            resource=Resource.create(resource_attributes(node_id, env)),
            id_generator=self._ids,
            shutdown_on_exit=False,  # close() bounds the wait; an atexit flush would not
        )
        inner = exporter or OTLPSpanExporter(endpoint=endpoint.rstrip("/") + TRACES_PATH)
        self.provider.add_span_processor(BatchSpanProcessor(_Reporting(inner, self.report)))
        self._tracer = self.provider.get_tracer("peerd", __version__)
        self._emit_failed = False

    def _now_ns(self) -> int:
        return round(self.clock.now().timestamp() * 1e9)

    def emit(self, make: Callable[[], Iterable[spans.SpanPlan]]) -> None:
        """Start and end the spans ``make()`` describes. This runs inside the engine's
        listeners, so an error here is logged (once) and never reaches the run."""
        try:
            for plan in make():
                self._emit(plan)
        except Exception:
            if not self._emit_failed:
                self._emit_failed = True
                log.exception("otel_span_failed", node_id=self.node_id)

    def _emit(self, plan: spans.SpanPlan) -> None:
        context = None
        if plan.parent_span_id is not None and plan.trace_id is not None:
            parent = SpanContext(plan.trace_id, plan.parent_span_id, False, SAMPLED)
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        links = [Link(SpanContext(t, s, True, SAMPLED)) for t, s in plan.links]
        self._ids.pin(plan.trace_id, plan.span_id)
        try:
            span = self._tracer.start_span(
                plan.name,
                context=context,
                kind=_KINDS[plan.kind],
                attributes=dict(plan.attributes),
                links=links,
                start_time=plan.start_ns,
            )
        finally:
            self._ids.pin(None, None)
        if plan.error is not None:
            span.set_status(Status(StatusCode.ERROR, plan.error))
        span.end(end_time=plan.end_ns)

    def claim_transaction(
        self, duration_s: float, claims: Sequence[Claim], results: Sequence[ClaimResult]
    ) -> None:
        """``Claims.on_transaction``: one ``peerd.claim`` span."""
        end = self._now_ns()
        start = end - round(duration_s * 1e9)
        records = [c.record for c in claims]
        won = [r.claimed for r in results]
        self.emit(lambda: [spans.claim_span(records, won, self.node_id, start, end)])

    def run_finished(self, run: Run) -> None:
        """``RunRegistry.on_finish``: the run's ``peerd.execute`` spans."""
        self.emit(lambda: spans.execute_spans(run.record, run.kind, self.node_id))

    def run_recorded(self, run: Run, written: bool) -> None:
        """``RunRegistry.on_recorded``: the run's ``peerd.record`` span."""
        end = self._now_ns()
        self.emit(lambda: [spans.record_span(run.record, self.node_id, written, end)])

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Export what is queued and stop the processor's thread, waiting at most
        ``timeout_s`` (the shutdown goes on in a daemon thread; the event loop never waits on
        the collector)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def shutdown() -> None:
            try:
                self.provider.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(settle)

        threading.Thread(target=shutdown, name="peerd-otel-close", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout_s)
        except TimeoutError:
            log.warning("otel_close_timed_out", node_id=self.node_id, after_s=timeout_s)
        for name in SDK_LOGGERS:
            logging.getLogger(name).removeHandler(self.report)
