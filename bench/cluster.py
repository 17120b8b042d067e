"""End-to-end figures of a real cluster: fires/s, lateness, and failover time after kill -9.

Starts an etcd, a webhook sink process and N ``peerd serve`` processes on loopback, creates
``--tasks`` HTTP tasks firing every second at the sink, lets them run, then ``kill -9``s the node
that owns the most tasks and measures, for each of its tasks, the time from the kill to the start
of the task's first run on a survivor (from the run ledger). Prints a table and exits non-zero
if the sink saw any ``Idempotency-Key`` twice.

    .venv/bin/python bench/cluster.py [--nodes 3] [--tasks 500] [--seconds 20] [--lease-ttl 10]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC
from pathlib import Path

import httpx

from peerd.client import SchedulerClient
from peerd.core.ring import owner
from peerd.devtools.etcd_server import EmbeddedEtcd, free_port, parent_death_preexec
from peerd.devtools.process import PeerdProcess, stop_all
from peerd.v1 import scheduler_pb2 as pb


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_node(node_id: str, etcd: str, lease_ttl_s: int, workdir: Path) -> PeerdProcess:
    """One node of cluster ``bench`` on a free loopback port, logging JSON at warning level to
    ``workdir/<node_id>.log``."""
    return PeerdProcess(
        node_id,
        etcd,
        "bench",
        workdir,
        lease_ttl_s=lease_ttl_s,
        settings={"log_format": "json", "log_level": "warning"},
        label="bench",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--lease-ttl", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="peerd-bench-"))
    sink_port = free_port()
    etcd = EmbeddedEtcd(workdir / "etcd")
    etcd.start()
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peerd.devtools.sink",
            "--listen",
            f"127.0.0.1:{sink_port}",
            "--jsonl",
            str(workdir / "sink.jsonl"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=parent_death_preexec(),
    )
    nodes = {
        f"node{i + 1}": bench_node(f"node{i + 1}", etcd.endpoint, args.lease_ttl, workdir)
        for i in range(args.nodes)
    }
    for node in nodes.values():
        node.start(wait=False)
    try:
        for node in nodes.values():
            node.wait_ready(30)
        address = next(iter(nodes.values())).address
        ids = [f"bench-{i:05d}" for i in range(args.tasks)]
        with SchedulerClient(address, timeout_s=30) as client:
            for start in range(0, len(ids), 100):
                specs = []
                for tid in ids[start : start + 100]:
                    spec = pb.TaskSpec(
                        id=tid, http=pb.HttpTarget(url=f"http://127.0.0.1:{sink_port}/{tid}")
                    )
                    spec.schedule.every.FromSeconds(1)
                    spec.timeout.FromSeconds(5)
                    specs.append(spec)
                client.create_tasks(specs)
            created = time.time()
            time.sleep(args.seconds)
            steady_end = time.time()
            members = list(nodes)
            counts = Counter(owner(t, members) for t in ids)
            victim = counts.most_common(1)[0][0]
            victim_tasks = [t for t in ids if owner(t, members) == victim]
            killed_at = time.time()
            nodes[victim].kill()
            time.sleep(args.lease_ttl + 6)
            survivor = next(node.address for nid, node in nodes.items() if nid != victim)
        with SchedulerClient(survivor, timeout_s=30) as client:
            lateness_ms: list[float] = []
            succeeded_in_steady = 0
            failover_s: list[float] = []
            for tid in ids:
                runs = client.list_runs(tid, 100)
                for r in runs:
                    started = (
                        r.started_at.ToDatetime(UTC).timestamp() if r.HasField("started_at") else 0
                    )
                    if r.HasField("lateness") and created + 3 < started < steady_end:
                        lateness_ms.append(r.lateness.ToMilliseconds())
                        if r.status == pb.SUCCEEDED:
                            succeeded_in_steady += 1
                if tid in victim_tasks:
                    after = [
                        r.started_at.ToDatetime(UTC).timestamp()
                        for r in runs
                        if r.node_id != victim
                        and r.HasField("started_at")
                        and r.started_at.ToDatetime(UTC).timestamp() > killed_at
                    ]
                    failover_s.append(min(after) - killed_at if after else float("inf"))
                    if not after and len([f for f in failover_s if f == float("inf")]) <= 2:
                        print(f"not moved: {tid}; newest runs:")
                        for r in runs[:6]:
                            print(
                                "  ",
                                r.scheduled_at.ToJsonString(),
                                pb.RunStatus.Name(r.status),
                                r.node_id,
                                r.started_at.ToJsonString(),
                                r.error[:80],
                            )
        summary = httpx.get(f"http://127.0.0.1:{sink_port}/_summary", timeout=10).json()
        deliveries = httpx.get(f"http://127.0.0.1:{sink_port}/_deliveries", timeout=30).json()
        tokens: dict[str, list[int]] = {}
        for d in deliveries:
            tokens.setdefault(d["idempotency_key"], []).append(d["fencing_token"] or 0)
        repeated = {k: v for k, v in tokens.items() if len(v) > 1}
        # A fenced retry (on_owner_lost RETRY) carries a strictly higher token than the
        # delivery before it; anything else is a real duplicate.
        real = [k for k, v in repeated.items() if any(b <= a for a, b in itertools.pairwise(v))]
        window = steady_end - (created + 3)
        print(f"nodes {args.nodes}, tasks {args.tasks} every 1s, lease TTL {args.lease_ttl}s")
        print(f"fires/s (SUCCEEDED runs in the steady window) {succeeded_in_steady / window:.0f}")
        print(
            f"lateness ms  p50 {pct(lateness_ms, 0.5):.1f}  p99 {pct(lateness_ms, 0.99):.1f}  "
            f"max {max(lateness_ms):.1f}  (n={len(lateness_ms)})"
        )
        print(
            f"kill -9 {victim} owning {len(victim_tasks)} tasks: failover s  "
            f"p50 {pct(failover_s, 0.5):.2f}  p99 {pct(failover_s, 0.99):.2f}  "
            f"max {max(failover_s):.2f}  (mean {statistics.fmean(failover_s):.2f})"
        )
        print(
            f"sink: {json.dumps(summary)}; repeated keys: {len(repeated)} "
            f"({len(repeated) - len(real)} fenced retries of the killed node's runs, "
            f"{len(real)} real duplicates)"
        )
        return 1 if real else 0
    finally:
        stop_all(nodes.values(), 15)
        sink.terminate()
        etcd.stop()
        if os.environ.get("PEERD_BENCH_KEEP") != "1":
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
