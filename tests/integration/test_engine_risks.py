"""Exactly-once risks of the engine, each reproduced on a real etcd with a real lease, task cache
and ledger (faults injected by :mod:`tests.faults`; the engine is driven through
:mod:`tests.engine_harness`, the one module that knows its API).

Every test failed on the engine these risks were found in (``peerd/runner/engine.py``, before
the rebuild into :mod:`peerd.engine`; the failure messages are in the closing note of issue 8 and
in the commit that added these tests as ``xfail(strict=True)``) and passes on the rebuilt one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from peerd.core.records import lock_value, rfc3339
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import peer_pb2_grpc as ppb_grpc
from peerd.v1 import scheduler_pb2 as pb
from tests.conftest import NodesFactory
from tests.engine_harness import AppliedConfig, EngineHarness
from tests.helpers import assert_eventually_async, run_async

pytestmark = pytest.mark.integration

TEST_TIMEOUT_S = 60.0
"""Hard limit of one test's event loop (each takes well under 30 s, even when it fails)."""
FINAL = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED, pb.SKIPPED, pb.LOST)
"""Statuses a run record ends in."""
UNKNOWN_CATCH_UP = 99
"""A ``CatchUpPolicy`` value this peerd does not know (as a newer peerd might write)."""


def _now() -> datetime:
    """Now, in whole seconds: a task created then has its slots at ``created_at + k s``
    (an ``every`` schedule is anchored at ``created_at`` truncated to the second)."""
    return datetime.now(UTC).replace(microsecond=0)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def task(task_id: str, created_at: datetime, **fields: Any) -> pb.TaskSpec:
    """A task firing every second from ``created_at`` (its schedule's anchor); the target is
    ``peerd.sleep`` with 0 seconds (no thread, no network)."""
    spec = pb.TaskSpec(
        id=task_id,
        python=pb.PythonTarget(name="peerd.sleep", args_json=json.dumps({"seconds": 0})),
        **fields,
    )
    spec.schedule.every.FromSeconds(1)
    spec.created_at.FromDatetime(created_at)
    return spec


Body = Callable[[EngineHarness], Coroutine[Any, Any, None]]
"""A test body: ``async def body(h: EngineHarness) -> None``."""
WithEngine = Callable[[Body], None]


@pytest.fixture
def with_engine(etcd_endpoint: str, cluster_name: str) -> WithEngine:
    """``with_engine(body)``: run ``await body(h)`` on a fresh event loop (at most
    :data:`TEST_TIMEOUT_S`), ``h`` an :class:`EngineHarness` on this test's cluster."""

    def run(body: Body) -> None:
        async def main() -> None:
            async with EngineHarness(etcd_endpoint, cluster_name) as h:
                await body(h)

        run_async(main, TEST_TIMEOUT_S)

    return run


def _problems(h: EngineHarness) -> list[str]:
    """Warnings and errors the engine logged, as ``event: error`` (for failure messages)."""
    return [
        f"{e['event']}: {e.get('error', '')}"
        for e in h.logs
        if e.get("log_level") in ("warning", "error", "critical")
    ]


# -- risk 1 ------------------------------------------------------------------------------------


def test_risk1_failed_follow_up_round_does_not_rerun_claimed_slots(
    with_engine: WithEngine,
) -> None:
    """An ALLOW task and a FORBID task are due in the same tick; FORBID's lock is held by
    another lease, so its claim is busy and needs a follow-up round (record it SKIPPED). That
    follow-up claim call fails (Unavailable). Updates are held, so the ALLOW slot's record
    stays CLAIMED. Each (task, slot) must still start once."""

    async def body(h: EngineHarness) -> None:
        created = _now()
        await h.put_specs(
            [task("allow", created), task("forbid", created, overlap=pb.OVERLAP_FORBID)]
        )
        other_lease = await h.etcd.lease_grant(60)  # outlives the test, then expires
        lock = lock_value(h.keys.run("forbid", 0), "elsewhere", other_lease)
        await h.etcd.put(h.keys.active("forbid"), lock, other_lease)
        h.faults.hold_updates()
        h.faults.fail_claim(
            match=lambda recs: any(r.task_id == "forbid" and r.status == pb.SKIPPED for r in recs)
        )
        # Misfire threshold far above any stall of a busy machine: the re-planned slot
        # must still be on time when it is claimed again.
        await h.start(misfire_threshold=timedelta(seconds=30))

        def later_slots_ran() -> None:
            assert h.faults.claim_failures, "the follow-up claim round was never tried"
            slot = h.faults.claim_failures[0][0].scheduled_at.ToMilliseconds()
            later = {s.slot_ms for s in h.starts("allow") if s.slot_ms > slot}
            assert len(later) >= 2, f"only {len(later)} later slots of 'allow' started"

        await assert_eventually_async(later_slots_ran, timeout=15)
        # The failed round followed up the slot both tasks were due at; 'allow' ran it.
        slot = h.faults.claim_failures[0][0].scheduled_at.ToMilliseconds()
        assert any(s.slot_ms == slot for s in h.starts("allow")), "the shared slot never ran"
        runs: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
        for s in h.started:
            runs[(s.task_id, s.slot_ms)].append((s.fencing_token, s.attempt))
        repeated = {k: v for k, v in runs.items() if len(v) > 1}
        assert not repeated, (
            f"slots started more than once, as (fencing token, attempt) per start: {repeated}"
        )

    with_engine(body)


# -- risk 2 ------------------------------------------------------------------------------------


def test_risk2_full_claim_batch_of_forbid_tasks_fires(with_engine: WithEngine) -> None:
    """claim_batch=127 (the documented maximum) and 127 FORBID tasks due in the same tick: all
    fire. (A claim that takes a lock needs 2 compares in its nested transaction; with 127 nested
    ones etcd --max-txn-ops 128 leaves each only 1.)"""

    async def body(h: EngineHarness) -> None:
        created = _now()
        ids = [f"forbid-{i:03d}" for i in range(127)]
        await h.put_specs([task(t, created, overlap=pb.OVERLAP_FORBID) for t in ids])
        await h.start(claim_batch=127)

        def all_fired() -> None:
            idle = [t for t in ids if not h.starts(t)]
            assert not idle, (
                f"{len(idle)} of {len(ids)} FORBID tasks never fired; the engine logged: "
                f"{sorted(set(_problems(h)))}"
            )

        await assert_eventually_async(all_fired, timeout=15)

    with_engine(body)


# -- risk 3 ------------------------------------------------------------------------------------


def _first_in_reconcile_order(others: list[str]) -> str:
    """A task id that comes before every id in ``others`` when the ids are put in a set in key
    order, as today's ``Engine.reconcile_all`` iterates them: the unreadable spec is then met
    first, so an abort there deterministically leaves every other task unacquired. (An engine
    that survives the spec passes whatever the order.)"""
    for n in range(10_000):
        candidate = f"newer-{n}"
        if next(iter(set(sorted([*others, candidate])))) == candidate:
            return candidate
    raise AssertionError("no candidate id comes first in set order")  # pragma: no cover


def test_risk3_unknown_catch_up_value_does_not_stop_other_tasks(
    with_engine: WithEngine,
) -> None:
    """A spec whose catch_up is a value this peerd does not know, written straight into etcd
    next to four ordinary tasks before the node starts: the four still fire."""

    async def body(h: EngineHarness) -> None:
        created = _now()
        good = [f"ok-{i}" for i in range(4)]
        newer = task(_first_in_reconcile_order(good), created)
        newer.catch_up = UNKNOWN_CATCH_UP  # type: ignore[assignment]
        await h.put_specs([*(task(t, created) for t in good), newer])
        await h.start()

        def all_fired() -> None:
            idle = [t for t in good if not h.starts(t)]
            assert not idle, (
                f"tasks never fired next to a spec with catch_up={UNKNOWN_CATCH_UP}: {idle}"
            )

        await assert_eventually_async(all_fired, timeout=10)

    with_engine(body)


def test_risk3_peer_handoff_answers_despite_unknown_catch_up_value(
    nodes: NodesFactory, with_engine: WithEngine
) -> None:
    """A real ``peerd serve`` holding a spec with an unknown catch-up value answers a Peer
    Handoff properly (not UNKNOWN, the status of an exception no handler mapped)."""
    created = _now()
    newer = task("newer", created)
    newer.catch_up = UNKNOWN_CATCH_UP  # type: ignore[assignment]

    async def put(h: EngineHarness) -> None:  # the harness only writes; its engine never starts
        await h.put_specs([task("ok", created), newer])

    with_engine(put)
    [node] = nodes(1)  # SERVING only once its task cache holds both specs
    request = ppb.HandoffRequest(
        from_node="leaving", tasks=[ppb.HandoffTask(task_id="ok", cursor_ms=_ms(created))]
    )
    with grpc.insecure_channel(node.address, options=[("grpc.enable_http_proxy", 0)]) as ch:
        try:
            ppb_grpc.PeerStub(ch).Handoff(request, timeout=5.0)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            assert code != grpc.StatusCode.UNKNOWN, f"Handoff answered {code.name}: {details}"
            assert "Traceback" not in (details or ""), f"Handoff answered a traceback: {details}"


# -- risk 4 ------------------------------------------------------------------------------------


def test_risk4_record_writer_survives_an_unexpected_exception(
    with_engine: WithEngine,
) -> None:
    """The ledger's update raises RuntimeError once; the runs of that batch still reach their
    final status in etcd."""

    async def body(h: EngineHarness) -> None:
        await h.put_specs([task("steady", _now())])
        h.faults.crash_update(RuntimeError("injected: update crashed"))
        await h.start()
        await assert_eventually_async(lambda: h.faults.update_crashes, timeout=10)
        [batch] = h.faults.update_crashes

        async def all_final() -> None:
            for r in batch:
                slot = r.scheduled_at.ToMilliseconds()
                stored = await h.ledger.get(r.task_id, slot)
                status = pb.RunStatus.Name(stored.status) if stored else "deleted"
                assert stored is not None and stored.status in FINAL, (
                    f"run {r.task_id}/{slot} is still {status} in etcd after the record "
                    f"writer's update raised ({len(h.starts('steady'))} runs started, "
                    f"{h.faults.update_calls} update calls so far)"
                )

        await assert_eventually_async(all_final, timeout=10)

    with_engine(body)


# -- risk 5 ------------------------------------------------------------------------------------


def _names_run(entry: Mapping[str, Any], task_id: str, slot_ms: int) -> bool:
    """Whether a log entry names the task and the slot (as ms, RFC 3339 or idempotency key)."""
    values = {str(v) for v in entry.values()}
    key = f"{task_id}/{slot_ms}"
    slot = {str(slot_ms), rfc3339(datetime.fromtimestamp(slot_ms / 1000, UTC)), key}
    return (task_id in values or key in values) and bool(values & slot)


def test_risk5_fenced_off_final_update_is_logged(with_engine: WithEngine) -> None:
    """The final (SUCCEEDED) update of one run is fenced off by etcd (written under a lease the
    node does not hold); once later records are written, a warning names the task and slot."""

    async def body(h: EngineHarness) -> None:
        await h.put_specs([task("fenced", _now())])
        h.faults.fence_updates(lambda r: r.task_id == "fenced" and r.status == pb.SUCCEEDED)
        await h.start()
        await assert_eventually_async(lambda: h.faults.fenced, timeout=10)
        slot = h.faults.fenced[0].scheduled_at.ToMilliseconds()

        async def later_run_recorded() -> None:
            later = sorted({s.slot_ms for s in h.starts("fenced") if s.slot_ms > slot})
            for ms in later:
                stored = await h.ledger.get("fenced", ms)
                if stored is not None and stored.status == pb.SUCCEEDED:
                    return
            raise AssertionError(f"no later run of 'fenced' recorded yet ({later})")

        await assert_eventually_async(later_run_recorded, timeout=10)
        named = [
            e
            for e in h.logs
            if e.get("log_level") in ("warning", "error", "critical")
            and _names_run(e, "fenced", slot)
        ]
        assert named, (
            f"no warning names the fenced-off final update of fenced/{slot}; warnings and "
            f"errors logged: {_problems(h)}"
        )

    with_engine(body)


def test_risk5_trim_keeps_a_running_record(with_engine: WithEngine) -> None:
    """runs_keep=3; a task 40 s behind replays its missed slots (RUN_ALL) while its first slot
    is still running (held). Once newer records have been trimmed, the first slot's unfinished
    record is still there, and it ends SUCCEEDED when the run finishes."""

    async def body(h: EngineHarness) -> None:
        created = _now() - timedelta(seconds=40)
        first, second = _ms(created) + 1000, _ms(created) + 2000
        h.hold_executions(lambda s: s.task_id == "long" and s.slot_ms == first)
        await h.put_specs([task("long", created, catch_up=pb.CATCH_UP_RUN_ALL)])
        await h.start(runs_keep=3, catch_up_rate=1000.0)

        async def second_trimmed() -> None:
            slots = {s.slot_ms for s in h.starts("long")}
            assert first in slots, "the first slot has not started"
            assert second in slots, "the second slot has not started"
            assert await h.ledger.get("long", second) is None, "no trim yet"

        await assert_eventually_async(second_trimmed, timeout=15)
        stored = await h.ledger.get("long", first)
        # Unfinished: CLAIMED, or RUNNING once the writer's progress delay has passed.
        assert stored is not None and stored.status in (pb.CLAIMED, pb.RUNNING), (
            f"the record of long/{first} was trimmed while its run was still in progress "
            f"(record now: {pb.RunStatus.Name(stored.status) if stored else None})"
        )
        h.release_executions()

        async def first_succeeded() -> None:
            done = await h.ledger.get("long", first)
            assert done is not None and done.status == pb.SUCCEEDED, f"long/{first}: {done}"

        await assert_eventually_async(first_succeeded, timeout=10)

    with_engine(body)


# -- risk 6 ------------------------------------------------------------------------------------


def test_risk6_rejected_reload_changes_nothing(with_engine: WithEngine) -> None:
    """A config the engine cannot apply (a negative misfire threshold, which fails when the
    engine re-derives the catch-up policy of an owned task) together with a new shell allow-list
    and pool limits: after the engine refuses it, its config, allow-list and pool limits are all
    the old ones; had it accepted, all would be the new ones. (The config layer now rejects a
    negative threshold itself, so the engine is handed one directly: the point is that
    ``apply_config`` is all-or-nothing, whatever step refuses.)"""

    async def body(h: EngineHarness) -> None:
        await h.put_specs([task("owned", _now())])
        await h.start(allow_shell=("/bin/true",), max_concurrent_runs=100, max_python_runs=10)
        await assert_eventually_async(lambda: h.starts("owned"), timeout=10)  # owned here
        before = h.applied_config()
        new = replace(
            before.cfg,
            allow_shell=("/bin/false",),
            max_concurrent_runs=7,
            max_python_runs=3,
            misfire_threshold=timedelta(seconds=-5),
        )
        applied = h.apply_config(new)
        after = h.applied_config()
        expected = before
        if applied:
            limits = {"http": new.max_http_runs, "shell": new.max_shell_runs}
            limits |= {"python": new.max_python_runs, "node": new.max_concurrent_runs}
            expected = AppliedConfig(new, new.allow_shell, limits)
        verdict = "accepted" if applied else "rejected"
        assert after == expected, (
            f"the engine {verdict} the reload but now runs with allow_shell "
            f"{after.allow_shell} (old {before.allow_shell}), pool limits "
            f"{after.pool_limits} (old {before.pool_limits}), misfire threshold "
            f"{after.cfg.misfire_threshold} (old {before.cfg.misfire_threshold})"
        )

    with_engine(body)
