"""The ``peerd`` command: ``serve`` and ``dev`` run nodes; the other subcommands are API clients.

Exit codes are in :mod:`peerd.exitcodes` (0 ok, 1 error, 2 invalid input or usage, 3 not found,
4 unavailable, 5 already exists, 6 permission denied, 7 not run by the task's policy, 8 etcd out
of space: the NOSPACE alarm refuses writes, see docs/operations.md; 9 the task changed since it
was read). This module parses the command line and runs ``serve``, ``dev`` and the ``task``
commands that act on one task; ``task update/edit/history`` are in :mod:`peerd.cli_tasks`,
``runs``, ``preview`` and ``audit`` in :mod:`peerd.cli_runs`, ``cluster``, ``version`` and
``tzdata`` in :mod:`peerd.cli_cluster`, ``apply`` and ``diff`` in :mod:`peerd.cli_apply`,
``import-crontab`` in :mod:`peerd.cli_crontab`, ``auth`` in :mod:`peerd.cli_auth`. Every
expected error is reported as one line ``peerd: error: <message>`` on stderr, never as a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from peerd.cli_apply import register as register_apply
from peerd.cli_auth import (
    add_auth_commands,
    add_client_options,
    api_client,
    resolve_client_options,
)
from peerd.cli_cluster import register as register_cluster
from peerd.cli_crontab import build_crontab_specs, import_crontab
from peerd.cli_doc import print_result
from peerd.cli_output import task_detail, tasks_table
from peerd.cli_output_cluster import scheduling_text
from peerd.cli_output_runs import run_detail
from peerd.cli_runs import register as register_runs
from peerd.cli_spec import (
    Parser,
    UsageError,
    add_create,
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
from peerd.config import build_config
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

Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


# ---------------------------------------------------------------------------------------------
# Parsing


Add = Callable[["argparse._SubParsersAction[Parser]", str, Handler, str], Parser]
"""``add(group, name, handler, help)``: a subcommand that takes the common options."""


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

    _add_serve(sub, add)
    task = sub.add_parser("task", parents=[common], help="manage tasks")
    tsub = task.add_subparsers(dest="task_command", required=True, metavar="COMMAND")
    _add_task_commands(tsub, add)
    register_runs(sub, tsub, add)
    register_cluster(sub, common, add)
    register_apply(sub, add)
    _add_import_crontab(sub, add)
    add_auth_commands(sub, common)
    _add_dev(sub, add)
    return parser


def _add_serve(sub: argparse._SubParsersAction[Parser], add: Add) -> None:
    """``peerd serve``: one flag per node setting (:data:`peerd.node_config.SETTINGS`)."""
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


def _add_task_commands(tsub: argparse._SubParsersAction[Parser], add: Add) -> None:
    """``peerd task create|update|edit|history|list|get|delete|resume|trigger|pause``."""
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


def _add_import_crontab(sub: argparse._SubParsersAction[Parser], add: Add) -> None:
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


def _add_dev(sub: argparse._SubParsersAction[Parser], add: Add) -> None:
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
    with api_client(args) as client:
        task = client.create_task(spec)
    print_result(args, task, lambda: task_detail(task))
    return EXIT_OK


def _cmd_task_list(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.limit is not None and args.limit < 1:
        raise InvalidArgument("--limit", f"must be >= 1, got {args.limit}")
    if args.selector:
        compile_selector(args.selector, "--selector")
    with api_client(args) as client:
        tasks = client.list_tasks(args.limit, args.selector)
    print_result(args, pb.ListTasksResponse(tasks=tasks), lambda: tasks_table(tasks))
    return EXIT_OK


def _cmd_task_get(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with api_client(args) as client:
        task = client.get_task(args.id)
        scheduling = None
        if args.output != "json" and task.node_selector and not task.paused:
            scheduling = _scheduling(client, task)
    print_result(args, task, lambda: task_detail(task, scheduling))
    return EXIT_OK


def _scheduling(client: SchedulerClient, task: pb.TaskSpec) -> str:
    """Where ``task`` may run, as the answering node's GetCluster sees it."""
    try:
        view = client.get_cluster()
    except grpc.RpcError as exc:
        return f"unknown (no cluster view: {rpc_status(exc)[1]})"
    return scheduling_text(task, view)


def _cmd_task_delete(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with api_client(args) as client:
        client.delete_task(args.id)
    print_result(args, pb.DeleteTaskResponse(), lambda: f"deleted {args.id}")
    return EXIT_OK


def _cmd_task_pause(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if len(args.note) > 1024:
        raise InvalidArgument("--note", f"{len(args.note)} characters, at most 1024 allowed")
    with api_client(args) as client:
        task = client.pause_task(args.id, args.note)
    print_result(args, task, lambda: task_detail(task))
    return EXIT_OK


def _cmd_task_resume(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with api_client(args) as client:
        task = client.resume_task(args.id)
    print_result(args, task, lambda: task_detail(task))
    return EXIT_OK


def _cmd_task_trigger(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with api_client(args) as client:
        run = client.trigger_task(args.id)
    print_result(args, run, lambda: run_detail(run))
    if run.status == pb.SKIPPED:
        print_error(f"{args.id}: not run: {run.error}")
        return EXIT_NOT_RUN
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
