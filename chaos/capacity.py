"""``python -m chaos --measure-capacity``: the capacity of the chaos set-up itself, no faults.

The long profile's cluster (3 etcd members, network namespaces when root, the webhook sink in the
harness process, lease TTL 10 s) has less capacity than ``bench/throughput.py``'s set-up (1 etcd
member, nginx), so "50 % of capacity" for the long profile must be measured in this set-up. The
ramp starts the same cluster with :meth:`chaos.runner.Runner.setup`, creates ``start`` tasks
(``@every 1s`` HTTP POST to the sink), adds ``step`` tasks every ``step_s`` seconds and judges
each step on a window of slots that leaves out the step's first ``settle_s`` seconds (the new
tasks' first fires) and its last :data:`TAIL_S` seconds (deliveries still under way).

A step is **sustained** when, over the slots due in its window:

* at least ``min_delivered_share`` of them reached the sink by the step's end (a slot late by more
  than :data:`TAIL_S` or SKIPPED counts as not delivered),
* the delivery lag (``received_at - slot``) p99 is at most ``max_lag_p99_s``,
* no node logged ``node_saturated`` (its planner had a backlog) during the window.

The capacity is the largest task count (= fires/s) of a sustained step before the first step that
is not; the ramp stops at that first failed step. The judging is a pure function
(:func:`judge_step`), unit-tested in ``tests/chaos/test_capacity.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from chaos import workload
from chaos.cluster import HARNESS_ERRORS
from chaos.model import percentile
from chaos.profiles import RunConfig
from chaos.runner import (
    EXIT_HARNESS,
    EXIT_PASS,
    EXIT_VIOLATION,
    FIRST_FIRE_TIMEOUT_S,
    Interrupted,
    Runner,
    install_signal_handlers,
    restore_signal_handlers,
)

TAIL_S = 2.0
"""Slots of a step's last seconds are left out: their deliveries may still be under way when the
step is judged (a slot later than this fails the lag bound anyway)."""
SATURATED_EVENT = "node_saturated"


@dataclass(frozen=True)
class RampParams:
    """How the ramp runs and what a sustained step is.

    Attributes:
        start: tasks of the first step (fires/s).
        step: tasks added per step.
        step_s: seconds per step.
        settle_s: seconds at the start of a step left out of its window.
        max_tasks: no step beyond this many tasks.
        max_lag_p99_s: delivery lag p99 bound of a sustained step (seconds).
        min_delivered_share: share of the window's slots that must reach the sink.
    """

    start: int = 50
    step: int = 25
    step_s: float = 15.0
    settle_s: float = 5.0
    max_tasks: int = 1000
    max_lag_p99_s: float = 0.5
    min_delivered_share: float = 0.99

    def __post_init__(self) -> None:
        if self.start < 1 or self.step < 1:
            raise ValueError("ramp start and step must be at least 1 task")
        if self.step_s < self.settle_s + TAIL_S + 3:
            raise ValueError(
                f"step_s must be at least settle_s + {TAIL_S + 3:g} s (a window of >= 3 slots)"
            )


@dataclass(frozen=True)
class StepResult:
    """One judged step: slots due in ``[window_start_s, window_end_s)`` (epoch seconds)."""

    tasks: int
    window_start_s: float
    window_end_s: float
    expected: int
    delivered: int
    lag_p50_s: float | None
    lag_p99_s: float | None
    saturated: int
    reasons: list[str] = field(default_factory=list)
    nodes_cpu: float | None = None
    """Cores the nodes used on average over the step (``/proc``; None when unreadable)."""

    @property
    def sustained(self) -> bool:
        """No reason against it."""
        return not self.reasons


def judge_step(
    task_ids: Sequence[str],
    deliveries: Iterable[tuple[str, float]],
    window_start_s: float,
    window_end_s: float,
    saturated_at_s: Iterable[float],
    params: RampParams,
) -> StepResult:
    """Judge one step of the ramp (pure: no I/O, no clock).

    Args:
        task_ids: the tasks that existed during the whole window.
        deliveries: ``(idempotency key, received_at epoch s)`` of everything the sink received
            (keys ``<task_id>/<slot epoch ms>``; other keys are ignored).
        window_start_s, window_end_s: slots due in ``[start, end)`` are judged; ``@every 1s``
            slots fall on whole seconds.
        saturated_at_s: epoch seconds of every ``node_saturated`` log line of any node.
        params: the bounds.
    """
    wanted = set(task_ids)
    first_s = int(window_start_s) + (window_start_s % 1 > 0)
    seconds = range(first_s, int(window_end_s) + (window_end_s % 1 > 0))
    expected = len(wanted) * len(seconds)
    lo_ms, hi_ms = first_s * 1000, window_end_s * 1000
    first_seen: dict[str, float] = {}
    for key, received_at_s in deliveries:
        task_id, _, slot = key.rpartition("/")
        if task_id not in wanted or not slot.isdigit() or not lo_ms <= int(slot) < hi_ms:
            continue
        if received_at_s < first_seen.get(key, float("inf")):
            first_seen[key] = received_at_s
    lags = [at - int(key.rpartition("/")[2]) / 1000 for key, at in first_seen.items()]
    saturated = sum(1 for t in saturated_at_s if window_start_s <= t < window_end_s)
    p50 = percentile(lags, 0.5) if lags else None
    p99 = percentile(lags, 0.99) if lags else None
    reasons = []
    if expected and len(first_seen) < params.min_delivered_share * expected:
        reasons.append(f"delivered {len(first_seen)}/{expected}")
    if p99 is None or p99 > params.max_lag_p99_s:
        reasons.append("no deliveries" if p99 is None else f"lag p99 {p99:.2f}s")
    if saturated:
        reasons.append(f"{SATURATED_EVENT} x{saturated}")
    return StepResult(
        tasks=len(wanted),
        window_start_s=window_start_s,
        window_end_s=window_end_s,
        expected=expected,
        delivered=len(first_seen),
        lag_p50_s=p50,
        lag_p99_s=p99,
        saturated=saturated,
        reasons=reasons,
    )


def capacity_of(steps: Sequence[StepResult]) -> int:
    """Tasks of the last sustained step before the first one that was not (0: none was)."""
    best = 0
    for s in steps:
        if not s.sustained:
            break
        best = s.tasks
    return best


def saturation_times(log_paths: Iterable[Path]) -> list[float]:
    """Epoch seconds of every ``node_saturated`` line in the given JSON node logs."""
    out = []
    for path in log_paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if SATURATED_EVENT not in line:
                continue
            try:
                doc = json.loads(line)
                if doc.get("event") == SATURATED_EVENT:
                    ts = str(doc["timestamp"]).replace("Z", "+00:00")
                    out.append(datetime.fromisoformat(ts).timestamp())
            except (ValueError, KeyError, TypeError):
                continue
    return out


def _cpu_s(pids: Iterable[int | None]) -> float | None:
    """User + system CPU seconds of the given processes (``/proc/<pid>/stat``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        if pid is None:
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def format_steps(steps: Sequence[StepResult], params: RampParams, capacity: int) -> str:
    """The ramp as a table, with the capacity line under it."""
    lines = [
        f"{'tasks':>6} {'slots':>7} {'delivered':>9} {'lag p50 ms':>10} {'lag p99 ms':>10} "
        f"{'saturated':>9} {'nodes CPU':>9}  result",
    ]
    for s in steps:
        p50 = "-" if s.lag_p50_s is None else f"{s.lag_p50_s * 1000:.0f}"
        p99 = "-" if s.lag_p99_s is None else f"{s.lag_p99_s * 1000:.0f}"
        cpu = "-" if s.nodes_cpu is None else f"{s.nodes_cpu:.2f}"
        verdict = "sustained" if s.sustained else "NOT sustained: " + ", ".join(s.reasons)
        lines.append(
            f"{s.tasks:>6} {s.expected:>7} {s.delivered:>9} {p50:>10} {p99:>10} "
            f"{s.saturated:>9} {cpu:>9}  {verdict}"
        )
    lines.append(
        f"capacity: {capacity} tasks @every 1s = {capacity} fires/s sustained "
        f"(delivered >= {params.min_delivered_share:.0%}, delivery lag p99 <= "
        f"{params.max_lag_p99_s * 1000:.0f} ms, no {SATURATED_EVENT}; {params.step_s:g} s steps, "
        f"first {params.settle_s:g} s of each left out); 50 % = {capacity // 2} tasks"
    )
    return "\n".join(lines)


def run_ramp(runner: Runner, params: RampParams) -> list[StepResult]:
    """Drive the ramp on a set-up :class:`chaos.runner.Runner` (its nodes SERVING): create tasks
    step by step, judge each step, stop at the first step not sustained. Returns the steps.

    Raises:
        ChaosError: tasks could not be created, or the first ones never fired.
    """
    assert runner.sink is not None
    sink = runner.sink
    steps: list[StepResult] = []
    ids: list[str] = []
    tasks = params.start
    while tasks <= params.max_tasks:
        new = workload.task_ids(tasks)[len(ids) :]
        workload.create_tasks(runner.addresses(), new, sink.url)
        if not ids:
            workload.wait_all_fired(sink, new, FIRST_FIRE_TIMEOUT_S)
        ids.extend(new)
        start_s = time.time()
        cpu0 = _cpu_s(n.pid for n in runner.nodes)
        time.sleep(params.step_s)
        cpu1 = _cpu_s(n.pid for n in runner.nodes)
        end_s = time.time()
        seen = [(d.idempotency_key, d.received_at) for d in sink.deliveries() if d.idempotency_key]
        step = judge_step(
            ids,
            seen,
            start_s + params.settle_s,
            end_s - TAIL_S,
            saturation_times(n.log_path for n in runner.nodes),
            params,
        )
        if cpu0 is not None and cpu1 is not None:
            step = StepResult(**{**asdict(step), "nodes_cpu": (cpu1 - cpu0) / (end_s - start_s)})
        steps.append(step)
        verdict = "sustained" if step.sustained else "not sustained: " + ", ".join(step.reasons)
        runner.say(
            f"ramp {tasks} tasks: {step.delivered}/{step.expected} delivered, lag p99 "
            f"{(step.lag_p99_s or 0) * 1000:.0f} ms, {verdict}"
        )
        if not step.sustained:
            break
        tasks += params.step
    return steps


def measure(cfg: RunConfig, params: RampParams) -> int:
    """Set up the cluster of ``cfg`` (no faults), run the ramp, write ``capacity.txt`` and
    ``capacity.json`` to the workdir, clean up.

    Returns:
        The exit code: 0 a capacity was measured, 1 not even the first step was sustained,
        2 the harness could not finish.
    """
    runner = Runner(cfg)
    previous = install_signal_handlers()
    try:
        runner.setup()
        netns = runner.lab is not None
        members = runner.etcd.members if runner.etcd is not None else cfg.etcd_members
        steps = run_ramp(runner, params)
    except (*HARNESS_ERRORS, Interrupted) as exc:
        runner.say(f"ramp aborted: {type(exc).__name__}: {exc}")
        return EXIT_HARNESS
    finally:
        runner.cleanup()
        restore_signal_handlers(previous)
    capacity = capacity_of(steps)
    header = (
        f"peerd chaos capacity: {cfg.nodes} nodes, etcd {members} member(s), "
        f"netns {'on' if netns else 'off'}, lease TTL {cfg.lease_ttl_s}s"
    )
    text = header + "\n" + format_steps(steps, params, capacity)
    (cfg.workdir / "capacity.txt").write_text(text + "\n", encoding="utf-8")
    doc = {"params": asdict(params), "capacity": capacity, "steps": [asdict(s) for s in steps]}
    (cfg.workdir / "capacity.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(text, flush=True)
    return EXIT_PASS if capacity else EXIT_VIOLATION


__all__ = [
    "RampParams",
    "StepResult",
    "capacity_of",
    "format_steps",
    "judge_step",
    "measure",
    "run_ramp",
    "saturation_times",
]
