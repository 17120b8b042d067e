"""Catch-up after a full-cluster outage: what each catch-up policy runs, and the replay rate.

Starts an etcd, a webhook sink (in this process, :class:`peerd.devtools.sink.WebhookSink`) and
``--nodes`` ``peerd serve`` processes on loopback with a cluster-wide replay rate of
``--catch-up-rate`` slots/s (each live node replays at rate / N). Creates ``--tasks`` HTTP tasks
``every 1s`` at the sink, a third per catch-up policy (``skip``, ``run-once``, ``run-all`` with a 10
min window), all with a 1 s misfire threshold. After ``--warmup`` s of normal firing it stops *all*
nodes (SIGTERM, waits for them to exit), waits ``--outage`` s, starts them again and waits (at most
``--max-wait`` s) until every run-all task has caught up. Then, from the run ledger (ListRuns) and
the sink's delivery log, it prints:

* per policy, the *outage slots* (fire time between the last node's exit and the restart): how
  many ran, were recorded SKIPPED (by reason) or have no record yet. A slot that came due less
  than the threshold before the task's first planning after the restart (at P) is on time and
  runs under every policy. Expected (docs/scheduling.md section 3): ``skip`` runs no missed
  slot; ``run-once`` runs exactly one slot per task among the slots due at P: the latest missed
  one, or the slot on time at P if there is one. With ``every 1s`` and a 1 s threshold there
  always is one, so no missed slot runs and run-once looks like skip; ``run-all`` runs every
  outage slot.
* the replay rate: *replays* (slots planned more than the threshold late) per 1-second bucket,
  by claim time (ledger: where the rate limiter acts) and by receive time at the sink; max,
  mean and how long the replay took, next to ``--catch-up-rate``. Expected: about R from the
  first second on (a node's bucket starts empty; the first node back briefly counts itself
  alone and takes the whole rate until the others register), dropping to R*k/N once only k
  nodes still have replays (the shares are per node).
* the lateness (sink receive time - fire time) of *on-time* slots that came due during the
  replay, next to the same before the outage: on-time firing is not held up by the replay.
  (A run-all task has no on-time slot until it has caught up: its new slots queue behind its
  replay and become replays themselves.)
* repeated ``Idempotency-Key`` s at the sink (a retry after a lost owner carries a higher
  fencing token; any other repeat is a duplicate).

Exits 1 on a duplicate, a failed policy expectation, or a replay not over within --max-wait.
Run from the repo root (``bench/`` must be ``sys.path[0]`` for ``import cluster``):

    .venv/bin/python bench/catchup.py [--nodes 3] [--tasks 90] [--outage 20] [--catch-up-rate 50]

Run time: setup, warm-up and outage take ~35 s; the replay takes the rest. The run-all tasks
fire tasks/3 slots/s, and a task that is behind turns each new slot into a replay. With the
defaults (30 slots/s of run-all tasks against 50/s) the replay ends in well under a minute;
with tasks/3 above the rate it is much longer than outage * tasks/3 / rate (``--tasks 300``:
~170 s), and converges only because each node works through its lagging tasks one after
another (``--tasks 300 --catch-up-rate 20`` does not end within --max-wait).
The node settings are passed as ``PEERD_CATCH_UP_RATE`` and ``PEERD_RUNS_KEEP``
(raised so no outage slot is trimmed from the ledger before it is read).
``PEERD_BENCH_KEEP=1`` keeps the temp dir (node logs).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from cluster import bench_node, pct  # bench/ is sys.path[0] for `python bench/...`
from google.protobuf.timestamp_pb2 import Timestamp

from peerd.client import SchedulerClient
from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.devtools.process import stop_all
from peerd.devtools.sink import Delivery, WebhookSink
from peerd.v1 import scheduler_pb2 as pb

POLICIES = {
    "skip": pb.CATCH_UP_SKIP,
    "run-once": pb.CATCH_UP_RUN_ONCE,
    "run-all": pb.CATCH_UP_RUN_ALL,
}
PERIOD_MS = 1000
THRESHOLD_S = 1.0
WINDOW_S = 600
LEASE_TTL_S = 10
RUNS_KEEP = 5000


def _stamp(ts: Timestamp) -> float:
    """Epoch seconds of a protobuf Timestamp (0 when unset)."""
    return ts.ToMilliseconds() / 1000


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Nodes:
    """The ``peerd serve`` processes, on fixed ports across restarts."""

    def __init__(self, count: int, etcd: str, workdir: Path) -> None:
        self.procs = [bench_node(f"node{i + 1}", etcd, LEASE_TTL_S, workdir) for i in range(count)]

    @property
    def address(self) -> str:
        return self.procs[0].address

    def start(self) -> None:
        for p in self.procs:
            p.start(wait=False)
        for p in self.procs:
            p.wait_ready(30)

    def stop(self, grace_s: float = 45) -> None:
        """SIGTERM every node at once, wait for all of them (SIGKILL after ``grace_s``)."""
        for p in stop_all(self.procs, grace_s):
            print(f"node {p.node_id} did not exit within {grace_s:g}s: SIGKILL")


@dataclass
class Timeline:
    stop: float = 0.0  # SIGTERM sent
    down: float = 0.0  # every node has exited
    restart: float = 0.0  # nodes started again
    up: float = 0.0  # every node serving again
    created: float = 0.0


@dataclass
class PolicyTally:
    tasks: int = 0
    slots: int = 0
    run: int = 0
    on_time: int = 0  # of ``run``: slots on time when planned after the restart (not replays)
    delivered: int = 0
    missing: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    runs_per_task: Counter[int] = field(default_factory=Counter)  # run-once: runs in [down, P]
    catch_up_slot: Counter[str] = field(default_factory=Counter)  # run-once: which slot ran


def make_specs(count: int, url: str) -> dict[str, pb.TaskSpec]:
    """``count`` tasks every 1 s at the sink, the policies assigned round robin."""
    specs = {}
    names = list(POLICIES)
    for i in range(count):
        policy = names[i % len(names)]
        tid = f"{policy}-{i:04d}"
        spec = pb.TaskSpec(id=tid, http=pb.HttpTarget(url=f"{url}/{tid}"))
        spec.schedule.every.FromMilliseconds(PERIOD_MS)
        spec.timeout.FromSeconds(5)
        spec.catch_up = POLICIES[policy]  # type: ignore[assignment]
        spec.misfire_threshold.FromMilliseconds(int(THRESHOLD_S * 1000))
        if policy == "run-all":
            spec.catch_up_window.FromSeconds(WINDOW_S)
        specs[tid] = spec
    return specs


def policy_of(task_id: str) -> str:
    return task_id.rsplit("-", 1)[0]


def grid(spec: pb.TaskSpec, start_s: float, end_s: float) -> range:
    """Slots (epoch ms) of an ``every 1s`` task in ``[start_s, end_s)``: the anchor is the
    task's ``created_at`` floored to the second (peerd.core.schedule)."""
    anchor = spec.created_at.seconds * 1000
    lo = anchor + max(0, math.ceil((start_s * 1000 - anchor) / PERIOD_MS)) * PERIOD_MS
    return range(lo, math.ceil(end_s * 1000), PERIOD_MS)


def wait_for_replay(
    sink: WebhookSink, specs: dict[str, pb.TaskSpec], tl: Timeline, max_wait_s: float
) -> bool:
    """Wait until every outage slot of the run-all tasks was delivered and each run-all task has
    caught up (a slot after the restart delivered less than the misfire threshold late); False
    after ``max_wait_s``."""
    run_all = [tid for tid in specs if policy_of(tid) == "run-all"]
    pending = {f"{tid}/{slot}" for tid in run_all for slot in grid(specs[tid], tl.down, tl.restart)}
    behind = set(run_all)
    seen = 0
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline and (pending or behind):
        time.sleep(0.5)
        fresh = sink.deliveries()[seen:]
        seen += len(fresh)
        for d in fresh:
            key = d.idempotency_key or ""
            pending.discard(key)
            tid, _, slot = key.rpartition("/")
            if (
                int(slot or 0) > tl.restart * 1000
                and d.received_at - int(slot) / 1000 < THRESHOLD_S
            ):
                behind.discard(tid)
    if pending or behind:
        print(
            f"replay not over after {max_wait_s:g}s: {len(pending)} run-all outage slots not "
            f"delivered yet, {len(behind)} run-all tasks not caught up"
        )
    return not (pending or behind)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=90)
    parser.add_argument("--outage", type=float, default=20, help="seconds with every node down")
    parser.add_argument("--catch-up-rate", type=float, default=50, help="cluster slots/s")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of normal firing")
    parser.add_argument(
        "--max-wait", type=float, default=240, help="most seconds to wait for the replay to end"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ["PEERD_CATCH_UP_RATE"] = f"{args.catch_up_rate:g}"
    os.environ["PEERD_RUNS_KEEP"] = str(RUNS_KEEP)
    workdir = Path(tempfile.mkdtemp(prefix="peerd-catchup-"))
    with contextlib.ExitStack() as cleanup:
        if os.environ.get("PEERD_BENCH_KEEP") != "1":
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        else:
            print(f"keeping {workdir}")
        etcd = EmbeddedEtcd(workdir / "etcd")
        cleanup.callback(etcd.stop)
        etcd.start()
        sink = WebhookSink()
        cleanup.callback(sink.stop)
        sink.start()
        nodes = Nodes(args.nodes, etcd.endpoint, workdir)
        cleanup.callback(nodes.stop, 15)
        nodes.start()
        tl = Timeline(created=time.time())
        specs = make_specs(args.tasks, sink.url)
        with SchedulerClient(nodes.address, timeout_s=30) as client:
            ids = list(specs)
            for at in range(0, len(ids), 100):
                for spec in client.create_tasks([specs[t] for t in ids[at : at + 100]]):
                    specs[spec.id] = spec
        time.sleep(args.warmup)
        tl.stop = time.time()
        nodes.stop()
        tl.down = time.time()
        time.sleep(args.outage)
        tl.restart = time.time()
        nodes.start()
        tl.up = time.time()
        finished = wait_for_replay(sink, specs, tl, args.max_wait)
        time.sleep(2)
        with SchedulerClient(nodes.address, timeout_s=60) as client:
            ledger = {tid: client.list_runs(tid, RUNS_KEEP) for tid in specs}
        deliveries = sink.deliveries()
        ok = report(args, specs, tl, ledger, deliveries)
    return 0 if ok and finished else 1


def per_second(times: list[float]) -> list[int]:
    """Counts per 1-second bucket from the first of ``times`` to the last."""
    if not times:
        return []
    start = min(times)
    buckets = Counter(int(t - start) for t in times)
    return [buckets.get(i, 0) for i in range(max(buckets) + 1)]


def lateness_line(label: str, values_s: list[float]) -> str:
    if not values_s:
        return f"{label}: none"
    ms = [v * 1000 for v in values_s]
    return (
        f"{label}: lateness ms p50 {pct(ms, 0.5):.0f}  p99 {pct(ms, 0.99):.0f}  "
        f"max {max(ms):.0f}  (n={len(ms)})"
    )


def tally_policies(
    specs: dict[str, pb.TaskSpec],
    tl: Timeline,
    ledger: dict[str, list[pb.RunRecord]],
    first_at: dict[str, float],
) -> dict[str, PolicyTally]:
    """What each policy did with its outage slots (fire time in [down, restart))."""
    tallies = {p: PolicyTally() for p in POLICIES}
    for tid, spec in specs.items():
        policy = policy_of(tid)
        tally = tallies[policy]
        tally.tasks += 1
        by_slot = {r.scheduled_at.ToMilliseconds(): r for r in ledger[tid] if not r.manual}
        for slot in grid(spec, tl.down, tl.restart):
            tally.slots += 1
            r = by_slot.get(slot)
            if r is None:
                tally.missing += 1
            elif r.status == pb.SKIPPED:
                tally.skipped[pb.SkipReason.Name(r.skip_reason).removeprefix("SKIP_")] += 1
            else:
                tally.run += 1
                tally.on_time += _stamp(r.claimed_at) - _stamp(r.fire_at) <= THRESHOLD_S
                tally.delivered += r.idempotency_key in first_at
                if r.status != pb.SUCCEEDED:
                    tally.other[pb.RunStatus.Name(r.status)] += 1
        if policy != "run-once":
            continue
        # Runs among the slots due when the task was first planned after the restart (at P, the
        # claim time of its first record after the restart): the one catch-up run.
        first_plan = min(
            (_stamp(r.claimed_at) for r in by_slot.values() if _stamp(r.claimed_at) >= tl.restart),
            default=math.inf,
        )
        due_runs = [
            r
            for s, r in by_slot.items()
            if tl.down * 1000 <= s <= first_plan * 1000 and r.status != pb.SKIPPED
        ]
        tally.runs_per_task[len(due_runs)] += 1
        for r in due_runs:
            missed = _stamp(r.claimed_at) - _stamp(r.fire_at) > THRESHOLD_S
            tally.catch_up_slot["latest missed slot" if missed else "slot on time at P"] += 1
    return tallies


def check_policies(tallies: dict[str, PolicyTally]) -> list[str]:
    skip, once, run_all = tallies["skip"], tallies["run-once"], tallies["run-all"]
    failures = []
    if skip.run - skip.on_time:
        failures.append(f"skip replayed {skip.run - skip.on_time} missed outage slots (expected 0)")
    if set(once.runs_per_task) != {1}:
        failures.append(f"run-once: tasks by runs {dict(once.runs_per_task)} (expected all 1)")
    if run_all.run != run_all.slots or run_all.delivered != run_all.slots:
        failures.append(
            f"run-all ran {run_all.run} (delivered {run_all.delivered}) of {run_all.slots} "
            f"outage slots (expected all): {run_all.missing} not planned yet, "
            f"{sum(run_all.skipped.values())} skipped"
        )
    return failures


def report(
    args: argparse.Namespace,
    specs: dict[str, pb.TaskSpec],
    tl: Timeline,
    ledger: dict[str, list[pb.RunRecord]],
    deliveries: list[Delivery],
) -> bool:
    first_at: dict[str, float] = {}
    tokens: dict[str, list[int]] = defaultdict(list)
    for d in deliveries:
        if d.idempotency_key:
            first_at.setdefault(d.idempotency_key, d.received_at)
            tokens[d.idempotency_key].append(d.fencing_token or 0)

    print(
        f"nodes {args.nodes}, tasks {args.tasks} every 1s (1/3 per policy), misfire threshold "
        f"{THRESHOLD_S:g}s, run-all window {WINDOW_S}s, catch-up rate {args.catch_up_rate:g}/s"
    )
    print(
        f"stop: SIGTERM -> all exited {tl.down - tl.stop:.1f}s; outage (no node running) "
        f"{tl.restart - tl.down:.1f}s; restart -> all serving {tl.up - tl.restart:.1f}s"
    )

    tallies = tally_policies(specs, tl, ledger, first_at)
    print("\noutage slots (fire time while no node was running), per policy:")
    print(
        f"  {'policy':9} {'tasks':>5} {'slots':>6} {'run':>6} {'on time':>7} {'delivered':>9} "
        f"{'no record':>9}  skipped"
    )
    for policy, t in tallies.items():
        skipped = ", ".join(f"{n} {r}" for r, n in t.skipped.items()) or "0"
        extra = f"  (not SUCCEEDED: {dict(t.other)})" if t.other else ""
        print(
            f"  {policy:9} {t.tasks:5} {t.slots:6} {t.run:6} {t.on_time:7} {t.delivered:9} "
            f"{t.missing:9}  {skipped}{extra}"
        )
    print(
        f"  (on time: of run, slots at most {THRESHOLD_S:g}s late when planned after the restart)"
    )
    once = tallies["run-once"]
    print(
        "  run-once, runs per task among the slots due at its first planning P after the "
        f"restart: {dict(sorted(once.runs_per_task.items()))} (runs: tasks); the run was the "
        + ", ".join(f"{kind} for {n}" for kind, n in once.catch_up_slot.items())
    )
    failures = check_policies(tallies)

    # -- replay rate: planned (ledger claim time, where the rate limiter acts) and delivered ---
    planned: list[tuple[float, str]] = []
    delivered: list[float] = []
    on_time: list[tuple[float, float]] = []  # (fire time, sink lateness s) of on-time slots
    for records in ledger.values():
        for r in records:
            if r.status == pb.SKIPPED or r.manual:
                continue
            fire, got = _stamp(r.fire_at), first_at.get(r.idempotency_key)
            if _stamp(r.claimed_at) - fire > THRESHOLD_S:
                planned.append((_stamp(r.claimed_at), r.node_id))
                if got is not None:
                    delivered.append(got)
            elif got is not None:
                on_time.append((fire, got - fire))
    print()
    if planned:
        planned.sort()
        start, end = planned[0][0], planned[-1][0]
        plan_s, sink_s = per_second([t for t, _ in planned]), per_second(delivered)
        first = Counter(node for t, node in planned if t < start + 1)
        print(
            f"replays (slots planned > {THRESHOLD_S:g}s late): {len(planned)}, the first "
            f"{start - tl.up:+.1f}s after all nodes were serving, the last {end - start:.1f}s later"
        )
        print(
            f"  planned   per 1s: max {max(plan_s)}, mean {len(planned) / max(end - start, 1):.1f}"
            f" (catch-up rate {args.catch_up_rate:g}/s); first 5 s {plan_s[:5]}; first second by "
            f"node {dict(sorted(first.items()))}"
        )
        print(
            f"  delivered per 1s: max {max(sink_s)}, first 5 s {sink_s[:5]}; "
            f"series: {' '.join(map(str, sink_s))}"
        )
    else:
        start = end = tl.up
        print("no replays")
    print(
        lateness_line(
            "on-time slots before the outage",
            [late for fire, late in on_time if tl.created + 2 < fire < tl.stop],
        )
    )
    print(
        lateness_line(
            "on-time slots due during the replay",
            [late for fire, late in on_time if start <= fire <= end],
        )
    )

    repeated = {k: v for k, v in tokens.items() if len(v) > 1}
    fenced = [k for k, v in repeated.items() if v == sorted(set(v))]
    dups = len(repeated) - len(fenced)
    print(
        f"\nsink: {len(deliveries)} deliveries, {len(tokens)} keys; repeated keys {len(repeated)} "
        f"({len(fenced)} fenced retries with rising tokens, {dups} duplicates)"
    )
    if dups:
        failures.append(f"{dups} duplicate idempotency keys at the sink")
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print("OK: every policy did what it says; no duplicates")
    return not failures


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        raise SystemExit(130) from None
