"""Rendering of API messages for the CLI: aligned tables for people, JSON for programs (pure).

Timestamps are shown as RFC 3339 UTC with milliseconds, durations compactly ("12ms", "1.5s",
"1m30s"), unset values as "-". This module holds the primitives (tables, ``key: value`` lines,
JSON, times) and the tasks; runs, previews and audits are rendered by
:mod:`peerd.cli_output_runs`, the cluster view by :mod:`peerd.cli_output_cluster`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from datetime import UTC, timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message

from peerd.core.durations import format_duration
from peerd.core.labels import format_labels
from peerd.core.records import rfc3339
from peerd.core.schedule_spec import PB_DST_AMBIGUOUS, PB_DST_NONEXISTENT
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


def format_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Cells padded to fixed ``widths`` (0 = unpadded), two spaces apart; no trailing spaces.
    A longer cell pushes the rest of its line right."""
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def to_json(msg: Message, compact: bool = False) -> str:
    """A message as JSON with proto field names (``task_id``, not ``taskId``); ``compact``: on
    one line (JSON Lines)."""
    if compact:
        data = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
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


def secret_ref(name: str) -> str:
    """How ``task get`` shows a value read from a node's secrets: ``<secret NAME>``."""
    return f"<secret {name}>"


def describe_target(t: pb.TaskSpec) -> str:
    """``POST https://...`` for HTTP tasks, the shell-quoted argv for shell tasks,
    ``python NAME {args}`` for Python tasks."""
    kind = t.WhichOneof("target")
    if kind == "http":
        return f"{t.http.method or 'POST'} {t.http.url}"
    if kind == "shell":
        prefix = f"[{t.shell.run_as}] " if t.shell.run_as else ""
        return prefix + shlex.join(t.shell.argv)
    if kind == "python":
        return f"python {t.python.name} {t.python.args_json or '{}'}"
    return NONE


# -- policies --------------------------------------------------------------------------------

OVERLAP_NAMES = {
    pb.OVERLAP_ALLOW: "allow",
    pb.OVERLAP_FORBID: "forbid",
    pb.OVERLAP_REPLACE: "replace",
    pb.OVERLAP_BUFFER_ONE: "buffer-one",
}
"""CLI spelling of each OverlapPolicy (``--overlap``)."""
CATCH_UP_NAMES = {
    pb.CATCH_UP_SKIP: "skip",
    pb.CATCH_UP_RUN_ONCE: "run-once",
    pb.CATCH_UP_RUN_ALL: "run-all",
}
"""CLI spelling of each CatchUpPolicy (``--catch-up``)."""
DST_NONEXISTENT_NAMES = {k: v for k, v in PB_DST_NONEXISTENT.items() if v != "auto"}
"""CLI spelling of each DstNonexistentPolicy (``--dst-nonexistent``; ``auto`` = unspecified):
the names of :mod:`peerd.core.schedule_spec`."""
DST_AMBIGUOUS_NAMES = {k: v for k, v in PB_DST_AMBIGUOUS.items() if v != "auto"}
"""CLI spelling of each DstAmbiguousPolicy (``--dst-ambiguous``; ``auto`` = unspecified)."""
RETRY_ON_NAMES = {
    pb.RETRY_ON_HTTP_5XX: "5xx",
    pb.RETRY_ON_HTTP_429: "429",
    pb.RETRY_ON_TIMEOUT: "timeout",
    pb.RETRY_ON_CONNECTION_ERROR: "connection",
    pb.RETRY_ON_NONZERO_EXIT: "exit",
    pb.RETRY_ON_EXCEPTION: "exception",
    pb.RETRY_ON_HTTP_4XX: "4xx",
}
"""CLI spelling of each RetryOn outcome class (``--retry-on``)."""
DEFAULT_RETRY_ON = (
    pb.RETRY_ON_HTTP_5XX,
    pb.RETRY_ON_HTTP_429,
    pb.RETRY_ON_TIMEOUT,
    pb.RETRY_ON_CONNECTION_ERROR,
    pb.RETRY_ON_NONZERO_EXIT,
    pb.RETRY_ON_EXCEPTION,
)
"""What an empty ``RetryPolicy.retry_on`` means (proto comment)."""
OWNER_LOST_NAMES = {pb.OWNER_LOST_RETRY: "retry", pb.OWNER_LOST_MARK_LOST: "mark-lost"}


def _policy(value: int, names: Mapping[Any, str], default: str) -> str:
    if value == 0:
        return f"{default} (default)"
    return names.get(value, f"unknown ({value})")


def describe_retry(t: pb.TaskSpec) -> str:
    """E.g. ``none (1 attempt, default)`` or ``3 attempts, backoff 1s..1m x2, on 5xx,429,
    deadline 5m``; defaults are marked."""
    if not t.HasField("retry"):
        return "none (1 attempt, default)"
    r = t.retry
    attempts = r.max_attempts or 1
    if attempts <= 1:
        text = "none (1 attempt)"
    else:
        initial = fmt_duration(r.initial_backoff) if r.HasField("initial_backoff") else "1s"
        most = fmt_duration(r.max_backoff) if r.HasField("max_backoff") else "1m"
        mult = f"{r.multiplier:g}" if r.multiplier else "2"
        on = ",".join(RETRY_ON_NAMES.get(c, str(c)) for c in (r.retry_on or DEFAULT_RETRY_ON))
        default_on = "" if r.retry_on else " (default)"
        text = (
            f"{attempts} attempts, backoff {initial}..{most} x{mult} (full jitter), "
            f"on {on}{default_on}"
        )
    if r.HasField("deadline"):
        text += f", deadline {fmt_duration(r.deadline)}"
    return text


def _policy_pairs(t: pb.TaskSpec) -> list[tuple[str, str]]:
    s = t.schedule
    pairs: list[tuple[str, str]] = []
    if s.HasField("jitter"):
        pairs.append(("jitter", fmt_duration(s.jitter)))
    if s.WhichOneof("kind") == "cron":
        pairs.append(("dst_nonexistent", _policy(s.dst_nonexistent, DST_NONEXISTENT_NAMES, "auto")))
        pairs.append(("dst_ambiguous", _policy(s.dst_ambiguous, DST_AMBIGUOUS_NAMES, "auto")))
    pairs.append(("overlap", _policy(t.overlap, OVERLAP_NAMES, "allow")))
    catch_up = _policy(t.catch_up, CATCH_UP_NAMES, "run-once")
    if t.catch_up == pb.CATCH_UP_RUN_ALL:
        window = t.catch_up_window
        catch_up += (
            f", window {fmt_duration(window)}"
            if t.HasField("catch_up_window") and window.ToTimedelta()
            else ", window 1h (default)"
        )
    pairs.append(("catch_up", catch_up))
    pairs.append(
        (
            "misfire_threshold",
            fmt_duration(t.misfire_threshold)
            if t.HasField("misfire_threshold")
            else "node default (--misfire-threshold, 5s unless set)",
        )
    )
    pairs.append(("retry", describe_retry(t)))
    pairs.append(("priority", str(t.priority) if t.priority else "0 (default)"))
    pairs.append(("on_owner_lost", _policy(t.on_owner_lost, OWNER_LOST_NAMES, "retry")))
    pairs.append(("on_failure", t.on_failure or "none (default)"))
    return pairs


def tasks_table(tasks: Sequence[pb.TaskSpec]) -> str:
    """One row per task: id, schedule, state, target, and its labels when any task has some."""
    labelled = any(t.labels for t in tasks)
    rows = [
        [
            t.id,
            describe_schedule(t.schedule),
            "paused" if t.paused else "active",
            truncate(describe_target(t), 60),
            *([format_labels(t.labels) or NONE] if labelled else []),
        ]
        for t in tasks
    ]
    return format_table(
        ["ID", "SCHEDULE", "STATE", "TARGET", *(["LABELS"] if labelled else [])], rows
    )


def task_detail(t: pb.TaskSpec, scheduling: str | None = None) -> str:
    """Every field of one task as ``key: value`` lines; ``scheduling``: where it may run
    (:func:`scheduling_text`), shown after its node selector."""
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
    if t.pause_note:
        pairs.append(("pause_note", t.pause_note))
    if t.labels:
        pairs.append(("labels", format_labels(t.labels)))
    pairs.append(("node_selector", t.node_selector or "none: any node (default)"))
    if scheduling is not None:
        pairs.append(("scheduling", scheduling))
    kind = t.WhichOneof("target")
    if kind == "http":
        pairs.append(("http", f"{t.http.method or 'POST'} {t.http.url}"))
        pairs += [(f"header {k}", v) for k, v in sorted(t.http.headers.items())]
        pairs += [(f"header {k}", secret_ref(v)) for k, v in sorted(t.http.header_secrets.items())]
        if t.http.HasField("body"):
            pairs.append(("body", t.http.body))
    elif kind == "shell":
        pairs.append(("shell", shlex.join(t.shell.argv)))
        pairs += [(f"env {k}", v) for k, v in sorted(t.shell.env.items())]
        pairs += [(f"env {k}", secret_ref(v)) for k, v in sorted(t.shell.env_secrets.items())]
        if t.shell.working_dir:
            pairs.append(("working_dir", t.shell.working_dir))
        if t.shell.run_as:
            pairs.append(("run_as", t.shell.run_as))
    elif kind == "python":
        pairs.append(("python", t.python.name))
        pairs.append(("args", t.python.args_json or "{} (default)"))
    timeout = fmt_duration(t.timeout) if t.HasField("timeout") else "60s (default)"
    pairs.append(("timeout", timeout))
    pairs += _policy_pairs(t)
    if t.description:
        pairs.append(("description", t.description))
    if t.source:
        pairs.append(("source", t.source))
    pairs += [("created_at", fmt_ts(t.created_at)), ("updated_at", fmt_ts(t.updated_at))]
    return format_kv(pairs)


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
    "CATCH_UP_NAMES",
    "DST_AMBIGUOUS_NAMES",
    "DST_NONEXISTENT_NAMES",
    "NONE",
    "OVERLAP_NAMES",
    "RETRY_ON_NAMES",
    "describe_retry",
    "describe_schedule",
    "describe_target",
    "fmt_duration",
    "fmt_td",
    "fmt_ts",
    "format_kv",
    "format_row",
    "format_table",
    "import_table",
    "secret_ref",
    "task_detail",
    "tasks_table",
    "to_json",
    "truncate",
]
