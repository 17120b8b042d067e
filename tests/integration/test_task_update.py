"""UpdateTask, ApplyTasks and task history on real nodes and a real etcd; schedule changes at the
boundary, during owner changes, and a target change while a run of the old target is in flight.

Schedules here are ``every`` 1, 2 or 3 s from a ``start_at`` anchor, spread over the tasks so
that wherever an update lands, some tasks have a new slot between their last slot and the
update (where an accidental replay would show). The test computes each schedule's slots
itself: schedule *i* is in force on ``(T_i-1, T_i]``, ``T_i`` the ``schedule_since`` an update
returned. The invariants checked:

1. every slot of the schedule in force (old slots up to the change, new ones after it) up to a
   horizon has a record (a run, or a SKIPPED one): nothing lost at the change;
2. no record for a slot of the new schedule at or before the change that the old schedule did
   not have (nothing replayed by accident), and none for a slot of no schedule at all;
3. no slot delivered twice (one delivery per idempotency key) and no multi-claim in the audit.

A slot of the old schedule *after* the change is allowed (its owner claimed it before its watch
delivered the update: docs/tasks.md, "The change boundary").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from peerd.client import SchedulerClient
from peerd.coord.etcd import Etcd, prefix_end
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually

LEASE_TTL_S = 4
S = timedelta(seconds=1)


def every_spec(task_id: str, url: str, seconds: int) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=url))
    spec.schedule.every.FromSeconds(seconds)
    spec.timeout.FromSeconds(5)
    return spec


def staggered(ids: Sequence[str], url: str, seconds: int) -> list[pb.TaskSpec]:
    """Tasks every ``seconds`` s whose anchors (``start_at``) are spread over one period, so
    that wherever an update lands in the period, some tasks have a slot of the new schedule
    between their last slot and the update (where a replay would show)."""
    base = datetime.now(UTC).replace(microsecond=0) + 2 * S
    specs = []
    for i, t in enumerate(ids):
        spec = every_spec(t, f"{url}/{t}", seconds)
        offset_ms = i * seconds * 1000 // len(ids)  # slots are whole milliseconds
        spec.schedule.start_at.FromDatetime(base + timedelta(milliseconds=offset_ms))
        specs.append(spec)
    return specs


@dataclass(frozen=True)
class Era:
    """Schedule ``every_s`` in force on ``(since, until]`` (until None: open)."""

    every_s: int
    since: datetime
    until: datetime | None


def slots(anchor: datetime, every_s: int, after: datetime, until: datetime) -> set[datetime]:
    k = max(0, int((after - anchor) / (every_s * S)))
    out = set()
    while (s := anchor + k * every_s * S) <= until:
        if s > after:
            out.add(s)
        k += 1
    return out


def eras(created: datetime, first_s: int, changes: Sequence[tuple[datetime, int]]) -> list[Era]:
    out, since, every_s = [], created, first_s
    for at, new_s in changes:
        out.append(Era(every_s, since, at))
        since, every_s = at, new_s
    return [*out, Era(every_s, since, None)]


def expected(anchor: datetime, history: list[Era], horizon: datetime) -> set[datetime]:
    out: set[datetime] = set()
    for e in history:
        out |= slots(anchor, e.every_s, e.since, min(e.until or horizon, horizon))
    return out


def check_task(
    client: SchedulerClient, task_id: str, history: list[Era], horizon: datetime
) -> None:
    """Invariants 1 and 2 of the module docstring for one task."""
    spec = client.get_task(task_id)
    anchor = spec.schedule.start_at.ToDatetime(UTC)  # every schedule of these tasks has it
    recorded = {
        r.scheduled_at.ToDatetime(UTC) for r in client.list_runs(task_id, 500) if not r.manual
    }
    want = expected(anchor, history, horizon)
    missing = sorted(want - {s for s in recorded if s <= horizon})
    assert not missing, f"{task_id}: slots with no record: {missing[:5]}"
    for s in recorded:
        era = next(e for e in history if e.since < s and (e.until is None or s <= e.until))
        in_force = (s - anchor) % (era.every_s * S) == timedelta(0)
        late_old = any(
            e.until is not None and s > e.until and (s - anchor) % (e.every_s * S) == timedelta(0)
            for e in history
        )
        assert in_force or late_old, f"{task_id}: {s} is no slot of the schedule in force"


def no_duplicates(sink: WebhookSink) -> None:
    keys = [d.idempotency_key for d in sink.deliveries() if d.idempotency_key]
    dup = {k for k in keys if keys.count(k) > 1}
    assert not dup, f"slots delivered twice: {sorted(dup)[:5]}"


def no_multi_claims(client: SchedulerClient, ids: Sequence[str]) -> None:
    for task_id in ids:
        assert not client.audit_task(task_id).multi_claims, task_id


def update_every(client: SchedulerClient, task_id: str, seconds: int) -> datetime:
    """Change ``task_id`` to every ``seconds`` s; returns the change time (schedule_since)."""
    spec = client.get_task(task_id)
    spec.schedule.every.FromSeconds(seconds)
    new = client.update_task(spec, spec.revision)
    assert new.revision > spec.revision
    return new.schedule_since.ToDatetime(UTC)


def etcd_keys(endpoint: str, prefix: str) -> list[bytes]:
    async def read() -> list[bytes]:
        e = Etcd([endpoint])
        await e.connect()
        try:
            kvs, _, _ = await e.range(prefix.encode(), prefix_end(prefix.encode()), keys_only=True)
            return [kv.key for kv in kvs]
        finally:
            await e.close()

    return asyncio.run(read())


def test_update_keeps_the_task_and_answers_aborted_on_a_stale_revision(  # type: ignore[no-untyped-def]
    nodes, etcd_endpoint: str, cluster_name: str
) -> None:
    a, b = nodes(2, lease_ttl_s=LEASE_TTL_S)
    with SchedulerClient(a.address) as ca, SchedulerClient(b.address) as cb:
        created = ca.create_task(every_spec("upd", "http://127.0.0.1:9/a", 60))
        assert created.revision > 0 and cb.get_task("upd").revision == created.revision
        change = pb.TaskSpec()
        change.CopyFrom(created)
        change.http.url = "http://127.0.0.1:9/b"
        change.description = "moved"
        updated = cb.update_task(change, created.revision)  # through the other node
        assert updated.revision > created.revision and updated.http.url.endswith("/b")
        assert updated.created_at == created.created_at
        assert not updated.HasField("schedule_since")  # the schedule did not change
        same = cb.update_task(updated, updated.revision)  # nothing changes: nothing written
        assert same.revision == updated.revision
        with pytest.raises(grpc.RpcError) as err:
            ca.update_task(change, created.revision)  # stale: someone updated it meanwhile
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert ca.get_task("upd").revision == updated.revision
        ca.pause_task("upd", "maintenance")
        ca.resume_task("upd")
        history = ca.task_history("upd")
        assert [c.operation for c in history] == ["ResumeTask", "PauseTask", "UpdateTask"]
        fields = {f.field: (f.before, f.after) for f in history[-1].changes}
        assert fields == {
            "description": ("", '"moved"'),
            "http.url": ('"http://127.0.0.1:9/a"', '"http://127.0.0.1:9/b"'),
        }
        assert history[-1].previous_revision == created.revision
        assert history[-1].revision == updated.revision and history[-1].node_id == b.node_id
        prefix = f"/peerd/{cluster_name}/history/upd/"
        assert len(etcd_keys(etcd_endpoint, prefix)) == 3
        ca.delete_task("upd")
        assert etcd_keys(etcd_endpoint, prefix) == []  # the history goes with the task


def test_apply_tasks_is_all_or_nothing(nodes, etcd_endpoint: str, cluster_name: str) -> None:  # type: ignore[no-untyped-def]
    (a,) = nodes(1, lease_ttl_s=LEASE_TTL_S)
    with SchedulerClient(a.address) as c:
        keep = c.create_task(every_spec("keep", "http://127.0.0.1:9/k", 60))
        gone = c.create_task(every_spec("gone", "http://127.0.0.1:9/g", 60))
        before = etcd_keys(etcd_endpoint, f"/peerd/{cluster_name}/tasks/")
        changed = pb.TaskSpec()
        changed.CopyFrom(keep)
        changed.priority = 5
        bad = pb.ApplyTasksRequest(
            create=[
                every_spec("new", "http://127.0.0.1:9/n", 60),
                every_spec("keep", "http://x/", 60),
            ]
        )
        bad.update.add(task=changed, expected_revision=keep.revision)
        bad.delete.add(id="gone", expected_revision=gone.revision)
        with pytest.raises(grpc.RpcError) as err:
            c.apply_tasks(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # 'keep' named twice
        del bad.create[1]
        stale = pb.ApplyTasksRequest()
        stale.CopyFrom(bad)
        stale.delete[0].expected_revision = gone.revision - 1
        with pytest.raises(grpc.RpcError) as err:
            c.apply_tasks(stale)
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert etcd_keys(etcd_endpoint, f"/peerd/{cluster_name}/tasks/") == before
        assert c.get_task("keep").revision == keep.revision
        resp = c.apply_tasks(bad)
        assert [t.id for t in resp.created] == ["new"] and [t.id for t in resp.updated] == ["keep"]
        assert list(resp.deleted) == ["gone"] and resp.revision > gone.revision
        assert sorted(t.id for t in c.list_tasks()) == ["keep", "new"]
        assert c.get_task("keep").priority == 5
        again = pb.ApplyTasksRequest()
        again.update.add(task=c.get_task("keep"))
        assert c.apply_tasks(again).revision == 0  # nothing changed, nothing written


def test_a_schedule_change_takes_effect_after_the_update(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    cluster = nodes(3, lease_ttl_s=LEASE_TTL_S)
    ids = [f"sch-{i:02d}" for i in range(9)]
    with SchedulerClient(cluster[0].address) as c:
        c.create_tasks(staggered(ids, f"{sink.url}/s", 2))
        assert_eventually(
            lambda: {d.path.rsplit("/", 1)[1] for d in sink.deliveries()} >= set(ids), timeout=20
        )
        changes: dict[str, datetime] = {}
        for i, t in enumerate(ids):  # through every node, owner or not
            with SchedulerClient(cluster[i % 3].address) as via:
                changes[t] = update_every(via, t, 1)  # the odd seconds: new slots only
        horizon = max(changes.values()) + 4 * S
        history = {t: eras(datetime.min.replace(tzinfo=UTC), 2, [(changes[t], 1)]) for t in ids}

        def settled() -> None:
            assert datetime.now(UTC) > horizon + 2 * S
            for t in ids:
                check_task(c, t, history[t], horizon)

        assert_eventually(settled, timeout=40, interval=0.5)
        no_duplicates(sink)
        no_multi_claims(c, ids)


@pytest.mark.slow
def test_updates_landing_during_owner_changes(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    cluster = nodes(3, lease_ttl_s=LEASE_TTL_S)
    ids = [f"own-{i:02d}" for i in range(12)]
    with SchedulerClient(cluster[0].address) as c:
        c.create_tasks(staggered(ids, f"{sink.url}/o", 2))
    assert_eventually(
        lambda: {d.path.rsplit("/", 1)[1] for d in sink.deliveries()} >= set(ids), timeout=20
    )
    changes: dict[str, list[tuple[datetime, int]]] = {t: [] for t in ids}

    def update_all(via: str, seconds: int) -> None:
        with SchedulerClient(via) as client:
            for t in ids:
                changes[t].append((update_every(client, t, seconds), seconds))

    def new_schedule_in_effect(via: str) -> None:
        with SchedulerClient(via) as client:
            for t in ids:
                at, seconds = changes[t][-1]
                newer = [
                    r
                    for r in client.list_runs(t, 10)
                    if r.scheduled_at.ToDatetime(UTC) > at + seconds * S
                ]
                assert newer, f"{t}: no slot after its change at {at} yet"

    (joiner,) = nodes(1, lease_ttl_s=LEASE_TTL_S, wait=False)  # a node joins ...
    update_all(cluster[1].address, 3)  # ... while the updates land
    joiner.wait_ready(20)
    assert_eventually(lambda: new_schedule_in_effect(cluster[0].address), timeout=30)
    cluster[1].send_sigterm()  # a node drains (hands its tasks over) ...
    update_all(cluster[2].address, 2)  # ... while the updates land
    assert cluster[1].wait_exit(40) == 0, cluster[1].log_tail()
    assert_eventually(lambda: new_schedule_in_effect(cluster[0].address), timeout=30)
    cluster[1].start(wait=False)  # and comes back (its tasks are handed back to it)
    update_all(joiner.address, 3)
    cluster[1].wait_ready(20)
    horizon = max(at for t in ids for at, _ in changes[t]) + 8 * S
    with SchedulerClient(cluster[0].address) as c:

        def settled() -> None:
            assert datetime.now(UTC) > horizon + 2 * S
            for t in ids:
                check_task(c, t, eras(datetime.min.replace(tzinfo=UTC), 2, changes[t]), horizon)

        assert_eventually(settled, timeout=60, interval=0.5)
        no_duplicates(sink)
        no_multi_claims(c, ids)
    assert any("handoff_done" in n.log_text() for n in cluster)


def test_a_run_of_the_old_target_finishes_there_and_the_next_slot_uses_the_new_one(  # type: ignore[no-untyped-def]
    nodes, sink: WebhookSink, tmp_path: Path
) -> None:
    a, b = nodes(2, lease_ttl_s=LEASE_TTL_S, allow_shell=["/bin/sh -c *"])
    started, release = tmp_path / "started", tmp_path / "release"
    script = (
        f'echo "$PEERD_IDEMPOTENCY_KEY" >> {started}; while [ ! -e {release} ]; do sleep 0.05; done'
    )
    spec = pb.TaskSpec(id="tgt", shell=pb.ShellTarget(argv=["/bin/sh", "-c", script]))
    spec.schedule.every.FromSeconds(2)
    with SchedulerClient(a.address) as ca, SchedulerClient(b.address) as cb:
        ca.create_task(spec)
        assert_eventually(lambda: started.exists() and started.read_text().strip(), timeout=20)
        in_flight = started.read_text().split()[0]  # held until `release` exists
        change = cb.get_task("tgt")
        change.ClearField("shell")
        change.http.url = f"{sink.url}/new"
        updated = cb.update_task(change, change.revision)
        changed_at = updated.updated_at.ToDatetime(UTC)
        assert_eventually(lambda: [d for d in sink.deliveries() if d.path == "/new"], timeout=20)
        release.touch()
        old_keys = started.read_text().split()
        slot_ms = int(in_flight.rsplit("/", 1)[1])

        def old_runs_finished() -> pb.RunRecord:
            runs = {r.scheduled_at.ToMilliseconds(): r for r in ca.list_runs("tgt", 100)}
            for key in old_keys:
                assert runs[int(key.rsplit("/", 1)[1])].status == pb.SUCCEEDED, key
            return runs[slot_ms]

        run = assert_eventually(old_runs_finished, timeout=20)
        assert run.finished_at.ToDatetime(UTC) > changed_at  # it was in flight at the change
        new_keys = [d.idempotency_key for d in sink.deliveries()]
        assert in_flight not in new_keys  # finished on the old target, not run again
        assert len(new_keys) == len(set(new_keys)) and not set(new_keys) & set(old_keys)
