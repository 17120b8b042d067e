"""End-to-end figures of a real cluster: fires/s, lateness, etcd writes per fire, failover after
kill -9, and (``--overload``) behaviour at 2x and 5x the cluster's capacity.

Starts an etcd, an nginx receiver (``bench/receiver.py``; needs ``apt-get install -y
nginx-light``), an etcd recorder (``bench/recorder.py``: a watch on the cluster prefix that logs
every write and every run record) and N ``peerd serve`` nodes (JSON logs at level info) on
loopback, and HTTP tasks firing every second at the receiver.

Default run: ``--tasks`` tasks for ``--seconds``; over the steady window (the first 5 s left
out) it prints goodput (slots due in the window that reached the receiver, per second),
lateness from the run ledger, and etcd writes, transactions and key+value bytes per fire (fires:
distinct idempotency keys the receiver logged in the window); then it ``kill -9``s the
busiest node (most CPU) and measures, for each of its tasks, the time from the kill to the first
start of one of the task's runs on a survivor (ledger). ``--overload`` runs the phases of
``bench/overload.py`` instead (ramp to the peak, 2x, 5x, back to 0.5x, kill -9).

Both end with a checks table and exit 0 (pass), 1 (a hard requirement failed: a real duplicate,
a delivery repeated with a new token before the kill, a false death verdict, a lost lease, a
stuck record, a task of the killed node that never moved), 3 (only a soft one failed: goodput,
recovery time, API latency) or 2 (the run could not be set up).

    .venv/bin/python bench/cluster.py [--nodes 3] [--tasks 500] [--seconds 20] [--lease-ttl 10]
    .venv/bin/python bench/cluster.py --tasks 300 --seconds 65 --runs-keep 20   # writes per fire
    .venv/bin/python bench/cluster.py ... --peerd-src /tmp/peerd-old   # nodes from another tree
    .venv/bin/python bench/cluster.py --overload [--ramp-start 100] [--ramp-step 100]
        [--ramp-seconds 25] [--hold-seconds 60] [--recover-seconds 90]

``--keep`` keeps the workdir (node logs, ``ledger.tsv``, the receiver's access log).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import checks
from harness import Bench, distinct_rate, pct, scan_logs, slot_rate, window_runs
from receiver import measure_ceiling
from recorder import latest_runs, load, tally

SETTLE_S = 5.0
"""Left out at the start of a measuring window (the first slots, phase changes)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--tasks", type=int, default=500, help="default run: tasks every 1 s")
    p.add_argument("--seconds", type=float, default=20, help="default run: how long")
    p.add_argument("--lease-ttl", type=int, default=10)
    p.add_argument("--runs-keep", type=int, default=None, help="the nodes' --runs-keep")
    p.add_argument("--peerd-src", type=Path, default=None, help="run the nodes from this tree")
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    p.add_argument("--overload", action="store_true", help="the overload phases instead")
    p.add_argument("--ramp-start", type=int, default=100)
    p.add_argument("--ramp-step", type=int, default=100)
    p.add_argument("--ramp-seconds", type=float, default=25)
    p.add_argument("--hold-seconds", type=float, default=60, help="each of 2x and 5x")
    p.add_argument("--recover-seconds", type=float, default=90, help="0.5x after the overload")
    return p.parse_args(argv)


def default_run(bench: Bench, args: argparse.Namespace) -> int:
    """The default run (see the module docstring); returns the exit code."""
    bench.set_active(args.tasks)
    created = time.time()
    t0, t1 = created + SETTLE_S, created + args.seconds
    bench.sleep_until(t0)
    rev0, cpu0, ncpu0 = bench.revision(), bench.cpu(), checks.node_cpu(bench)
    bench.sleep_until(t1)
    rev1, cpu1 = bench.revision(), bench.cpu()
    kill = checks.kill_busiest(bench, ncpu0)
    bench.sleep_until(kill[1] + args.lease_ttl + 6)
    bench.poll()
    bench.prober.stop()
    events = scan_logs(bench.procs.values())
    bench.stop()

    writes, runs = load(bench.ledger_path)
    lateness, skipped, succeeded = window_runs(latest_runs(runs).values(), t0, t1)
    delivered = slot_rate(bench.deliveries, t0, t1)
    received = distinct_rate(bench.deliveries, t0, t1)
    window = t1 - t0
    lat_ms = [v * 1000 for v in lateness]
    print(f"nodes {args.nodes}, tasks {args.tasks} every 1s, lease TTL {args.lease_ttl}s, "
          f"steady window {window:.0f}s")  # fmt: skip
    print(f"goodput: slots due in the window delivered/s {delivered:.0f}; SUCCEEDED "
          f"runs/s {succeeded / window:.0f}; SKIPPED/s {skipped / window:.1f}")  # fmt: skip
    if lat_ms:
        print(f"lateness ms  p50 {pct(lat_ms, 0.5):.1f}  p99 {pct(lat_ms, 0.99):.1f}  "
              f"max {max(lat_ms):.1f}  (n={len(lat_ms)})")  # fmt: skip
    for line in checks.write_lines(tally(writes, rev0, rev1), round(received * window)):
        print(line)
    print(checks.cpu_line(cpu0, cpu1, window))
    for line in checks.log_summary(events):
        print(line)
    return checks.print_checks(checks.run_checks(bench, runs, bench.active, kill, events))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args.nodes, args.lease_ttl, args.peerd_src, args.runs_keep, args.keep)
    return checks.run_bench(bench, "bench", lambda b: _run(b, args))


def _run(bench: Bench, args: argparse.Namespace) -> int:
    ceiling = measure_ceiling(bench.receiver, seconds=2.0)
    src = args.peerd_src or "this tree"
    print(f"receiver (nginx, 1 process) ceiling {ceiling:.0f} requests/s "
          f"from one asyncio client, 8 connections; nodes run peerd from {src}")  # fmt: skip
    if args.overload:
        from overload import overload_run

        return overload_run(bench, args)
    return default_run(bench, args)


if __name__ == "__main__":
    raise SystemExit(main())
