"""Lateness over time within a step, per node, beside the nodes' admission events.

Reads a workdir kept by ``bench/throughput.py --keep`` (the recorder's ``ledger.tsv`` and the
nodes' logs) and prints, for the runs of the tasks whose id starts with ``--prefix`` (``http-``
or ``noop-``), one line per second of fire time: runs, lateness p50/p99/max of the cluster,
and runs/p99/max of each node; then each node's ``node_saturated``, ``node_saturation_cleared``
and ``execution_limit_lowered`` events at their second of the same clock. A burst of late runs
that starts with a node's saturation is the node's admission at work (docs/performance.md,
Part 1, third round); one on every node at once is more likely the machine.

    .venv/bin/python bench/lateness.py /tmp/peerd-bench-XXXX --prefix http-
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from harness import pct
from recorder import RunRow, latest_runs, load

EVENTS = {
    "node_saturated": "sat",
    "node_saturation_cleared": "clear",
    "execution_limit_lowered": "limit",
}
"""Node log events shown, with their short names."""


def per_second(rows: list[RunRow], t0_ms: int) -> dict[int, dict[str, list[int]]]:
    """Lateness (ms) by second of fire time since ``t0_ms``, then by node."""
    out: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[(r.fire_ms - t0_ms) // 1000][r.node].append(r.lateness_ms)
    return out


def node_events(log: Path, t0_ms: int) -> list[str]:
    """``<second>:<event>[=<backlog or limit>]`` of a node's log lines in :data:`EVENTS`."""
    out = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        name = EVENTS.get(event.get("event", ""))
        if name is None:
            continue
        at_ms = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        value = event.get("limit", event.get("backlog", ""))
        out.append(f"{(at_ms * 1000 - t0_ms) / 1000:.1f}:{name}" + (f"={value}" if value else ""))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("workdir", type=Path, help="a workdir kept by throughput.py --keep")
    p.add_argument("--prefix", default="http-", help="task id prefix of the step's tasks")
    args = p.parse_args()
    _, runs = load(args.workdir / "ledger.tsv")
    rows = [
        r for r in latest_runs(runs).values()
        if r.task.startswith(args.prefix) and r.lateness_ms >= 0
    ]  # fmt: skip
    if not rows:
        raise SystemExit(f"no started runs of tasks {args.prefix}* in {args.workdir}")
    t0_ms = min(r.fire_ms for r in rows)
    for second, nodes in sorted(per_second(rows, t0_ms).items()):
        every = [v for late in nodes.values() for v in late]
        each = " ".join(
            f"{n}:{len(v)}/{pct(v, 0.99):.0f}/{max(v)}" for n, v in sorted(nodes.items())
        )
        print(f"{second:4d}s n={len(every):5d} p50/p99/max {pct(every, 0.5):.0f}/"
              f"{pct(every, 0.99):.0f}/{max(every)} ms | {each}")  # fmt: skip
    for log in sorted(args.workdir.glob("node*.log")):
        print(f"{log.stem}: " + " ".join(node_events(log, t0_ms)))


if __name__ == "__main__":
    main()
