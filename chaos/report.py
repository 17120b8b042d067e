"""Rendering a chaos run: the table, the JSON summary, and a scan of the node logs."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos.checks import FailoverStats, FaultEvent, Report, Stats

LOG_LEVELS = ("warning", "error", "critical")


def scan_log(path: Path) -> dict[str, Any]:
    """Count the warning/error lines of one JSON node log, by event name, plus tracebacks and
    non-JSON lines (e.g. an ImportError before logging was set up)."""
    levels: Counter[str] = Counter()
    events: Counter[str] = Counter()
    tracebacks = 0
    other = 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("--- chaos:"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            other += 1
            tracebacks += line.startswith("Traceback")
            continue
        level = str(doc.get("level", ""))
        if level in LOG_LEVELS:
            levels[level] += 1
            events[f"{level}:{doc.get('event', '?')}"] += 1
        if "exception" in doc:
            tracebacks += 1
    return {
        "levels": dict(levels),
        "events": dict(events.most_common()),
        "tracebacks": tracebacks,
        "non_json_lines": other,
    }


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _stats(s: Stats, scale: float = 1.0, digits: int = 2) -> str:
    if not s.n:
        return "-"
    vals = [None if v is None else v * scale for v in (s.p50, s.p99, s.max)]
    return "/".join(_num(v, digits) for v in vals)


def _failover_row(label: str, f: FailoverStats, limit: str, result: str) -> list[str]:
    extra = f"{f.tasks} tasks, {f.faults} fault(s)"
    if f.not_observed:
        extra += f", {f.not_observed} never moved"
    retried = f.retried_lateness_s
    if retried.n:
        extra += f"; {retried.n} claimed slot(s) retried, late {_stats(retried)} s"
    return [label, _stats(f.seconds), limit, f"{result} ({extra})"]


def format_table(
    rep: Report, meta: dict[str, Any], faults: Sequence[FaultEvent], logs: dict[str, Any]
) -> str:
    """The human-readable report."""

    def verdict(bad: bool) -> str:
        return "FAIL" if bad else "ok"

    rows: list[list[str]] = [["check", "value", "limit", "result"]]
    rows.append(["tasks lost", str(len(rep.lost_tasks)), "0", verdict(bool(rep.lost_tasks))])
    rows.append(
        ["duplicate claims", str(rep.duplicate_claims), "0", verdict(bool(rep.duplicate_claims))]
    )
    retries = str(rep.fenced_retries)
    if rep.stale_after_retry:
        retries += f" ({rep.stale_after_retry} stale after the retry)"
    rows.append(["duplicate deliveries: fenced retries", retries, "-", "info"])
    rows.append(
        [
            "duplicate deliveries: real duplicates",
            str(rep.real_duplicates),
            "0",
            verdict(bool(rep.real_duplicates)),
        ]
    )
    rows.append(
        ["early fires (> 50 ms early)", str(rep.early_fires), "0", verdict(bool(rep.early_fires))]
    )
    rows.append(
        [
            "slots missed after catch-up",
            f"{rep.missed_slots} ({rep.tasks_with_gaps} tasks)",
            "0",
            verdict(bool(rep.missed_slots)),
        ]
    )
    strict = bool(meta.get("fail_on_stuck_runs"))
    rows.append(
        [
            "runs stuck CLAIMED/RUNNING, never delivered",
            str(rep.stuck_runs),
            "0" if strict else "-",
            verdict(bool(rep.stuck_runs)) if strict else ("WARN" if rep.stuck_runs else "info"),
        ]
    )
    limit = meta.get("max_failover_p99_s")
    for kind, f in rep.failover.items():
        label = "handoff" if kind == "rolling_restart" else "failover"
        rows.append(_failover_row(f"{label} {kind} s p50/p99/max", f, "-", "info"))
    over = rep.failover_overall
    if over.faults:
        p99 = over.seconds.p99
        bad = limit is not None and p99 is not None and p99 > limit
        rows.append(
            _failover_row(
                "failover overall s p50/p99/max",
                over,
                "-" if limit is None else f"p99 {limit:g}",
                verdict(bad) if limit is not None else "info",
            )
        )
    rows.append(["lateness ms p50/p99/max (ledger)", _stats(rep.lateness_s, 1000, 0), "-", "info"])
    rows.append(["delivery lag ms p50/p99/max", _stats(rep.delivery_lag_s, 1000, 0), "-", "info"])
    rows.append(["fault errors", str(len(rep.fault_errors)), "0", verdict(bool(rep.fault_errors))])
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"peerd chaos: profile {meta['profile']}, seed {meta['seed']}, {meta['nodes']} nodes, "
        f"etcd {meta['etcd_members']} member(s), {meta['tasks']} tasks @every 1s, "
        f"lease TTL {meta['lease_ttl_s']}s, netns {'on' if meta['netns'] else 'off'}, "
        f"{meta['wall_s']:.0f}s",
        "faults: " + (", ".join(f"{f.kind} {f.target}" for f in faults) or "none"),
    ]
    for note in meta.get("notes", []):
        lines.append(f"note: {note}")
    lines.append("")
    for i, r in enumerate(rows):
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        )
        if i == 0:
            lines.append("-" * (sum(widths) + 12))
    lines.append("")
    lines.append(
        f"deliveries {rep.deliveries}, ledger records {rep.ledger_records} "
        f"({', '.join(f'{k} {v}' for k, v in rep.ledger_status.items())}), "
        f"keys delivered twice {rep.duplicate_keys}"
    )
    if rep.runs_without_delivery:
        lines.append(
            "claimed runs never delivered: "
            + ", ".join(f"{k} {v}" for k, v in rep.runs_without_delivery.items())
        )
    if rep.deliveries_without_run:
        lines.append(f"deliveries with no ledger record: {rep.deliveries_without_run}")
    for title, examples in (
        ("lost", [f"{t}: {rep.lost_reasons[t]}" for t in rep.lost_tasks[:5]]),
        ("duplicate claim", rep.duplicate_claim_examples),
        ("duplicate delivery", rep.duplicate_examples),
        ("early fire", rep.early_examples),
        ("gap", rep.gap_examples),
        ("stuck run", rep.stuck_examples),
        ("fault error", rep.fault_errors),
    ):
        lines.extend(f"  {title}: {e}" for e in examples)
    for node_id, scan in logs.items():
        levels = ", ".join(f"{k} {v}" for k, v in sorted(scan["levels"].items())) or "clean"
        top = ", ".join(f"{k} x{v}" for k, v in list(scan["events"].items())[:6])
        extra = f"; tracebacks {scan['tracebacks']}" if scan["tracebacks"] else ""
        lines.append(f"log {node_id}: {levels}{extra}" + (f" [{top}]" if top else ""))
    lines.append("")
    if rep.ok:
        lines.append("RESULT: PASS")
    else:
        lines.append("RESULT: FAIL -- " + "; ".join(rep.violations))
    return "\n".join(lines)


def write_outputs(
    workdir: Path,
    table: str,
    rep: Report,
    meta: dict[str, Any],
    faults: Sequence[FaultEvent],
    logs: dict[str, Any],
) -> None:
    """Write ``report.txt``, ``summary.json`` and ``faults.jsonl`` into the workdir."""
    (workdir / "report.txt").write_text(table + "\n", encoding="utf-8")
    summary = {
        "meta": meta,
        "report": rep.to_json(),
        "faults": [f.to_json() for f in faults],
        "logs": logs,
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with (workdir / "faults.jsonl").open("w", encoding="utf-8") as out:
        for f in faults:
            out.write(json.dumps(f.to_json()) + "\n")
