"""Scheduling policies on real etcd and real nodes: overlap (cluster-wide, across an owner
change), catch-up with the replay rate cap, retries and deadlines, compensation, priority, jitter,
the Python executor and trigger-now under an overlap policy."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from peerd.client import SchedulerClient
from peerd.core.ring import owner
from peerd.core.schedule import jitter_offset
from peerd.devtools.sink import WebhookSink
from peerd.exitcodes import EXIT_NOT_RUN
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually

FINAL = (pb.SUCCEEDED, pb.FAILED, pb.LOST, pb.CANCELLED)


def every(task_id: str, seconds: float, url: str, **fields: object) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=url), **fields)  # type: ignore[arg-type]
    spec.schedule.every.FromMilliseconds(round(seconds * 1000))
    spec.timeout.FromSeconds(20)
    return spec


def owned_by(node_id: str, members: Sequence[str], prefix: str) -> str:
    """A task id that ``node_id`` owns among ``members``."""
    return next(f"{prefix}-{i}" for i in range(500) if owner(f"{prefix}-{i}", members) == node_id)


def intervals(runs: Sequence[pb.RunRecord]) -> list[tuple[float, float, pb.RunRecord]]:
    """(start, end, run) of runs that started and ended, by start time."""
    out = []
    for r in runs:
        if r.HasField("started_at") and r.HasField("finished_at") and r.status in FINAL:
            start = r.history[0].started_at if r.history else r.started_at
            out.append((start.ToMilliseconds() / 1000, r.finished_at.ToMilliseconds() / 1000, r))
    return sorted(out, key=lambda x: x[0])


def assert_no_overlap(runs: Sequence[pb.RunRecord], slack_s: float = 0.05) -> None:
    spans = intervals(runs)
    for (_s1, e1, r1), (s2, _, r2) in itertools.pairwise(spans):
        assert s2 >= e1 - slack_s, (
            f"run {r2.idempotency_key} on {r2.node_id} started at {s2:.3f} while "
            f"{r1.idempotency_key} on {r1.node_id} ran until {e1:.3f}"
        )


def test_forbid_holds_across_an_owner_change(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    (n1,) = nodes(1, lease_ttl_s=4)
    tid = owned_by("n2", ["n1", "n2"], "forbid")
    with SchedulerClient(n1.address) as client:
        # Every 1 s; the sink holds every run until the test releases it, so n2 (started below)
        # takes the task over while n1's first run is certainly still in progress.
        spec = every(tid, 1, f"{sink.url}/f?hold=forbid", overlap=pb.OVERLAP_FORBID)
        spec.timeout.FromSeconds(120)  # the held run must outlast a slow machine's waits below
        client.create_task(spec)

        def running_on_n1() -> None:
            assert any(
                r.status == pb.RUNNING and r.node_id == "n1" for r in client.list_runs(tid, 5)
            )

        assert_eventually(running_on_n1, timeout=10)
        (_n2,) = nodes(1, lease_ttl_s=4)  # takes the task over while n1's run is in progress

        def n2_skipped_for_n1() -> None:
            runs = client.list_runs(tid, 50)
            assert any(
                r.status == pb.SKIPPED
                and r.node_id == "n2"
                and r.skip_reason == pb.SKIP_OVERLAP
                and "on n1" in r.error
                for r in runs
            ), [(r.node_id, pb.RunStatus.Name(r.status), r.error) for r in runs[:8]]

        assert_eventually(n2_skipped_for_n1, timeout=20)
        running_on_n1()  # still held: the overlap n2 skipped for is real
        sink.release("forbid")  # n1's run ends; n2 runs the next slot

        def both_succeeded() -> None:  # n1's held run, then a run of n2's
            runs = client.list_runs(tid, 50)
            assert {r.node_id for r in runs if r.status == pb.SUCCEEDED} == {"n1", "n2"}, [
                (r.node_id, pb.RunStatus.Name(r.status), r.error) for r in runs[:8]
            ]

        assert_eventually(both_succeeded, timeout=20)
        runs = client.list_runs(tid, 100)
    assert_no_overlap(runs)
    assert {r.node_id for r in runs if r.status == pb.SUCCEEDED} == {"n1", "n2"}
    keys = [d.idempotency_key for d in sink.deliveries()]
    assert len(keys) == len(set(keys))


def test_a_stopped_node_cancels_its_run_when_it_finds_its_lease_gone(
    nodes, sink: WebhookSink
) -> None:  # type: ignore[no-untyped-def]
    cluster = nodes(2, lease_ttl_s=3)
    victim = cluster[1]
    tid = owned_by(victim.node_id, ["n1", "n2"], "zombie")
    with SchedulerClient(cluster[0].address) as client:
        client.create_task(every(tid, 3600, f"{sink.url}/z?delay_s=20", overlap=pb.OVERLAP_FORBID))
        with SchedulerClient(victim.address) as on_victim:
            run = on_victim.trigger_task(tid)  # a manual run executes on the answering node
        assert run.node_id == victim.node_id

        def running() -> None:
            (r,) = client.list_runs(tid, 1)
            assert r.status == pb.RUNNING, r

        assert_eventually(running, timeout=5)
        victim.pause()  # SIGSTOP past its lease TTL: the lock goes with the lease
        try:

            def retried_by_n1() -> None:
                (r,) = client.list_runs(tid, 1)
                assert r.node_id == "n1" and r.attempt == 2 and r.status == pb.RUNNING, r

            assert_eventually(retried_by_n1, timeout=15)
        finally:
            victim.resume()
        assert_eventually(
            lambda: "run_cancelled_lease_lost" in victim.log_text(),
            timeout=10,
            message="the resumed node kept running a run whose overlap lock it lost",
        )
        (r,) = client.list_runs(tid, 1)
        assert r.node_id == "n1" and r.status == pb.RUNNING  # the victim wrote nothing more


def test_buffer_one_and_replace(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    (n1,) = nodes(1, lease_ttl_s=4)
    buf = owned_by("n2", ["n1", "n2"], "buffer")
    rep = owned_by("n2", ["n1", "n2"], "replace")
    with SchedulerClient(n1.address) as client:
        client.create_tasks(
            [
                every(buf, 1, f"{sink.url}/b?delay_s=2.2", overlap=pb.OVERLAP_BUFFER_ONE),
                every(rep, 1.5, f"{sink.url}/r?delay_s=30", overlap=pb.OVERLAP_REPLACE),
            ]
        )

        def started_on_n1() -> None:
            for t in (buf, rep):
                assert any(
                    r.node_id == "n1" and r.status == pb.RUNNING for r in client.list_runs(t, 5)
                )

        assert_eventually(started_on_n1, timeout=10)
        nodes(1, lease_ttl_s=4)  # n2 takes both over mid-run

        def buffered_and_replaced() -> None:
            bruns = client.list_runs(buf, 60)
            done = [r for r in bruns if r.status == pb.SUCCEEDED]
            assert len(done) >= 3, [pb.RunStatus.Name(r.status) for r in bruns]
            assert any(r.node_id == "n2" for r in done)
            assert any(r.status == pb.SKIPPED and "already buffered" in r.error for r in bruns), [
                r.error for r in bruns
            ]
            rruns = client.list_runs(rep, 30)
            cancelled = [r for r in rruns if r.status == pb.CANCELLED]
            assert any(r.node_id == "n1" for r in cancelled), [
                (r.node_id, pb.RunStatus.Name(r.status), r.error) for r in rruns
            ]
            assert any(r.node_id == "n2" for r in cancelled)
            assert all("replaced by" in r.error for r in cancelled)

        assert_eventually(buffered_and_replaced, timeout=25)
        bruns = client.list_runs(buf, 60)
        rruns = client.list_runs(rep, 30)
    assert_no_overlap(bruns)
    # A buffered run starts as soon as the previous one ends, not at its own slot.
    spans = intervals(bruns)
    waited = [r2 for (_, e1, _), (s2, _, r2) in itertools.pairwise(spans) if s2 - e1 < 0.5]
    assert any(r.lateness.ToTimedelta() > timedelta(seconds=0.8) for r in waited)
    assert_no_overlap(rruns, slack_s=0.3)
    assert all(r.status != pb.SUCCEEDED for r in rruns)  # each run was replaced by the next


def test_catch_up_policies_after_a_full_outage(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    rate = 2.0
    cluster = nodes(2, lease_ttl_s=3, env={"PEERD_CATCH_UP_RATE": str(rate)})
    specs = []
    for name, policy in (
        ("skip", pb.CATCH_UP_SKIP),
        ("once", pb.CATCH_UP_RUN_ONCE),
        ("all", pb.CATCH_UP_RUN_ALL),
    ):
        spec = every(f"cu-{name}", 1, f"{sink.url}/{name}", catch_up=policy)
        spec.misfire_threshold.FromMilliseconds(500)
        spec.catch_up_window.FromSeconds(3600)
        specs.append(spec)
    with SchedulerClient(cluster[0].address) as client:
        client.create_tasks(specs)

        def all_ran() -> None:
            for s in specs:
                assert any(r.status == pb.SUCCEEDED for r in client.list_runs(s.id, 3))

        assert_eventually(all_ran, timeout=10)
    for n in cluster:
        n.terminate()
    down_at = time.time()
    time.sleep(6)
    (n3,) = nodes(1, lease_ttl_s=3, env={"PEERD_CATCH_UP_RATE": str(rate)})  # a new owner
    up_at = time.time()
    with SchedulerClient(n3.address) as client:

        def outage_slots(task_id: str, until: float) -> list[pb.RunRecord]:
            return [
                r
                for r in client.list_runs(task_id, 100)
                if down_at + 1 < r.scheduled_at.ToMilliseconds() / 1000 < until
            ]

        def caught_up() -> None:
            # Slots more than 1 s before n3 started were missed whatever the timing.
            skip = outage_slots("cu-skip", up_at - 1)
            assert len(skip) >= 4 and all(r.status == pb.SKIPPED for r in skip)
            assert all(r.skip_reason == pb.SKIP_MISFIRE for r in skip)
            once = sorted(
                outage_slots("cu-once", up_at - 1), key=lambda r: r.scheduled_at.ToMilliseconds()
            )
            assert len(once) >= 4 and all(r.status == pb.SKIPPED for r in once[:-1])
            # One catch-up run, right after the restart: the latest missed slot, or - when the
            # replay budget made it wait until a newer slot was due - that newer slot.
            ran = sorted(
                (r for r in outage_slots("cu-once", up_at + 3) if r.status == pb.SUCCEEDED),
                key=lambda r: r.scheduled_at.ToMilliseconds(),
            )
            assert ran and ran[0].node_id == "n3", ran
            assert ran[0].scheduled_at.ToMilliseconds() > once[-1].scheduled_at.ToMilliseconds()
            assert ran[0].scheduled_at.ToMilliseconds() / 1000 <= up_at + 1
            assert sum(r.scheduled_at.ToMilliseconds() / 1000 < up_at for r in ran) <= 1
            replay = outage_slots("cu-all", up_at - 1)
            assert len(replay) >= 4 and all(r.status == pb.SUCCEEDED for r in replay), [
                pb.RunStatus.Name(r.status) for r in replay
            ]

        assert_eventually(caught_up, timeout=25)
        replay = sorted(
            outage_slots("cu-all", up_at - 1), key=lambda r: r.started_at.ToMilliseconds()
        )
    # The replays honour the rate cap: n replays need about (n - burst) / rate seconds.
    span = (replay[-1].started_at.ToMilliseconds() - replay[0].started_at.ToMilliseconds()) / 1000
    assert span >= (len(replay) - 1 - rate) / rate - 0.3, (len(replay), span)
    assert all(r.node_id == "n3" for r in replay)


def test_paused_slots_follow_the_catch_up_policy(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    (n1, _) = nodes(2)
    with SchedulerClient(n1.address) as client:
        spec = every("paused-once", 1, f"{sink.url}/p")
        spec.misfire_threshold.FromMilliseconds(500)
        client.create_task(spec)
        assert_eventually(lambda: client.list_runs(spec.id, 1), timeout=10)
        client.pause_task(spec.id)
        paused_at = time.time()
        time.sleep(2)
        # A manual run while paused is not a schedule slot: it must not hide the paused ones.
        assert client.trigger_task(spec.id).manual
        time.sleep(2)
        client.resume_task(spec.id)

        def one_replayed() -> None:
            during = [
                r
                for r in client.list_runs(spec.id, 50)
                if paused_at + 1 < r.scheduled_at.ToMilliseconds() / 1000 < paused_at + 3.5
                and not r.manual
            ]
            assert len(during) >= 2, "no records for the paused slots"
            assert sum(r.status == pb.SKIPPED for r in during) >= 1
            assert all(r.skip_reason == pb.SKIP_PAUSED for r in during if r.status == pb.SKIPPED), [
                r.error for r in during
            ]

        assert_eventually(one_replayed, timeout=10)


def test_retries_deadline_and_compensation(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    (n1, _) = nodes(2)
    retry = pb.RetryPolicy(max_attempts=3, multiplier=2.0)
    retry.initial_backoff.FromMilliseconds(200)
    retry.max_backoff.FromSeconds(1)
    flaky = pb.TaskSpec(
        id="flaky", http=pb.HttpTarget(url=f"{sink.url}/flaky?status=503"), retry=retry,
        on_failure="compensate",
    )  # fmt: skip
    flaky.schedule.at.FromDatetime(_soon(1.5))
    no_retry = pb.TaskSpec(
        id="no-retry-500",
        http=pb.HttpTarget(url=f"{sink.url}/nr?status=500"),
        retry=pb.RetryPolicy(max_attempts=5, retry_on=[pb.RETRY_ON_HTTP_429]),
    )
    no_retry.schedule.at.FromDatetime(_soon(1.5))
    deadline = pb.RetryPolicy(max_attempts=10)
    deadline.initial_backoff.FromMilliseconds(100)
    deadline.deadline.FromMilliseconds(2500)
    slow = pb.TaskSpec(id="deadline", http=pb.HttpTarget(url=f"{sink.url}/slow?delay_s=5"))
    slow.retry.CopyFrom(deadline)
    slow.timeout.FromSeconds(1)
    slow.schedule.at.FromDatetime(_soon(1.5))
    comp = pb.TaskSpec(id="compensate", python=pb.PythonTarget(name="peerd.post"))
    comp.python.args_json = json.dumps({"url": f"{sink.url}/comp"})
    comp.schedule.cron = "0 0 1 1 *"
    with SchedulerClient(n1.address) as client:
        client.create_tasks([comp, flaky, no_retry, slow])

        def finished() -> tuple[pb.RunRecord, pb.RunRecord, pb.RunRecord]:
            out = []
            for t in ("flaky", "no-retry-500", "deadline"):
                runs = client.list_runs(t, 1)
                assert runs and runs[0].status in FINAL, runs
                out.append(runs[0])
            return out[0], out[1], out[2]

        fl, nr, dl = assert_eventually(finished, timeout=20)
        assert fl.status == pb.FAILED and fl.attempt == 3 and len(fl.history) == 2
        assert [h.attempt for h in fl.history] == [1, 2]
        assert all(h.http_status == 503 for h in fl.history) and fl.http_status == 503
        assert nr.status == pb.FAILED and nr.attempt == 1 and not nr.history
        assert dl.status == pb.CANCELLED and "overall deadline" in dl.error, dl
        assert 2 <= dl.attempt <= 3

        def compensated() -> pb.RunRecord:
            runs = client.list_runs("compensate", 5)
            assert runs and runs[0].status == pb.SUCCEEDED, runs
            return runs[0]

        comp_run = assert_eventually(compensated, timeout=10)
        assert comp_run.manual and comp_run.cause.task_id == "flaky"
        assert comp_run.cause.status == pb.FAILED
    flaky_hits = [d for d in sink.deliveries() if d.path == "/flaky"]
    assert len(flaky_hits) == 3
    assert len({d.idempotency_key for d in flaky_hits}) == 1
    assert len({d.fencing_token for d in flaky_hits}) == 1  # one claim, three attempts
    (comp_hit,) = [d for d in sink.deliveries() if d.path == "/comp"]
    assert json.loads(comp_hit.body)["cause"]["task_id"] == "flaky"


def test_retries_continue_across_an_owner_change(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    """The owner dies during the first attempt; the new owner continues the same slot: the lost
    attempt stays in the history, attempts keep counting, one idempotency key, a new token.

    Deterministic: the sink holds only the first delivery of the slot (``delay_first_s``), so
    the kill lands while attempt 1 is RUNNING whatever the timing. (It used to kill during a
    retry backoff, which full jitter makes anywhere from 0 to 3 s long: flaky when short.)"""
    cluster = nodes(3, lease_ttl_s=3)
    members = [n.node_id for n in cluster]
    victim = cluster[1]
    tid = owned_by(victim.node_id, members, "retry-move")
    retry = pb.RetryPolicy(max_attempts=3, multiplier=1.0)
    retry.initial_backoff.FromMilliseconds(200)
    retry.max_backoff.FromMilliseconds(200)
    url = f"{sink.url}/move?status=503&delay_first_s=60"
    spec = pb.TaskSpec(id=tid, http=pb.HttpTarget(url=url), retry=retry)
    spec.schedule.at.FromDatetime(_soon(1.5))
    with SchedulerClient(cluster[0].address) as client:
        client.create_task(spec)

        def running() -> pb.RunRecord:
            runs = client.list_runs(tid, 1)
            assert runs and runs[0].status == pb.RUNNING and runs[0].attempt == 1, runs
            return runs[0]

        before = assert_eventually(running, timeout=15)
        assert before.node_id == victim.node_id
        victim.kill()  # dies during attempt 1

        def failed_elsewhere() -> pb.RunRecord:
            (run,) = client.list_runs(tid, 1)
            assert run.status == pb.FAILED, run
            return run

        run = assert_eventually(failed_elsewhere, timeout=25)
    assert run.node_id != victim.node_id and run.attempt == 3
    assert [h.status for h in run.history] == [pb.LOST, pb.FAILED], run.history
    assert run.history[0].node_id == victim.node_id
    assert run.fencing_token > before.fencing_token  # the new owner claimed it anew
    hits = [d for d in sink.deliveries() if d.path == "/move"]
    assert len(hits) == 3  # attempt 1 (held, its node died), then attempts 2 and 3
    assert len({d.idempotency_key for d in hits}) == 1
    assert len({d.fencing_token for d in hits}) == 2  # the lost claim's, then the new one's


def test_priority_jitter_and_trigger_under_forbid(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    # One run at a time per node: on n1, which owns both, the high-priority task goes first.
    (n1, _) = nodes(2, extra_args=["--max-concurrent-runs", "1"])
    hi_id = owned_by("n1", ["n1", "n2"], "prio-hi")
    lo_id = owned_by("n1", ["n1", "n2"], "prio-lo")
    with SchedulerClient(n1.address) as client:
        hi = every(hi_id, 1, f"{sink.url}/hi?delay_s=0.4", priority=10)
        lo = every(lo_id, 1, f"{sink.url}/lo?delay_s=0.4", priority=-10)
        jit = every("jitter", 2, f"{sink.url}/j")
        jit.schedule.jitter.FromMilliseconds(900)
        forbid = every(
            "forbid-trigger", 3600, f"{sink.url}/ft?delay_s=3", overlap=pb.OVERLAP_FORBID
        )
        client.create_tasks([hi, lo, jit, forbid])
        first = client.trigger_task("forbid-trigger")
        assert first.status == pb.CLAIMED

        def running() -> None:
            assert client.list_runs("forbid-trigger", 1)[0].status == pb.RUNNING

        assert_eventually(running, timeout=5)
        second = client.trigger_task("forbid-trigger")
        assert second.status == pb.SKIPPED and second.skip_reason == pb.SKIP_OVERLAP, second
        cli = subprocess.run(
            [sys.executable, "-m", "peerd", "--server", n1.address, "task", "trigger", forbid.id],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cli.returncode == EXIT_NOT_RUN, cli
        assert "not run: overlap" in cli.stderr and "(FORBID)" in cli.stderr
        time.sleep(6)
        hi_runs = [r for r in client.list_runs(hi_id, 30) if r.HasField("started_at")]
        lo_runs = [r for r in client.list_runs(lo_id, 30) if r.HasField("started_at")]
        jit_runs = [r for r in client.list_runs("jitter", 10) if r.HasField("started_at")]
    assert len(hi_runs) >= 4 and lo_runs
    hi_late = sorted(r.lateness.ToTimedelta() for r in hi_runs)
    lo_late = sorted(r.lateness.ToTimedelta() for r in lo_runs)
    assert hi_late[len(hi_late) // 2] < lo_late[len(lo_late) // 2]
    assert len(jit_runs) >= 2
    for r in jit_runs:
        slot = r.scheduled_at.ToDatetime(UTC)
        offset = jitter_offset(
            "jitter", r.scheduled_at.ToMilliseconds(), timedelta(milliseconds=900)
        )
        assert r.fire_at.ToDatetime(UTC) == slot + offset
        assert r.started_at.ToDatetime(UTC) >= slot + offset


def _soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
