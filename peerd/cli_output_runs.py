"""Rendering of run records, schedule previews and audits for the CLI (pure).

``peerd runs`` (a table, or fixed-width lines while following), ``peerd task trigger`` (one
run's every field), ``peerd preview`` and ``peerd audit``; the primitives are
:mod:`peerd.cli_output`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from peerd.cli_output import (
    NONE,
    fmt_duration,
    fmt_td,
    fmt_ts,
    format_kv,
    format_row,
    format_table,
    truncate,
)
from peerd.v1 import scheduler_pb2 as pb

SKIP_REASON_NAMES = {
    pb.SKIP_MISFIRE: "misfire",
    pb.SKIP_CATCH_UP_WINDOW: "catch-up window",
    pb.SKIP_OVERLAP: "overlap",
    pb.SKIP_PAUSED: "paused",
    pb.SKIP_UNSCHEDULABLE: "unschedulable",
}
"""How a run record's ``skip_reason`` is shown after its status."""


def _result(r: pb.RunRecord) -> str:
    if r.HasField("exit_code"):
        return f"exit {r.exit_code}"
    if r.http_status:
        return f"http {r.http_status}"
    return NONE


def _took(r: pb.RunRecord) -> str:
    if not (r.HasField("started_at") and r.HasField("finished_at")):
        return NONE
    return fmt_td(r.finished_at.ToDatetime() - r.started_at.ToDatetime())


def _status(r: pb.RunRecord) -> str:
    name = pb.RunStatus.Name(r.status)
    if r.skip_reason:
        name += f" ({SKIP_REASON_NAMES.get(r.skip_reason, str(r.skip_reason))})"
    return name


def _note(r: pb.RunRecord) -> str:
    parts = []
    if r.HasField("next_attempt_at"):
        parts.append(f"next attempt {fmt_ts(r.next_attempt_at)}")
    if r.error:
        parts.append(r.error)
    return "; ".join(parts)


RUN_HEADERS = ("SCHEDULED", "STATUS", "NODE", "ATTEMPT", "LATENESS", "TOOK", "RESULT", "ERROR")
"""Columns of :func:`runs_table` and :func:`run_line`."""
RUN_WIDTHS = (24, 18, 8, 7, 8, 6, 8, 0)
"""Fixed column widths of :func:`run_line` (a followed stream cannot measure its rows)."""


def run_row(r: pb.RunRecord) -> list[str]:
    """The cells of one run (see :data:`RUN_HEADERS`): the slot (``(manual)``, ``(on-failure)``
    marked), status with the skip reason, node, attempt, lateness, duration, result, error
    (with the next attempt's time while a retry waits)."""
    slot = fmt_ts(r.scheduled_at)
    if r.manual:
        slot += " (manual)"
    if r.HasField("cause"):
        slot += " (on-failure)"
    return [
        slot,
        _status(r),
        r.node_id or NONE,
        str(r.attempt),
        fmt_duration(r.lateness, r.HasField("lateness")),
        _took(r),
        _result(r),
        truncate(_note(r), 50) or NONE,
    ]


def runs_table(runs: Sequence[pb.RunRecord]) -> str:
    """One row per run (:func:`run_row`), columns aligned."""
    return format_table(RUN_HEADERS, [run_row(r) for r in runs])


def run_line(r: pb.RunRecord, task: bool = False) -> str:
    """One run as a fixed-width line for a followed stream (``peerd runs ID --follow``); with
    ``task`` the task id comes first."""
    line = format_row(run_row(r), RUN_WIDTHS)
    return f"{r.task_id}  {line}" if task else line


def run_header(task: bool = False) -> str:
    """The header line matching :func:`run_line`."""
    line = format_row(RUN_HEADERS, RUN_WIDTHS)
    return f"TASK  {line}" if task else line


def run_detail(r: pb.RunRecord) -> str:
    """Every field of one run record as ``key: value`` lines (output tail last)."""
    pairs = [
        ("task_id", r.task_id),
        ("scheduled_at", fmt_ts(r.scheduled_at)),
        ("status", _status(r)),
        ("node_id", r.node_id or NONE),
        ("attempt", str(r.attempt)),
        ("manual", "yes" if r.manual else "no"),
        ("fencing_token", str(r.fencing_token)),
        ("idempotency_key", r.idempotency_key or NONE),
    ]
    if r.HasField("fire_at"):
        pairs.append(("fire_at", fmt_ts(r.fire_at)))
    if r.tzdata_version:
        pairs.append(("local_time", f"{r.local_time or NONE} (tzdata {r.tzdata_version})"))
    pairs += [
        ("claimed_at", fmt_ts(r.claimed_at)),
        ("started_at", fmt_ts(r.started_at)),
        ("finished_at", fmt_ts(r.finished_at)),
        ("lateness", fmt_duration(r.lateness, r.HasField("lateness"))),
        ("result", _result(r)),
    ]
    if r.priority:
        pairs.append(("priority", str(r.priority)))
    if r.HasField("next_attempt_at"):
        pairs.append(("next_attempt_at", fmt_ts(r.next_attempt_at)))
    for a in r.history:
        took = (
            fmt_td(a.finished_at.ToDatetime() - a.started_at.ToDatetime())
            if a.HasField("started_at") and a.HasField("finished_at")
            else NONE
        )
        pairs.append(
            (
                f"attempt {a.attempt}",
                f"{pb.RunStatus.Name(a.status)} on {a.node_id or NONE} at "
                f"{fmt_ts(a.started_at)} took {took} token {a.fencing_token}"
                + (f": {a.error}" if a.error else ""),
            )
        )
    if r.HasField("cause"):
        c = r.cause
        pairs.append(
            (
                "cause",
                f"{c.task_id} {fmt_ts(c.scheduled_at)} {pb.RunStatus.Name(c.status)}"
                + (f": {c.error}" if c.error else ""),
            )
        )
    if r.error:
        pairs.append(("error", r.error))
    if r.output_tail:
        pairs.append(("output", r.output_tail))
    return format_kv(pairs)


def preview_table(resp: pb.PreviewScheduleResponse) -> str:
    """SCHEDULED (UTC), LOCAL (the schedule's zone), FIRE AT (only when some slot is jittered),
    NOTE (DST policy applied)."""
    jittered = any(s.HasField("fire_at") and s.fire_at != s.scheduled_at for s in resp.slots)
    headers = ["SCHEDULED (UTC)", "LOCAL", *(["FIRE AT"] if jittered else []), "NOTE"]
    rows = []
    for s in resp.slots:
        fire = [fmt_ts(s.fire_at)] if jittered else []
        rows.append([fmt_ts(s.scheduled_at), s.local_time or NONE, *fire, s.note or NONE])
    rules = f"time-zone rules: tzdata {resp.tzdata_version or NONE} ({resp.tzdata_source or NONE})"
    if not rows:
        return f"no slots (time zone {resp.time_zone or 'UTC'}): the schedule has ended\n{rules}"
    return f"{format_table(headers, rows)}\n{rules}"


def _le(le_ms: int) -> str:
    return "+inf" if le_ms < 0 else fmt_td(timedelta(milliseconds=le_ms))


def audit_text(a: pb.AuditTaskResponse, max_gaps: int = 20) -> str:
    """Summary of an audit: window, expected slots, gaps (the first ``max_gaps`` listed),
    multi-claims (all listed), counts by status and the lateness histogram."""
    window = f"({fmt_ts(a.since)}, {fmt_ts(a.until)}]"
    if a.truncated:
        window += " (cut to the oldest record kept; older ones were trimmed)"
    started = sum(b.count for b in a.lateness)
    pairs = [
        ("task", a.task_id),
        ("window", window),
        ("expected slots", str(a.expected_slots)),
        ("gaps", str(a.gap_count)),
        ("multi-claims", str(len(a.multi_claims))),
        (
            "by status",
            ", ".join(f"{k} {v}" for k, v in sorted(a.by_status.items())) or NONE,
        ),
        (
            "lateness",
            (
                f"p50 {fmt_duration(a.lateness_p50)}, p99 {fmt_duration(a.lateness_p99)}, "
                f"max {fmt_duration(a.lateness_max)} ({started} started runs)"
            )
            if started
            else "no started runs",
        ),
    ]
    parts = [format_kv(pairs)]
    if a.gaps:
        shown = [fmt_ts(g) for g in a.gaps[:max_gaps]]
        more = a.gap_count - len(shown)
        parts.append("gaps:\n" + "\n".join(f"  {g}" for g in shown))
        if more > 0:
            parts[-1] += f"\n  ... and {more} more"
    if a.multi_claims:
        rows = [
            [fmt_ts(m.scheduled_at), ",".join(map(str, m.fencing_tokens)) or NONE, m.detail]
            for m in a.multi_claims
        ]
        parts.append(format_table(["MULTI-CLAIMED SLOT", "TOKENS", "DETAIL"], rows))
    if started:
        rows = [[_le(b.le_ms), str(b.count)] for b in a.lateness]
        parts.append(format_table(["LATENESS <=", "RUNS"], rows))
    return "\n\n".join(parts)


__all__ = [
    "RUN_HEADERS",
    "audit_text",
    "preview_table",
    "run_detail",
    "run_header",
    "run_line",
    "run_row",
    "runs_table",
]
