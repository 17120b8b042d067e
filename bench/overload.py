"""The overload run of bench/cluster.py (``--overload``): goodput, lateness and safety at 2x and 5x
the cluster's capacity, recovery once the load drops, and failover after kill -9.

Phases, all with HTTP tasks every 1 s at the nginx receiver (a task count is an offered load in
fires/s):

=========  =================================================================================
ramp       ``--ramp-start`` tasks, ``--ramp-step`` more every ``--ramp-seconds``, until a step
           is saturated (delivers < 90 % of its tasks/s) and delivers less than 5 % more than
           the best step so far (slots due from 5 s into the step to 6 s before its end, when
           the decision is taken). The best step's goodput is the capacity C.
2x, 5x     2C and 5C tasks (rounded to tens), ``--hold-seconds`` each. Tasks are added to the
           running cluster.
recover    0.5C tasks (the others paused) for ``--recover-seconds``; it measures how long after
           the load dropped lateness is normal again: from then on, every second's slots are
           all run (none SKIPPED, >= 90 % started) with a p99 lateness within max(1 s, twice the
           lowest p99 of the ramp steps).
kill       the node that used the most CPU in the recover phase is SIGKILLed; TTL + 6 s later
           every task it owned must have started a run on a survivor (ledger).
stop       every task is paused; after the run timeout (5 s) + 10 s, no record may still be
           CLAIMED or RUNNING (read from etcd).
=========  =================================================================================

Measuring windows leave out each phase's first 5 s. Per phase: goodput (slots due in the window
that reached the receiver, whenever, per second: by slot, so a phase's late slots do not count
for the next), lateness p50/p99 and SKIPPED slots/s (run records of the
slots due in the window, from the recorder's copy of the ledger), etcd writes and key+value
bytes per fire (writes between the window's revisions, fires received in it), and the nodes'
CPU. Over the whole run: the checks of
:mod:`checks` (false deaths and new-token repeats before the kill, lost leases, real duplicates,
API latency) plus goodput (2x and 5x deliver >= 90 % of C), recovery (<= 60 s) and stuck records.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass

from checks import Check, cpu_line, kill_busiest, log_summary, node_cpu, print_checks, run_checks
from harness import (
    PREFIX,
    TASK_TIMEOUT_S,
    Bench,
    distinct_rate,
    pct,
    scan_logs,
    slot_rate,
    window_runs,
)
from recorder import RunRow, Write, latest_runs, load, tally, unfinished

from peerd.v1 import scheduler_pb2 as pb

FACTORS = (2, 5)
"""Overload phases, as multiples of the capacity."""
RECOVER_FACTOR = 0.5
SATURATED = 0.9
"""A ramp step delivering less than this share of its tasks/s is saturated."""
GAIN = 1.05
"""The ramp goes on while a step delivers at least this much more than the best before it."""
MAX_RAMP_STEPS = 15
SETTLE_S = 5.0
LATE_S = 6.0
"""A slot due this long ago has been delivered or SKIPPED (5 s misfire threshold + a run)."""
GOODPUT = 0.9
"""2x and 5x must deliver at least this share of the capacity."""
RECOVERY_LIMIT_S = 60.0
NORMAL_MIN_S = 1.0
DRAIN_MARGIN_S = 10.0


@dataclass
class Phase:
    """One phase: name, active tasks, epoch start and end, etcd revisions at the start of its
    window and at its end, and the nodes' CPU seconds then."""

    name: str
    tasks: int
    t0: float
    t1: float
    rev0: int = 0
    rev1: int = 0
    cpu0: float = 0.0
    cpu1: float = 0.0

    @property
    def w0(self) -> float:
        """Start of the measuring window."""
        return self.t0 + SETTLE_S


def hold(bench: Bench, name: str, tasks: int, seconds: float) -> Phase:
    """Set the active tasks to ``tasks`` and run for ``seconds`` from when that is done."""
    bench.set_active(tasks)
    ph = Phase(name, tasks, time.time(), time.time() + seconds)
    bench.sleep_until(ph.w0)
    ph.rev0, ph.cpu0 = bench.revision(), bench.cpu()["nodes"]
    bench.sleep_until(ph.t1)
    ph.rev1, ph.cpu1 = bench.revision(), bench.cpu()["nodes"]
    return ph


def ramp(bench: Bench, args: argparse.Namespace) -> tuple[list[Phase], float]:
    """The ramp phases and the capacity (the best step's delivered slots/s)."""
    steps: list[Phase] = []
    best = 0.0
    n = args.ramp_start
    for _ in range(MAX_RAMP_STEPS):
        ph = hold(bench, f"ramp {n}", n, args.ramp_seconds)
        steps.append(ph)
        # Slots due in the last LATE_S of the step may still be running or waiting.
        rate = slot_rate(bench.deliveries, ph.w0, ph.t1 - LATE_S)
        print(f"  ramp: {n} tasks -> {rate:.0f} slots/s delivered", flush=True)
        saturated_flat = rate < SATURATED * n and rate < GAIN * best
        best = max(best, rate)
        if saturated_flat:
            break
        n += args.ramp_step
    return steps, best


def recovery_s(
    latest: list[RunRow], tasks: set[str], reduced_at: float, end: float, normal_s: float
) -> float:
    """Seconds from ``reduced_at`` until every later second (of fire time, up to ``end``) is
    normal: no slot SKIPPED, >= 90 % of ``tasks`` started, p99 lateness <= ``normal_s``.
    ``inf`` if the last seconds are not normal."""
    first, last = math.floor(reduced_at), math.floor(end) - 2
    late: dict[int, list[float]] = {s: [] for s in range(first, last)}
    skipped: dict[int, int] = dict.fromkeys(late, 0)
    for r in latest:
        s = r.fire_ms // 1000
        if s not in late or r.task not in tasks:
            continue
        if r.lateness_ms >= 0:
            late[s].append(r.lateness_ms / 1000)
        skipped[s] += r.status == pb.SKIPPED

    def normal(s: int) -> bool:
        ok = len(late[s]) >= 0.9 * len(tasks) and pct(late[s], 0.99) <= normal_s
        return ok and not skipped[s]

    since = None
    for s in sorted(late):
        since = (since if since is not None else s) if normal(s) else None
    return math.inf if since is None else max(0.0, since - reduced_at)


def phase_row(ph: Phase, bench: Bench, latest: list[RunRow], writes: list[Write]) -> str:
    """One line of the phase table."""
    w = ph.t1 - ph.w0
    rate = slot_rate(bench.deliveries, ph.w0, ph.t1)
    lateness, skipped, _ = window_runs(latest, ph.w0, ph.t1)
    t = tally(writes, ph.rev0, ph.rev1)
    fires = max(1, round(distinct_rate(bench.deliveries, ph.w0, ph.t1) * w))
    return (
        f"{ph.name:<10} {ph.tasks:>6} {ph.t1 - ph.t0:>5.0f} {rate:>11.0f} "
        f"{pct(lateness, 0.5):>7.2f} {pct(lateness, 0.99):>7.2f} {skipped / w:>10.0f} "
        f"{t.events / fires:>8.2f} {t.bytes / fires:>8.0f} {(ph.cpu1 - ph.cpu0) / w:>6.2f}"
    )


def overload_run(bench: Bench, args: argparse.Namespace) -> int:
    """The phases of the module docstring; prints the table and checks, returns the exit code."""
    print("phases (live):", flush=True)
    cpu_start, start = bench.cpu(), time.time()
    phases, capacity = ramp(bench, args)
    peak_phase = max(phases, key=lambda p: slot_rate(bench.deliveries, p.w0, p.t1))
    overloaded = []
    for f in FACTORS:
        n = max(10, round(f * capacity / 10) * 10)
        print(f"  {time.strftime('%H:%M:%S')} {f}x: {n} tasks", flush=True)
        overloaded.append(hold(bench, f"{f}x", n, args.hold_seconds))
    phases += overloaded
    n_rec = max(10, round(RECOVER_FACTOR * capacity / 10) * 10)
    reduce_start = time.time()
    print(f"  {time.strftime('%H:%M:%S')} {RECOVER_FACTOR}x: {n_rec} tasks", flush=True)
    ncpu = node_cpu(bench)
    rec = hold(bench, f"{RECOVER_FACTOR}x", n_rec, args.recover_seconds)
    reduced_at, rec_tasks = rec.t0, set(bench.active)
    phases.append(rec)
    kill_info = kill_busiest(bench, ncpu)
    victim, killed_at, _ = kill_info
    print(f"  {time.strftime('%H:%M:%S', time.localtime(killed_at))} kill -9 {victim}", flush=True)
    kill = Phase("kill", n_rec, killed_at, killed_at + args.lease_ttl + 6)
    bench.sleep_until(kill.w0)
    kill.rev0, kill.cpu0 = bench.revision(), bench.cpu()["nodes"]
    bench.sleep_until(kill.t1)
    kill.rev1, kill.cpu1 = bench.revision(), bench.cpu()["nodes"]
    phases.append(kill)
    bench.set_active(0)
    bench.sleep_until(time.time() + TASK_TIMEOUT_S + DRAIN_MARGIN_S)
    stuck = asyncio.run(unfinished(bench.etcd.endpoint, PREFIX))
    cpu_end, end = bench.cpu(), time.time()
    bench.poll()
    bench.prober.stop()
    events = scan_logs(bench.procs.values())
    bench.stop()

    writes, runs = load(bench.ledger_path)
    latest = list(latest_runs(runs).values())
    base_p99 = min(pct(window_runs(latest, p.w0, p.t1)[0], 0.99) for p in phases[:-3])
    normal_s = max(NORMAL_MIN_S, 2 * base_p99)
    back_s = recovery_s(latest, rec_tasks, reduced_at, rec.t1, normal_s)
    print(f"\ncapacity C = {capacity:.0f} slots/s (peak at {peak_phase.tasks} tasks); nodes "
          f"{args.nodes}, lease TTL {args.lease_ttl}s; load reduced in "
          f"{reduced_at - reduce_start:.1f}s (pausing tasks)")  # fmt: skip
    print(f"\n{'phase':<10} {'tasks':>6} {'secs':>5} {'delivered/s':>11} {'p50 s':>7} "
          f"{'p99 s':>7} {'skipped/s':>10} {'wr/fire':>8} {'B/fire':>8} {'CPU':>6}")  # fmt: skip
    for ph in phases:
        print(phase_row(ph, bench, latest, writes))
    print(cpu_line(cpu_start, cpu_end, end - start))
    for line in log_summary(events):
        print(line)
    overload_rates = [slot_rate(bench.deliveries, p.w0, p.t1) for p in overloaded]
    results = [
        Check("goodput at 2x / 5x, share of C",
              " / ".join(f"{r / capacity:.0%}" for r in overload_rates), f">= {GOODPUT:.0%}",
              all(r >= GOODPUT * capacity for r in overload_rates), hard=False),
        Check(f"lateness normal again after the load dropped (p99 <= {normal_s:.2f}s)",
              f"{back_s:.0f} s", f"<= {RECOVERY_LIMIT_S:.0f} s", back_s <= RECOVERY_LIMIT_S,
              hard=False),
        Check("records CLAIMED/RUNNING after the end (+ timeout + 10 s)", str(len(stuck)), "0",
              not stuck),
        *run_checks(bench, runs, rec_tasks, kill_info, events),
    ]  # fmt: skip
    for key, status, node in stuck[:10]:
        print(f"stuck: {key} {status} {node}")
    return print_checks(results)
