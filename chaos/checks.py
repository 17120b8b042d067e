"""The invariant checks of a chaos run: pure functions of deliveries, ledger and fault log.

Nothing here talks to a process, a socket or the clock: :func:`evaluate` takes what the sink
received (:class:`Delivery`), what the run ledger holds (:class:`LedgerRecord`), what the fault
injector did (:class:`FaultEvent`) and the task ids, and returns a :class:`Report`. The unit tests
in ``tests/chaos/test_checks.py`` feed it synthetic data.

Definitions (a *slot* is one scheduled instant of one task, keyed ``<task_id>/<slot epoch ms>``):

* **lost task**: created, but missing from ListTasks, or no delivery received in the last
  ``lost_window_s`` seconds before the workload ended;
* **duplicate claim**: a slot claimed more than once for the same attempt -- deliveries and ledger
  records of the slot name two different nodes, or two different fencing tokens;
* **duplicate delivery**: a key delivered more than once. Deliveries are grouped by claim
  (attempt, fencing token); each claim after the first, in (attempt, token) order, is a **fenced
  retry** (a target that keeps the highest token per key can reject the stale one, whichever
  arrives first); a claim delivered more than once is a **real duplicate**;
* **early fire**: a delivery received before its slot minus ``early_tolerance_s``;
* **missed slot**: a slot absent from the ledger between a task's first and last ledger slot
  (a SKIPPED record is present, not missed);
* **stuck run**: a ledger record still CLAIMED or RUNNING at the end whose key never reached the
  sink (claimed, then neither run, nor retried, nor marked LOST); slots in the last
  ``stuck_grace_s`` before the workload stopped are not counted;
* **failover time** (kill-type faults): for each task the victim owned at fault time
  (:func:`peerd.core.ring.owner` over the live members then), seconds from the fault to the first
  delivery of that task by another node, looked for until the next fault starts; for a rolling
  restart (hand-off), to the first delivery by any node of a slot after the fault. Reported
  with it: the lateness of the victim's slots that another node ran as a retry (claimed by the
  victim before the fault, taken over once its lease was gone).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from chaos.model import (
    CheckParams,
    Delivery,
    FailoverStats,
    FaultEvent,
    LedgerRecord,
    Report,
    Stats,
    parse_delivery,
    percentile,
)
from peerd.core.ring import owner

__all__ = [
    "HANDOFF_FAULTS",
    "KILL_FAULTS",
    "CheckParams",
    "Delivery",
    "FailoverStats",
    "FaultEvent",
    "LedgerRecord",
    "Report",
    "Stats",
    "evaluate",
    "failover_times",
    "parse_delivery",
    "percentile",
    "retried_lateness",
]

KILL_FAULTS: tuple[str, ...] = ("kill9", "sigstop", "partition_node_etcd")
"""Faults after which the victim's tasks must move: their failover times make the overall figure
(and are held against ``max_failover_p99_s``)."""
HANDOFF_FAULTS: tuple[str, ...] = ("rolling_restart",)
"""Faults whose hand-off time is reported too, but not counted in the overall failover figure."""
EXAMPLES = 5
"""How many examples of each violation the report keeps."""


def evaluate(
    task_ids: Sequence[str],
    listed_task_ids: Iterable[str],
    deliveries: Sequence[Delivery],
    ledger: Sequence[LedgerRecord],
    faults: Sequence[FaultEvent],
    workload_end_s: float,
    params: CheckParams | None = None,
) -> Report:
    """Run every check.

    Args:
        task_ids: the tasks the workload created.
        listed_task_ids: what ListTasks returned at the end.
        deliveries: every keyed delivery the sink recorded.
        ledger: every run record of every task.
        faults: the fault log, in injection order.
        workload_end_s: epoch seconds when the workload was stopped (the lost-task window ends
            here).
        params: thresholds; defaults as in :class:`CheckParams`.
    """
    p = params or CheckParams()
    rep = Report(tasks=len(task_ids), deliveries=len(deliveries), ledger_records=len(ledger))
    rep.faults = sum(1 for f in faults if f.kind != "node_crash")
    _check_lost(rep, task_ids, set(listed_task_ids), deliveries, workload_end_s, p)
    _check_duplicate_claims(rep, deliveries, ledger)
    _check_duplicate_deliveries(rep, deliveries)
    _check_early(rep, deliveries, p)
    _check_gaps(rep, ledger, p)
    _check_failover(rep, task_ids, deliveries, faults, ledger)
    _check_lateness_and_runs(rep, deliveries, ledger)
    _check_stuck(rep, deliveries, ledger, workload_end_s, p)
    rep.fault_errors = [f"{f.kind} {f.target}: {f.note or 'failed'}" for f in faults if not f.ok]
    _violations(rep, p)
    return rep


def _check_lost(
    rep: Report,
    task_ids: Sequence[str],
    listed: set[str],
    deliveries: Sequence[Delivery],
    end_s: float,
    p: CheckParams,
) -> None:
    recent = {d.task_id for d in deliveries if end_s - p.lost_window_s <= d.received_at_s <= end_s}
    for tid in task_ids:
        if tid not in listed:
            rep.lost_reasons[tid] = "missing from ListTasks"
        elif tid not in recent:
            rep.lost_reasons[tid] = f"no delivery in the last {p.lost_window_s:g}s"
    rep.lost_tasks = sorted(rep.lost_reasons)


def _check_duplicate_claims(
    rep: Report, deliveries: Sequence[Delivery], ledger: Sequence[LedgerRecord]
) -> None:
    claims: dict[tuple[str, int, int], set[tuple[str, int]]] = defaultdict(set)
    for d in deliveries:
        claims[(d.task_id, d.slot_ms, d.attempt)].add((d.node_id, d.fencing_token))
    for r in ledger:
        claims[(r.task_id, r.slot_ms, r.attempt)].add((r.node_id, r.fencing_token))
    for (task_id, slot_ms, attempt), seen in sorted(claims.items()):
        nodes = {n for n, _ in seen}
        tokens = {t for _, t in seen}
        if len(nodes) > 1 or len(tokens) > 1:
            rep.duplicate_claims += 1
            if len(rep.duplicate_claim_examples) < EXAMPLES:
                detail = ", ".join(f"{n}@{t}" for n, t in sorted(seen))
                rep.duplicate_claim_examples.append(
                    f"{task_id}/{slot_ms} attempt {attempt}: {detail}"
                )


def _check_duplicate_deliveries(rep: Report, deliveries: Sequence[Delivery]) -> None:
    by_key: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        by_key[d.key].append(d)
    for key, ds in sorted(by_key.items()):
        if len(ds) < 2:
            continue
        rep.duplicate_keys += 1
        # One group per claim; claims ordered by (attempt, token): the first is the original,
        # every later one a retry under a higher token or attempt, whenever it arrived.
        claims: dict[tuple[int, int], list[Delivery]] = defaultdict(list)
        for d in ds:
            claims[(d.attempt, d.fencing_token)].append(d)
        retries = len(claims) - 1
        repeats = sum(len(group) - 1 for group in claims.values())
        rep.fenced_retries += retries
        rep.real_duplicates += repeats
        ordered = sorted(claims)
        first_seen = [min(x.received_at_s for x in claims[c]) for c in ordered]
        if any(a > b for a, b in itertools.pairwise(first_seen)):
            rep.stale_after_retry += 1
        if len(rep.duplicate_examples) < EXAMPLES:
            kind = "REAL duplicate" if repeats else "fenced retry"
            sent = "; ".join(
                f"{x.node_id} token {x.fencing_token} attempt {x.attempt} "
                f"at +{x.received_at_s - x.slot_ms / 1000:.3f}s"
                for x in sorted(ds, key=lambda d: d.received_at_s)
            )
            rep.duplicate_examples.append(f"{key} ({kind}): {sent}")


def _check_early(rep: Report, deliveries: Sequence[Delivery], p: CheckParams) -> None:
    for d in sorted(deliveries, key=lambda d: d.received_at_s):
        early_s = d.slot_ms / 1000 - d.received_at_s
        if early_s > p.early_tolerance_s:
            rep.early_fires += 1
            if len(rep.early_examples) < EXAMPLES:
                rep.early_examples.append(f"{d.key} from {d.node_id}: {early_s:.3f}s early")


def _check_gaps(rep: Report, ledger: Sequence[LedgerRecord], p: CheckParams) -> None:
    slots: dict[str, set[int]] = defaultdict(set)
    for r in ledger:
        if not r.manual:
            slots[r.task_id].add(r.slot_ms)
    for task_id in sorted(slots):
        ordered = sorted(slots[task_id])
        missing = 0
        for a, b in itertools.pairwise(ordered):
            gap = round((b - a) / p.interval_ms) - 1
            if gap > 0:
                missing += gap
                if len(rep.gap_examples) < EXAMPLES:
                    rep.gap_examples.append(f"{task_id}: {gap} slot(s) missing after {a}")
        if missing:
            rep.missed_slots += missing
            rep.tasks_with_gaps += 1


def failover_times(
    task_ids: Sequence[str],
    deliveries: Sequence[Delivery],
    fault: FaultEvent,
    until_s: float,
) -> list[float]:
    """Per task the victim owned at fault time, seconds from the fault to its next fire
    (``inf`` when none came before ``until_s``).

    For a kill-type fault the next fire is the first delivery *by another node*. For a hand-off
    fault (SIGTERM and restart) it is the first delivery, by any node, of a slot scheduled after
    the fault: the victim may well be back before anyone else had to fire the task.
    """
    victim = fault.target
    members = fault.members or (victim,)
    owned = {t for t in task_ids if owner(t, members) == victim}
    handoff = fault.kind in HANDOFF_FAULTS
    first: dict[str, float] = {}
    for d in deliveries:
        if d.task_id not in owned or not fault.at_s < d.received_at_s < until_s:
            continue
        if handoff and d.slot_ms / 1000 < fault.at_s:
            continue
        if not handoff and d.node_id == victim:
            continue
        if d.received_at_s < first.get(d.task_id, math.inf):
            first[d.task_id] = d.received_at_s
    return [first.get(t, math.inf) - fault.at_s for t in sorted(owned)]


def retried_lateness(
    task_ids: Sequence[str], ledger: Sequence[LedgerRecord], fault: FaultEvent, until_s: float
) -> list[float]:
    """Lateness (seconds) of each slot of a task the victim owned at fault time, due from one
    second before the fault until ``until_s``, that another node ran as a retry (attempt > 1).

    Such a slot was claimed by the victim before the fault (claimed ahead of its time, or in
    flight); another node may take it over only once the victim's lease is gone
    (:meth:`peerd.coord.ledger.Ledger.take_over`), so after a kill -9 it runs about one lease
    TTL late, while the task's later slots move within the failover time.
    """
    members = fault.members or (fault.target,)
    owned = {t for t in task_ids if owner(t, members) == fault.target}
    return sorted(
        r.lateness_s
        for r in ledger
        if r.task_id in owned
        and r.attempt > 1
        and r.node_id != fault.target
        and r.lateness_s is not None
        and fault.at_s - 1 <= r.slot_ms / 1000 < until_s
    )


def _check_failover(
    rep: Report,
    task_ids: Sequence[str],
    deliveries: Sequence[Delivery],
    faults: Sequence[FaultEvent],
    ledger: Sequence[LedgerRecord] = (),
) -> None:
    starts = sorted(f.at_s for f in faults if f.kind != "node_crash")
    samples: dict[str, list[float]] = defaultdict(list)
    retried: dict[str, list[float]] = defaultdict(list)
    counts: Counter[str] = Counter()
    for f in faults:
        if f.kind not in KILL_FAULTS + HANDOFF_FAULTS:
            continue
        until_s = min((s for s in starts if s > f.at_s), default=math.inf)
        samples[f.kind].extend(failover_times(task_ids, deliveries, f, until_s))
        if f.kind in KILL_FAULTS:
            retried[f.kind].extend(retried_lateness(task_ids, ledger, f, until_s))
        counts[f.kind] += 1
    overall: list[float] = []
    for kind in KILL_FAULTS + HANDOFF_FAULTS:
        if not counts[kind]:
            continue
        values = samples[kind]
        rep.failover[kind] = FailoverStats(
            faults=counts[kind],
            tasks=len(values),
            not_observed=sum(1 for v in values if math.isinf(v)),
            seconds=Stats.of(values),
            retried_lateness_s=Stats.of(retried[kind]),
        )
        if kind in KILL_FAULTS:
            overall.extend(values)
    rep.failover_overall = FailoverStats(
        faults=sum(counts[k] for k in KILL_FAULTS),
        tasks=len(overall),
        not_observed=sum(1 for v in overall if math.isinf(v)),
        seconds=Stats.of(overall),
    )


def _check_lateness_and_runs(
    rep: Report, deliveries: Sequence[Delivery], ledger: Sequence[LedgerRecord]
) -> None:
    rep.lateness_s = Stats.of(
        [r.lateness_s for r in ledger if r.lateness_s is not None and r.status != "SKIPPED"]
    )
    rep.delivery_lag_s = Stats.of([d.received_at_s - d.slot_ms / 1000 for d in deliveries])
    rep.ledger_status = dict(sorted(Counter(r.status for r in ledger).items()))
    delivered = {d.key for d in deliveries}
    recorded = {f"{r.task_id}/{r.slot_ms}" for r in ledger}
    rep.runs_without_delivery = dict(
        sorted(
            Counter(
                r.status
                for r in ledger
                if r.status != "SKIPPED" and f"{r.task_id}/{r.slot_ms}" not in delivered
            ).items()
        )
    )
    rep.deliveries_without_run = len(delivered - recorded)


def _check_stuck(
    rep: Report,
    deliveries: Sequence[Delivery],
    ledger: Sequence[LedgerRecord],
    end_s: float,
    p: CheckParams,
) -> None:
    delivered = {d.key for d in deliveries}
    for rec in sorted(ledger, key=lambda x: (x.slot_ms, x.task_id)):
        key = f"{rec.task_id}/{rec.slot_ms}"
        if (
            rec.status in ("CLAIMED", "RUNNING")
            and key not in delivered
            and rec.slot_ms / 1000 < end_s - p.stuck_grace_s
        ):
            rep.stuck_runs += 1
            if len(rep.stuck_examples) < EXAMPLES:
                rep.stuck_examples.append(
                    f"{key} {rec.status} by {rec.node_id} attempt {rec.attempt} "
                    f"token {rec.fencing_token}"
                )


def _violations(rep: Report, p: CheckParams) -> None:
    v = rep.violations
    if rep.lost_tasks:
        v.append(f"{len(rep.lost_tasks)} task(s) lost")
    if rep.duplicate_claims:
        v.append(f"{rep.duplicate_claims} duplicate claim(s)")
    if rep.real_duplicates:
        v.append(f"{rep.real_duplicates} real duplicate deliver(y/ies)")
    if rep.early_fires:
        v.append(f"{rep.early_fires} early fire(s)")
    if rep.missed_slots:
        v.append(f"{rep.missed_slots} slot(s) missed after catch-up")
    if p.fail_on_stuck_runs and rep.stuck_runs:
        v.append(f"{rep.stuck_runs} run(s) stuck CLAIMED/RUNNING, never delivered")
    p99 = rep.failover_overall.seconds.p99
    if p.max_failover_p99_s is not None and p99 is not None and p99 > p.max_failover_p99_s:
        v.append(f"failover p99 {p99:.2f}s above the {p.max_failover_p99_s:g}s limit")
    for err in rep.fault_errors:
        v.append(f"fault error: {err}")
