"""Unit tests of the pure chaos checks (chaos/checks.py) on synthetic deliveries and ledgers."""

from __future__ import annotations

import json
import math

import pytest

from chaos.checks import (
    CheckParams,
    Delivery,
    FaultEvent,
    LedgerRecord,
    Report,
    evaluate,
    failover_times,
    parse_delivery,
    percentile,
    retried_lateness,
)
from peerd.core.ring import owner

T0_MS = 1_800_000_000_000
"""Slot 0 of every synthetic task, epoch ms (whole second)."""
T0_S = T0_MS / 1000


def d(
    task: str, slot: int, node: str, *, lag_s: float = 0.02, token: int = 0, attempt: int = 1
) -> Delivery:
    """A delivery of ``task`` slot ``slot`` (seconds after T0) received ``lag_s`` after it."""
    return Delivery(
        task, T0_MS + slot * 1000, T0_S + slot + lag_s, node, attempt, token or slot + 1
    )


def r(
    task: str, slot: int, node: str, *, status: str = "SUCCEEDED", token: int = 0, attempt: int = 1
) -> LedgerRecord:
    """A ledger record matching :func:`d` by default."""
    return LedgerRecord(task, T0_MS + slot * 1000, node, attempt, token or slot + 1, status, 0.02)


def steady(tasks: list[str], slots: range, node_of: dict[str, str]) -> tuple[list, list]:
    """Clean deliveries and ledger: every task fires every slot once on its node."""
    deliveries = [d(t, s, node_of[t]) for t in tasks for s in slots]
    ledger = [r(t, s, node_of[t]) for t in tasks for s in slots]
    return deliveries, ledger


def run(deliveries: list, ledger: list, faults: list | None = None, **kw: object) -> Report:
    """evaluate() with tasks a and b, both listed, the workload ending at slot 30."""
    tasks = kw.pop("tasks", ["a", "b"])
    listed = kw.pop("listed", tasks)
    params = kw.pop("params", CheckParams())
    assert not kw
    return evaluate(tasks, listed, deliveries, ledger, faults or [], T0_S + 30.5, params)  # type: ignore[arg-type]


def test_clean_run_has_no_violation() -> None:
    deliveries, ledger = steady(["a", "b"], range(31), {"a": "n1", "b": "n2"})
    rep = run(deliveries, ledger)
    assert rep.ok, rep.violations
    assert rep.deliveries == rep.ledger_records == 62
    assert (rep.duplicate_claims, rep.fenced_retries, rep.real_duplicates) == (0, 0, 0)
    assert (rep.early_fires, rep.missed_slots, rep.lost_tasks) == (0, 0, [])
    assert rep.lateness_s.p50 == pytest.approx(0.02)
    assert rep.runs_without_delivery == {}
    assert rep.deliveries_without_run == 0


def test_real_duplicate_same_claim_delivered_twice() -> None:
    deliveries, ledger = steady(["a", "b"], range(31), {"a": "n1", "b": "n2"})
    deliveries.append(d("a", 7, "n1", lag_s=0.5))  # same node, token and attempt again
    rep = run(deliveries, ledger)
    assert rep.duplicate_keys == 1
    assert rep.real_duplicates == 1
    assert rep.fenced_retries == 0
    assert rep.duplicate_claims == 0
    assert rep.violations == ["1 real duplicate deliver(y/ies)"]
    assert "REAL duplicate" in rep.duplicate_examples[0]


def test_fenced_retry_is_not_a_violation_whatever_arrives_first() -> None:
    deliveries, ledger = steady(["a", "b"], range(31), {"a": "n1", "b": "n2"})
    # n1 claimed slot 7 (token 8) and stalled; n2 retried it as attempt 2 with token 100, and
    # n1's stale request arrived after the retry.
    deliveries = [x for x in deliveries if not (x.task_id == "a" and x.slot_ms == T0_MS + 7000)]
    deliveries += [
        d("a", 7, "n2", lag_s=4.0, token=100, attempt=2),
        d("a", 7, "n1", lag_s=6.0, token=8, attempt=1),
    ]
    ledger = [x for x in ledger if not (x.task_id == "a" and x.slot_ms == T0_MS + 7000)]
    ledger.append(r("a", 7, "n2", token=100, attempt=2))
    rep = run(deliveries, ledger)
    assert rep.ok, rep.violations
    assert (rep.fenced_retries, rep.real_duplicates, rep.stale_after_retry) == (1, 0, 1)
    assert rep.duplicate_claims == 0


def test_two_nodes_same_attempt_is_a_duplicate_claim() -> None:
    deliveries, ledger = steady(["a", "b"], range(31), {"a": "n1", "b": "n2"})
    deliveries.append(d("a", 3, "n3", token=55))  # another claim of slot 3, attempt 1
    rep = run(deliveries, ledger)
    assert rep.duplicate_claims == 1
    assert "n1@4" in rep.duplicate_claim_examples[0] and "n3@55" in rep.duplicate_claim_examples[0]
    assert "1 duplicate claim(s)" in rep.violations


def test_delivery_disagreeing_with_ledger_is_a_duplicate_claim() -> None:
    deliveries, ledger = steady(["a"], range(31), {"a": "n1"})
    ledger = [x for x in ledger if x.slot_ms != T0_MS + 5000] + [r("a", 5, "n2", token=77)]
    rep = run(deliveries, ledger, tasks=["a"])
    assert rep.duplicate_claims == 1
    assert rep.real_duplicates == 0


def test_early_fire_beyond_tolerance_only() -> None:
    deliveries, ledger = steady(["a", "b"], range(31), {"a": "n1", "b": "n2"})
    deliveries = [x for x in deliveries if x.task_id != "a" or x.slot_ms not in (T0_MS + 4000,)]
    deliveries.append(d("a", 4, "n1", lag_s=-0.2))  # 200 ms early
    deliveries.append(d("b", 40, "n2", lag_s=-0.04))  # 40 ms early: within the 50 ms tolerance
    rep = run(deliveries, ledger)
    assert rep.early_fires == 1
    assert rep.early_examples == [f"a/{T0_MS + 4000} from n1: 0.200s early"]


def test_gap_counts_absent_slots_not_skipped_ones() -> None:
    deliveries, ledger = steady(["a", "b"], range(31), {"a": "n1", "b": "n2"})
    ledger = [
        x for x in ledger if not (x.task_id == "a" and 10 <= (x.slot_ms - T0_MS) // 1000 <= 12)
    ]
    ledger = [
        x
        if not (x.task_id == "b" and x.slot_ms == T0_MS + 20000)
        else r("b", 20, "n2", status="SKIPPED")
        for x in ledger
    ]
    rep = run(deliveries, ledger)
    assert rep.missed_slots == 3
    assert rep.tasks_with_gaps == 1
    assert rep.gap_examples == [f"a: 3 slot(s) missing after {T0_MS + 9000}"]
    assert rep.ledger_status == {"SKIPPED": 1, "SUCCEEDED": 58}


def test_lost_task_silent_at_the_end_or_missing_from_list() -> None:
    deliveries, ledger = steady(["a", "b", "c"], range(31), {"a": "n1", "b": "n2", "c": "n1"})
    deliveries = [x for x in deliveries if not (x.task_id == "b" and x.slot_ms >= T0_MS + 14000)]
    rep = run(deliveries, ledger, tasks=["a", "b", "c"], listed=["a", "b"])
    assert rep.lost_tasks == ["b", "c"]
    assert rep.lost_reasons["b"] == "no delivery in the last 15s"
    assert rep.lost_reasons["c"] == "missing from ListTasks"
    assert "2 task(s) lost" in rep.violations
    assert rep.runs_without_delivery == {"SUCCEEDED": 17}


def test_failover_time_per_victim_task() -> None:
    members = ("n1", "n2", "n3")
    tasks = [f"t{i}" for i in range(30)]
    node_of = {t: owner(t, members) or "" for t in tasks}
    victim = "n2"
    victim_tasks = [t for t in tasks if node_of[t] == victim]
    assert victim_tasks
    deliveries, ledger = steady(tasks, range(10), node_of)
    # n2 is killed at slot 10 + 0.3 s; from slot 14 its tasks fire on their next-ranked owner.
    after = {t: owner(t, [m for m in members if m != victim]) or "" for t in tasks}
    for s in range(10, 31):
        for t in tasks:
            if node_of[t] != victim:
                deliveries.append(d(t, s, node_of[t]))
                ledger.append(r(t, s, node_of[t]))
            elif s >= 14:
                deliveries.append(d(t, s, after[t], lag_s=0.1))
                ledger.append(r(t, s, after[t]))
            else:
                ledger.append(r(t, s, after[t], status="SKIPPED"))
    fault = FaultEvent("kill9", victim, T0_S + 10.3, T0_S + 17, members)
    times = failover_times(tasks, deliveries, fault, math.inf)
    assert times == pytest.approx([3.8] * len(victim_tasks))
    rep = run(deliveries, ledger, [fault], tasks=tasks, params=CheckParams(max_failover_p99_s=2.0))
    assert rep.failover["kill9"].tasks == len(victim_tasks)
    assert rep.failover["kill9"].seconds.p99 == pytest.approx(3.8)
    assert rep.failover_overall.seconds.max == pytest.approx(3.8)
    assert rep.violations == ["failover p99 3.80s above the 2s limit"]
    assert run(deliveries, ledger, [fault], tasks=tasks).ok


def test_claimed_slot_retried_after_the_lease_is_reported_apart() -> None:
    # n1 claimed slot 6 ahead (at 5.7 s) and is killed at 5.8 s; n2 fires slot 7 on time (the
    # failover time) but may retry slot 6 only once n1's lease is gone, 9 s late.
    deliveries, ledger = steady(["a"], range(6), {"a": "n1"})
    deliveries += [d("a", s, "n2") for s in range(7, 31)]
    deliveries.append(d("a", 6, "n2", lag_s=9.0, token=99, attempt=2))
    ledger += [r("a", s, "n2") for s in range(7, 31)]
    ledger.append(LedgerRecord("a", T0_MS + 6000, "n2", 2, 99, "SUCCEEDED", 9.0))
    fault = FaultEvent("kill9", "n1", T0_S + 5.8, T0_S + 19, ("n1",))  # n1 owned "a"
    assert retried_lateness(["a"], ledger, fault, math.inf) == [9.0]
    rep = run(deliveries, ledger, [fault], tasks=["a"])
    assert rep.failover["kill9"].seconds.max == pytest.approx(1.22)
    assert rep.failover["kill9"].retried_lateness_s.max == pytest.approx(9.0)
    assert rep.ok


def test_failover_not_observed_before_next_fault_is_inf() -> None:
    deliveries, ledger = steady(["a"], range(31), {"a": "n1"})
    kill = FaultEvent("kill9", "n1", T0_S + 5.5, T0_S + 9, ("n1",))
    nxt = FaultEvent("sigstop", "n1", T0_S + 20, T0_S + 25, ("n1",))
    rep = run(deliveries, ledger, [kill, nxt], tasks=["a"])
    assert rep.failover["kill9"].not_observed == 1
    assert rep.failover["kill9"].seconds.max == math.inf
    assert rep.to_json()["failover"]["kill9"]["seconds"]["max"] == "inf"


def test_handoff_counts_the_victim_itself_after_restart() -> None:
    deliveries, ledger = steady(["a"], range(31), {"a": "n1"})
    # n1 is SIGTERMed at slot 5 + 0.5 s and back before slot 6, which it fires itself.
    fault = FaultEvent("rolling_restart", "n1", T0_S + 5.5, T0_S + 5.9, ("n1",))
    assert failover_times(["a"], deliveries, fault, math.inf) == pytest.approx([0.52])
    rep = run(deliveries, ledger, [fault], tasks=["a"])
    assert rep.failover["rolling_restart"].seconds.max == pytest.approx(0.52)
    assert rep.failover_overall.faults == 0  # hand-offs are not kill-type faults
    assert rep.ok


def test_fault_errors_are_violations() -> None:
    deliveries, ledger = steady(["a"], range(31), {"a": "n1"})
    crash = FaultEvent("node_crash", "n2", T0_S + 3, ok=False, note="found dead with exit code 1")
    rep = run(deliveries, ledger, [crash], tasks=["a"])
    assert rep.faults == 0
    assert rep.violations == ["fault error: node_crash n2: found dead with exit code 1"]


def test_parse_delivery_reads_key_and_body() -> None:
    body = json.dumps(
        {"task_id": "x/y", "scheduled_at": "", "attempt": 2, "node_id": "n3", "fencing_token": 9}
    )
    got = parse_delivery(12.5, f"x/y/{T0_MS}", 7, body)
    assert got == Delivery("x/y", T0_MS, 12.5, "n3", 2, 9)
    assert parse_delivery(1.0, None, 7, body) is None
    assert parse_delivery(1.0, "nokey", 7, body) is None
    fallback = parse_delivery(1.0, f"a/{T0_MS}", 7, "not json")
    assert fallback == Delivery("a", T0_MS, 1.0, "", 1, 7)


def test_fault_event_json_round_trip() -> None:
    f = FaultEvent("sigstop", "n1", 1.0, 2.0, ("n1", "n2"), True, "x")
    assert FaultEvent.from_json(json.loads(json.dumps(f.to_json()))) == f


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_stuck_runs_reported_and_optionally_fatal() -> None:
    deliveries, ledger = steady(["a", "b"], range(31), {"a": "n1", "b": "n2"})
    # Slot 12 of a was claimed and never run; slot 30 of b is still in flight at the end.
    deliveries = [
        x
        for x in deliveries
        if (x.task_id, x.slot_ms) not in {("a", T0_MS + 12000), ("b", T0_MS + 30000)}
    ]
    ledger = [
        r(x.task_id, (x.slot_ms - T0_MS) // 1000, x.node_id, status="CLAIMED")
        if (x.task_id, x.slot_ms) in {("a", T0_MS + 12000), ("b", T0_MS + 30000)}
        else x
        for x in ledger
    ]
    rep = run(deliveries, ledger)
    assert rep.stuck_runs == 1  # b's slot 30 is within the 2 s grace before the end (30.5)
    assert rep.stuck_examples == [f"a/{T0_MS + 12000} CLAIMED by n1 attempt 1 token 13"]
    assert rep.runs_without_delivery == {"CLAIMED": 2}
    assert rep.ok
    strict = run(deliveries, ledger, params=CheckParams(fail_on_stuck_runs=True))
    assert strict.violations == ["1 run(s) stuck CLAIMED/RUNNING, never delivered"]


def test_table_renders_every_row() -> None:
    from chaos.report import format_table

    deliveries, ledger = steady(["a"], range(31), {"a": "n1"})
    kill = FaultEvent("kill9", "n1", T0_S + 5.5, T0_S + 9, ("n1",))
    rep = run(deliveries, ledger, [kill], tasks=["a"])
    meta = {
        "profile": "short", "seed": 1, "nodes": 3, "etcd_members": 1, "tasks": 1,
        "lease_ttl_s": 4, "netns": False, "wall_s": 80.0, "max_failover_p99_s": None,
    }  # fmt: skip
    table = format_table(rep, meta, [kill], {"n1": {"levels": {}, "events": {}, "tracebacks": 0}})
    for row in (
        "tasks lost",
        "duplicate claims",
        "fenced retries",
        "real duplicates",
        "early fires",
    ):
        assert row in table
    assert "failover kill9 s p50/p99/max" in table and "1 never moved" in table
    assert table.endswith("RESULT: PASS")
