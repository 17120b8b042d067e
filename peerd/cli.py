"""The ``peerd`` command: ``serve`` and ``dev`` run nodes; the other subcommands are API clients.

Exit codes are in :mod:`peerd.exitcodes` (0 ok, 1 error, 2 invalid input or usage, 3 not found,
4 unavailable, 5 already exists, 6 permission denied). Every expected error is reported as one
line ``peerd: error: <message>`` on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn

import grpc

from peerd.cli_crontab import build_crontab_specs, import_crontab
from peerd.cli_output import (
    cluster_text,
    run_detail,
    runs_table,
    task_detail,
    tasks_table,
    to_json,
)
from peerd.client import SchedulerClient, describe_rpc_error
from peerd.config import DEFAULT_LISTEN, build_config
from peerd.core.durations import parse_duration
from peerd.errors import InvalidArgument, PeerdError
from peerd.exitcodes import (
    EXIT_ALREADY_EXISTS,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PERMISSION_DENIED,
    EXIT_UNAVAILABLE,
    exit_code_for_error,
)
from peerd.v1 import scheduler_pb2 as pb

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_RPC_TIMEOUT_S = 10.0
DEFAULT_RUNS_LIMIT = 20

CREATE_EXAMPLES = """examples:
  peerd task create ping --every 30s --http-post https://example.com/hook
  peerd task create report --cron '0 6 * * 1-5' --tz Europe/Paris --http https://h/r --method GET
  peerd task create backup --cron '@daily' --shell -- /usr/local/bin/backup --full

With --shell, everything after -- is the command's argv (flags included)."""

Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


class UsageError(Exception):
    """A command line argparse rejects (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors raise :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("peerd").strip()
        hint = f" (see 'peerd {where} --help')" if where else " (see 'peerd --help')"
        raise UsageError(f"{where}: {message}{hint}" if where else f"{message}{hint}")


def _err(message: str) -> None:
    print(f"peerd: error: {' '.join(message.split())}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Parsing


def build_parser() -> argparse.ArgumentParser:
    """The full argparse tree. ``-o/--output`` and ``--server`` are accepted before and after the
    subcommand; ``--timeout`` before it is the RPC deadline (after ``task create`` it is the
    per-run timeout)."""
    common = _Parser(add_help=False)
    common.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS)
    common.add_argument("--server", metavar="HOST:PORT", default=argparse.SUPPRESS)

    parser = _Parser(prog="peerd", description="Distributed cron/task scheduler on etcd.")
    parser.add_argument(
        "--server", metavar="HOST:PORT", help=f"default: $PEERD_SERVER, then {DEFAULT_LISTEN}"
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument(
        "--timeout",
        dest="rpc_timeout",
        type=float,
        default=DEFAULT_RPC_TIMEOUT_S,
        metavar="SECONDS",
        help="RPC deadline (default 10)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        group: argparse._SubParsersAction[_Parser], name: str, handler: Handler, help_: str
    ) -> _Parser:
        p = group.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    serve = add(sub, "serve", _cmd_serve, "run a node until SIGTERM/SIGINT")
    serve.add_argument("--node-id", metavar="ID")
    serve.add_argument("--listen", metavar="HOST:PORT")
    serve.add_argument("--etcd", metavar="HOST:PORT[,HOST:PORT...]")
    serve.add_argument("--advertise", metavar="HOST:PORT")
    serve.add_argument("--cluster", metavar="NAME")
    serve.add_argument("--lease-ttl", dest="lease_ttl_s", type=int, metavar="SECONDS")
    serve.add_argument("--allow-shell", action="append", metavar="PATTERN")
    serve.add_argument("--misfire-threshold", metavar="DURATION")
    serve.add_argument("--runs-keep", type=int, metavar="N")
    serve.add_argument(
        "--drain-grace",
        dest="drain_grace_s",
        metavar="DURATION",
        help="on SIGTERM, time running executions get to finish (default 30s)",
    )
    serve.add_argument("--max-concurrent-runs", type=int, metavar="N")
    serve.add_argument("--log-format", metavar="auto|json|console")
    serve.add_argument("--log-level", metavar="LEVEL")
    serve.add_argument("--config", type=Path, metavar="FILE.toml")

    task = sub.add_parser("task", parents=[common], help="manage tasks")
    tsub = task.add_subparsers(dest="task_command", required=True, metavar="COMMAND")
    create = add(tsub, "create", _cmd_task_create, "create a task")
    create.formatter_class = argparse.RawDescriptionHelpFormatter
    create.epilog = CREATE_EXAMPLES
    _add_create(create)
    lst = add(tsub, "list", _cmd_task_list, "list tasks")
    lst.add_argument("--limit", type=int, metavar="N")
    for name, handler, help_ in (
        ("get", _cmd_task_get, "show a task"),
        ("delete", _cmd_task_delete, "delete a task"),
        ("pause", _cmd_task_pause, "pause a task"),
        ("resume", _cmd_task_resume, "resume a paused task"),
        ("trigger", _cmd_task_trigger, "run a task once now"),
    ):
        add(tsub, name, handler, help_).add_argument("id", metavar="ID")

    runs = add(sub, "runs", _cmd_runs, "list a task's runs, newest first")
    runs.add_argument("id", metavar="ID")
    runs.add_argument("--limit", type=int, default=DEFAULT_RUNS_LIMIT, metavar="N")

    add(sub, "cluster", _cmd_cluster, "show cluster members")

    imp = add(sub, "import-crontab", import_crontab, "create tasks from a crontab file")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--id-prefix", default="", metavar="P")
    fmt = imp.add_mutually_exclusive_group()
    fmt.add_argument("--system", action="store_true", help="system format (user column)")
    fmt.add_argument("--user-format", action="store_true", help="user format (no user column)")
    imp.add_argument("--tz", metavar="ZONE", help="time zone of entries without CRON_TZ")
    imp.add_argument("--skip-invalid", action="store_true")
    imp.add_argument("--dry-run", action="store_true")

    dev = add(sub, "dev", _cmd_dev, "run etcd and N nodes locally")
    dev.add_argument("--nodes", type=int, default=3, metavar="N")
    dev.add_argument("--base-port", type=int, default=7070, metavar="P")
    dev.add_argument("--allow-shell", action="append", default=[], metavar="PATTERN")
    dev.add_argument("--lease-ttl", type=int, default=10, metavar="S")
    dev.add_argument("--cluster", default="dev", metavar="NAME")
    dev.add_argument("--data-dir", type=Path, metavar="DIR")
    return parser


def _add_create(p: _Parser) -> None:
    p.add_argument("id", nargs="?", default="", metavar="ID", help="generated when omitted")
    sched = p.add_mutually_exclusive_group(required=True)
    sched.add_argument("--cron", metavar="EXPR")
    sched.add_argument("--every", metavar="DURATION")
    sched.add_argument("--at", metavar="RFC3339")
    p.add_argument("--tz", metavar="ZONE")
    p.add_argument("--start", metavar="RFC3339")
    p.add_argument("--end", metavar="RFC3339")
    p.add_argument("--max-runs", type=int, default=0, metavar="N")
    p.add_argument("--paused", action="store_true")
    p.add_argument("--description", default="", metavar="TEXT")
    p.add_argument(
        "--on-owner-lost",
        choices=["retry", "mark-lost"],
        default=None,
        help="a run left unfinished by a node whose lease is gone: run it again (default) or "
        "record it LOST",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--http-post", metavar="URL")
    target.add_argument("--http", metavar="URL")
    target.add_argument("--shell", action="store_true", help="-- ARGV... (everything after --)")
    p.add_argument("--method", metavar="M")
    p.add_argument("--header", action="append", default=[], metavar="K:V")
    p.add_argument("--body", metavar="TEXT")
    p.add_argument("--timeout", dest="task_timeout", metavar="DURATION", help="per-run timeout")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--workdir", metavar="DIR")


def split_shell_argv(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Split ``... --shell ... -- ARGV...`` into (arguments for argparse, ARGV).

    Only a ``--`` after ``--shell`` is taken; everything after it (flags included) is the
    command's argv. Returns ``(argv, None)`` when there is no such ``--``.
    """
    args = list(argv)
    if "--" in args:
        i = args.index("--")
        if "--shell" in args[:i]:
            return args[:i], args[i + 1 :]
    return args, None


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


def parse_rfc3339(text: str, flag: str) -> datetime:
    """An RFC 3339 timestamp with ``Z`` or an offset, as an aware datetime.

    Raises:
        InvalidArgument: naming ``flag`` when malformed or without a UTC offset.
    """
    value = text.strip()
    try:
        ts = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "zZ" else value)
    except ValueError:
        ts = None
    if ts is None or ("T" not in value.upper() and " " not in value):
        raise InvalidArgument(flag, f"{text!r} is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)")
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise InvalidArgument(flag, f"{text!r} has no UTC offset; add Z or e.g. +02:00")
    return ts


def _positive(text: str, flag: str, minimum: timedelta) -> timedelta:
    d = parse_duration(text, flag)
    if d < minimum:
        raise InvalidArgument(flag, f"{text!r} must be at least {minimum.total_seconds():g}s")
    return d


def build_task_spec(args: argparse.Namespace) -> pb.TaskSpec:
    """The TaskSpec a ``task create`` command line describes (pure; no server involved).

    Raises:
        InvalidArgument: naming the flag (``--at``, ``--header`` ...) and the reason.
    """
    spec = pb.TaskSpec(id=args.id or "", paused=args.paused, description=args.description or "")
    if args.on_owner_lost is not None:
        spec.on_owner_lost = (
            pb.OWNER_LOST_MARK_LOST if args.on_owner_lost == "mark-lost" else pb.OWNER_LOST_RETRY
        )
    if spec.id and not TASK_ID_RE.match(spec.id):
        raise InvalidArgument("ID", f"{spec.id!r} must match [a-z0-9][a-z0-9._-]{{0,127}}")
    s = spec.schedule
    if args.cron is not None:
        if not args.cron.strip():
            raise InvalidArgument("--cron", "empty expression")
        s.cron = args.cron.strip()
    elif args.every is not None:
        s.every.FromTimedelta(_positive(args.every, "--every", timedelta(seconds=1)))
    else:
        s.at.FromDatetime(parse_rfc3339(args.at, "--at"))
    if args.tz:
        s.time_zone = args.tz
    if args.start:
        s.start_at.FromDatetime(parse_rfc3339(args.start, "--start"))
    if args.end:
        s.end_at.FromDatetime(parse_rfc3339(args.end, "--end"))
    if args.max_runs < 0:
        raise InvalidArgument("--max-runs", f"must be >= 0, got {args.max_runs}")
    s.max_runs = args.max_runs

    if args.shell:
        if not args.shell_argv:
            raise InvalidArgument("--shell", "expected -- ARGV..., e.g. --shell -- /bin/echo hi")
        for flag, value in (("--method", args.method), ("--body", args.body)):
            if value is not None:
                raise InvalidArgument(flag, "only applies to --http/--http-post tasks")
        if args.header:
            raise InvalidArgument("--header", "only applies to --http/--http-post tasks")
        spec.shell.argv.extend(args.shell_argv)
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InvalidArgument("--env", f"expected K=V, got {item!r}")
            spec.shell.env[key] = value
        if args.workdir:
            spec.shell.working_dir = args.workdir
    else:
        _http_target(spec.http, args)
    if args.task_timeout is not None:
        spec.timeout.FromTimedelta(
            _positive(args.task_timeout, "--timeout", timedelta(milliseconds=1))
        )
    return spec


def _http_target(http: pb.HttpTarget, args: argparse.Namespace) -> None:
    for flag, value in (("--env", args.env), ("--workdir", args.workdir)):
        if value:
            raise InvalidArgument(flag, "only applies to --shell tasks")
    flag = "--http-post" if args.http_post is not None else "--http"
    url = args.http_post if args.http_post is not None else args.http
    if not re.match(r"^https?://[^/\s]+", url):
        raise InvalidArgument(flag, f"{url!r} is not an http:// or https:// URL")
    method = (args.method or "POST").upper()
    if method not in HTTP_METHODS:
        raise InvalidArgument(
            "--method", f"{args.method!r} is not one of {', '.join(HTTP_METHODS)}"
        )
    if args.http_post is not None and method != "POST":
        raise InvalidArgument("--method", "--http-post always uses POST; use --http URL --method M")
    http.method = method
    http.url = url
    for item in args.header:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise InvalidArgument("--header", f"expected K:V, got {item!r}")
        http.headers[key.strip()] = value.strip()
    if args.body is not None:
        http.body = args.body


# ---------------------------------------------------------------------------------------------
# Commands


def _client(args: argparse.Namespace) -> SchedulerClient:
    return SchedulerClient(args.server, args.rpc_timeout)


def _print(args: argparse.Namespace, msg: object, text: Callable[[], str]) -> None:
    from google.protobuf.message import Message

    if args.output == "json" and isinstance(msg, Message):
        print(to_json(msg))
    else:
        print(text())


def _cmd_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    flags = {
        name: getattr(args, name)
        for name in (
            "node_id", "listen", "advertise", "etcd", "cluster", "lease_ttl_s", "allow_shell",
            "misfire_threshold", "runs_keep", "max_concurrent_runs", "log_format", "log_level",
            "drain_grace_s",
        )
    }  # fmt: skip
    config = build_config(flags, env, args.config)
    try:
        from peerd.log import configure_logging
    except ImportError:
        pass
    else:
        configure_logging(config.log_format, config.log_level)
    from peerd.node import run_node

    return run_node(config)


def _cmd_dev(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.nodes < 1:
        raise InvalidArgument("--nodes", f"must be >= 1, got {args.nodes}")
    if not 1 <= args.base_port <= 65535 - args.nodes:
        raise InvalidArgument("--base-port", f"{args.base_port} is out of range")
    if args.lease_ttl < 2:
        raise InvalidArgument("--lease-ttl", f"must be >= 2, got {args.lease_ttl}")
    from peerd.dev import run_dev

    return run_dev(
        args.nodes, args.base_port, args.allow_shell, args.lease_ttl, args.cluster, args.data_dir
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
    with _client(args) as client:
        tasks = client.list_tasks(args.limit)
    _print(args, pb.ListTasksResponse(tasks=tasks), lambda: tasks_table(tasks))
    return EXIT_OK


def _cmd_task_get(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        task = client.get_task(args.id)
    _print(args, task, lambda: task_detail(task))
    return EXIT_OK


def _cmd_task_delete(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        client.delete_task(args.id)
    _print(args, pb.DeleteTaskResponse(), lambda: f"deleted {args.id}")
    return EXIT_OK


def _cmd_task_pause(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        task = client.pause_task(args.id)
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
    return EXIT_OK


def _cmd_runs(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.limit < 1:
        raise InvalidArgument("--limit", f"must be >= 1, got {args.limit}")
    with _client(args) as client:
        runs = client.list_runs(args.id, args.limit)
    _print(args, pb.ListRunsResponse(runs=runs), lambda: runs_table(runs))
    return EXIT_OK


def _cmd_cluster(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with _client(args) as client:
        view = client.get_cluster()
    _print(args, view, lambda: cluster_text(view))
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
        _err(str(exc))
        return EXIT_INVALID
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    args.server = args.server or environ.get("PEERD_SERVER") or DEFAULT_LISTEN
    if not args.rpc_timeout > 0:
        _err(f"--timeout: must be > 0 seconds, got {args.rpc_timeout:g}")
        return EXIT_INVALID
    handler: Handler = args.handler
    try:
        return handler(args, environ)
    except grpc.RpcError as exc:
        code, message = describe_rpc_error(exc, args.server, args.rpc_timeout)
        _err(message)
        return code
    except PeerdError as exc:
        _err(str(exc))
        return exit_code_for_error(exc)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        _err(str(exc))
        return EXIT_ERROR


__all__ = [
    "EXIT_ALREADY_EXISTS",
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PERMISSION_DENIED",
    "EXIT_UNAVAILABLE",
    "UsageError",
    "build_crontab_specs",
    "build_parser",
    "build_task_spec",
    "main",
    "parse_args",
    "parse_rfc3339",
    "split_shell_argv",
]
