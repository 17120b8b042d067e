"""Rendering of API messages for the CLI: aligned tables for people, JSON for programs (pure).

Timestamps are shown as RFC 3339 UTC with milliseconds, durations compactly ("12ms", "1.5s",
"1m30s"), unset values as "-".
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import UTC, timedelta

from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message

from peerd.core.durations import format_duration
from peerd.runner.base import rfc3339
from peerd.v1 import scheduler_pb2 as pb

NONE = "-"
"""Shown for unset values."""


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; no trailing spaces, no final newline."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_kv(pairs: Sequence[tuple[str, str]]) -> str:
    """``key: value`` lines with the values aligned; multi-line values are indented."""
    width = max((len(k) for k, _ in pairs), default=0) + 1
    lines = []
    for key, value in pairs:
        first, *rest = value.splitlines() or [""]
        lines.append(f"{(key + ':').ljust(width)}  {first}".rstrip())
        lines.extend(" " * (width + 2) + line for line in rest)
    return "\n".join(lines)


def to_json(msg: Message) -> str:
    """A message as JSON with proto field names (``task_id``, not ``taskId``)."""
    return json_format.MessageToJson(msg, preserving_proto_field_name=True)


def fmt_ts(ts: timestamp_pb2.Timestamp, present: bool = True) -> str:
    """RFC 3339 UTC with ms, or "-" when unset (zero) or ``present`` is false."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return NONE
    return rfc3339(ts.ToDatetime(tzinfo=UTC))


def fmt_td(d: timedelta) -> str:
    """Compact duration: "12ms" under a second, "1.5s" under a minute, else "1m30s"."""
    ms = round(d.total_seconds() * 1000)
    if abs(ms) < 1000:
        return f"{ms}ms"
    if abs(ms) < 60_000:
        return f"{ms / 1000:.1f}".rstrip("0").rstrip(".") + "s"
    return format_duration(d)


def fmt_duration(d: duration_pb2.Duration, present: bool = True) -> str:
    """A protobuf Duration via :func:`fmt_td`, or "-" when not present."""
    return fmt_td(d.ToTimedelta()) if present else NONE


def truncate(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def describe_schedule(s: pb.Schedule) -> str:
    """E.g. ``cron "*/5 * * * *" Europe/Paris``, ``every 10s``, ``at 2026-01-01T00:00:00.000Z``."""
    kind = s.WhichOneof("kind")
    if kind == "cron":
        text = f"cron {s.cron!r}"
    elif kind == "every":
        text = f"every {fmt_duration(s.every)}"
    elif kind == "at":
        text = f"at {fmt_ts(s.at)}"
    else:
        text = NONE
    if s.time_zone and s.time_zone != "UTC" and kind == "cron":
        text += f" {s.time_zone}"
    return text


def describe_target(t: pb.TaskSpec) -> str:
    """``POST https://...`` for HTTP tasks, the shell-quoted argv for shell tasks."""
    kind = t.WhichOneof("target")
    if kind == "http":
        return f"{t.http.method or 'POST'} {t.http.url}"
    if kind == "shell":
        prefix = f"[{t.shell.run_as}] " if t.shell.run_as else ""
        return prefix + shlex.join(t.shell.argv)
    return NONE


def tasks_table(tasks: Sequence[pb.TaskSpec]) -> str:
    """One row per task: id, schedule, state, target."""
    rows = [
        [
            t.id,
            describe_schedule(t.schedule),
            "paused" if t.paused else "active",
            truncate(describe_target(t), 60),
        ]
        for t in tasks
    ]
    return format_table(["ID", "SCHEDULE", "STATE", "TARGET"], rows)


def task_detail(t: pb.TaskSpec) -> str:
    """Every field of one task as ``key: value`` lines."""
    s = t.schedule
    pairs = [
        ("id", t.id),
        ("schedule", describe_schedule(s)),
        ("time_zone", s.time_zone or "UTC"),
    ]
    if s.HasField("start_at"):
        pairs.append(("start_at", fmt_ts(s.start_at)))
    if s.HasField("end_at"):
        pairs.append(("end_at", fmt_ts(s.end_at)))
    if s.max_runs:
        pairs.append(("max_runs", str(s.max_runs)))
    pairs.append(("state", "paused" if t.paused else "active"))
    kind = t.WhichOneof("target")
    if kind == "http":
        pairs.append(("http", f"{t.http.method or 'POST'} {t.http.url}"))
        pairs += [(f"header {k}", v) for k, v in sorted(t.http.headers.items())]
        if t.http.HasField("body"):
            pairs.append(("body", t.http.body))
    elif kind == "shell":
        pairs.append(("shell", shlex.join(t.shell.argv)))
        pairs += [(f"env {k}", v) for k, v in sorted(t.shell.env.items())]
        if t.shell.working_dir:
            pairs.append(("working_dir", t.shell.working_dir))
        if t.shell.run_as:
            pairs.append(("run_as", t.shell.run_as))
    timeout = fmt_duration(t.timeout) if t.HasField("timeout") else "60s (default)"
    pairs.append(("timeout", timeout))
    if t.description:
        pairs.append(("description", t.description))
    if t.source:
        pairs.append(("source", t.source))
    pairs += [("created_at", fmt_ts(t.created_at)), ("updated_at", fmt_ts(t.updated_at))]
    return format_kv(pairs)


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


def runs_table(runs: Sequence[pb.RunRecord]) -> str:
    """One row per run: slot, status, node, attempt, lateness, duration, result, error."""
    rows = [
        [
            fmt_ts(r.scheduled_at) + (" (manual)" if r.manual else ""),
            pb.RunStatus.Name(r.status),
            r.node_id or NONE,
            str(r.attempt),
            fmt_duration(r.lateness, r.HasField("lateness")),
            _took(r),
            _result(r),
            truncate(r.error, 50) or NONE,
        ]
        for r in runs
    ]
    headers = ["SCHEDULED", "STATUS", "NODE", "ATTEMPT", "LATENESS", "TOOK", "RESULT", "ERROR"]
    return format_table(headers, rows)


def run_detail(r: pb.RunRecord) -> str:
    """Every field of one run record as ``key: value`` lines (output tail last)."""
    pairs = [
        ("task_id", r.task_id),
        ("scheduled_at", fmt_ts(r.scheduled_at)),
        ("status", pb.RunStatus.Name(r.status)),
        ("node_id", r.node_id or NONE),
        ("attempt", str(r.attempt)),
        ("manual", "yes" if r.manual else "no"),
        ("fencing_token", str(r.fencing_token)),
        ("idempotency_key", r.idempotency_key or NONE),
        ("claimed_at", fmt_ts(r.claimed_at)),
        ("started_at", fmt_ts(r.started_at)),
        ("finished_at", fmt_ts(r.finished_at)),
        ("lateness", fmt_duration(r.lateness, r.HasField("lateness"))),
        ("result", _result(r)),
    ]
    if r.error:
        pairs.append(("error", r.error))
    if r.output_tail:
        pairs.append(("output", r.output_tail))
    return format_kv(pairs)


def cluster_text(c: pb.GetClusterResponse) -> str:
    """Summary line plus one row per member: node, address, state (alive, draining, or dead as
    confirmed by the answering node's failure detector while the lease still holds), started,
    version, owned tasks."""
    head = (
        f"cluster {c.cluster}: {len(c.members)} members, {c.task_count} tasks "
        f"(answered by {c.node_id}, revision {c.revision})"
    )

    def state(m: pb.Member) -> str:
        return "dead" if m.suspected_dead else "draining" if m.draining else "alive"

    rows = [
        [
            m.node_id,
            m.address,
            state(m),
            fmt_ts(m.started_at),
            m.version or NONE,
            str(m.owned_tasks),
        ]
        for m in sorted(c.members, key=lambda m: m.node_id)
    ]
    table = format_table(["NODE", "ADDRESS", "STATE", "STARTED", "VERSION", "OWNED TASKS"], rows)
    return f"{head}\n{table}"


def import_table(tasks: Sequence[pb.TaskSpec]) -> str:
    """One row per imported task: id, schedule, time zone, user, command."""
    rows = []
    for t in tasks:
        argv = list(t.shell.argv)
        command = argv[2] if len(argv) == 3 and argv[1] == "-c" else shlex.join(argv)
        rows.append(
            [
                t.id,
                describe_schedule(pb.Schedule(cron=t.schedule.cron)),
                t.schedule.time_zone or "UTC",
                t.shell.run_as or NONE,
                truncate(command, 60),
            ]
        )
    return format_table(["ID", "SCHEDULE", "TZ", "USER", "COMMAND"], rows)


__all__ = [
    "cluster_text",
    "describe_schedule",
    "describe_target",
    "fmt_duration",
    "fmt_td",
    "fmt_ts",
    "format_kv",
    "format_table",
    "import_table",
    "run_detail",
    "runs_table",
    "task_detail",
    "tasks_table",
    "to_json",
    "truncate",
]
