"""What the OpenTelemetry spans of a node's runs say (pure: records in, span descriptions out).

:mod:`peerd.observe.otel` turns these descriptions into SDK spans; this module decides names,
ids, times, parents, links and attributes from the run records alone, so the mapping is tested
without the SDK and every node derives the same ids (:mod:`peerd.core.trace`).

==================  =========================================================================
span                ids, parent, time, attributes
==================  =========================================================================
``peerd.claim``     one per claim transaction (a batch of up to ``--claim-batch`` slots);
                    its own trace (random ids); from the transaction's start to etcd's answer;
                    ``peerd.claim.count`` (claims sent), ``peerd.claim.claimed`` (won),
                    ``peerd.claim.lost`` (lost races), ``peerd.claim.skipped`` (SKIPPED
                    records written); one link per won slot to that slot's first execute span
``peerd.execute``   one per attempt this node ran under this claim; trace id = the slot's,
                    span id = the attempt's ``traceparent`` parent-id, so the target's own
                    span is a child of it; started_at to finished_at of the attempt; task,
                    slot, attempt, node, status, executor, ``http.response.status_code`` /
                    ``process.exit.code``, fencing token, lateness; ERROR with the error text
                    unless the attempt succeeded
``peerd.record``    one per final record: child of the last execute span; from the run's end
                    to etcd's answer; ``peerd.record.written`` (false: fenced off, ERROR)
==================  =========================================================================

Why one claim span per transaction and not per slot: the slots of a transaction share one etcd
round trip, so per-slot spans would repeat the same interval up to 127 times and multiply the
span volume of the busiest path; links keep the way from the transaction to every run it won.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from peerd.core.records import idempotency_key, rfc3339
from peerd.core.trace import span_id, trace_id
from peerd.v1 import scheduler_pb2 as pb

CLAIM, EXECUTE, RECORD = "peerd.claim", "peerd.execute", "peerd.record"
"""Span names."""
CLIENT, INTERNAL = "client", "internal"
"""Span kinds used (OpenTelemetry ``SpanKind``): an HTTP run calls its target as a client."""

Attr = str | int | bool


@dataclass(frozen=True)
class SpanPlan:
    """One span to emit.

    Attributes:
        name: :data:`CLAIM`, :data:`EXECUTE` or :data:`RECORD`.
        start_ns, end_ns: epoch nanoseconds.
        trace_id, span_id: 128-bit and 64-bit ids; ``None``: random (the SDK's generator).
        parent_span_id: the parent in the same trace, or ``None`` (a root span).
        kind: :data:`CLIENT` or :data:`INTERNAL`.
        attributes: OpenTelemetry attributes.
        error: the span's status is ERROR with this description; ``None``: unset (OK).
        links: ``(trace_id, span_id)`` of spans this one links to.
    """

    name: str
    start_ns: int
    end_ns: int
    trace_id: int | None = None
    span_id: int | None = None
    parent_span_id: int | None = None
    kind: str = INTERNAL
    attributes: Mapping[str, Attr] = field(default_factory=dict)
    error: str | None = None
    links: tuple[tuple[int, int], ...] = ()


def _ids(rec: pb.RunRecord, attempt: int) -> tuple[int, int]:
    key = idempotency_key(rec.task_id, rec.scheduled_at.ToMilliseconds())
    return int(trace_id(key), 16), int(span_id(key, attempt), 16)


def _run_attributes(rec: pb.RunRecord) -> dict[str, Attr]:
    return {
        "peerd.task.id": rec.task_id,
        "peerd.run.slot": rfc3339(rec.scheduled_at.ToDatetime()),
        "peerd.run.fencing_token": rec.fencing_token,
    }


def execute_spans(rec: pb.RunRecord, executor: str, node_id: str) -> list[SpanPlan]:
    """The ``peerd.execute`` spans of a run that reached its final status on ``node_id``: its
    earlier attempts under the same claim on this node (``history``), then the final one.

    A run that never started (no executor here, lock wait abandoned) has no execute span.

    Args:
        rec: the run's final record (SUCCEEDED, FAILED or CANCELLED).
        executor: the target kind (``http``, ``shell``, ``python``).
        node_id: this node (attempts of other nodes are theirs to report).
    """
    base = {**_run_attributes(rec), "peerd.node.id": node_id, "peerd.executor": executor}
    if rec.HasField("lateness"):
        base["peerd.run.lateness_ms"] = rec.lateness.ToMilliseconds()
    if rec.manual:
        base["peerd.run.manual"] = True
    kind = CLIENT if executor == "http" else INTERNAL
    out = []
    attempts: list[pb.AttemptRecord | pb.RunRecord] = [
        a for a in rec.history if a.node_id == node_id and a.fencing_token == rec.fencing_token
    ]
    attempts.append(rec)
    for a in attempts:
        if not a.HasField("started_at"):
            continue
        trace, span = _ids(rec, a.attempt)
        attrs = {
            **base,
            "peerd.run.attempt": a.attempt,
            "peerd.run.status": pb.RunStatus.Name(a.status).lower(),
        }
        if a.http_status:
            attrs["http.response.status_code"] = a.http_status
        if a.HasField("exit_code"):
            attrs["process.exit.code"] = a.exit_code
        start = a.started_at.ToNanoseconds()
        end = a.finished_at.ToNanoseconds() if a.HasField("finished_at") else start
        error = None if a.status == pb.SUCCEEDED else (a.error or pb.RunStatus.Name(a.status))
        out.append(SpanPlan(EXECUTE, start, max(start, end), trace, span, None, kind, attrs, error))
    return out


def record_span(rec: pb.RunRecord, node_id: str, written: bool, end_ns: int) -> SpanPlan:
    """The ``peerd.record`` span of a final record: from the run's end (``finished_at``) to
    ``end_ns``, when etcd answered; a child of the last attempt's execute span (a root span
    in the slot's trace if the run never started).

    Args:
        written: etcd took the record; ``False``: it was fenced off (the claimant's lease was
            gone), and the span's status is ERROR.
    """
    trace, parent = _ids(rec, max(1, rec.attempt))
    started = rec.HasField("started_at")  # else there is no execute span to be a child of
    start = rec.finished_at.ToNanoseconds() if rec.HasField("finished_at") else end_ns
    attrs = {
        **_run_attributes(rec),
        "peerd.node.id": node_id,
        "peerd.run.status": pb.RunStatus.Name(rec.status).lower(),
        "peerd.record.written": written,
    }
    error = None if written else "fenced off: the claimant's lease is gone"
    parent_id = parent if started else None
    return SpanPlan(
        RECORD, min(start, end_ns), end_ns, trace, None, parent_id, attributes=attrs, error=error
    )


def claim_span(
    records: Sequence[pb.RunRecord],
    claimed: Sequence[bool],
    node_id: str,
    start_ns: int,
    end_ns: int,
) -> SpanPlan:
    """The ``peerd.claim`` span of one claim transaction etcd answered.

    Args:
        records: the records the transaction tried to write (CLAIMED, or SKIPPED for overlap
            follow-ups and missed slots), in order.
        claimed: for each record, whether it was written (won).
        start_ns, end_ns: when the transaction was sent and answered (epoch ns).
    """
    links = []
    skipped = won = 0
    for rec, ok in zip(records, claimed, strict=True):
        if not ok:
            continue
        won += 1
        if rec.status == pb.SKIPPED:
            skipped += 1
        else:
            links.append(_ids(rec, max(1, rec.attempt)))
    attrs: dict[str, Attr] = {
        "peerd.node.id": node_id,
        "peerd.claim.count": len(records),
        "peerd.claim.claimed": won - skipped,
        "peerd.claim.skipped": skipped,
        "peerd.claim.lost": len(records) - won,
    }
    return SpanPlan(CLAIM, start_ns, max(start_ns, end_ns), attributes=attrs, links=tuple(links))
