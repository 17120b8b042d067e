"""Fire-path throughput against its ceilings, in one run: HTTP webhooks and in-process tasks.

Starts etcd, the nginx receiver (:mod:`receiver`), the etcd recorder (:mod:`recorder`) and N
``peerd serve`` nodes (:class:`harness.Bench`), then:

1. **Ceilings**, measured in this run on this machine state, before any task exists:
   nginx's own (:func:`receiver.measure_ceiling`: raw asyncio HTTP/1.1 from one process), the
   bare aiohttp client and the node's HTTP executor against the same nginx
   (:func:`http_client.measure`: requests/s and CPU µs per request of one process), and etcd
   batched claims (:class:`claims.ClaimBench`, the nodes' claim batch of 64, 4 in flight).
2. **Ramps**: for each offered rate R of ``--http-rates``, R HTTP tasks ``every 1s`` POST to
   nginx (with ``--jitter-ms`` of jitter, default 999 ms: each slot fires at a hashed instant of
   its second, so the offered load is a steady R/s rather than R fires at each whole
   second); then (the HTTP tasks paused) for each R of ``--noop-rates``, R tasks run the
   in-process callable ``peerd.noop``. Each step lasts ``--step-seconds``; its window leaves
   out the first :data:`SETTLE_S`. Every step runs, also past the capacity.

Per step it prints: fires/s (runs of slots due in the window whose SUCCEEDED record was
written, per second), lateness p50/p99/max (start minus fire time, from the records), the CPU per
fire of the nodes and of etcd (``/proc/<pid>/stat`` utime+stime over the window), etcd writes
(events) and transactions per fire (the recorder's watch, between the window's revisions, per
claim written),
duplicates (slots run under two fencing tokens, plus idempotency keys nginx logged twice:
must be 0), slots of the window without a final record, and the ratio of fires/s to the bare
client's and to the claims ceiling.

The nodes find ``peerd.noop`` through an entry point: a ``.dist-info`` written into the run's
workdir and put on their ``PYTHONPATH`` (so the benchmark does not depend on how peerd was
installed). Exit code: 0, 1 if a duplicate or an unrecorded slot was seen, 2 if the set-up
failed.

    .venv/bin/python bench/throughput.py            # ~4 min: 4+4 steps of 20 s
    .venv/bin/python bench/throughput.py --step-seconds 65 --http-rates 1000,4000 \\
        --noop-rates 10000                           # the issue's 60 s sustained steps
    .venv/bin/python bench/throughput.py --peerd-src /tmp/peerd-main   # nodes from another tree
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import checks
from claims import ClaimBench
from harness import TASK_TIMEOUT_S, Bench, pct, task_spec, window_runs
from http_client import measure
from receiver import measure_ceiling
from recorder import RunRow, Write, latest_runs, load, tally

from peerd.coord.etcd import Etcd
from peerd.coord.keys import Keys
from peerd.v1 import scheduler_pb2 as pb

SETTLE_S = 5.0
"""Each step's window starts this long after its tasks were made active."""
DRAIN_S = 8.0
"""After the last step, wait this long so the window's runs reach their final record."""
NOOP = "peerd.noop"
_DIST_INFO = "peerd_bench_tasks-0.dist-info"


@dataclass(frozen=True)
class Ceilings:
    """Limits measured in this run: nginx requests/s (raw asyncio client), bare aiohttp and
    the HTTP executor (requests/s, CPU µs per request), etcd claims/s (batch 64)."""

    nginx_rps: float
    bare: tuple[float, float]
    executor: tuple[float, float]
    claims_ps: float


@dataclass
class Step:
    """One ramp step: kind (``http``/``noop``), offered fires/s, window (epoch s), etcd
    revisions and CPU seconds by role at the window's ends."""

    kind: str
    offered: int
    t0: float
    t1: float
    rev0: int
    rev1: int
    cpu0: dict[str, float]
    cpu1: dict[str, float]


def spec_of(kind: str, url: str, jitter_ms: int) -> Callable[[str], pb.TaskSpec]:
    """``task id -> TaskSpec`` of a step's tasks, every 1 s with ``jitter_ms`` of jitter:
    ``http`` POSTs to the receiver (:func:`harness.task_spec`), ``noop`` runs ``peerd.noop``."""

    def make(task_id: str) -> pb.TaskSpec:
        if kind == "http":
            spec = task_spec(task_id, url)
        else:
            spec = pb.TaskSpec(id=task_id, python=pb.PythonTarget(name=NOOP))
            spec.schedule.every.FromSeconds(1)
            spec.timeout.FromSeconds(TASK_TIMEOUT_S)
        spec.schedule.jitter.FromMilliseconds(jitter_ms)
        return spec

    return make


def write_entry_point(workdir: Path) -> Path:
    """A directory holding a ``.dist-info`` that registers ``peerd.noop``; returns it."""
    dist = workdir / "entry-points" / _DIST_INFO
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: peerd-bench-tasks\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[peerd.tasks]\n{NOOP} = peerd.tasks_builtin:noop\n")
    return dist.parent


def measure_ceilings(bench: Bench, seconds: float) -> Ceilings:
    """The ceilings (see the module docstring), printed as they come."""
    nginx = measure_ceiling(bench.receiver, seconds=seconds)
    print(f"ceiling nginx (raw asyncio client, 8 connections): {nginx:.0f} requests/s")
    url = f"{bench.receiver.base_url}/_ceiling/client"
    n = max(2000, int(nginx * seconds / 4))
    bare = asyncio.run(measure(url, n, 32, 2, bare=True))
    executor = asyncio.run(measure(url, n, 32, 2))

    async def claims() -> float:
        etcd = Etcd([bench.etcd.endpoint])
        await etcd.connect()
        cb = ClaimBench(etcd, Keys("/peerd/ceiling/"))
        await cb.start()
        try:
            return (await cb.rate(seconds, 64, 4))[0]
        finally:
            await cb.stop()
            await etcd.close()

    claims_ps = asyncio.run(claims())
    print(f"ceiling etcd claims (batch 64, 4 in flight): {claims_ps:.0f} claims/s")
    return Ceilings(nginx, bare, executor, claims_ps)


def run_step(bench: Bench, kind: str, rate: int, seconds: float, jitter_ms: int) -> Step:
    """Make ``rate`` tasks of ``kind`` active and measure one window of ``seconds - SETTLE_S``."""
    bench.set_active(rate, prefix=kind, spec=spec_of(kind, bench.receiver.base_url, jitter_ms))
    made = time.time()
    bench.sleep_until(made + SETTLE_S)
    rev0, cpu0, t0 = bench.revision(), bench.cpu(), time.time()
    bench.sleep_until(made + seconds)
    rev1, cpu1, t1 = bench.revision(), bench.cpu(), time.time()
    return Step(kind, rate, t0, t1, rev0, rev1, cpu0, cpu1)


def ramp(bench: Bench, kind: str, rates: list[int], seconds: float, jitter_ms: int
) -> list[Step]:  # fmt: skip
    """One step of ``kind`` at each rate, in order (every step runs: an overloaded step shows
    the overload behaviour, docs/reliability.md)."""
    steps = []
    for rate in rates:
        steps.append(run_step(bench, kind, rate, seconds, jitter_ms))
        print(f"  step {kind} {rate}/s done", flush=True)
    return steps


@dataclass(frozen=True)
class Row:
    """One line of the table (see the module docstring for each figure)."""

    kind: str
    offered: int
    fires_ps: float
    late_ms: tuple[float, float, float]
    node_us: float
    etcd_us: float
    writes: float
    txns: float
    dups: int
    unsettled: int


def figures(step: Step, writes: list[Write], runs: list[RunRow], latest: dict, dup_keys: set
) -> Row:  # fmt: skip
    """The row of one step from the recorder's file and the receiver's log."""
    window = step.t1 - step.t0
    tasks = {f"{step.kind}-{i:05d}" for i in range(step.offered)}
    lateness, _, succeeded = window_runs(latest.values(), step.t0, step.t1, tasks)
    lo, hi = step.t0 * 1000, step.t1 * 1000
    unsettled = sum(
        1 for (t, _), r in latest.items()
        if t in tasks and lo <= r.fire_ms < hi and r.status in (pb.CLAIMED, pb.RUNNING)
    )  # fmt: skip
    tokens: dict[tuple[str, int], set[int]] = defaultdict(set)
    claims = 0
    for r in runs:
        # A claim record's token is 0 (the token is the claim's revision).
        if r.token and r.task in tasks and lo <= r.fire_ms < hi:
            tokens[(r.task, r.slot_ms)].add(r.token)
        claims += step.rev0 < r.rev <= step.rev1 and r.status == pb.CLAIMED
    dups = sum(1 for t in tokens.values() if len(t) > 1)
    dups += sum(1 for k in dup_keys if k.split("/", 1)[0] in tasks)
    fires = succeeded / window
    ms = [v * 1000 for v in lateness]
    late = (pct(ms, 0.5), pct(ms, 0.99), max(ms, default=float("nan")))
    per_fire = fires * window or float("nan")
    t = tally(writes, step.rev0, step.rev1)
    return Row(
        step.kind, step.offered, fires, late,
        (step.cpu1["nodes"] - step.cpu0["nodes"]) * 1e6 / per_fire,
        (step.cpu1["etcd"] - step.cpu0["etcd"]) * 1e6 / per_fire,
        t.events / max(1, claims), t.txns / max(1, claims), dups, unsettled,
    )  # fmt: skip


def print_table(rows: list[Row], c: Ceilings) -> None:
    """The side-by-side table, ratios against the bare client and the claims ceiling."""
    print(
        f"\n{'kind':<5} {'offered/s':>9} {'fires/s':>8} {'late p50/p99/max ms':>22} "
        f"{'node us/fire':>12} {'etcd us/fire':>12} {'writes/fire':>11} {'txns/fire':>9} "
        f"{'dups':>4} {'unrec':>5} {'/bare http':>10} {'/claims':>8}"
    )
    for r in rows:
        late = "/".join(f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in r.late_ms)
        http = f"{r.fires_ps / c.bare[0]:.2f}" if r.kind == "http" else "-"
        print(
            f"{r.kind:<5} {r.offered:>9} {r.fires_ps:>8.0f} {late:>22} {r.node_us:>12.0f} "
            f"{r.etcd_us:>12.0f} {r.writes:>11.2f} {r.txns:>9.2f} {r.dups:>4} {r.unsettled:>5} "
            f"{http:>10} {r.fires_ps / c.claims_ps:>8.2f}"
        )
    print(
        f"ceilings: nginx {c.nginx_rps:.0f} req/s; bare aiohttp {c.bare[0]:.0f} req/s at "
        f"{c.bare[1]:.0f} us CPU/req; peerd HTTP executor {c.executor[0]:.0f} req/s at "
        f"{c.executor[1]:.0f} us CPU/req; etcd claims {c.claims_ps:.0f}/s"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--http-rates", default="500,1000,2000,4000", help="HTTP fires/s per step")
    p.add_argument("--noop-rates", default="1000,3000,6000,10000", help="peerd.noop fires/s")
    p.add_argument("--step-seconds", type=float, default=20.0)
    p.add_argument("--jitter-ms", type=int, default=999, help="0: every task fires at :00.000")
    p.add_argument("--ceiling-seconds", type=float, default=3.0)
    p.add_argument("--lease-ttl", type=int, default=10)
    p.add_argument("--peerd-src", type=Path, default=None, help="run the nodes from this tree")
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a node setting for every node, e.g. claim_ahead=0s (repeatable)",
    )  # fmt: skip
    return p.parse_args(argv)


def _rates(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def run(bench: Bench, args: argparse.Namespace) -> int:
    """Ceilings, both ramps, the table; returns the exit code."""
    ceilings = measure_ceilings(bench, args.ceiling_seconds)
    steps = ramp(bench, "http", _rates(args.http_rates), args.step_seconds, args.jitter_ms)
    bench.retire_all()
    steps += ramp(bench, "noop", _rates(args.noop_rates), args.step_seconds, args.jitter_ms)
    bench.sleep_until(time.time() + DRAIN_S)
    bench.poll()
    bench.stop()
    writes, runs = load(bench.ledger_path)
    latest = latest_runs(runs)
    seen = Counter(d.key for d in bench.deliveries if d.key)
    dup_keys = {k for k, n in seen.items() if n > 1}
    rows = [figures(s, writes, runs, latest, dup_keys) for s in steps]
    print_table(rows, ceilings)
    src = args.peerd_src or "this tree"
    print(f"nodes {args.nodes} (peerd from {src}), steps of {args.step_seconds:.0f}s, "
          f"windows of {args.step_seconds - SETTLE_S:.0f}s")  # fmt: skip
    return checks.RET_HARD if any(r.dups or r.unsettled for r in rows) else checks.RET_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="peerd-bench-"))
    bench = Bench(
        args.nodes, args.lease_ttl, args.peerd_src, keep=args.keep,
        python_path=[write_entry_point(workdir)], workdir=workdir,
    )  # fmt: skip
    for proc in bench.procs.values():
        proc.settings.update(dict(item.split("=", 1) for item in args.set))
    return checks.run_bench(bench, "throughput", lambda b: run(b, args))


if __name__ == "__main__":
    raise SystemExit(main())
