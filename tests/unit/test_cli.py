"""CLI parsing, spec building, crontab conversion, output and exit codes (no real peerd node)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from peerd import cli
from peerd.cli import (
    build_task_spec,
    main,
    parse_args,
    parse_rfc3339,
    serve_flags,
    split_shell_argv,
)
from peerd.cli_crontab import build_crontab_specs, crontab_task_id, entry_script
from peerd.cli_output import fmt_td, format_table, task_detail
from peerd.client import exit_code_for_status
from peerd.config import build_config
from peerd.devtools.dev import choose_ports, dev_node
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc


def spec_of(*argv: str) -> pb.TaskSpec:
    return build_task_spec(parse_args(["task", "create", *argv]))


def run(capsys: pytest.CaptureFixture[str], *argv: str, **env: str) -> tuple[int, str, str]:
    code = main(list(argv), env=env)
    out, err = capsys.readouterr()
    return code, out, err


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --------------------------------------------------------------------------- task create → spec


def test_every_becomes_duration() -> None:
    spec = spec_of("t1", "--every", "1m30s", "--http-post", "https://example.com/hook")
    assert spec.id == "t1"
    assert spec.schedule.WhichOneof("kind") == "every"
    assert spec.schedule.every.ToTimedelta() == timedelta(seconds=90)
    assert spec.http.method == "POST"
    assert spec.http.url == "https://example.com/hook"
    assert not spec.http.HasField("body")


def test_cron_text_passed_through_and_id_optional() -> None:
    spec = spec_of("--cron", "@every 10s", "--tz", "Europe/Paris", "--http-post", "http://h/x")
    assert spec.id == ""
    assert spec.schedule.cron == "@every 10s"
    assert spec.schedule.time_zone == "Europe/Paris"


def test_at_accepts_z_and_offsets() -> None:
    spec = spec_of("--at", "2030-01-02T03:04:05Z", "--http-post", "http://h/")
    assert spec.schedule.at.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    spec = spec_of("--at", "2030-01-02T05:04:05.250+02:00", "--http-post", "http://h/")
    expected = datetime(2030, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC)
    assert spec.schedule.at.ToDatetime(tzinfo=UTC) == expected


def test_all_options() -> None:
    spec = spec_of(
        "full", "--cron", "*/5 * * * *", "--start", "2030-01-01T00:00:00Z",
        "--end", "2031-01-01T00:00:00Z", "--max-runs", "7", "--paused",
        "--description", "hello", "--http", "http://h/p", "--method", "put",
        "--header", "X-A: 1", "--header", "Auth:b:c", "--body", "", "--timeout", "30s",
    )  # fmt: skip
    assert spec.paused and spec.description == "hello"
    assert spec.schedule.max_runs == 7
    assert spec.schedule.start_at.ToDatetime(tzinfo=UTC).year == 2030
    assert spec.schedule.end_at.ToDatetime(tzinfo=UTC).year == 2031
    assert spec.http.method == "PUT"
    assert dict(spec.http.headers) == {"X-A": "1", "Auth": "b:c"}
    assert spec.http.HasField("body") and spec.http.body == ""
    assert spec.timeout.ToTimedelta() == timedelta(seconds=30)


def test_secret_references() -> None:
    spec = spec_of(
        "--every", "1m", "--http-post", "https://h/", "--header-secret",
        "Authorization=PAYMENTS_TOKEN", "--header-secret", "X-Key = K2",
    )  # fmt: skip
    assert dict(spec.http.header_secrets) == {"Authorization": "PAYMENTS_TOKEN", "X-Key": "K2"}
    assert not spec.http.headers
    args = parse_args(["task", "create", "--every", "1m", "--env-secret", "DB_PASSWORD=DB",
                       "--shell", "--", "/bin/true"])  # fmt: skip
    assert dict(build_task_spec(args).shell.env_secrets) == {"DB_PASSWORD": "DB"}


def test_shell_argv_keeps_flags_after_double_dash() -> None:
    args = parse_args(
        ["task", "create", "x", "--every", "1s", "--env", "A=1=2", "--workdir", "/tmp",
         "--shell", "--", "/bin/echo", "--hello", "-o", "json", "--", "x"]
    )  # fmt: skip
    spec = build_task_spec(args)
    assert list(spec.shell.argv) == ["/bin/echo", "--hello", "-o", "json", "--", "x"]
    assert dict(spec.shell.env) == {"A": "1=2"}
    assert spec.shell.working_dir == "/tmp"
    assert args.output == "table"


def test_policy_flags() -> None:
    spec = spec_of(
        "pol", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--jitter", "30s",
        "--dst-nonexistent", "skip", "--dst-ambiguous", "both", "--overlap", "buffer-one",
        "--catch-up", "run-all", "--catch-up-window", "2h", "--misfire-threshold", "10s",
        "--max-attempts", "4", "--backoff", "500ms", "--max-backoff", "30s",
        "--backoff-multiplier", "3", "--retry-on", "5xx, Timeout,exit,5xx", "--deadline", "5m",
        "--priority", "-7", "--on-failure", "pol-alert", "--http-post", "http://h/x",
    )  # fmt: skip
    s = spec.schedule
    assert s.jitter.ToTimedelta() == timedelta(seconds=30)
    assert s.dst_nonexistent == pb.DST_NONEXISTENT_SKIP and s.dst_ambiguous == pb.DST_AMBIGUOUS_BOTH
    assert spec.overlap == pb.OVERLAP_BUFFER_ONE and spec.catch_up == pb.CATCH_UP_RUN_ALL
    assert spec.catch_up_window.ToTimedelta() == timedelta(hours=2)
    assert spec.misfire_threshold.ToTimedelta() == timedelta(seconds=10)
    r = spec.retry
    assert r.max_attempts == 4 and r.multiplier == 3
    assert r.initial_backoff.ToTimedelta() == timedelta(milliseconds=500)
    assert r.max_backoff.ToTimedelta() == timedelta(seconds=30)
    assert list(r.retry_on) == [pb.RETRY_ON_HTTP_5XX, pb.RETRY_ON_TIMEOUT, pb.RETRY_ON_NONZERO_EXIT]
    assert r.deadline.ToTimedelta() == timedelta(minutes=5)
    assert spec.priority == -7 and spec.on_failure == "pol-alert"


def test_policy_flags_unset_leave_defaults() -> None:
    spec = spec_of("d", "--every", "1m", "--http-post", "http://h/x")
    assert not spec.HasField("retry") and not spec.HasField("catch_up_window")
    assert spec.overlap == 0 and spec.catch_up == 0 and spec.priority == 0
    assert not spec.schedule.HasField("jitter")
    auto = spec_of(
        "d", "--cron", "* * * * *", "--dst-ambiguous", "auto", "--http-post", "http://h/"
    )
    assert auto.schedule.dst_ambiguous == pb.DST_AMBIGUOUS_POLICY_UNSPECIFIED
    deadline_only = spec_of("d", "--every", "1m", "--deadline", "30s", "--http-post", "http://h/")
    assert deadline_only.retry.max_attempts == 0 and deadline_only.retry.HasField("deadline")


def test_python_target_flags() -> None:
    spec = spec_of("py", "--every", "10s", "--python", "peerd.echo", "--args", '{"n": 1}')
    assert spec.WhichOneof("target") == "python"
    assert spec.python.name == "peerd.echo" and json.loads(spec.python.args_json) == {"n": 1}
    bare = spec_of("py", "--every", "10s", "--python", "peerd.echo")
    assert bare.python.args_json == ""


def test_split_shell_argv() -> None:
    assert split_shell_argv(["a", "--", "b"]) == (["a", "--", "b"], None)
    assert split_shell_argv(["--shell", "--", "b", "--c"]) == (["--shell"], ["b", "--c"])


def test_global_options_before_and_after_subcommand() -> None:
    args = parse_args(["-o", "json", "--timeout", "2.5", "task", "create", "--every", "1s",
                       "--timeout", "5s", "--http-post", "http://h/"])  # fmt: skip
    assert args.output == "json" and args.rpc_timeout == 2.5 and args.task_timeout == "5s"
    args = parse_args(["task", "list", "-o", "json", "--server", "h:1"])
    assert args.output == "json" and args.server == "h:1"
    assert parse_args(["cluster"]).output == "table"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--every", "1s", "--http", "http://h/", "--header", "nocolon"], "--header"),
        (["--every", "1s", "--http", "http://h/", "--header", ":v"], "--header"),
        (["--at", "2030-01-01T00:00:00", "--http-post", "http://h/"], "--at"),
        (["--at", "tomorrow", "--http-post", "http://h/"], "--at"),
        (["--at", "2030-01-01", "--http-post", "http://h/"], "--at"),
        (["--every", "banana", "--http-post", "http://h/"], "--every"),
        (["--every", "0s", "--http-post", "http://h/"], "--every"),
        (["--every", "1s", "--http-post", "ftp://h/"], "--http-post"),
        (["--every", "1s", "--http", "http://h/", "--method", "TRACE"], "--method"),
        (["--every", "1s", "--shell"], "--shell"),
        (["--every", "1s", "--env", "NOEQ", "--shell", "--", "x"], "--env"),
        (["--every", "1s", "--header", "a:b", "--shell", "--", "x"], "--header"),
        (["--every", "1s", "--timeout", "soon", "--http-post", "http://h/"], "--timeout"),
        (["Bad_Id", "--every", "1s", "--http-post", "http://h/"], "ID"),
        (["--every", "1s", "--python", "p", "--args", "[1]"], "--args"),
        (["--every", "1s", "--python", "p", "--args", "{bad"], "--args"),
        (["--every", "1s", "--args", "{}", "--http-post", "http://h/"], "--args"),
        (["--every", "1s", "--python", "p", "--method", "GET"], "--method"),
        (["--every", "1s", "--python", "p", "--env", "A=1"], "--env"),
        (["--every", "1s", "--jitter", "soon", "--http-post", "http://h/"], "--jitter"),
        (
            ["--every", "1s", "--catch-up-window", "x", "--http-post", "http://h/"],
            "--catch-up-window",
        ),
        (
            ["--every", "1s", "--misfire-threshold", "-", "--http-post", "http://h/"],
            "--misfire-threshold",
        ),
        (
            [
                "--every",
                "1s",
                "--max-attempts",
                "3",
                "--retry-on",
                "5xx,teapot",
                "--http-post",
                "http://h/",
            ],
            "--retry-on",
        ),
        (
            ["--every", "1s", "--max-attempts", "3", "--retry-on", ",", "--http-post", "http://h/"],
            "--retry-on",
        ),
        (["--every", "1s", "--backoff", "2s", "--http-post", "http://h/"], "--backoff"),
        (["--every", "1s", "--retry-on", "5xx", "--http-post", "http://h/"], "--retry-on"),
        (
            ["--every", "1s", "--max-attempts", "2", "--backoff", "x", "--http-post", "http://h/"],
            "--backoff",
        ),
        (["--every", "1s", "--deadline", "0s", "--http-post", "http://h/"], "--deadline"),
        (["--every", "1s", "--on-failure", "Bad Id", "--http-post", "http://h/"], "--on-failure"),
        (
            ["--every", "1s", "--header-secret", "Auth", "--http-post", "http://h/"],
            "--header-secret",
        ),
        (["--every", "1s", "--header-secret", "A=B", "--python", "x.y"], "--header-secret"),
        (["--every", "1s", "--env-secret", "A=B", "--http-post", "http://h/"], "--env-secret"),
        (["--every", "1s", "--env-secret", "A=", "--shell", "--", "/bin/true"], "--env-secret"),
    ],
)
def test_bad_create_flags_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    code, out, err = run(capsys, "--server", f"127.0.0.1:{closed_port()}", "task", "create", *argv)
    assert code == cli.EXIT_INVALID
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"peerd: error: {flag}: ")


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["task"],
        ["task", "create", "--every", "1s"],  # no target
        ["task", "create", "--every", "1s", "--cron", "* * * * *", "--http-post", "http://h/"],
        ["runs", "x", "--limit", "many"],
        ["-o", "xml", "cluster"],
        ["task", "create", "--every", "1s", "--overlap", "sometimes", "--http-post", "http://h/"],
        ["task", "create", "--every", "1s", "--priority", "high", "--http-post", "http://h/"],
        ["task", "create", "--every", "1s", "--python", "p", "--http-post", "http://h/"],
        ["preview", "--tz", "UTC"],  # no schedule
        ["preview", "--cron", "* * * * *", "--dst-ambiguous", "sometimes"],
        ["task", "preview"],
        ["audit"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == cli.EXIT_INVALID, argv
        assert out == ""
        assert err.count("\n") == 1 and err.startswith("peerd: error: "), err


def test_parse_rfc3339_rejects_naive() -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_rfc3339("2030-01-01 10:00:00", "--start")
    assert exc.value.field == "--start"
    assert parse_rfc3339("2030-01-01t10:00:00z", "--at").tzinfo is not None


# --------------------------------------------------------------------------- exit codes


def test_status_mapping() -> None:
    assert exit_code_for_status(grpc.StatusCode.INVALID_ARGUMENT) == cli.EXIT_INVALID
    assert exit_code_for_status(grpc.StatusCode.NOT_FOUND) == cli.EXIT_NOT_FOUND
    assert exit_code_for_status(grpc.StatusCode.UNAVAILABLE) == cli.EXIT_UNAVAILABLE
    assert exit_code_for_status(grpc.StatusCode.DEADLINE_EXCEEDED) == cli.EXIT_UNAVAILABLE
    assert exit_code_for_status(grpc.StatusCode.ALREADY_EXISTS) == cli.EXIT_ALREADY_EXISTS
    assert exit_code_for_status(grpc.StatusCode.PERMISSION_DENIED) == cli.EXIT_PERMISSION_DENIED
    assert exit_code_for_status(grpc.StatusCode.INTERNAL) == cli.EXIT_ERROR
    assert exit_code_for_status(None) == cli.EXIT_ERROR


def test_missing_server_exits_4_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code, out, err = run(capsys, "--server", f"127.0.0.1:{closed_port()}", "--timeout", "1",
                         "task", "get", "x")  # fmt: skip
    assert code == cli.EXIT_UNAVAILABLE
    assert time.monotonic() - started < 5
    assert out == "" and err.count("\n") == 1 and err.startswith("peerd: error: 127.0.0.1:")


def test_server_from_env(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    code, _, err = run(capsys, "--timeout", "1", "cluster", PEERD_SERVER=f"127.0.0.1:{port}")
    assert code == cli.EXIT_UNAVAILABLE and f":{port}" in err


def test_serve_bad_node_id_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "serve", "--node-id", "Bad!", "--etcd", "127.0.0.1:2379")
    assert code == cli.EXIT_INVALID and out == ""
    assert err.count("\n") == 1 and err.startswith("peerd: error: --node-id: ")


def test_serve_bad_listen_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "serve", "--node-id", "n1", "--listen", "nope")
    assert code == cli.EXIT_INVALID and err.startswith("peerd: error: --listen: ")


# --------------------------------------------------------------------------- output helpers


def test_format_table_aligns_without_trailing_spaces() -> None:
    text = format_table(["ID", "X"], [["a", "1"], ["longer", ""]])
    assert text.splitlines() == ["ID      X", "a       1", "longer"]


def test_fmt_td() -> None:
    assert fmt_td(timedelta(milliseconds=12)) == "12ms"
    assert fmt_td(timedelta(milliseconds=1500)) == "1.5s"
    assert fmt_td(timedelta(seconds=12)) == "12s"
    assert fmt_td(timedelta(seconds=90)) == "1m30s"


# --------------------------------------------------------------------------- crontab conversion


@dataclass
class FakeEntry:
    line_no: int
    schedule: str
    command: str
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    time_zone: str | None = None
    stdin: str | None = None


@dataclass
class FakeError:
    line_no: int
    line: str
    reason: str


def test_build_crontab_specs_pure(tmp_path: Path) -> None:
    path = tmp_path / "My Cron.TAB"
    text = "SHELL=/bin/bash\n*/5 * * * * root run-parts /etc/x\nbad line\n0 1 * * * echo hi%in\n"
    entries = [
        FakeEntry(2, "*/5 * * * *", "run-parts /etc/x", user="root",
                  env={"SHELL": "/bin/bash", "CRON_TZ": "Asia/Tokyo"}, time_zone="Asia/Tokyo"),
        FakeEntry(4, "0 1 * * *", "echo hi", stdin="in"),
    ]  # fmt: skip
    specs, problems = build_crontab_specs(
        path, text, entries, [FakeError(3, "bad line", "expected 5 fields")],
        prefix="imp.", default_tz="Europe/Berlin",
    )  # fmt: skip
    assert problems == ["line 3: expected 5 fields: bad line"]
    a, b = specs
    assert a.id == "imp.my-cron.tab-2"
    assert a.schedule.cron == "*/5 * * * *" and a.schedule.time_zone == "Asia/Tokyo"
    assert list(a.shell.argv) == ["/bin/bash", "-c", "run-parts /etc/x"]
    assert dict(a.shell.env) == {"SHELL": "/bin/bash", "PATH": "/usr/bin:/bin"}
    assert a.shell.run_as == "root"
    assert a.source == f"crontab:{path}:2"
    assert a.description == "*/5 * * * * root run-parts /etc/x"
    assert b.id == "imp.my-cron.tab-4" and b.schedule.time_zone == "Europe/Berlin"
    assert b.shell.argv[0] == "/bin/sh" and b.shell.run_as == ""


def test_crontab_task_id_limits(tmp_path: Path) -> None:
    assert crontab_task_id("", Path("/etc/.crontab"), 7) == "crontab-7"
    long_id = crontab_task_id("p-", Path("x" * 300), 12)
    assert len(long_id) == 128 and long_id.endswith("-12")
    with pytest.raises(InvalidArgument) as exc:
        crontab_task_id("Bad/", Path("c"), 1)
    assert exc.value.field == "--id-prefix"


def test_entry_script_feeds_stdin() -> None:
    script = entry_script("tr a-z A-Z # trailing comment", "it's\nfine $HOME")
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == "IT'S\nFINE $HOME\n"  # cron adds the missing final newline
    script = entry_script("wc -c", "")
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
    assert entry_script("true", None) == "true"


def test_import_unreadable_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "import-crontab", str(tmp_path / "missing"), "--dry-run")
    assert code == cli.EXIT_INVALID and out == ""
    assert err.count("\n") == 1 and "cannot read" in err


def test_import_dry_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("peerd.core.crontab")
    f = tmp_path / "jobs"
    f.write_text("MAILTO=\n*/5 * * * * /usr/bin/backup --fast\n@daily echo daily\n")
    code, out, err = run(capsys, "--server", f"127.0.0.1:{closed_port()}", "import-crontab",
                         str(f), "--user-format", "--dry-run", "--id-prefix", "x-")  # fmt: skip
    assert code == cli.EXIT_OK, err
    assert "x-jobs-2" in out and "x-jobs-3" in out and "/usr/bin/backup --fast" in out
    assert "would be created" in out

    code, out, _ = run(capsys, "-o", "json", "import-crontab", str(f), "--user-format",
                       "--dry-run")  # fmt: skip
    assert code == cli.EXIT_OK
    tasks = json.loads(out)["tasks"]
    assert [t["id"] for t in tasks] == ["jobs-2", "jobs-3"]
    assert tasks[0]["shell"]["argv"] == ["/bin/sh", "-c", "/usr/bin/backup --fast"]
    assert tasks[0]["schedule"]["time_zone"] == "UTC"


def test_import_system_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("peerd.core.crontab")
    f = tmp_path / "crontab"
    f.write_text(
        "CRON_TZ=Asia/Tokyo\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
    )
    code, out, err = run(capsys, "-o", "json", "import-crontab", str(f), "--system", "--dry-run",
                         "--tz", "Europe/Paris")  # fmt: skip
    assert code == cli.EXIT_OK, err
    (task,) = json.loads(out)["tasks"]
    assert task["id"] == "crontab-2"
    assert task["shell"]["run_as"] == "root"
    assert task["shell"]["argv"][2] == "cd / && run-parts --report /etc/cron.hourly"
    assert task["schedule"]["time_zone"] == "Asia/Tokyo"
    assert "CRON_TZ" not in task["shell"]["env"]
    assert task["source"] == f"crontab:{f}:2"


def test_import_bad_line_exits_2_creating_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("peerd.core.crontab")
    f = tmp_path / "jobs"
    f.write_text("*/5 * * * * echo ok\n61 * * * * echo bad minute\n")
    # A closed port: reaching the server would be exit 4, so exit 2 proves no call was made.
    server = f"127.0.0.1:{closed_port()}"
    code, out, err = run(capsys, "--server", server, "import-crontab", str(f), "--user-format")
    assert code == cli.EXIT_INVALID
    assert out == ""
    assert "line 2: " in err and "61 * * * * echo bad minute" in err
    assert err.splitlines()[-1].startswith("peerd: error: ")

    code, out, err = run(capsys, "--server", server, "import-crontab", str(f), "--user-format",
                         "--skip-invalid", "--dry-run")  # fmt: skip
    assert code == cli.EXIT_OK
    assert "jobs-1" in out and "jobs-2" not in out and "line 2: " in err


def test_import_more_than_100_entries_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("peerd.core.crontab")
    f = tmp_path / "big"
    f.write_text("".join(f"* * * * * echo {i}\n" for i in range(101)))
    code, _, err = run(capsys, "import-crontab", str(f), "--user-format", "--dry-run")
    assert code == cli.EXIT_INVALID and "split" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- against a fake server


class FakeScheduler(pb_grpc.SchedulerServicer):
    """Serves a fixed set of tasks in pages of 2 and rejects unknown ids."""

    def __init__(self) -> None:
        self.tasks = [
            pb.TaskSpec(id=f"t{i}", schedule=pb.Schedule(cron="* * * * *")) for i in range(5)
        ]
        self.created: list[pb.TaskSpec] = []
        self.requests: list[object] = []

    def ListTasks(self, request: pb.ListTasksRequest, context: grpc.ServicerContext) -> object:
        start = int(request.page_token or 0)
        end = start + min(request.page_size or 100, 2)
        token = str(end) if end < len(self.tasks) else ""
        return pb.ListTasksResponse(tasks=self.tasks[start:end], next_page_token=token)

    def GetTask(self, request: pb.GetTaskRequest, context: grpc.ServicerContext) -> object:
        for t in self.tasks:
            if t.id == request.id:
                return t
        context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.id!r} not found")
        raise AssertionError("abort raises")

    def CreateTask(self, request: pb.CreateTaskRequest, context: grpc.ServicerContext) -> object:
        if request.task.http.url.endswith("/bad"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task.http.url: not\nallowed")
        self.created.append(request.task)
        return request.task

    def PauseTask(self, request: pb.PauseTaskRequest, context: grpc.ServicerContext) -> object:
        self.requests.append(request)
        task = pb.TaskSpec(id=request.id, paused=True, pause_note=request.note)
        task.schedule.cron = "* * * * *"
        return task

    def PreviewSchedule(
        self, request: pb.PreviewScheduleRequest, context: grpc.ServicerContext
    ) -> object:
        self.requests.append(request)
        if request.WhichOneof("source") == "task_id" and request.task_id == "nope":
            context.abort(grpc.StatusCode.NOT_FOUND, "task 'nope' not found")
        resp = pb.PreviewScheduleResponse(time_zone="Europe/Berlin")
        for i, note in enumerate(("", "02:30 does not exist (spring forward); shifted")):
            slot = resp.slots.add(local_time=f"2026-03-2{8 + i}T03:00:00+02:00", note=note)
            slot.scheduled_at.FromDatetime(datetime(2026, 3, 28 + i, 1, 0, tzinfo=UTC))
            slot.fire_at.FromDatetime(datetime(2026, 3, 28 + i, 1, 0, i, tzinfo=UTC))
        return resp

    def AuditTask(self, request: pb.AuditTaskRequest, context: grpc.ServicerContext) -> object:
        self.requests.append(request)
        resp = pb.AuditTaskResponse(task_id=request.task_id, expected_slots=10, gap_count=1)
        resp.since.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
        resp.until.FromDatetime(datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
        resp.gaps.add().FromDatetime(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
        resp.by_status["SUCCEEDED"] = 9
        for le in (10, 50, -1):
            resp.lateness.add(le_ms=le, count=3)
        for name in ("lateness_p50", "lateness_p99", "lateness_max"):
            getattr(resp, name).FromMilliseconds(12)
        if request.task_id == "double":
            m = resp.multi_claims.add(fencing_tokens=[5, 9], detail="run key re-created")
            m.scheduled_at.FromDatetime(datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC))
        return resp

    def WatchRuns(self, request: pb.WatchRunsRequest, context: grpc.ServicerContext) -> object:
        self.requests.append(request)
        for status in (pb.CLAIMED, pb.SKIPPED):
            rec = pb.RunRecord(task_id=request.task_id, status=status, node_id="n1", attempt=1)
            rec.scheduled_at.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
            if status == pb.SKIPPED:
                rec.skip_reason = pb.SKIP_OVERLAP
            yield rec
        context.abort(grpc.StatusCode.UNAVAILABLE, "node stopping")


@pytest.fixture
def fake_server() -> Iterator[tuple[str, FakeScheduler]]:
    servicer = FakeScheduler()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_SchedulerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)


def test_list_pages_and_json(
    capsys: pytest.CaptureFixture[str], fake_server: tuple[str, FakeScheduler]
) -> None:
    address, _ = fake_server
    code, out, _ = run(capsys, "--server", address, "task", "list", "-o", "json")
    assert code == cli.EXIT_OK
    assert [t["id"] for t in json.loads(out)["tasks"]] == ["t0", "t1", "t2", "t3", "t4"]
    code, out, _ = run(capsys, "--server", address, "task", "list", "--limit", "3")
    assert code == cli.EXIT_OK
    assert out.splitlines()[0].split() == ["ID", "SCHEDULE", "STATE", "TARGET"]
    assert len(out.splitlines()) == 4


def test_rpc_errors_map_to_exit_codes(
    capsys: pytest.CaptureFixture[str], fake_server: tuple[str, FakeScheduler]
) -> None:
    address, servicer = fake_server
    code, _, err = run(capsys, "--server", address, "task", "get", "nope")
    assert code == cli.EXIT_NOT_FOUND and err == "peerd: error: task 'nope' not found\n"
    code, _, err = run(capsys, "--server", address, "task", "create", "--every", "1s",
                       "--http-post", "http://h/bad")  # fmt: skip
    assert code == cli.EXIT_INVALID and err == "peerd: error: task.http.url: not allowed\n"
    code, out, _ = run(capsys, "--server", address, "task", "create", "ok", "--every", "1s",
                       "--shell", "--", "/bin/echo", "--hello")  # fmt: skip
    assert code == cli.EXIT_OK and "/bin/echo --hello" in out
    assert list(servicer.created[-1].shell.argv) == ["/bin/echo", "--hello"]


def test_pause_with_note(
    capsys: pytest.CaptureFixture[str], fake_server: tuple[str, FakeScheduler]
) -> None:
    address, servicer = fake_server
    code, out, _ = run(capsys, "--server", address, "task", "pause", "t1", "--note", "db migration")
    assert code == cli.EXIT_OK
    assert servicer.requests[-1] == pb.PauseTaskRequest(id="t1", note="db migration")
    assert "pause_note:" in out and "db migration" in out
    code, out, err = run(capsys, "--server", address, "task", "pause", "t1", "--note", "x" * 1025)
    assert code == cli.EXIT_INVALID and err.startswith("peerd: error: --note: ")


def test_preview_commands_use_the_rpc(
    capsys: pytest.CaptureFixture[str], fake_server: tuple[str, FakeScheduler]
) -> None:
    address, servicer = fake_server
    code, out, _ = run(capsys, "--server", address, "preview", "--cron", "30 2 * * *", "--tz",
                       "Europe/Berlin", "-n", "2", "--from", "2026-03-28T00:00:00Z",
                       "--dst-nonexistent", "shift", "--jitter", "5s")  # fmt: skip
    assert code == cli.EXIT_OK
    req = servicer.requests[-1]
    assert isinstance(req, pb.PreviewScheduleRequest)
    assert req.schedule.cron == "30 2 * * *" and req.schedule.time_zone == "Europe/Berlin"
    assert req.schedule.dst_nonexistent == pb.DST_NONEXISTENT_SHIFT
    assert req.schedule.jitter.ToTimedelta() == timedelta(seconds=5)
    assert req.count == 2
    assert getattr(req, "from").ToDatetime(tzinfo=UTC) == datetime(2026, 3, 28, tzinfo=UTC)
    lines = out.splitlines()
    assert lines[0].split("  ")[0] == "SCHEDULED (UTC)" and "FIRE AT" in lines[0]
    assert "2026-03-29T03:00:00+02:00" in lines[2] and "shifted" in lines[2]
    code, out, _ = run(capsys, "--server", address, "task", "preview", "t1", "-o", "json")
    assert code == cli.EXIT_OK
    assert servicer.requests[-1] == pb.PreviewScheduleRequest(task_id="t1", count=10)
    assert json.loads(out)["time_zone"] == "Europe/Berlin"
    code, _, err = run(capsys, "--server", address, "task", "preview", "nope")
    assert code == cli.EXIT_NOT_FOUND
    code, _, err = run(capsys, "--server", address, "task", "preview", "t1", "-n", "0")
    assert code == cli.EXIT_INVALID and err.startswith("peerd: error: -n: ")
    code, _, err = run(capsys, "--server", address, "preview", "--every", "1m", "--from", "x")
    assert code == cli.EXIT_INVALID and err.startswith("peerd: error: --from: ")


def test_audit_exit_code_follows_multi_claims(
    capsys: pytest.CaptureFixture[str], fake_server: tuple[str, FakeScheduler]
) -> None:
    address, servicer = fake_server
    code, out, _ = run(capsys, "--server", address, "audit", "t1", "--since",
                       "2026-01-01T00:00:00Z")  # fmt: skip
    assert code == cli.EXIT_OK
    req = servicer.requests[-1]
    assert isinstance(req, pb.AuditTaskRequest) and req.since.seconds > 0
    assert "expected slots:  10" in out and "2026-01-01T00:00:30.000Z" in out
    assert "SUCCEEDED 9" in out and "p50 12ms" in out and "+inf" in out
    code, out, _ = run(capsys, "--server", address, "audit", "double")
    assert code == cli.EXIT_ERROR
    assert "multi-claims:    1" in out and "run key re-created" in out and "5,9" in out
    code, out, _ = run(capsys, "--server", address, "-o", "json", "audit", "double")
    assert code == cli.EXIT_ERROR and json.loads(out)["multi_claims"][0]["fencing_tokens"]


def test_runs_follow_prints_each_change(
    capsys: pytest.CaptureFixture[str], fake_server: tuple[str, FakeScheduler]
) -> None:
    address, servicer = fake_server
    code, out, err = run(capsys, "--server", address, "runs", "t1", "--follow", "--limit", "5")
    assert code == cli.EXIT_UNAVAILABLE and "node stopping" in err  # the fake ends the stream
    assert servicer.requests[-1] == pb.WatchRunsRequest(task_id="t1", replay=5)
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["SCHEDULED", "STATUS"]
    assert "CLAIMED" in lines[1] and "SKIPPED (overlap)" in lines[2]
    code, out, _ = run(capsys, "--server", address, "-o", "json", "runs", "t1", "-f")
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["CLAIMED", "SKIPPED"]
    code, _, err = run(capsys, "--server", address, "runs", "nope", "--follow")
    assert code == cli.EXIT_NOT_FOUND
    code, _, err = run(capsys, "--server", address, "runs", "t1", "-f", "--limit", "1001")
    assert code == cli.EXIT_INVALID and err.startswith("peerd: error: --limit: ")


def test_runs_follow_exits_0_on_ctrl_c(
    capsys: pytest.CaptureFixture[str],
    fake_server: tuple[str, FakeScheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address, _ = fake_server
    cancelled: list[bool] = []

    class Interrupted:
        def __iter__(self) -> Iterator[pb.RunRecord]:
            yield pb.RunRecord(task_id="t1", status=pb.RUNNING)
            raise KeyboardInterrupt

        def cancel(self) -> bool:
            cancelled.append(True)
            return True

    monkeypatch.setattr(cli.SchedulerClient, "watch_runs", lambda self, *a: Interrupted())
    code, out, err = run(capsys, "--server", address, "runs", "t1", "--follow")
    assert code == cli.EXIT_OK and cancelled == [True] and err == ""
    assert "RUNNING" in out.splitlines()[1]


def test_task_detail_spells_out_defaults() -> None:
    spec = pb.TaskSpec(id="d", http=pb.HttpTarget(url="http://h/"))
    spec.schedule.cron = "0 3 * * *"
    text = task_detail(spec)
    for line in (
        "overlap:            allow (default)",
        "catch_up:           run-once (default)",
        "retry:              none (1 attempt, default)",
        "priority:           0 (default)",
        "dst_nonexistent:    auto (default)",
        "on_failure:         none (default)",
    ):
        assert line in text.splitlines(), text
    spec.retry.max_attempts = 3
    spec.catch_up = pb.CATCH_UP_RUN_ALL
    spec.paused = True
    spec.pause_note = "maintenance"
    text = task_detail(spec)
    assert "3 attempts, backoff 1s..1m x2" in text and "(default)" in text
    assert "run-all, window 1h (default)" in text
    assert "pause_note:         maintenance" in text.splitlines()


# --------------------------------------------------------------------------- dev helpers


def test_choose_ports_replaces_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        base = busy.getsockname()[1]
        replacement = closed_port()
        ports = choose_ports(base, 1, lambda: replacement)
    assert ports == [replacement]
    assert "busy" in capsys.readouterr().out


def test_dev_node_command_passes_flags(tmp_path: Path) -> None:
    node = dev_node("node1", 7071, "127.0.0.1:2379", "dev", 10, ["/bin/echo *", "x"], tmp_path)
    cmd = node.command()
    assert cmd[1:4] == ["-m", "peerd", "serve"]
    assert cmd[cmd.index("--listen") + 1] == "127.0.0.1:7071"
    assert cmd[-4:] == ["--allow-shell", "/bin/echo *", "--allow-shell", "x"]
    cfg = build_config(serve_flags(parse_args(cmd[3:])), {})
    assert cfg.node_id == "node1" and cfg.lease_ttl_s == 10 and cfg.cluster == "dev"


def test_task_detail_shows_secret_references_by_name() -> None:
    spec = pb.TaskSpec(
        id="charge",
        http=pb.HttpTarget(url="https://h/", header_secrets={"Authorization": "PAYMENTS_TOKEN"}),
    )
    assert "header Authorization:  <secret PAYMENTS_TOKEN>" in task_detail(spec)
    shell = pb.TaskSpec(id="s", shell=pb.ShellTarget(argv=["/bin/true"], env_secrets={"PW": "DB"}))
    assert re.search(r"^env PW: +<secret DB>$", task_detail(shell), re.MULTILINE)
