"""``peerd apply``, ``peerd diff``, ``task update``, ``task edit``, ``task history`` and
``task get -o yaml`` as a user runs them: the real CLI against real nodes on a real etcd."""

from __future__ import annotations

from pathlib import Path

from peerd.client import SchedulerClient
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import cli

TASKS_YAML = """\
id: report
description: weekday report
cron: "0 6 * * 1-5"
tz: Europe/Paris
http: https://example.internal/hooks/report
method: GET
header: {Authorization: "Bearer token"}
max-attempts: 3
retry-on: [5xx, timeout]
---
id: heartbeat
every: 30s
http-post: http://127.0.0.1:9/hb
timeout: 5s
---
tasks:
  - id: sync
    every: 5m
    python: peerd.echo
    args: {full: false}
    overlap: forbid
    labels: {team: billing}
"""


def revisions(client: SchedulerClient) -> dict[str, int]:
    return {t.id: t.revision for t in client.list_tasks()}


def test_apply_diff_and_prune(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = nodes(2)
    path = tmp_path / "tasks.yaml"
    path.write_text(TASKS_YAML)
    diff = cli(a.address, "diff", "-f", str(path))
    assert diff.returncode == 1, diff.stderr
    assert "+ report" in diff.stdout and "3 to create" in diff.stdout
    applied = cli(b.address, "apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    assert "3 created, 0 updated, 0 deleted, 0 unchanged (managed-by=tasks)" in applied.stdout
    with SchedulerClient(a.address) as client:
        report = client.get_task("report")
        assert report.labels["managed-by"] == "tasks" and report.http.method == "GET"
        assert list(report.retry.retry_on) == [pb.RETRY_ON_HTTP_5XX, pb.RETRY_ON_TIMEOUT]
        before = revisions(client)
        unmanaged = pb.TaskSpec(id="by-hand", http=pb.HttpTarget(url="http://127.0.0.1:9/x"))
        unmanaged.schedule.every.FromSeconds(60)
        client.create_task(unmanaged)
        again = cli(a.address, "apply", "-f", str(path))
        assert again.returncode == 0 and "3 unchanged" in again.stdout, again.stdout
        assert cli(a.address, "diff", "-f", str(path)).returncode == 0
        assert {k: v for k, v in revisions(client).items() if k != "by-hand"} == before
        # someone pauses a task by hand: a file that does not mention `paused` leaves it alone
        client.pause_task("heartbeat", "incident")
        assert cli(a.address, "diff", "-f", str(path)).returncode == 0
        report_doc, _, sync_doc = TASKS_YAML.split("---\n")  # heartbeat leaves the file
        path.write_text(report_doc + "---\n" + sync_doc.replace("every: 5m", "every: 10m"))
        diff = cli(a.address, "diff", "-f", str(path), "--prune")
        assert diff.returncode == 1
        assert "~ sync" in diff.stdout and 'every: "5m" -> "10m"' in diff.stdout, diff.stdout
        assert "- heartbeat" in diff.stdout and "by-hand" not in diff.stdout
        assert cli(a.address, "apply", "-f", str(path), "--prune").returncode == 0
        assert sorted(revisions(client)) == ["by-hand", "report", "sync"]  # unlabelled: kept
        assert client.get_task("sync").schedule.every.seconds == 600


def test_apply_updates_what_differs_and_validates_everything_first(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (a,) = nodes(1)
    path = tmp_path / "set.toml"
    path.write_text(
        '[[tasks]]\nid = "t1"\nevery = "1m"\nhttp = "http://127.0.0.1:9/a"\n'
        '[[tasks]]\nid = "t2"\nat = 2030-01-01T00:00:00Z\nhttp = "http://127.0.0.1:9/b"\n'
    )
    assert cli(a.address, "apply", "-f", str(path)).returncode == 0
    with SchedulerClient(a.address) as client:
        rev = revisions(client)
        path.write_text(path.read_text().replace('"1m"', '"2m"'))
        diff = cli(a.address, "diff", "-f", str(path))
        assert diff.returncode == 1 and 'every: "1m" -> "2m"' in diff.stdout, diff.stdout
        assert cli(a.address, "apply", "-f", str(path)).returncode == 0
        after = revisions(client)
        assert after["t1"] > rev["t1"] and after["t2"] == rev["t2"]
        assert client.get_task("t1").schedule.every.seconds == 120
        history = client.task_history("t1")
        assert history[0].operation == "ApplyTasks"
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "a.yaml").write_text("id: t1\nevery: 5m\nhttp: http://127.0.0.1:9/a\n")
        (bad / "b.yaml").write_text("id: t3\nevery: 3x\nhttp: http://127.0.0.1:9/c\n---\nid: t4\n")
        res = cli(a.address, "apply", "-f", str(bad), "--managed-by", "set")
        assert res.returncode == 2
        errors = res.stderr.strip().splitlines()
        assert len(errors) == 2, res.stderr
        assert "b.yaml: document 1 (t3): every: '3x' is not a duration" in errors[0]
        assert "b.yaml: document 2 (t4): task: one of the keys" in errors[1]
        assert revisions(client) == after  # nothing applied: not even t1 of the valid a.yaml


def test_export_update_edit_and_history(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = nodes(2)
    path = tmp_path / "tasks.yaml"
    path.write_text(TASKS_YAML)
    assert cli(a.address, "apply", "-f", str(path)).returncode == 0
    exported = cli(b.address, "task", "list", "-o", "yaml")
    assert exported.returncode == 0
    (tmp_path / "export.yaml").write_text(exported.stdout)
    same = cli(a.address, "diff", "-f", str(tmp_path / "export.yaml"), "--managed-by", "tasks")
    assert same.returncode == 0, same.stdout  # export -> apply changes nothing
    up = cli(b.address, "task", "update", "heartbeat", "--every", "10s", "--header", "X-A:1")
    assert up.returncode == 0 and "updated (revision" in up.stdout, up.stderr
    again = cli(b.address, "task", "update", "heartbeat", "--every", "10s", "--header", "X-A:1")
    assert again.returncode == 0 and "no change" in again.stdout
    bad = cli(b.address, "task", "update", "heartbeat", "--every", "3x")
    assert bad.returncode == 2 and "--every" in bad.stderr
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i "s/every: 10s/every: 20s/" "$1"\n')
    editor.chmod(0o755)
    edit = cli(a.address, "task", "edit", "heartbeat", env={"EDITOR": str(editor)})
    assert edit.returncode == 0, edit.stderr
    broken = tmp_path / "broken.sh"
    broken.write_text('#!/bin/sh\nsed -i "s/every: 20s/every: 20x/" "$1"\n')
    broken.chmod(0o755)
    edit = cli(a.address, "task", "edit", "heartbeat", env={"EDITOR": str(broken)})
    assert edit.returncode == 2 and "every: '20x' is not a duration" in edit.stderr
    with SchedulerClient(a.address) as client:
        task = client.get_task("heartbeat")
        assert task.schedule.every.seconds == 20 and task.http.headers["X-A"] == "1"
    history = cli(a.address, "task", "history", "heartbeat")
    assert history.returncode == 0
    lines = history.stdout.splitlines()
    assert lines[0].startswith("revision ") and "UpdateTask" in lines[0]
    assert '  schedule.every: "10s" -> "20s"' in lines
    assert '  schedule.every: "30s" -> "10s"' in lines
    assert '  http.headers.X-A: (unset) -> "1"' in lines
