"""PreviewSchedule, AuditTask, WatchRuns, PauseTask's note and the validation of the new TaskSpec
fields, against real etcd and real ``peerd serve`` processes (RPC and CLI)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import structlog.testing
from aetcd import rpc

from peerd.client import SchedulerClient
from peerd.coord.etcd import Etcd
from peerd.coord.keys import Keys
from peerd.coord.runs_view import RunsView
from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES, assert_eventually, cli
from tests.integration.test_api import etcd_state

BERLIN = RULES.zone("Europe/Berlin", "tz")


def ts(msg: object) -> datetime:
    return msg.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


def spring_forward(year: int) -> datetime:
    """Midnight UTC of the Sunday Berlin moves from 02:00 CET to 03:00 CEST."""
    day = datetime(year, 3, 31, tzinfo=UTC)
    while day.weekday() != 6:
        day -= timedelta(days=1)
    return day


# --------------------------------------------------------------------------- preview


def test_preview_dst_days_via_rpc_and_cli(nodes) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1)
    berlin = pb.Schedule(cron="30 2 * * *", time_zone="Europe/Berlin")
    with SchedulerClient(node.address) as client:
        resp = client.preview(schedule=berlin, count=3, after=datetime(2026, 3, 28, tzinfo=UTC))
        assert resp.time_zone == "Europe/Berlin"
        assert [s.local_time for s in resp.slots] == [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",  # 02:30 does not exist: AUTO -> SHIFT (fixed hour)
            "2026-03-30T02:30:00+02:00",
        ]
        assert ts(resp.slots[1].scheduled_at) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
        assert "shift" in resp.slots[1].note and not resp.slots[0].note
        # fall back: 02:30 happens twice on 2026-10-25; AUTO -> FIRST gives one slot
        fall = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
        resp = client.preview(schedule=berlin, count=2, after=fall)
        assert [ts(s.scheduled_at) for s in resp.slots] == [
            datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
            datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
        ]
        both = pb.Schedule()
        both.CopyFrom(berlin)
        both.dst_ambiguous = pb.DST_AMBIGUOUS_BOTH
        resp = client.preview(schedule=both, count=2, after=fall)
        assert [s.local_time for s in resp.slots] == [
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:30:00+01:00",
        ]

        # a stored task previews through the same code (its created_at bounds apply: use next
        # year's spring-forward day)
        task = pb.TaskSpec(id="berlin", http=pb.HttpTarget(url="http://127.0.0.1:9/x"))
        task.schedule.CopyFrom(berlin)
        client.create_task(task)
        day = spring_forward(datetime.now(UTC).year + 1)
        resp = client.preview(task_id="berlin", count=2, after=day - timedelta(days=1))
        shifted = day.replace(hour=1).astimezone(BERLIN).isoformat()
        assert resp.slots[1].local_time == shifted and "shift" in resp.slots[1].note

        for kwargs, field, code in (
            ({"schedule": berlin, "count": 1001}, "count", grpc.StatusCode.INVALID_ARGUMENT),
            ({"schedule": berlin, "count": -1}, "count", grpc.StatusCode.INVALID_ARGUMENT),
            (
                {"schedule": pb.Schedule(cron="61 * * * *")},
                "schedule.cron",
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                {"schedule": pb.Schedule(cron="* * * * *", time_zone="Mars/Base")},
                "schedule.time_zone",
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            ({"task_id": "missing"}, "missing", grpc.StatusCode.NOT_FOUND),
        ):
            with pytest.raises(grpc.RpcError) as info:
                client.preview(**kwargs)  # type: ignore[arg-type]
            assert info.value.code() == code, info.value.details()
            assert field in info.value.details()
        assert len(client.preview(schedule=pb.Schedule(cron="* * * * *")).slots) == 10

    # the CLI goes through the same RPC
    out = cli(node, "preview", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
              "--from", "2026-03-28T00:00:00Z", "-n", "3")  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["SCHEDULED (UTC)", "LOCAL", "NOTE"]
    assert "FIRE AT" not in lines[0]
    assert "2026-03-29T01:00:00.000Z  2026-03-29T03:00:00+02:00" in lines[2]
    assert "shift" in lines[2]
    out = cli(node, "-o", "json", "preview", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
              "--from", "2026-10-24T12:00:00Z", "-n", "2", "--dst-ambiguous", "both")  # fmt: skip
    assert out.returncode == 0, out.stderr
    slots = json.loads(out.stdout)["slots"]
    assert [s["local_time"][:10] for s in slots] == ["2026-10-25", "2026-10-25"]
    jit = cli(node, "preview", "--every", "1m", "--jitter", "20s", "-n", "3")
    assert jit.returncode == 0 and "FIRE AT" in jit.stdout.splitlines()[0], jit.stderr
    out = cli(node, "task", "preview", "berlin", "-n", "2")
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 4, out.stderr  # header, 2 slots, the rules
    assert lines[-1].startswith("time-zone rules: tzdata "), lines
    bad = cli(node, "preview", "--cron", "30 2 * * *", "--tz", "Nowhere/Land")
    assert bad.returncode == 2 and "schedule.time_zone" in bad.stderr
    assert cli(node, "task", "preview", "nope").returncode == 3


# --------------------------------------------------------------------------- audit and watch


def test_runs_audit_clean_and_watch_sees_every_transition(nodes, sink: WebhookSink) -> None:  # type: ignore[no-untyped-def]
    n1, n2 = nodes(2)
    # Runs last longer than the writer's progress delay (1 s), so their RUNNING record is
    # written too (a run that ends sooner goes from CLAIMED straight to its final status).
    spec = pb.TaskSpec(id="tick", http=pb.HttpTarget(url=f"{sink.url}/tick?delay_s=1.5"))
    spec.schedule.every.FromSeconds(1)
    spec.misfire_threshold.FromSeconds(1)  # the audit expects slots up to now - 1 s
    with SchedulerClient(n1.address) as client, SchedulerClient(n2.address) as watcher:
        client.create_task(spec)
        stream = watcher.watch_runs("tick", replay=0)
        seen: dict[int, list[int]] = defaultdict(list)
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                for rec in stream:
                    seen[rec.scheduled_at.ToMilliseconds()].append(rec.status)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    errors.append(exc)

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        follow = subprocess.Popen(
            [sys.executable, "-m", "peerd", "--server", n1.address, "runs", "tick", "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # SIGINT as at a terminal: a test run started in the background (bash `&`) ignores
            # SIGINT, and its children would inherit that and never see the Ctrl-C below.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:

            def transitions() -> None:
                full = [
                    slot
                    for slot, statuses in seen.items()
                    if statuses[:1] == [pb.CLAIMED]
                    and pb.RUNNING in statuses
                    and statuses[-1] == pb.SUCCEEDED
                ]
                assert len(full) >= 3, dict(seen)

            assert_eventually(transitions, timeout=15, interval=0.2)
            assert not errors
            for statuses in seen.values():  # never backwards
                order = [pb.CLAIMED, pb.RUNNING, pb.SUCCEEDED]
                assert [s for s in order if s in statuses] == [s for s in statuses if s in order], (
                    statuses
                )

            def audited() -> pb.AuditTaskResponse:
                report = client.audit_task("tick")
                assert report.expected_slots >= 3, report
                return report

            report = assert_eventually(audited, timeout=10, interval=0.5)
            assert report.gap_count == 0 and not report.gaps, report
            assert not report.multi_claims and not report.truncated
            assert report.by_status["SUCCEEDED"] >= 3
            started = sum(
                report.by_status.get(s, 0) for s in ("RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
            )
            assert sum(b.count for b in report.lateness) == started
            assert [b.le_ms for b in report.lateness][-1] == -1
            assert report.lateness_max.ToTimedelta() >= report.lateness_p50.ToTimedelta()
            assert ts(report.since) == ts(client.get_task("tick").created_at)

            since = (ts(report.until) - timedelta(seconds=2)).isoformat()
            out = cli(n2, "audit", "tick", "--since", since)
            assert out.returncode == 0, out.stderr
            assert "gaps:            0" in out.stdout and "multi-claims:    0" in out.stdout
            assert "LATENESS <=" in out.stdout
            js = cli(n2, "-o", "json", "audit", "tick")
            assert js.returncode == 0 and int(json.loads(js.stdout)["expected_slots"]) >= 3
        finally:
            stream.cancel()
            reader.join(timeout=5)
            follow.send_signal(signal.SIGINT)
            try:
                out_text, err_text = follow.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                follow.kill()
                raise
        assert not reader.is_alive()
        assert follow.returncode == 0, err_text
        lines = out_text.splitlines()
        assert lines[0].split()[:2] == ["SCHEDULED", "STATUS"]
        statuses = {line.split()[1] for line in lines[1:]}
        assert {"CLAIMED", "RUNNING", "SUCCEEDED"} <= statuses, out_text

        # replay: the newest N existing records first, oldest of them first
        replay = watcher.watch_runs("tick", replay=3)
        first = [next(replay) for _ in range(3)]
        replay.cancel()
        slots = [r.scheduled_at.ToMilliseconds() for r in first]
        assert slots == sorted(slots) and all(r.fencing_token > 0 for r in first)
        newest = client.list_runs("tick", 3)
        assert slots[-1] <= newest[0].scheduled_at.ToMilliseconds()


# --------------------------------------------------------------------------- pause note


def test_pause_note_and_new_field_validation(nodes, etcd_endpoint: str, cluster_name: str) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1)
    prefix = f"/peerd/{cluster_name}/"
    with SchedulerClient(node.address) as client:
        base = pb.TaskSpec(id="noted", http=pb.HttpTarget(url="http://127.0.0.1:9/x"))
        base.schedule.cron = "0 3 * * *"
        base.pause_note = "set by a client: ignored"
        created = client.create_task(base)
        assert created.pause_note == "" and client.get_task("noted").pause_note == ""

        paused = client.pause_task("noted", "waiting for the db migration")
        assert paused.paused and paused.pause_note == "waiting for the db migration"
        assert client.get_task("noted").pause_note == "waiting for the db migration"
        shown = cli(node, "task", "get", "noted")
        assert "pause_note:" in shown.stdout and "db migration" in shown.stdout
        before = etcd_state(etcd_endpoint, prefix)
        with pytest.raises(grpc.RpcError) as info:
            client.pause_task("noted", "x" * 1025)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("note: ")
        assert etcd_state(etcd_endpoint, prefix) == before
        resumed = client.resume_task("noted")
        assert not resumed.paused and resumed.pause_note == ""
        assert client.get_task("noted").pause_note == ""
        out = cli(node, "task", "pause", "noted", "--note", "cli note")
        assert out.returncode == 0 and "cli note" in out.stdout, out.stderr
        assert client.get_task("noted").pause_note == "cli note"
        client.resume_task("noted")

        def bad(fn: Callable[[pb.TaskSpec], object], python: bool = False) -> pb.TaskSpec:
            spec = pb.TaskSpec(id="bad-one", http=pb.HttpTarget(url="http://127.0.0.1:9/x"))
            spec.schedule.every.FromSeconds(60)
            if python:
                spec.python.name = "peerd.echo"
            fn(spec)
            return spec

        cases: list[tuple[pb.TaskSpec, str]] = [
            (bad(lambda s: setattr(s, "overlap", 9)), "task.overlap"),
            (bad(lambda s: setattr(s, "catch_up", 9)), "task.catch_up"),
            (bad(lambda s: s.catch_up_window.FromMilliseconds(500)), "task.catch_up_window"),
            (bad(lambda s: s.catch_up_window.FromSeconds(8 * 86400)), "task.catch_up_window"),
            (bad(lambda s: s.misfire_threshold.FromSeconds(2 * 86400)), "task.misfire_threshold"),
            (bad(lambda s: setattr(s.retry, "max_attempts", 101)), "task.retry.max_attempts"),
            (bad(lambda s: setattr(s.retry, "multiplier", -2.0)), "task.retry.multiplier"),
            (bad(lambda s: setattr(s, "priority", 101)), "task.priority"),
            (bad(lambda s: setattr(s, "priority", -101)), "task.priority"),
            (bad(lambda s: setattr(s, "on_failure", "bad-one")), "task.on_failure"),
            (bad(lambda s: setattr(s, "on_failure", "Not Valid")), "task.on_failure"),
            (bad(lambda s: setattr(s.python, "name", ""), python=True), "task.python.name"),
            (
                bad(lambda s: setattr(s.python, "args_json", "[1]"), python=True),
                "task.python.args_json",
            ),
            (
                bad(lambda s: setattr(s.python, "name", "no.such.entry"), python=True),
                "task.python.name: no entry point 'no.such.entry' in group peerd.tasks on node n1",
            ),
            (bad(lambda s: s.schedule.jitter.FromSeconds(7200)), "task.schedule.jitter"),
            (
                bad(lambda s: setattr(s.schedule, "dst_ambiguous", 9)),
                "task.schedule.dst_ambiguous",
            ),
        ]
        before = etcd_state(etcd_endpoint, prefix)
        for spec, mention in cases:
            with pytest.raises(grpc.RpcError) as info:
                client.create_task(spec)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert mention in info.value.details(), (mention, info.value.details())
            with pytest.raises(grpc.RpcError) as info:
                client.create_tasks([bad(lambda s: setattr(s, "id", "fine")), spec])
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert mention.replace("task.", "tasks[1].", 1) in info.value.details()
        assert etcd_state(etcd_endpoint, prefix) == before
        ok = client.create_task(bad(lambda s: setattr(s, "id", "py-ok"), python=True))
        assert ok.WhichOneof("target") == "python" and ok.python.name == "peerd.echo"

        # the new RPCs' own arguments
        with pytest.raises(grpc.RpcError) as info:
            next(client.watch_runs("noted", replay=1001))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("replay: ")
        with pytest.raises(grpc.RpcError) as info:
            next(client.watch_runs("missing"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            client.audit_task("missing")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            client.audit_task("noted", since=datetime.now(UTC) + timedelta(hours=1))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("since: ")
        assert cli(node, "audit", "missing").returncode == 3
        assert cli(node, "runs", "missing", "--follow").returncode == 3


# --------------------------------------------------------------------------- runs view


def test_runs_view_watch_relists_after_compaction(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The WatchRuns building block on a private etcd (compaction is etcd-wide): a watch whose
    start revision was compacted away re-lists and sends exactly the records written since."""
    keys = Keys("/peerd/view/")

    def rec(task: str, second: int, status: int = pb.CLAIMED) -> tuple[bytes, bytes]:
        r = pb.RunRecord(task_id=task, status=status)  # type: ignore[arg-type]
        r.scheduled_at.FromSeconds(1_800_000_000 + second)
        return keys.run(task, r.scheduled_at.ToMilliseconds()), r.SerializeToString()

    async def scenario(endpoint: str) -> None:
        e = Etcd([endpoint])
        await e.connect()
        view = RunsView(e, keys)
        try:
            for args in (("a", 1), ("a", 2), ("b", 1)):
                await e.put(*rec(*args))
            entries, revision = await view.newest("a", 10)
            assert [x.record.scheduled_at.seconds % 100 for x in entries] == [1, 2]
            assert all(x.create_revision == x.mod_revision for x in entries)
            await e.put(*rec("a", 1, pb.SUCCEEDED))  # an update: create revision unchanged
            await e.put(*rec("a", 3))
            await e.put(*rec("b", 2))
            resp = await e.txn(rpc.TxnRequest(success=[]))
            await e.compact(resp.header.revision)
            changes = view.watch("a", revision + 1)
            with structlog.testing.capture_logs() as logs:
                got = [await asyncio.wait_for(anext(changes), 5) for _ in range(2)]
            assert "runs_watch_compacted_relisting" in [log["event"] for log in logs]
            assert [(x.record.scheduled_at.seconds % 100, x.record.status) for x in got] == [
                (1, pb.SUCCEEDED),
                (3, pb.CLAIMED),
            ]
            assert got[0].create_revision < got[0].mod_revision
            assert got[0].filled().fencing_token == got[0].create_revision
            await e.put(*rec("b", 3))  # another task: not seen
            await e.put(*rec("a", 4, pb.RUNNING))
            nxt = await asyncio.wait_for(anext(changes), 5)
            assert (nxt.record.task_id, nxt.record.status) == ("a", pb.RUNNING)
            await changes.aclose()
            everything, _ = await view.newest(None, 2)  # all tasks: the 2 latest writes
            assert [
                (x.record.task_id, x.record.scheduled_at.seconds % 100) for x in everything
            ] == [
                ("b", 3),
                ("a", 4),
            ]
            all_a, _ = await view.entries("a")
            assert [x.record.scheduled_at.seconds % 100 for x in all_a] == [1, 2, 3, 4]
        finally:
            await e.close()

    etcd = EmbeddedEtcd(tmp_path / "etcd", log_path=tmp_path / "etcd.log")
    etcd.start()
    try:
        asyncio.run(scenario(etcd.endpoint))
    finally:
        etcd.stop()
