"""peerd.engine.planner: owned tasks, admission (backpressure), and cursors over settled slots.

The planner does no I/O and reads no clock: every test passes ``now`` and a token bucket.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from peerd.core.ratelimit import TokenBucket
from peerd.core.records import slot_ms
from peerd.engine.planner import Planner, TaskPlan
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def spec(task_id: str, *, priority: int = 0, kind: str = "http", **fields: object) -> pb.TaskSpec:
    s = pb.TaskSpec(id=task_id, priority=priority, **fields)  # type: ignore[arg-type]
    s.schedule.every.FromTimedelta(S)
    s.created_at.FromDatetime(T0)
    if kind == "http":
        s.http.url = "http://127.0.0.1:1/"
    else:
        s.python.name = "peerd.echo"
    return s


def bucket() -> TokenBucket:
    return TokenBucket(1000.0, 1000.0, 0.0)


def planner_with(*specs: pb.TaskSpec, cursor: datetime = T0) -> Planner:
    p = Planner("n1", timedelta(seconds=5), rules=RULES)
    for s in specs:
        assert p.acquire(s, cursor=cursor) is not None
    return p


def plan(p: Planner, now: datetime, admit: dict[str, int]) -> list[TaskPlan]:
    p.collect_due(now)
    return p.plan(now, admit, bucket(), 0.0, 100)


def settle_all(p: Planner, plans: list[TaskPlan], now: datetime) -> None:
    for tp in plans:
        tp.settled.update(slot_ms(s) for s in tp.slots)
        p.commit(tp, now, lambda: 0.0)


def test_admission_plans_only_what_fits_and_keeps_the_rest_due() -> None:
    p = planner_with(*(spec(f"t{i}") for i in range(10)))
    now = T0 + S
    admit = {"http": 3}
    plans = plan(p, now, admit)
    assert len(plans) == 3 and admit["http"] == 0
    assert p.backlog == 7  # due, unclaimed, cursors unmoved
    settle_all(p, plans, now)
    rest = plan(p, now, {"http": 100})
    assert len(rest) == 7 and p.backlog == 0
    assert {tp.owned.spec.id for tp in plans + rest} == {f"t{i}" for i in range(10)}


def test_backlog_admits_higher_priority_first_then_earlier_due() -> None:
    p = planner_with(spec("low"), spec("high", priority=50), spec("mid", priority=10))
    plans = plan(p, T0 + S, {"http": 1})
    assert [tp.owned.spec.id for tp in plans] == ["high"]
    assert [tp.owned.spec.id for tp in plan(p, T0 + S, {"http": 1})] == ["mid"]


def test_admission_is_per_executor_kind() -> None:
    p = planner_with(spec("h1"), spec("h2"), spec("p1", kind="python"))
    plans = plan(p, T0 + S, {"http": 0, "python": 5})
    assert [tp.owned.spec.id for tp in plans] == ["p1"]
    assert p.backlog == 2


def test_commit_moves_the_cursor_over_settled_slots_only() -> None:
    p = planner_with(spec("t"))
    now = T0 + 4 * S  # slots T0+1s .. T0+4s are due and on time
    [tp] = plan(p, now, {"http": 100})
    assert tp.plan.fire == [T0 + i * S for i in (1, 2, 3, 4)]
    tp.settled.update(slot_ms(T0 + i * S) for i in (1, 2, 4))  # slot 3's claim failed
    p.commit(tp, now, lambda: 0.0)
    o = p.owned["t"]
    assert o.cursor == T0 + 2 * S  # not past the unsettled slot 3 (nor past 4)
    [again] = plan(p, now, {"http": 100})
    assert again.plan.fire == [T0 + 3 * S, T0 + 4 * S]


def test_commit_with_nothing_settled_keeps_the_cursor() -> None:
    p = planner_with(spec("t"))
    now = T0 + 2 * S
    [tp] = plan(p, now, {"http": 100})
    p.commit(tp, now, lambda: 0.0)
    assert p.owned["t"].cursor == T0
    assert [s for s in plan(p, now, {"http": 100})[0].plan.fire] == [T0 + S, T0 + 2 * S]


def test_a_task_with_an_overlap_lock_gets_one_slot_per_tick() -> None:
    p = planner_with(spec("t", overlap=pb.OVERLAP_FORBID))
    [tp] = plan(p, T0 + 3 * S, {"http": 100})
    assert tp.plan.fire == [T0 + S]


def test_a_spec_that_does_not_decode_is_refused_and_others_are_kept() -> None:
    p = planner_with(spec("good"))
    bad = spec("bad")
    bad.catch_up = 99  # type: ignore[assignment]  # e.g. written by a newer peerd
    assert p.acquire(bad, cursor=T0) is None
    assert "bad" in p.invalid and "catch_up" in p.invalid["bad"]
    assert "bad" not in p.owned and "good" in p.owned
    p.forget_invalid(["good"])
    assert p.invalid == {}


def test_a_bad_misfire_default_refuses_no_valid_task() -> None:
    p = planner_with(spec("a"), spec("b"))
    p.set_misfire_threshold(timedelta(seconds=30))
    assert p.owned["a"].catch_up.misfire_threshold == timedelta(seconds=30)
    assert set(p.owned) == {"a", "b"}


def test_dropped_tasks_leave_the_backlog() -> None:
    p = planner_with(spec("a"), spec("b"))
    p.collect_due(T0 + S)
    p.drop("a")
    plans = p.plan(T0 + S, {"http": 10}, bucket(), 0.0, 100)
    assert [tp.owned.spec.id for tp in plans] == ["b"] and p.backlog == 0


def test_a_task_of_an_executor_kind_this_node_lacks_is_refused_not_left_due() -> None:
    p = Planner("n1", timedelta(seconds=5), kinds=("http",), rules=RULES)
    assert p.acquire(spec("py", kind="python"), cursor=T0) is None
    assert "no executor" in p.invalid["py"]
    assert p.acquire(spec("h"), cursor=T0) is not None
    assert [tp.owned.spec.id for tp in plan(p, T0 + S, {"http": 5})] == ["h"]
    assert p.backlog == 0
