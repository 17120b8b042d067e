"""The checks and report lines shared by bench/cluster.py's default and overload runs.

A :class:`Check` is hard (a correctness promise: its failure makes the run exit
:data:`RET_HARD`), soft (a performance figure with a target: exit :data:`RET_SOFT` when only
soft ones fail) or information only.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from harness import Bench, LogEvent, Probe, Repeats, cpu_s, pct, repeats
from receiver import ReceiverError
from recorder import RunRow, WriteTally

RET_OK = 0
RET_HARD = 1
"""A hard check failed (duplicates, false deaths, lost leases, stuck records, unmoved tasks)."""
RET_SETUP = 2
"""The run could not complete (a node did not start, nginx missing, ...)."""
RET_SOFT = 3
"""Only soft checks failed (goodput, recovery time, API latency)."""
API_LIMIT_S = 1.0
"""GetCluster and ListTasks must answer within this."""


@dataclass(frozen=True)
class Check:
    """One line of the checks table. ``ok``: None = information only."""

    name: str
    value: str
    limit: str
    ok: bool | None
    hard: bool = True


def run_bench(bench: Bench, name: str, body: Callable[[Bench], int]) -> int:
    """Start ``bench``, run ``body(bench)`` and return its exit code; stop and clean up
    whatever happens. A cluster that does not start: the error on stderr (``name: could not
    start: ...``) and :data:`RET_SETUP`."""
    try:
        bench.start()
    except (ReceiverError, RuntimeError, TimeoutError) as exc:
        print(f"{name}: could not start: {exc}", file=sys.stderr)
        bench.stop()
        bench.cleanup()
        return RET_SETUP
    try:
        return body(bench)
    finally:
        bench.stop()
        bench.cleanup()


def print_checks(checks: list[Check]) -> int:
    """Print the table; returns the exit code (see the module docstring)."""
    print(f"\n{'check':<64} {'value':<22} {'limit':<10} result")
    print("-" * 104)
    for c in checks:
        result = "info" if c.ok is None else "ok" if c.ok else "FAIL"
        print(f"{c.name:<64} {c.value:<22} {c.limit:<10} {result}")
    if any(c.ok is False and c.hard for c in checks):
        print("RESULT: FAIL (hard requirement)")
        return RET_HARD
    if any(c.ok is False for c in checks):
        print("RESULT: FAIL (soft requirement only)")
        return RET_SOFT
    print("RESULT: PASS")
    return RET_OK


def write_lines(t: WriteTally, fires: int) -> list[str]:
    """etcd writes of a window per fire: totals, then by key kind (largest first)."""
    if fires == 0:
        return ["etcd writes per fire: no fires in the window"]
    out = [
        f"etcd writes per fire ({fires} fires): events {t.events / fires:.2f} "
        f"(puts {t.puts / fires:.2f}, deletes {t.deletes / fires:.2f}), "
        f"txns {t.txns / fires:.2f}, key+value bytes {t.bytes / fires:.0f}"
    ]
    for name, n in t.by_kind.most_common():
        out.append(
            f"  {name:<16} events/fire {n / fires:6.3f}  "
            f"bytes/fire {t.bytes_by_kind[name] / fires:7.1f}"
        )
    return out


def kill_busiest(bench: Bench, cpu_before: dict[str, float]) -> tuple[str, float, int]:
    """SIGKILL the node that used the most CPU since ``cpu_before`` (node id -> CPU seconds);
    later API calls go to the survivors. Returns (victim, epoch seconds of the kill, etcd's
    revision just before it)."""
    cpu = {n: cpu_s(p.pid) - cpu_before.get(n, 0.0) for n, p in bench.procs.items()}
    victim = max(cpu, key=lambda n: cpu[n])
    survivors = [p.address for n, p in bench.procs.items() if n != victim]
    bench.prober.targets = survivors
    bench.use_node(survivors[0])
    kill_rev = bench.revision()
    killed_at = time.time()
    bench.procs[victim].kill()
    return victim, killed_at, kill_rev


def node_cpu(bench: Bench) -> dict[str, float]:
    """CPU seconds of each node so far."""
    return {n: cpu_s(p.pid) for n, p in bench.procs.items()}


def victim_moves(
    rows: list[RunRow], active: Iterable[str], victim: str, killed_at: float, kill_rev: int
) -> dict[str, float]:
    """For each active task owned by the victim at the kill (it wrote the newest slot of the
    task written up to revision ``kill_rev``; a slot's first record, its claim or SKIPPED,
    names its owner; rows are in revision order): seconds from the kill to the first start of
    one of its runs on another node (``inf``: never)."""
    kill_ms = killed_at * 1000
    active = set(active)
    last: dict[str, tuple[int, str]] = {}
    first_move: dict[str, float] = {}
    for r in rows:
        if r.task not in active:
            continue
        if r.rev <= kill_rev and r.slot_ms > last.get(r.task, (-1, ""))[0]:
            last[r.task] = (r.slot_ms, r.node)
        if r.node != victim and r.started_ms > kill_ms:
            first_move[r.task] = min(first_move.get(r.task, math.inf), r.started_ms / 1000)
    return {t: first_move.get(t, math.inf) - killed_at for t, (_, n) in last.items() if n == victim}


def failover_checks(victim: str, moves: dict[str, float]) -> list[Check]:
    """Every task of the killed node moved (hard); how long it took (info)."""
    times = list(moves.values())
    never = sum(1 for v in times if math.isinf(v))
    done = [v for v in times if not math.isinf(v)]
    spread = f"p50 {pct(done, 0.5):.2f} max {max(done):.2f}" if done else "-"
    return [
        Check(f"tasks of killed {victim} ({len(times)}) never run on a survivor", str(never), "0",
              never == 0 and bool(times)),
        Check("kill -9 until every task moved, s", spread, "-", None),
    ]  # fmt: skip


def log_checks(events: list[LogEvent], killed_at: float, victim: str | None) -> list[Check]:
    """False death verdicts before the kill, and lost leases (on the victim: before the kill)."""

    def counted(e: LogEvent) -> bool:
        return e.at_s < killed_at or e.node != victim

    false_deaths = [e for e in events if e.event == "peer_confirmed_dead" and e.at_s < killed_at]
    expired = sum(1 for e in events if e.event == "lease_expired" and counted(e))
    paused = sum(1 for e in events if e.event == "keepalive_failed_claims_paused" and counted(e))
    registered = Counter(e.node for e in events if e.event == "member_registered" and counted(e))
    rereg = sum(max(0, n - 1) for n in registered.values())
    lost = expired + paused + rereg
    missed = sum(1 for e in events if e.event == "etcd_unavailable_no_claims" and counted(e))
    return [
        Check("false peer_confirmed_dead verdicts before the kill", str(len(false_deaths)), "0",
              not false_deaths),
        Check("lost leases: lease_expired/keepalive_failed_paused/re-registered",
              f"{expired}/{paused}/{rereg}", "0", lost == 0),
        Check("claim rounds past etcd's deadline (etcd_unavailable_no_claims)", str(missed), "-",
              None),
    ]  # fmt: skip


def repeat_checks(rep: Repeats) -> list[Check]:
    """Real duplicates and new-token repeats before the kill (hard); fenced retries after it."""
    return [
        Check("deliveries repeated with a new token before the kill", str(len(rep.new_token)), "0",
              not rep.new_token),
        Check("real duplicates (same key and token delivered twice)", str(len(rep.real)), "0",
              not rep.real),
        Check("keys retried with a new token after the kill (fenced)",
              str(len(rep.new_token_after)), "-", None),
    ]  # fmt: skip


def api_checks(probes: list[Probe]) -> list[Check]:
    """GetCluster and ListTasks latency of the prober's calls (soft: every call within 1 s)."""
    out = []
    for call in ("GetCluster", "ListTasks"):
        lat = [p.latency_s * 1000 for p in probes if p.call == call]
        failed = sum(1 for p in probes if p.call == call and not p.ok)
        value = f"{pct(lat, 0.5):.0f}/{pct(lat, 0.99):.0f}/{max(lat):.0f}" if lat else "no calls"
        ok = bool(lat) and max(lat) < API_LIMIT_S * 1000 and not failed
        name = f"{call} ms p50/p99/max ({len(lat)} calls, {failed} failed)"
        out.append(Check(name, value, f"< {API_LIMIT_S * 1000:.0f}", ok, hard=False))
        calls = [p for p in probes if p.call == call]
        if calls:
            slowest = max(calls, key=lambda p: p.latency_s)
            when = time.strftime("%H:%M:%S", time.localtime(slowest.at_s - slowest.latency_s))
            out.append(Check(f"{call}: slowest call started at", when, "-", None))
    return out


def cpu_line(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """Mean CPU (cores) by role over ``seconds``."""
    parts = [f"{k} {(after[k] - before.get(k, 0.0)) / seconds:.2f}" for k in after]
    return "CPU, cores used on average: " + ", ".join(parts)


def log_summary(events: list[LogEvent]) -> list[str]:
    """One line per node: its warning/error events (and member_registered) by name."""
    by_node: dict[str, Counter[str]] = {}
    for e in events:
        by_node.setdefault(e.node, Counter())[e.event] += 1
    return [
        f"log {node}: " + ", ".join(f"{name} x{n}" for name, n in counts.most_common())
        for node, counts in sorted(by_node.items())
    ]


def run_checks(
    bench: Bench,
    runs: list[RunRow],
    active: Iterable[str],
    kill: tuple[str, float, int],
    events: list[LogEvent],
) -> list[Check]:
    """The checks both runs share: failover of the killed node's tasks, repeated deliveries,
    node logs, API latency. ``kill``: what :func:`kill_busiest` returned."""
    victim, killed_at, kill_rev = kill
    moves = victim_moves(runs, active, victim, killed_at, kill_rev)
    return [
        *failover_checks(victim, moves),
        *repeat_checks(repeats(bench.deliveries, killed_at)),
        *log_checks(events, killed_at, victim),
        *api_checks(bench.prober.probes),
    ]
