"""The capacity ramp's judging (chaos/capacity.py): pure functions on synthetic deliveries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.capacity import RampParams, StepResult, capacity_of, judge_step, saturation_times

T0 = 1_800_000_000.0
PARAMS = RampParams(max_lag_p99_s=0.5, min_delivered_share=0.99)


def _on_time(task_ids: list[str], seconds: range, lag_s: float) -> list[tuple[str, float]]:
    return [(f"{t}/{int(T0 + s) * 1000}", T0 + s + lag_s) for t in task_ids for s in seconds]


def test_every_slot_on_time_is_sustained() -> None:
    ids = ["a", "b"]
    step = judge_step(ids, _on_time(ids, range(0, 20), 0.05), T0 + 5, T0 + 15, [], PARAMS)
    assert (step.expected, step.delivered, step.sustained) == (20, 20, True)
    assert step.lag_p99_s == pytest.approx(0.05)


def test_window_bounds_count_whole_seconds_only() -> None:
    ids = ["a"]
    step = judge_step(ids, _on_time(ids, range(0, 20), 0.0), T0 + 4.5, T0 + 7.5, [], PARAMS)
    assert (step.expected, step.delivered) == (3, 3)  # slots +5, +6, +7


def test_missing_slots_fail_the_step() -> None:
    ids = ["a", "b"]
    seen = [d for d in _on_time(ids, range(0, 20), 0.05) if not d[0].startswith("b/")]
    step = judge_step(ids, seen, T0 + 5, T0 + 15, [], PARAMS)
    assert not step.sustained
    assert step.reasons == ["delivered 10/20"]


def test_late_deliveries_fail_the_step_and_count_once_per_key() -> None:
    ids = ["a"]
    seen = _on_time(ids, range(0, 20), 0.9) + _on_time(ids, range(0, 20), 3.0)  # a retry, later
    step = judge_step(ids, seen, T0 + 5, T0 + 15, [], PARAMS)
    assert step.delivered == 10
    assert step.reasons == ["lag p99 0.90s"]


def test_saturation_inside_the_window_fails_the_step() -> None:
    ids = ["a"]
    seen = _on_time(ids, range(0, 20), 0.01)
    outside = judge_step(ids, seen, T0 + 5, T0 + 15, [T0 + 1, T0 + 16], PARAMS)
    inside = judge_step(ids, seen, T0 + 5, T0 + 15, [T0 + 9], PARAMS)
    assert outside.sustained
    assert inside.reasons == ["node_saturated x1"]


def test_capacity_is_the_last_step_before_the_first_failure() -> None:
    def step(tasks: int, ok: bool) -> StepResult:
        return StepResult(tasks, 0, 1, 1, 1, 0, 0, 0, [] if ok else ["x"])

    assert capacity_of([step(50, True), step(75, True), step(100, False), step(125, True)]) == 75
    assert capacity_of([step(50, False)]) == 0


def test_saturation_times_reads_json_node_logs(tmp_path: Path) -> None:
    log = tmp_path / "n1.log"
    lines = [
        json.dumps({"event": "node_saturated", "timestamp": "2026-11-30T16:34:41.500000Z"}),
        json.dumps({"event": "node_saturation_cleared", "timestamp": "2026-11-30T16:34:42Z"}),
        "--- chaos: starting node_saturated banner",
    ]
    log.write_text("\n".join(lines) + "\n")
    assert saturation_times([log, tmp_path / "missing.log"]) == [1796056481.5]


def test_ramp_params_refuse_a_step_too_short_for_a_window() -> None:
    with pytest.raises(ValueError, match="step_s"):
        RampParams(step_s=8.0, settle_s=5.0)


def test_lag_percentiles_are_nearest_rank_not_the_max() -> None:
    ids = [f"t{i:03d}" for i in range(200)]
    seen = _on_time(ids, range(5, 6), 0.01)  # 200 slots due at +5
    seen[0] = (seen[0][0], seen[0][1] + 5.0)  # one slot 5 s late
    step = judge_step(ids, seen, T0 + 5, T0 + 6, [], PARAMS)
    assert step.lag_p50_s == pytest.approx(0.01)
    assert step.lag_p99_s == pytest.approx(0.01)  # 1 of 200 is beyond the 99th percentile
    assert step.sustained


def test_no_delivery_at_all_fails_the_step() -> None:
    step = judge_step(["a"], [], T0 + 5, T0 + 15, [], PARAMS)
    assert (step.lag_p99_s, step.delivered) == (None, 0)
    assert step.reasons == ["delivered 0/10", "no deliveries"]
