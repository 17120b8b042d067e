"""The ``peerd`` command: ``serve`` and ``dev`` run nodes; the other subcommands are API clients.

Exit codes are in :mod:`peerd.exitcodes` (0 ok, 1 error, 2 invalid input or usage, 3 not found,
4 unavailable, 5 already exists, 6 permission denied, 7 not run by the task's policy, 8 etcd out
of space: the NOSPACE alarm refuses writes, see docs/operations.md; 9 the task changed since it
was read). ``task update/edit/history`` are in :mod:`peerd.cli_tasks`, ``apply`` and ``diff``
in :mod:`peerd.cli_apply`. Every
expected error is reported as one line ``peerd: error: <message>`` on stderr, never as a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from peerd import __version__
from peerd.cli_apply import register as register_apply
from peerd.cli_auth import (
    add_auth_commands,
    add_client_options,
    api_client,
    resolve_client_options,
)
from peerd.cli_crontab import build_crontab_specs, import_crontab
from peerd.cli_doc import to_yaml
from peerd.cli_output import (
    NONE,
    audit_text,
    cluster_text,
    preview_table,
    run_detail,
    run_header,
    run_line,
    runs_table,
    scheduling_text,
    task_detail,
    tasks_table,
    to_json,
    tzdata_lines,
)
from peerd.cli_spec import (
    Parser,
    UsageError,
    add_create,
    add_schedule,
    build_schedule,
    build_task_spec,
    parse_retry_on,
    parse_rfc3339,
    print_error,
    split_shell_argv,
)
from peerd.cli_tasks import UPDATE_EXAMPLES
from peerd.cli_tasks import register as register_task_commands
from peerd.client import SchedulerClient, describe_rpc_error, rpc_status
from peerd.config import build_config, tzdata_rules
from peerd.core.labels import compile_selector
from peerd.errors import InvalidArgument, PeerdError
from peerd.exitcodes import (
    EXIT_ALREADY_EXISTS,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_NOT_RUN,
    EXIT_OK,
    EXIT_PERMISSION_DENIED,
    EXIT_UNAVAILABLE,
    exit_code_for_error,
)
from peerd.node_config import DEFAULT_LISTEN, SETTINGS
from peerd.v1 import scheduler_pb2 as pb

DEFAULT_RPC_TIMEOUT_S = 10.0
DEFAULT_RUNS_LIMIT = 20
DEFAULT_PREVIEW_COUNT = 10
MAX_PREVIEW_COUNT = 1000
MAX_FOLLOW_REPLAY = 1000
OUTPUTS = ("table", "json", "yaml")

CREATE_EXAMPLES = """examples:
  peerd task create ping --every 30s --http-post https://example.com/hook
  peerd task create report --cron '0 6 * * 1-5' --tz Europe/Paris --http https://h/r --method GET
  peerd task create backup --cron '@daily' --shell -- /usr/local/bin/backup --full
  peerd task create sync --every 5m --python billing.sync --args '{"full": false}' \\
      --max-attempts 3 --retry-on exception,timeout --overlap forbid --on-failure sync-alert
  peerd task create charge --every 1h --http-post https://pay.example.com/charge \\
      --header-secret Authorization=PAYMENTS_TOKEN

With --shell, everything after -- is the command's argv (flags included). Unset policies take
the defaults shown by 'peerd task get'."""

PREVIEW_EXAMPLES = """examples:
  peerd preview --cron '30 2 * * *' --tz Europe/Berlin --from 2026-03-28T00:00:00Z -n 3
  peerd preview --every 90s --jitter 10s -o json

Slots are computed by the server with the scheduler's own code (DST policies, jitter)."""

AUDIT_EPILOG = """exit status:
  0  no slot was claimed more than once (gaps alone do not change the exit status)
  1  at least one slot was claimed more than once (a multi-claim; details are printed)
  2-6 as for every other command (invalid input, not found, unavailable, ...)

A slot is multi-claimed when its run key was re-created (first attempt's fencing token differs
from the key's create revision), when two attempts overlapped on different nodes without the
earlier one being LOST/FAILED/CANCELLED first, or when an attempt followed a SUCCEEDED one."""

TZDATA_EPILOG = """Only nodes running the agreed tzdata version own tasks whose slots depend on
time-zone rules (cron in a zone other than UTC). Unpinned, the cluster keeps the agreed version
while a live node runs it, then takes the version most live nodes run. To upgrade the rules:
upgrade tzdata on every node (pip install -U tzdata; restart), or upgrade them all and then
'peerd tzdata pin NEW'. See docs/scheduling.md, 'Time-zone rules'."""

RUNS_EPILOG = """With --follow, the newest --limit runs (at most 1000) are printed, then one
line per change of any run record of the task (claim, start, retry, finish) until Ctrl-C
(exit 0). With -o json, --follow prints one JSON object per line."""

Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


# ---------------------------------------------------------------------------------------------
# Parsing


def build_parser() -> argparse.ArgumentParser:
    """The full argparse tree. ``-o/--output`` and ``--server`` are accepted before and after the
    subcommand; ``--timeout`` before it is the RPC deadline (after ``task create`` it is the
    per-run timeout)."""
    common = Parser(add_help=False)
    common.add_argument("-o", "--output", choices=OUTPUTS, default=argparse.SUPPRESS)
    common.add_argument("--server", metavar="HOST:PORT", default=argparse.SUPPRESS)
    add_client_options(common, suppress=True)

    parser = Parser(prog="peerd", description="Distributed cron/task scheduler on etcd.")
    parser.add_argument(
        "--server", metavar="HOST:PORT", help=f"default: $PEERD_SERVER, then {DEFAULT_LISTEN}"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default="table",
        help="yaml: tasks as task documents (re-appliable with 'peerd apply')",
    )
    parser.add_argument(
        "--timeout",
        dest="rpc_timeout",
        type=float,
        default=DEFAULT_RPC_TIMEOUT_S,
        metavar="SECONDS",
        help="RPC deadline (default 10)",
    )
    add_client_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        group: argparse._SubParsersAction[Parser], name: str, handler: Handler, help_: str
    ) -> Parser:
        p = group.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    serve = add(sub, "serve", _cmd_serve, "run a node until SIGTERM/SIGINT")
    serve.epilog = (
        "Flags win over the PEERD_* environment variables, which win over the --config file. "
        "All settings: docs/configuration.md."
    )
    for setting in SETTINGS:
        serve.add_argument(
            setting.flag,
            dest=setting.name,
            action="append" if setting.kind.repeat else "store",
            metavar=setting.kind.metavar,
            help=setting.help_line(),
        )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="TOML file of settings (keys: docs/configuration.md); SIGHUP re-reads the "
        "reloadable ones",
    )

    task = sub.add_parser("task", parents=[common], help="manage tasks")
    tsub = task.add_subparsers(dest="task_command", required=True, metavar="COMMAND")
    create = add(tsub, "create", _cmd_task_create, "create a task")
    create.formatter_class = argparse.RawDescriptionHelpFormatter
    create.epilog = CREATE_EXAMPLES
    add_create(create)
    register_task_commands(tsub, add, UPDATE_EXAMPLES)
    lst = add(tsub, "list", _cmd_task_list, "list tasks")
    lst.add_argument("--limit", type=int, metavar="N")
    lst.add_argument(
        "-l",
        "--selector",
        default="",
        metavar="SELECTOR",
        help="only tasks whose labels match, e.g. 'team=payments,env!=dev' (Kubernetes syntax)",
    )
    for name, handler, help_ in (
        ("get", _cmd_task_get, "show a task"),
        ("delete", _cmd_task_delete, "delete a task"),
        ("resume", _cmd_task_resume, "resume a paused task (clears its pause note)"),
        (
            "trigger",
            _cmd_task_trigger,
            "run a task once now, under its overlap policy (exit 7 when the policy skips it)",
        ),
    ):
        add(tsub, name, handler, help_).add_argument("id", metavar="ID")
    pause = add(tsub, "pause", _cmd_task_pause, "pause a task")
    pause.add_argument("id", metavar="ID")
    pause.add_argument(
        "--note", default="", metavar="TEXT", help="why (<= 1024 characters; shown by task get)"
    )
    tprev = add(tsub, "preview", _cmd_task_preview, "show a task's next slots")
    tprev.add_argument("id", metavar="ID")
    _add_preview_window(tprev)

    runs = add(sub, "runs", _cmd_runs, "list a task's runs, newest first")
    runs.formatter_class = argparse.RawDescriptionHelpFormatter
    runs.epilog = RUNS_EPILOG
    runs.add_argument("id", metavar="ID")
    runs.add_argument("--limit", type=int, default=DEFAULT_RUNS_LIMIT, metavar="N")
    runs.add_argument(
        "-f", "--follow", action="store_true", help="then print every change until Ctrl-C"
    )

    prev = add(sub, "preview", _cmd_preview, "show the next slots of a schedule (no task needed)")
    prev.formatter_class = argparse.RawDescriptionHelpFormatter
    prev.epilog = PREVIEW_EXAMPLES
    add_schedule(prev)
    _add_preview_window(prev)

    aud = add(sub, "audit", _cmd_audit, "check a task's runs for gaps and multiple claims")
    aud.formatter_class = argparse.RawDescriptionHelpFormatter
    aud.epilog = AUDIT_EPILOG
    aud.add_argument("id", metavar="ID")
    aud.add_argument(
        "--since",
        metavar="RFC3339",
        help="window start (default: the task's creation, or the oldest record kept)",
    )

    add(sub, "cluster", _cmd_cluster, "show cluster members")
    _add_tzdata(sub, common, add)
    register_apply(sub, add)

    imp = add(sub, "import-crontab", import_crontab, "create tasks from a crontab file")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--id-prefix", default="", metavar="P")
    fmt = imp.add_mutually_exclusive_group()
    fmt.add_argument(
        "--system",
        action="store_true",
        help="system format: a user column after the schedule (default: /etc/crontab and "
        "/etc/cron.d/* are; elsewhere the content decides)",
    )
    fmt.add_argument(
        "--user-format", action="store_true", help="user format: no user column (see --system)"
    )
    imp.add_argument("--tz", metavar="ZONE", help="time zone of entries without CRON_TZ")
    imp.add_argument("--skip-invalid", action="store_true")
    imp.add_argument("--dry-run", action="store_true")

    add_auth_commands(sub, common)

    dev = add(sub, "dev", _cmd_dev, "run etcd and N nodes locally")
    dev.add_argument("--nodes", type=int, default=3, metavar="N")
    dev.add_argument("--base-port", type=int, default=7070, metavar="P")
    dev.add_argument("--allow-shell", action="append", default=[], metavar="PATTERN")
    dev.add_argument("--lease-ttl", type=int, default=10, metavar="S")
    dev.add_argument("--cluster", default="dev", metavar="NAME")
    dev.add_argument("--data-dir", type=Path, metavar="DIR")
    dev.add_argument(
        "--tls",
        action="store_true",
        help="a throw-away CA, mutual TLS, an auth policy and an admin token; prints the "
        "PEERD_* a client needs",
    )
    return parser


def _add_tzdata(
    sub: argparse._SubParsersAction[Parser],
    common: Parser,
    add: Callable[[argparse._SubParsersAction[Parser], str, Handler, str], Parser],
) -> None:
    """``peerd version`` and ``peerd tzdata pin|unpin|status``."""
    ver = add(sub, "version", _cmd_version, "show the versions of peerd and its tzdata")
    ver.add_argument("--client", action="store_true", help="this process only (no server call)")
    ver.add_argument(
        "--tzdata",
        metavar="package|system|PATH",
        help="the time-zone rules this process reads (default: $PEERD_TZDATA, then package)",
    )
    tz = sub.add_parser("tzdata", parents=[common], help="the cluster's time-zone rules")
    tz.epilog = TZDATA_EPILOG
    tz.formatter_class = argparse.RawDescriptionHelpFormatter
    tzsub = tz.add_subparsers(dest="tzdata_command", required=True, metavar="COMMAND")
    pin = add(tzsub, "pin", _cmd_tzdata_pin, "pin the tzdata version the cluster computes with")
    pin.add_argument("version", metavar="VERSION")
    pin.add_argument(
        "--force", action="store_true", help="even if no live node runs it (then none claims)"
    )
    add(tzsub, "unpin", _cmd_tzdata_unpin, "let the cluster choose its tzdata version again")
    add(tzsub, "status", _cmd_tzdata_status, "show the agreed tzdata version and each node's")


def _add_preview_window(p: Parser) -> None:
    p.add_argument(
        "-n",
        "--count",
        type=int,
        default=DEFAULT_PREVIEW_COUNT,
        metavar="N",
        help=f"slots to show (1..{MAX_PREVIEW_COUNT}, default {DEFAULT_PREVIEW_COUNT})",
    )
    p.add_argument(
        "--from", dest="from_", metavar="RFC3339", help="slots strictly after this (default now)"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line (without the program name); ``shell_argv`` is set on the result.

    Raises:
        UsageError: on any usage error (message is one line).
        SystemExit: for ``--help`` (code 0).
    """
    head, shell_argv = split_shell_argv(argv)
    args = build_parser().parse_args(head)
    args.shell_argv = shell_argv
    return args


# ---------------------------------------------------------------------------------------------
# Commands


def _client(args: argparse.Namespace) -> SchedulerClient:
    return api_client(args)


def _print(args: argparse.Namespace, msg: object, text: Callable[[], str]) -> None:
    from google.protobuf.message import Message

    if args.output == "json" and isinstance(msg, Message):
        print(to_json(msg))
    elif args.output == "yaml" and isinstance(msg, Message):
        print(to_yaml(msg), end="")
    else:
        print(text())


def serve_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The node settings of a parsed ``serve`` command line, as :func:`build_config` takes them:
    field name -> the flag's text (a list for repeatable flags), ``None`` when not given."""
    return {s.name: getattr(args, s.name) for s in SETTINGS}


def _cmd_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    flags = serve_flags(args)
    config = build_config(flags, env, args.config)
    try:
        from peerd.log import configure_logging
    except ImportError:
        pass
    else:
        configure_logging(config.log_format, config.log_level)
    from peerd.node import run_node

    return run_node(config, (flags, env, args.config))


def _cmd_dev(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.nodes < 1:
        raise InvalidArgument("--nodes", f"must be >= 1, got {args.nodes}")
    if not 1 <= args.base_port <= 65535 - args.nodes:
        raise InvalidArgument("--base-port", f"{args.base_port} is out of range")
    if args.lease_ttl < 2:
        raise InvalidArgument("--lease-ttl", f"must be >= 2, got {args.lease_ttl}")
    from peerd.devtools.dev import run_dev

    return run_dev(
        args.nodes,
        args.base_port,
        args.allow_shell,
        args.lease_ttl,
        args.cluster,
        args.data_dir,
        tls=args.tls,
    )


def _cmd_task_create(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    spec = build_task_spec(args)
    with _client(args) as client:
        task = client.create_task(spec)
    _print(args, task, lambda: task_detail(task))
    return EXIT_OK


def _cmd_task_list(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.limit is not None and args.limit < 1:
        raise InvalidArgument("--limit", f"must be >= 1, got {args.limit}")
    if args.selector:
        compile_selector(args.selector, "--selector")
    with _client(args) as client:
        tasks = client.list_tasks(args.limit, args.selector)
    _print(args, pb.ListTasksResponse(tasks=tasks), lambda: tasks_table(tasks))
    return EXIT_OK


def _cmd_task_get(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        task = client.get_task(args.id)
        scheduling = None
        if args.output != "json" and task.node_selector and not task.paused:
            scheduling = _scheduling(client, task)
    _print(args, task, lambda: task_detail(task, scheduling))
    return EXIT_OK


def _scheduling(client: SchedulerClient, task: pb.TaskSpec) -> str:
    """Where ``task`` may run, as the answering node's GetCluster sees it."""
    try:
        view = client.get_cluster()
    except grpc.RpcError as exc:
        return f"unknown (no cluster view: {rpc_status(exc)[1]})"
    return scheduling_text(task, view)


def _cmd_task_delete(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        client.delete_task(args.id)
    _print(args, pb.DeleteTaskResponse(), lambda: f"deleted {args.id}")
    return EXIT_OK


def _cmd_task_pause(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if len(args.note) > 1024:
        raise InvalidArgument("--note", f"{len(args.note)} characters, at most 1024 allowed")
    with _client(args) as client:
        task = client.pause_task(args.id, args.note)
    _print(args, task, lambda: task_detail(task))
    return EXIT_OK


def _cmd_task_resume(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        task = client.resume_task(args.id)
    _print(args, task, lambda: task_detail(task))
    return EXIT_OK


def _cmd_task_trigger(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        run = client.trigger_task(args.id)
    _print(args, run, lambda: run_detail(run))
    if run.status == pb.SKIPPED:
        print_error(f"{args.id}: not run: {run.error}")
        return EXIT_NOT_RUN
    return EXIT_OK


def _preview_window(args: argparse.Namespace) -> tuple[int, datetime | None]:
    if not 1 <= args.count <= MAX_PREVIEW_COUNT:
        raise InvalidArgument("-n", f"must be between 1 and {MAX_PREVIEW_COUNT}, got {args.count}")
    return args.count, parse_rfc3339(args.from_, "--from") if args.from_ else None


def _cmd_task_preview(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    count, after = _preview_window(args)
    with _client(args) as client:
        resp = client.preview(task_id=args.id, count=count, after=after)
    _print(args, resp, lambda: preview_table(resp))
    return EXIT_OK


def _cmd_preview(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    schedule = build_schedule(args)
    count, after = _preview_window(args)
    with _client(args) as client:
        resp = client.preview(schedule=schedule, count=count, after=after)
    _print(args, resp, lambda: preview_table(resp))
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    since = parse_rfc3339(args.since, "--since") if args.since else None
    with _client(args) as client:
        resp = client.audit_task(args.id, since)
    _print(args, resp, lambda: audit_text(resp))
    return EXIT_ERROR if resp.multi_claims else EXIT_OK


def _follow_runs(args: argparse.Namespace) -> int:
    if args.limit > MAX_FOLLOW_REPLAY:
        raise InvalidArgument(
            "--limit", f"at most {MAX_FOLLOW_REPLAY} with --follow, got {args.limit}"
        )
    as_json = args.output == "json"
    with _client(args) as client:
        client.get_task(args.id)  # NOT_FOUND before anything is printed
        stream = client.watch_runs(args.id, args.limit)
        try:
            if not as_json:
                print(run_header(), flush=True)
            for rec in stream:
                print(to_json(rec, compact=True) if as_json else run_line(rec), flush=True)
        except KeyboardInterrupt:
            stream.cancel()
            return EXIT_OK
    print_error(f"{args.server} ended the stream")
    return EXIT_UNAVAILABLE


def _cmd_runs(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.limit < 1:
        raise InvalidArgument("--limit", f"must be >= 1, got {args.limit}")
    if args.follow:
        return _follow_runs(args)
    with _client(args) as client:
        runs = client.list_runs(args.id, args.limit)
    _print(args, pb.ListRunsResponse(runs=runs), lambda: runs_table(runs))
    return EXIT_OK


def _cmd_cluster(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        view = client.get_cluster()
    _print(args, view, lambda: cluster_text(view))
    return EXIT_OK


def _cmd_version(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    rules = tzdata_rules(args.tzdata, env)
    client = {"peerd": __version__, "tzdata": rules.version, "tzdata_source": rules.where}
    out: dict[str, Any] = {"client": client}
    if args.output != "json":
        print(f"client: peerd {__version__}, tzdata {rules.describe()}", flush=True)
    if not args.client:
        with _client(args) as conn:
            view = conn.get_cluster()
        me = next((m for m in view.members if m.node_id == view.node_id), pb.Member())
        out["server"] = {
            "node_id": view.node_id,
            "peerd": me.version,
            "tzdata": me.tzdata_version,
            "tzdata_source": me.tzdata_source,
        }
        out["cluster"] = {"tzdata": view.tzdata_version, "tzdata_pinned": view.tzdata_pinned}
        if args.output != "json":
            print(
                f"server: peerd {me.version or NONE} on {view.node_id}, tzdata "
                f"{me.tzdata_version or NONE} ({me.tzdata_source or NONE})"
            )
            print("\n".join(tzdata_lines(view)))
    if args.output == "json":
        print(json.dumps(out, indent=2))
    return EXIT_OK


def _cmd_tzdata_pin(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        resp = client.pin_tzdata(args.version, force=args.force)
    _print(args, resp, lambda: f"tzdata {resp.version} pinned")
    return EXIT_OK


def _cmd_tzdata_unpin(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        resp = client.pin_tzdata(unpin=True)
    _print(args, resp, lambda: f"tzdata unpinned (agreed: {resp.version or NONE})")
    return EXIT_OK


def _cmd_tzdata_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        view = client.get_cluster()
    rows = [
        f"{m.node_id}: tzdata {m.tzdata_version or NONE} ({m.tzdata_source or NONE})"
        for m in sorted(view.members, key=lambda m: m.node_id)
    ]
    _print(args, view, lambda: "\n".join([*tzdata_lines(view), *rows]))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Entry point


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    """Run the ``peerd`` command line and return the process exit code.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).
        env: environment mapping (default ``os.environ``); read only here and passed down.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print_error(str(exc))
        return EXIT_INVALID
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    args.server = args.server or environ.get("PEERD_SERVER") or DEFAULT_LISTEN
    if not args.rpc_timeout > 0:
        print_error(f"--timeout: must be > 0 seconds, got {args.rpc_timeout:g}")
        return EXIT_INVALID
    handler: Handler = args.handler
    try:
        resolve_client_options(args, environ)
        return handler(args, environ)
    except grpc.RpcError as exc:
        code, message = describe_rpc_error(exc, args.server, args.rpc_timeout)
        print_error(message)
        return code
    except PeerdError as exc:
        print_error(str(exc))
        return exit_code_for_error(exc)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print_error(str(exc))
        return EXIT_ERROR


__all__ = [
    "EXIT_ALREADY_EXISTS",
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_NOT_RUN",
    "EXIT_OK",
    "EXIT_PERMISSION_DENIED",
    "EXIT_UNAVAILABLE",
    "UsageError",
    "build_crontab_specs",
    "build_parser",
    "build_schedule",
    "build_task_spec",
    "main",
    "parse_args",
    "parse_retry_on",
    "parse_rfc3339",
    "serve_flags",
    "split_shell_argv",
]
