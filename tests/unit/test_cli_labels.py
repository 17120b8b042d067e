"""CLI: --label/--node-selector on task create, task list -l, and how labels, selectors and
unschedulable tasks are shown (no real peerd node)."""

from __future__ import annotations

import pytest

from peerd import cli
from peerd.cli_output import task_detail, tasks_table
from peerd.cli_output_cluster import cluster_text, scheduling_text
from peerd.cli_output_runs import runs_table
from peerd.v1 import scheduler_pb2 as pb
from tests.unit.test_cli import closed_port, run, spec_of


def test_create_flags_set_labels_and_node_selector() -> None:
    spec = spec_of(
        "backup", "--every", "1h", "--label", "team=db", "--label", "example.com/tier=gold",
        "--node-selector", " zone=b, disk in (ssd,nvme) ", "--http-post", "http://h/",
    )  # fmt: skip
    assert dict(spec.labels) == {"team": "db", "example.com/tier": "gold"}
    assert spec.node_selector == "zone=b, disk in (ssd,nvme)"
    plain = spec_of("--every", "1h", "--http-post", "http://h/")
    assert (dict(plain.labels), plain.node_selector) == ({}, "")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--label", "team"], "--label: expected KEY=VALUE, got 'team'"),
        (["--label", "a=1", "--label", "a=2"], "--label: label 'a' given twice"),
        (["--label", "a=-1"], "--label: value '-1' of 'a' must be empty or begin"),
        (["--node-selector", "zone in (a"], "--node-selector: 'zone in (a': expected ',' or ')'"),
    ],
)
def test_bad_label_flags_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(
        capsys, "--server", f"127.0.0.1:{closed_port()}", "task", "create",
        "--every", "1m", "--http-post", "http://h/", *argv,
    )  # fmt: skip
    assert (code, out) == (cli.EXIT_INVALID, "")
    assert err.startswith(f"peerd: error: {message}") and err.count("\n") == 1, err


def test_list_selector_is_checked_before_any_call(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    code, out, err = run(capsys, "--server", f"127.0.0.1:{port}", "task", "list", "-l", "a in b")
    assert (code, out) == (cli.EXIT_INVALID, "")
    assert err.startswith("peerd: error: --selector: 'a in b': expected '(' at position 6")


def task(task_id: str, **labels: str) -> pb.TaskSpec:
    t = pb.TaskSpec(id=task_id, labels=labels, http=pb.HttpTarget(url="http://h/"))
    t.schedule.cron = "@hourly"
    return t


def test_tasks_table_shows_labels_only_when_some_task_has_them() -> None:
    assert tasks_table([task("a")]).splitlines()[0].split() == ["ID", "SCHEDULE", "STATE", "TARGET"]
    lines = tasks_table([task("a", team="db", env="prod"), task("b")]).splitlines()
    assert lines[0].split()[-1] == "LABELS"
    assert lines[1].endswith("env=prod,team=db") and lines[2].endswith("-")


def test_task_detail_shows_labels_selector_and_scheduling() -> None:
    t = task("backup", team="db")
    t.node_selector = "zone=b"
    text = task_detail(t, "unschedulable: no live node matches zone=b")
    assert "\nlabels:             team=db\n" in text
    assert "\nnode_selector:      zone=b\n" in text
    assert "\nscheduling:         unschedulable: no live node matches zone=b\n" in text
    plain = task_detail(task("x"))
    assert "node_selector:      none: any node (default)" in plain
    assert "labels:" not in plain and "scheduling:" not in plain


def view(*members: tuple[str, str, bool]) -> pb.GetClusterResponse:
    c = pb.GetClusterResponse(cluster="c", node_id="n1", task_count=2, revision=9)
    for node_id, zone, dead in members:
        labels = {"zone": zone} if zone else {}
        c.members.add(node_id=node_id, address=f"{node_id}:1", labels=labels, suspected_dead=dead)
    return c


def test_scheduling_text() -> None:
    t = task("backup")
    t.node_selector = "zone=b"
    c = view(("n1", "a", False), ("n2", "b", True), ("n3", "b", False), ("n4", "b", False))
    assert scheduling_text(t, c) == "2 live node(s) match: n3, n4"
    c = view(("n1", "a", False), ("n2", "b", True))
    c.unschedulable_tasks.add(task_id="backup", reason="no live node matches zone=b")
    c.unschedulable_count = 1
    assert scheduling_text(t, c) == "unschedulable: no live node matches zone=b"
    c.unschedulable_count = 1001
    c.ClearField("unschedulable_tasks")
    assert scheduling_text(t, c).startswith("unknown")


def test_cluster_text_shows_labels_and_unschedulable_tasks() -> None:
    c = view(("n1", "a", False), ("n2", "", False))
    c.unschedulable_tasks.add(task_id="backup", reason="no live node matches zone=b")
    c.unschedulable_count = 3
    lines = cluster_text(c).splitlines()
    assert lines[1] == "tzdata: no version agreed yet"
    assert lines[2].split() == ["NODE", "ADDRESS", "STATE", "STARTED", "VERSION", "TZDATA", "OWNED",
                                "TASKS", "LABELS"]  # fmt: skip
    assert lines[3].endswith("zone=a") and lines[4].endswith("-")
    assert lines[5:] == [
        "task backup: unschedulable: no live node matches zone=b",
        "... and 2 more unschedulable tasks",
    ]
    plain = cluster_text(view(("n1", "", False)))
    assert "LABELS" not in plain and "unschedulable" not in plain


def test_runs_table_names_the_unschedulable_skip_reason() -> None:
    r = pb.RunRecord(task_id="t", status=pb.SKIPPED, skip_reason=pb.SKIP_UNSCHEDULABLE)
    assert "SKIPPED (unschedulable)" in runs_table([r])
