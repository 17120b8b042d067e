"""``python -m chaos.recheck WORKDIR``: run the checks again on a finished run's files.

Reads ``sink.jsonl``, ``ledger.jsonl``, ``faults.jsonl``, ``tasks.json`` and the run parameters
from ``summary.json``, and prints the table (nothing is started; useful after changing a check).
Exit code as for ``python -m chaos``: 0 pass, 1 violation, 2 unreadable workdir.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos.checks import CheckParams, FaultEvent, LedgerRecord, evaluate, parse_delivery
from chaos.model import Delivery
from chaos.report import format_table, scan_log


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m chaos.recheck", description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--max-failover-p99", type=float, metavar="S")
    args = parser.parse_args(list(argv) if argv is not None else None)
    wd: Path = args.workdir
    try:
        meta: dict[str, Any] = json.loads((wd / "summary.json").read_text())["meta"]
        tasks = json.loads((wd / "tasks.json").read_text())
        raw = _jsonl(wd / "sink.jsonl")
        ledger = [LedgerRecord(**r) for r in _jsonl(wd / "ledger.jsonl")]
        faults = [FaultEvent.from_json(f) for f in _jsonl(wd / "faults.jsonl")]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"chaos.recheck: cannot read {wd}: {exc}")
        return 2
    deliveries: list[Delivery] = []
    for d in raw:
        parsed = parse_delivery(
            d["received_at"], d.get("idempotency_key"), d.get("fencing_token"), d.get("body", "")
        )
        if parsed is not None:
            deliveries.append(parsed)
    limit = (
        args.max_failover_p99
        if args.max_failover_p99 is not None
        else meta.get("max_failover_p99_s")
    )
    meta["max_failover_p99_s"] = limit if limit else None
    params = CheckParams(
        max_failover_p99_s=meta["max_failover_p99_s"],
        fail_on_stuck_runs=bool(meta.get("fail_on_stuck_runs")),
    )
    rep = evaluate(
        tasks["created"],
        tasks["listed"],
        deliveries,
        ledger,
        faults,
        tasks["workload_end_s"],
        params,
    )
    logs = {p.stem: scan_log(p) for p in sorted(wd.glob("n*.log"))}
    print(format_table(rep, meta, faults, logs))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
