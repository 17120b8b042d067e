"""Task documents (peerd.cli_doc), the apply plan (peerd.cli_apply) and the update overlay
(peerd.cli_tasks): pure, no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peerd.cli import build_task_spec, parse_args
from peerd.cli_apply import (
    MANAGED_BY,
    Desired,
    managed_by_name,
    plan_apply,
    read_desired,
    requests,
    summary,
)
from peerd.cli_doc import (
    DocumentError,
    doc_to_spec,
    dump_json,
    dump_yaml,
    load_documents,
    parse_text,
    spec_to_doc,
)
from peerd.cli_tasks import history_text, overlay
from peerd.core.redact import REDACTED
from peerd.core.taskspec import normalise, user_view
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

COMMAND_LINES = [
    ["t1", "--every", "30s", "--http-post", "https://h/hook"],
    ["t2", "--cron", "0 6 * * 1-5", "--tz", "Europe/Paris", "--http", "https://h/r", "--method",
     "GET", "--header", "Authorization: Bearer x", "--header", "X-A:1", "--body=-{}-"],
    ["t3", "--at", "2030-01-02T03:04:05.678Z", "--shell", "--env", "A=b=c", "--workdir", "/tmp",
     "--", "/bin/sh", "-c", "echo --help"],
    ["t4", "--every", "5m", "--python", "billing.sync", "--args", '{"full": false, "n": [1]}',
     "--max-attempts", "3", "--backoff", "2s", "--max-backoff", "1m30s", "--backoff-multiplier",
     "1.5", "--retry-on", "exception,timeout", "--deadline", "10m", "--overlap", "forbid",
     "--catch-up", "run-all", "--catch-up-window", "2h", "--misfire-threshold", "0s",
     "--priority", "-7", "--on-failure", "alert", "--timeout", "250ms", "--paused",
     "--description", "nightly sync", "--on-owner-lost", "mark-lost"],
    ["t5", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--dst-nonexistent", "skip",
     "--dst-ambiguous", "both", "--jitter", "10s", "--start", "2030-01-01T00:00:00+02:00",
     "--end", "2031-01-01T00:00:00Z", "--max-runs", "5", "--http", "http://h/x", "--deadline",
     "1m"],
]  # fmt: skip


def spec_of(argv: list[str]) -> pb.TaskSpec:
    spec = build_task_spec(parse_args(["task", "create", *argv]))
    normalise(spec)
    return spec


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=lambda a: a[0])
def test_a_document_round_trips_to_the_same_spec(argv: list[str]) -> None:
    spec = spec_of(argv)
    spec.labels["team"] = "billing"
    spec.source = "crontab:/etc/crontab:3"
    if spec.WhichOneof("target") == "shell":
        spec.shell.run_as = "backup"
    doc = spec_to_doc(spec)
    again = doc_to_spec(doc)
    normalise(again)
    assert user_view(again) == user_view(spec)
    for text, fmt in ((dump_yaml([doc]), "yaml"), (dump_json(doc), "json")):
        ((_, parsed),) = parse_text(text, fmt, "x")
        reread = doc_to_spec(parsed)
        normalise(reread)
        assert user_view(reread) == user_view(spec), fmt


def test_document_values_take_their_natural_shapes() -> None:
    spec = doc_to_spec(
        {
            "id": "t",
            "every": 30,  # a bare number is seconds, as on the command line
            "python": "x.y",
            "args": {"a": [1, 2]},
            "retry-on": "5xx, timeout",
            "max-attempts": 2,
            "header": None,  # null: not set
        }
    )
    assert spec.schedule.every.seconds == 30 and spec.python.args_json == '{"a": [1, 2]}'
    assert len(spec.retry.retry_on) == 2


@pytest.mark.parametrize(
    ("doc", "key", "reason"),
    [
        ({"every": "1m", "http": "http://h/"}, "id", "required"),
        ({"id": "t", "every": "3x", "http": "http://h/"}, "every", "is not a duration"),
        ({"id": "t", "every": "1m", "http": "http://h/", "max_runs": 3}, "max_runs", "max-runs"),
        ({"id": "t", "every": "1m"}, "task", "one of the keys http-post http shell python"),
        ({"id": "t", "every": "1m", "cron": "* * * * *", "http": "h"}, "cron", "not allowed"),
        ({"id": "t", "every": "1m", "http": "http://h/", "overlap": "x"}, "overlap", "choice"),
        ({"id": "t", "every": "1m", "http": "http://h/", "header": "A:b"}, "header", "mapping"),
        ({"id": "t", "every": "1m", "http": "http://h/", "description": True}, "description",
         "quote"),
        ({"id": "T!", "every": "1m", "http": "http://h/"}, "id", "must match"),
        ({"id": "t", "every": "1m", "shell": "/bin/true"}, "shell", "list"),
        ({"id": "t", "every": "1m", "http": "http://h/", "run-as": "x"}, "run-as", "shell"),
        ({"id": "t", "every": "1m", "method": "GET", "http-post": "http://h/"}, "method",
         "always uses POST"),
    ],
)  # fmt: skip
def test_document_errors_name_the_place_and_the_key(
    doc: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(DocumentError) as err:
        doc_to_spec(doc, "f.yaml: document 2")
    assert err.value.where == "f.yaml: document 2"
    assert err.value.key == key and reason in err.value.reason, str(err.value)
    assert str(err.value).startswith(f"f.yaml: document 2: {key}: ")


def test_files_yaml_documents_toml_task_lists_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: a\nevery: 1m\nhttp: http://h/\n---\n---\nid: b\n")
    (tmp_path / "b.toml").write_text('[[tasks]]\nid = "c"\n[[tasks]]\nid = "d"\n')
    (tmp_path / "c.json").write_text('{"id": "e"}')
    (tmp_path / "notes.txt").write_text("ignored")
    wheres = [w for w, _ in load_documents(tmp_path)]
    assert wheres == [
        f"{tmp_path}/a.yaml: document 1",
        f"{tmp_path}/a.yaml: document 3",
        f"{tmp_path}/b.toml: tasks[0]",
        f"{tmp_path}/b.toml: tasks[1]",
        f"{tmp_path}/c.json",
    ]
    (tmp_path / "bad.yaml").write_text("id: x\ncron: * * * * *\n")  # '*' starts an alias
    with pytest.raises(InvalidArgument, match=r"bad.yaml: not valid YAML"):
        list(load_documents(tmp_path / "bad.yaml"))


def _desired(tmp_path: Path, text: str, name: str = "tasks") -> list[Desired]:
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    return read_desired(path, name)


def _live(spec: pb.TaskSpec, revision: int, **fields: Any) -> pb.TaskSpec:
    out = pb.TaskSpec()
    out.CopyFrom(spec)
    out.revision = revision
    out.created_at.FromSeconds(1)
    for k, v in fields.items():
        setattr(out, k, v)
    return out


def test_the_plan_creates_updates_leaves_alone_and_prunes_only_its_own(tmp_path: Path) -> None:
    desired = _desired(
        tmp_path,
        "id: same\nevery: 1m\nhttp: http://h/\n---\nid: new\nevery: 1m\nhttp: http://h/\n"
        "---\nid: changed\nevery: 2m\nhttp: http://h/\n",
    )
    same, _, changed = (d.spec for d in desired)
    assert same.labels[MANAGED_BY] == "tasks"
    old = pb.TaskSpec()
    old.CopyFrom(changed)
    old.schedule.every.FromSeconds(60)
    mine = _live(same, 9, id="gone")
    other = _live(same, 9, id="other")
    other.labels[MANAGED_BY] = "elsewhere"
    unlabelled = _live(same, 9, id="by-hand")
    unlabelled.labels.clear()
    live = [_live(same, 5, paused=True), _live(old, 6), mine, other, unlabelled]
    plan = plan_apply(desired, live, "tasks", prune=True)
    assert [s.id for s in plan.creates] == ["new"]
    assert [(w.id, c.revision) for w, c in plan.updates] == [("changed", 6)]
    assert plan.unchanged == ["same"]  # paused by hand; the file does not say `paused`
    assert [s.id for s in plan.deletes] == ["gone"]
    assert plan_apply(desired, live, "tasks", prune=False).deletes == []
    (req,) = requests(plan)
    assert req.update[0].expected_revision == 6 and req.delete[0].expected_revision == 9


def test_a_large_apply_is_split_into_transactions_within_etcds_limit() -> None:
    plan = plan_apply([], [], "x", prune=False)
    spec = doc_to_spec({"id": "t", "every": "1m", "http": "http://h/"})
    plan.creates = [spec] * 100
    plan.updates = [(spec, _live(spec, 1))] * 30
    plan.deletes = [_live(spec, 1)] * 10
    reqs = requests(plan)
    ops = [len(r.create) + 3 * len(r.update) + 3 * len(r.delete) for r in reqs]
    assert all(n <= 128 for n in ops) and sum(ops) == 100 + 90 + 30
    assert len(reqs[0].create) == 100 and not reqs[-1].create  # deletes last


def test_managed_by_comes_from_the_file_name_and_must_be_a_label_value(tmp_path: Path) -> None:
    assert managed_by_name(Path("/etc/peerd/prod tasks.yaml"), None) == "prod-tasks"
    assert managed_by_name(tmp_path, "team.a") == "team.a"
    with pytest.raises(InvalidArgument, match="--managed-by"):
        managed_by_name(Path("/x/_.yaml"), None)
    with pytest.raises(InvalidArgument, match="--managed-by"):
        managed_by_name(tmp_path, "-bad")


def test_a_file_is_refused_whole_with_every_bad_document_named(tmp_path: Path) -> None:
    with pytest.raises(ExceptionGroup) as err:
        _desired(
            tmp_path,
            "id: a\nevery: 3x\nhttp: http://h/\n---\nid: b\nevery: 1m\nhttp: http://h/\n"
            "---\nid: b\nevery: 1m\nhttp: http://h/\n---\nid: c\nevery: 1m\nhttp: http://h/\n"
            "labels: {managed-by: other}\n",
        )
    messages = [str(e) for e in err.value.exceptions]
    assert len(messages) == 3
    assert "document 1 (a): every:" in messages[0]
    assert "document 3 (b): id: 'b' is also in" in messages[1]
    assert "document 4 (c): labels.managed-by: is 'other'" in messages[2]


def test_update_flags_overlay_the_document() -> None:
    doc = spec_to_doc(spec_of(COMMAND_LINES[1]))
    out = overlay(doc, {"every": "10s", "header": ["X-B: 2"]})
    assert "cron" not in out and out["every"] == "10s" and out["header"] == {"X-B": "2"}
    assert out["method"] == "GET" and out["tz"] == "Europe/Paris"
    post = overlay(doc, {"http-post": "https://h/v2"})
    assert "http" not in post and "method" not in post and post["header"]  # same kind: kept
    shell = overlay(doc, {"shell": ["/bin/true"]})
    assert not {"http", "method", "header", "body"} & set(shell)
    with pytest.raises(InvalidArgument, match="--env"):
        overlay(doc, {"env": ["NOEQUALS"]})


def test_history_text_lists_each_change_with_its_fields() -> None:
    change = pb.TaskChange(revision=7, operation="UpdateTask", node_id="n1")
    change.changed_at.FromSeconds(1_800_000_000)
    change.changes.add(field="schedule.every", before='"30s"', after='"10s"')
    change.changes.add(field="http.headers.X-A", before="", after='"1"')
    assert history_text([change]).splitlines() == [
        "revision 7  2027-01-15T08:00:00.000Z  UpdateTask on n1  by -",
        '  schedule.every: "30s" -> "10s"',
        '  http.headers.X-A: (unset) -> "1"',
    ]
    assert "no recorded changes" in history_text([])


def test_a_bad_cron_is_named_by_file_document_and_key_with_the_other_errors(
    tmp_path: Path,
) -> None:
    with pytest.raises(ExceptionGroup) as err:
        _desired(
            tmp_path,
            'id: a\ncron: "0 25 * * *"\nhttp: http://h/\n---\nid: b\nevery: 3x\nhttp: http://h/\n',
        )
    messages = [str(e) for e in err.value.exceptions]
    assert len(messages) == 2
    assert "document 1 (a): cron:" in messages[0] and "hour 25" in messages[0]
    assert "document 2 (b): every:" in messages[1]


def test_credentials_shown_redacted_are_not_a_change_but_are_sent_for_the_server_to_compare(
    tmp_path: Path,
) -> None:
    (desired,) = _desired(
        tmp_path, 'id: r\nevery: 1m\nhttp: http://h/\nheader: {Authorization: "Bearer t"}\n'
    )
    shown = _live(desired.spec, 7)
    shown.http.headers["Authorization"] = REDACTED
    plan = plan_apply([desired], [shown], "tasks", prune=False)
    assert plan.updates == [] and [w.id for w, _ in plan.hidden] == ["r"]
    (req,) = requests(plan)
    assert req.update[0].task.http.headers["Authorization"] == "Bearer t"
    assert req.update[0].expected_revision == 7
    assert summary(plan, "tasks", updated=0).endswith(
        "0 updated, 0 deleted, 1 unchanged (managed-by=tasks)"
    )
    changed = _live(desired.spec, 8)
    changed.http.headers["Authorization"] = REDACTED
    changed.http.url = "http://other/"
    assert [w.id for w, _ in plan_apply([desired], [changed], "tasks", False).updates] == ["r"]
