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
    assert {tp.owned.id for tp in plans + rest} == {f"t{i}" for i in range(10)}


def test_backlog_admits_higher_priority_first_then_earlier_due() -> None:
    p = planner_with(spec("low"), spec("high", priority=50), spec("mid", priority=10))
    plans = plan(p, T0 + S, {"http": 1})
    assert [tp.owned.id for tp in plans] == ["high"]
    assert [tp.owned.id for tp in plan(p, T0 + S, {"http": 1})] == ["mid"]


def test_admission_is_per_executor_kind() -> None:
    p = planner_with(spec("h1"), spec("h2"), spec("p1", kind="python"))
    plans = plan(p, T0 + S, {"http": 0, "python": 5})
    assert [tp.owned.id for tp in plans] == ["p1"]
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
    assert [tp.owned.id for tp in plans] == ["b"] and p.backlog == 0


def test_a_task_of_an_executor_kind_this_node_lacks_is_refused_not_left_due() -> None:
    p = Planner("n1", timedelta(seconds=5), kinds=("http",), rules=RULES)
    assert p.acquire(spec("py", kind="python"), cursor=T0) is None
    assert "no executor" in p.invalid["py"]
    assert p.acquire(spec("h"), cursor=T0) is not None
    assert [tp.owned.id for tp in plan(p, T0 + S, {"http": 5})] == ["h"]
    assert p.backlog == 0


# -- updates -----------------------------------------------------------------------------------


def updated(
    old: pb.TaskSpec, at: datetime, every_s: int | None = None, **fields: object
) -> pb.TaskSpec:
    """``old`` as the server stores it after an update at ``at`` (a new ``every`` period:
    previous schedule kept up to ``at``)."""
    new = pb.TaskSpec()
    new.CopyFrom(old)
    for k, v in fields.items():
        setattr(new, k, v)
    if every_s is not None:
        new.previous_schedule.schedule.CopyFrom(old.schedule)
        new.previous_schedule.since.CopyFrom(
            old.schedule_since if old.HasField("schedule_since") else old.created_at
        )
        new.schedule.every.FromSeconds(every_s)
        new.schedule_since.FromDatetime(at)
    return new


def every_spec(task_id: str, every_s: int) -> pb.TaskSpec:
    s = spec(task_id)
    s.schedule.every.FromSeconds(every_s)
    return s


def test_an_update_that_keeps_the_schedule_keeps_the_cursor_and_uses_the_new_spec() -> None:
    p = planner_with(spec("t"))
    settle_all(p, plan(p, T0 + 2 * S, {"http": 100}), T0 + 2 * S)
    o = p.owned["t"]
    new = updated(o.decode_spec(), T0 + 2 * S, description="changed")
    new.http.url = "http://127.0.0.1:2/new"
    assert p.update(new) is o
    assert o.cursor == T0 + 2 * S and o.decode_spec().http.url.endswith("/new")
    [tp] = plan(p, T0 + 3 * S, {"http": 100})
    assert tp.plan.fire == [T0 + 3 * S] and tp.owned.decode_spec() == new


def test_slots_of_the_old_schedule_due_before_the_change_still_fire() -> None:
    p = planner_with(every_spec("t", 2))
    settle_all(p, plan(p, T0 + 4 * S, {"http": 100}), T0 + 4 * S)  # 2s, 4s done
    change = T0 + 9 * S + 500 * timedelta(milliseconds=1)  # owner lagging: 6s, 8s pending
    p.update(updated(p.owned["t"].decode_spec(), change, every_s=3))
    [tp] = plan(p, T0 + 10 * S, {"http": 100})
    assert tp.plan.fire == [T0 + 6 * S, T0 + 8 * S]  # not 9s: the new schedule's, before it
    settle_all(p, [tp], T0 + 10 * S)
    assert [tp.plan.fire for tp in plan(p, T0 + 12 * S, {"http": 100})] == [[T0 + 12 * S]]


def test_old_slots_claimed_after_the_change_move_the_cursor_back_to_it() -> None:
    p = planner_with(every_spec("t", 2))
    settle_all(p, plan(p, T0 + 14 * S, {"http": 100}), T0 + 14 * S)  # up to 14s, old spec
    change = T0 + 10 * S + 500 * timedelta(milliseconds=1)  # the watch was late
    p.update(updated(p.owned["t"].decode_spec(), change, every_s=3))
    assert p.owned["t"].cursor == change
    [tp] = plan(p, T0 + 15 * S, {"http": 100})
    assert tp.plan.fire == [T0 + 12 * S, T0 + 15 * S]  # 12s: a lost race if claimed already


def test_a_plan_in_flight_under_the_old_schedule_does_not_move_the_cursor() -> None:
    p = planner_with(every_spec("t", 2))
    [tp] = plan(p, T0 + 4 * S, {"http": 100})
    change = T0 + 3 * S
    p.update(updated(p.owned["t"].decode_spec(), change, every_s=3))
    tp.settled.update(slot_ms(s) for s in tp.slots)  # 2s and 4s settle after the update
    p.commit(tp, T0 + 4 * S, lambda: 0.0)
    assert p.owned["t"].cursor == T0  # the new generation plans again from its own cursor
    [again] = plan(p, T0 + 6 * S, {"http": 100})
    assert again.plan.fire == [T0 + 2 * S, T0 + 6 * S]  # 2s is a lost race; 4s is old-only


def test_a_handed_cursor_planned_under_the_old_spec_is_moved_back_to_the_change() -> None:
    p = planner_with(every_spec("t", 2))
    change = T0 + 10 * S + 500 * timedelta(milliseconds=1)
    o = p.update(updated(p.owned["t"].decode_spec(), change, every_s=3))
    assert o is not None
    assert p.handed_cursor(o, T0 + 14 * S) == change
    assert p.handed_cursor(o, T0 + 15 * S) == T0 + 15 * S
    assert p.handed_cursor(o, T0 - S) == T0  # never before the floor


def test_a_stale_backlog_entry_does_not_unqueue_the_current_one() -> None:
    p = planner_with(every_spec("t", 2))
    p.collect_due(T0 + 2 * S)  # queued under generation g
    # generation g+1, requeued below
    p.update(updated(p.owned["t"].decode_spec(), T0 + S, every_s=3))
    p.collect_due(T0 + 3 * S)
    assert p.backlog == 1
    plans = p.plan(T0 + 3 * S, {"http": 10}, bucket(), 0.0, 100)
    assert [tp.plan.fire for tp in plans] == [[T0 + 3 * S]] and p.backlog == 0


def test_claim_ahead_enters_the_heap_early_only_without_an_overlap_lock() -> None:
    p = Planner("n1", timedelta(seconds=5), rules=RULES, claim_ahead=timedelta(milliseconds=300))
    allow = spec("allow")
    forbid = spec("forbid", overlap=pb.OVERLAP_FORBID)
    for s in (allow, forbid):
        assert p.acquire(s, cursor=T0) is not None
    early = T0 + S - timedelta(milliseconds=300)
    assert p.next_due_s() == early.timestamp() and p.next_is_early()
    plans = plan(p, early, {"http": 10})
    assert [(tp.owned.id, tp.plan.fire) for tp in plans] == [("allow", [T0 + S])]
    settle_all(p, plans, early)
    assert p.next_due_s() == (T0 + S).timestamp() and not p.next_is_early()  # forbid, at 00:01
    plans = plan(p, T0 + S, {"http": 10})
    assert [(tp.owned.id, tp.plan.fire) for tp in plans] == [("forbid", [T0 + S])]


def test_an_owned_task_keeps_its_spec_as_bytes_not_as_a_message() -> None:
    s = spec("t", priority=3, overlap=pb.OVERLAP_FORBID)
    s.resumed_at.FromDatetime(T0 + S)
    p = planner_with(s)
    o = p.owned["t"]
    held = [getattr(o, name) for name in type(o).__slots__]
    assert not [v for v in held if isinstance(v, pb.TaskSpec | pb.Schedule)]
    assert (o.id, o.kind, o.priority, o.overlap) == ("t", "http", 3, pb.OVERLAP_FORBID)
    assert o.paused_until == T0 + S
    assert o.decode_spec() == s and o.holds(s)
    s.description = "changed"
    assert not o.holds(s)
