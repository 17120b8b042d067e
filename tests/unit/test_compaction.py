"""The pure compaction decisions (peerd.core.compaction), driven by a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from peerd.clock import FakeClock
from peerd.core.compaction import (
    MAX_GAP_S,
    MIN_GAP_S,
    STABLE_S,
    CompactionPlan,
    RecoveryBackoff,
    defragment_order,
    recovery_node,
)

MINUTE = timedelta(minutes=1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, tzinfo=UTC))


def drive(plan: CompactionPlan, clock: FakeClock, revisions: list[int]) -> list[int | None]:
    """Sample each revision when the plan says a sample is due; the targets it returns."""
    targets = []
    for revision in revisions:
        clock.advance(plan.seconds_until_due(clock.monotonic()))
        target = plan.sample(clock.monotonic(), revision)
        if target is not None:
            plan.compacted_to(target)
        targets.append(target)
    return targets


def test_compacts_to_the_revision_one_interval_old_like_kube_apiserver(clock: FakeClock) -> None:
    plan = CompactionPlan(5 * MINUTE, 5 * MINUTE)
    assert drive(plan, clock, [100, 250, 400, 420]) == [None, 100, 250, 400]


def test_retention_longer_than_interval_keeps_that_much_history(clock: FakeClock) -> None:
    plan = CompactionPlan(5 * MINUTE, 12 * MINUTE)
    # samples at 0, 5, 10, 15, 20, 25 min: the target is the newest sample >= 12 min old
    targets = drive(plan, clock, [10, 20, 30, 40, 50, 60])
    assert targets == [None, None, None, 10, 20, 30]


def test_history_kept_is_between_retention_and_retention_plus_interval(clock: FakeClock) -> None:
    plan = CompactionPlan(timedelta(seconds=7), timedelta(seconds=20))
    seen_at: dict[int, float] = {}
    for revision in range(1, 60):
        clock.advance(plan.seconds_until_due(clock.monotonic()))
        now = clock.monotonic()
        seen_at[revision] = now
        target = plan.sample(now, revision)
        if target is not None:
            age = now - seen_at[target]
            assert 20 <= age < 27, (revision, target, age)
            plan.compacted_to(target)
    assert plan.compacted > 40


def test_an_early_sample_is_not_compacted_before_its_time(clock: FakeClock) -> None:
    plan = CompactionPlan(MINUTE, 5 * MINUTE)
    assert plan.sample(clock.monotonic(), 7) is None
    clock.advance(timedelta(minutes=4, seconds=59))
    assert plan.sample(clock.monotonic(), 8) is None
    clock.advance(timedelta(seconds=1))
    assert plan.sample(clock.monotonic(), 9) == 7


def test_no_target_at_or_below_what_is_already_compacted(clock: FakeClock) -> None:
    plan = CompactionPlan(MINUTE, MINUTE)
    plan.sample(clock.monotonic(), 50)
    plan.compacted_to(80)  # e.g. a NOSPACE recovery compacted to the current revision
    assert plan.samples == []
    clock.advance(MINUTE)
    assert plan.sample(clock.monotonic(), 90) is None
    clock.advance(MINUTE)
    assert plan.sample(clock.monotonic(), 95) == 90


def test_compacted_to_never_goes_backwards(clock: FakeClock) -> None:
    plan = CompactionPlan(MINUTE, MINUTE)
    plan.compacted_to(100)
    plan.compacted_to(40)
    assert plan.compacted == 100


def test_due_timing_and_reset(clock: FakeClock) -> None:
    plan = CompactionPlan(MINUTE, MINUTE)
    assert plan.seconds_until_due(clock.monotonic()) == 0
    plan.sample(clock.monotonic(), 1)
    assert plan.seconds_until_due(clock.monotonic()) == 60
    clock.advance(45)
    assert plan.seconds_until_due(clock.monotonic()) == 15
    plan.reset()
    assert (plan.samples, plan.compacted, plan.seconds_until_due(clock.monotonic())) == ([], 0, 0)


@pytest.mark.parametrize(
    ("interval", "retention"), [(timedelta(0), MINUTE), (-MINUTE, MINUTE), (MINUTE, -MINUTE)]
)
def test_plan_rejects_bad_durations(interval: timedelta, retention: timedelta) -> None:
    with pytest.raises(ValueError, match="need interval > 0 and retention >= 0"):
        CompactionPlan(interval, retention)


def test_zero_retention_compacts_to_each_sample_as_it_is_taken(clock: FakeClock) -> None:
    plan = CompactionPlan(MINUTE, timedelta(0))
    assert drive(plan, clock, [10, 20, 30]) == [10, 20, 30]


def test_a_changed_interval_applies_from_the_next_sample(clock: FakeClock) -> None:
    plan = CompactionPlan(MINUTE, MINUTE)
    plan.sample(clock.monotonic(), 1)
    plan.interval_s = 10.0  # SIGHUP: the next sample is still due a minute after the last
    assert plan.seconds_until_due(clock.monotonic()) == 60
    clock.advance(60)
    plan.sample(clock.monotonic(), 2)
    assert plan.seconds_until_due(clock.monotonic()) == 10


def test_first_recovery_at_once_then_backoff_doubles_and_caps(clock: FakeClock) -> None:
    backoff = RecoveryBackoff()
    gaps = []
    for _ in range(10):
        assert backoff.ready(clock.monotonic())
        backoff.started(clock.monotonic())
        clock.advance(2)  # the recovery itself
        backoff.finished(clock.monotonic())
        wait = backoff.seconds_until_ready(clock.monotonic())
        assert not backoff.ready(clock.monotonic())
        gaps.append(wait)
        clock.advance(wait)  # the alarm comes back: recover as soon as allowed
    assert gaps[:4] == [MIN_GAP_S, 2 * MIN_GAP_S, 4 * MIN_GAP_S, 8 * MIN_GAP_S]
    assert max(gaps) == MAX_GAP_S
    assert gaps[-1] == MAX_GAP_S


def test_backoff_starts_over_after_a_stable_period(clock: FakeClock) -> None:
    backoff = RecoveryBackoff()
    for _ in range(3):
        clock.advance(backoff.seconds_until_ready(clock.monotonic()))
        backoff.started(clock.monotonic())
        backoff.finished(clock.monotonic())
    assert backoff.streak == 2
    # the alarm stayed away for just under STABLE_S after the wait: still the same streak
    clock.advance(backoff.seconds_until_ready(clock.monotonic()) + STABLE_S - 1)
    backoff.started(clock.monotonic())
    assert backoff.streak == 3
    backoff.finished(clock.monotonic())
    # ... and for STABLE_S: a fresh start, the shortest gap again
    clock.advance(backoff.seconds_until_ready(clock.monotonic()) + STABLE_S)
    backoff.started(clock.monotonic())
    assert backoff.streak == 0
    backoff.finished(clock.monotonic())
    assert backoff.seconds_until_ready(clock.monotonic()) == MIN_GAP_S


def test_recovery_node_is_the_holder_else_the_smallest_member() -> None:
    assert recovery_node("n2", ["n1", "n2", "n3"]) == "n2"
    assert recovery_node(None, ["n3", "n1", "n2"]) == "n1"
    assert recovery_node("", ["b", "a"]) == "a"
    assert recovery_node(None, []) is None


def test_defragment_order_puts_the_leader_last_and_drops_duplicates() -> None:
    leader = 7
    reported = [(7, leader), (3, leader), (9, leader), (3, leader)]
    assert defragment_order(reported) == [3, 9, 7]
    assert defragment_order([(5, 5)]) == [5]
    assert defragment_order([]) == []
