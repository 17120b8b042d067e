"""The ``peerd`` command: ``serve`` and ``dev`` run nodes; the other subcommands are API clients.

Exit codes are in :mod:`peerd.exitcodes` (0 ok, 1 error, 2 invalid input or usage, 3 not found,
4 unavailable, 5 already exists, 6 permission denied, 7 not run by the task's policy, 8 etcd out
of space: the NOSPACE alarm refuses writes, see docs/operations.md). Every
expected error is reported as one line ``peerd: error: <message>`` on stderr, never as a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc

from peerd.cli_crontab import build_crontab_specs, import_crontab
from peerd.cli_output import (
    CATCH_UP_NAMES,
    DST_AMBIGUOUS_NAMES,
    DST_NONEXISTENT_NAMES,
    OVERLAP_NAMES,
    RETRY_ON_NAMES,
    audit_text,
    cluster_text,
    preview_table,
    run_detail,
    run_header,
    run_line,
    runs_table,
    task_detail,
    tasks_table,
    to_json,
)
from peerd.client import SchedulerClient, describe_rpc_error
from peerd.config import DEFAULT_LISTEN, SETTINGS, build_config
from peerd.core.durations import parse_duration
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
from peerd.v1 import scheduler_pb2 as pb

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_RPC_TIMEOUT_S = 10.0
DEFAULT_RUNS_LIMIT = 20
DEFAULT_PREVIEW_COUNT = 10
MAX_PREVIEW_COUNT = 1000
MAX_FOLLOW_REPLAY = 1000

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

RUNS_EPILOG = """With --follow, the newest --limit runs (at most 1000) are printed, then one
line per change of any run record of the task (claim, start, retry, finish) until Ctrl-C
(exit 0). With -o json, --follow prints one JSON object per line."""

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
    _add_create(create)
    lst = add(tsub, "list", _cmd_task_list, "list tasks")
    lst.add_argument("--limit", type=int, metavar="N")
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
    _add_schedule(prev)
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


def _add_schedule(p: _Parser) -> None:
    """--cron/--every/--at and the flags shaping the slots (shared by create and preview)."""
    sched = p.add_mutually_exclusive_group(required=True)
    sched.add_argument("--cron", metavar="EXPR")
    sched.add_argument("--every", metavar="DURATION")
    sched.add_argument("--at", metavar="RFC3339")
    p.add_argument("--tz", metavar="ZONE")
    p.add_argument(
        "--jitter",
        metavar="DURATION",
        help="fire each slot up to this much later, the same on every node (< the period, <= 1h)",
    )
    p.add_argument(
        "--dst-nonexistent",
        choices=["auto", *DST_NONEXISTENT_NAMES.values()],
        help="cron: a local time skipped by spring-forward (default auto: shift for a fixed "
        "hour, skip for '*')",
    )
    p.add_argument(
        "--dst-ambiguous",
        choices=["auto", *DST_AMBIGUOUS_NAMES.values()],
        help="cron: a local time repeated by fall-back (default auto: first for a fixed hour, "
        "both for '*')",
    )


def _add_preview_window(p: _Parser) -> None:
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


def _add_create(p: _Parser) -> None:
    p.add_argument("id", nargs="?", default="", metavar="ID", help="generated when omitted")
    _add_schedule(p)
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
    target.add_argument(
        "--python", metavar="NAME", help="entry point of group peerd.tasks installed on the nodes"
    )
    p.add_argument("--method", metavar="M")
    p.add_argument("--header", action="append", default=[], metavar="K:V")
    p.add_argument(
        "--header-secret",
        action="append",
        default=[],
        metavar="NAME=SECRET",
        help="header whose value the executing node reads from its secrets at run time "
        "(--secrets-file or PEERD_SECRET_<SECRET>); only the name is stored",
    )
    p.add_argument("--body", metavar="TEXT")
    p.add_argument("--timeout", dest="task_timeout", metavar="DURATION", help="per-run timeout")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument(
        "--env-secret",
        action="append",
        default=[],
        metavar="VAR=SECRET",
        help="--shell: environment variable read from the node's secrets (as --header-secret)",
    )
    p.add_argument("--workdir", metavar="DIR")
    p.add_argument(
        "--args", dest="python_args", metavar="JSON", help="--python: a JSON object (default {})"
    )
    pol = p.add_argument_group("run policies (defaults: see 'peerd task get')")
    pol.add_argument(
        "--overlap",
        choices=list(OVERLAP_NAMES.values()),
        help="when the previous run of the task is still going (default allow)",
    )
    pol.add_argument(
        "--catch-up",
        choices=list(CATCH_UP_NAMES.values()),
        help="slots missed while nothing could fire or while paused (default run-once)",
    )
    pol.add_argument(
        "--catch-up-window",
        metavar="DURATION",
        help="run-all: how far back (1s..7d, default 1h)",
    )
    pol.add_argument(
        "--misfire-threshold",
        metavar="DURATION",
        help="later than this a slot is missed (0..1d; default: the node's)",
    )
    pol.add_argument(
        "--max-attempts",
        type=int,
        metavar="N",
        help="attempts per slot including the first (1..100, default 1 = no retry)",
    )
    pol.add_argument("--backoff", metavar="DURATION", help="first retry backoff (default 1s)")
    pol.add_argument("--max-backoff", metavar="DURATION", help="backoff cap (default 60s)")
    pol.add_argument(
        "--backoff-multiplier", type=float, metavar="X", help="backoff growth (default 2)"
    )
    pol.add_argument(
        "--retry-on",
        metavar="LIST",
        help=f"comma-separated: {','.join(RETRY_ON_NAMES.values())} (default: all but 4xx)",
    )
    pol.add_argument(
        "--deadline",
        metavar="DURATION",
        help="no attempt starts (and a running one is cancelled) this long after the fire time",
    )
    pol.add_argument("--priority", type=int, metavar="N", help="-100..100 (default 0)")
    pol.add_argument(
        "--on-failure",
        metavar="TASK_ID",
        help="task to trigger when a run finally fails (may be created later)",
    )


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
    s.CopyFrom(build_schedule(args))
    if args.start:
        s.start_at.FromDatetime(parse_rfc3339(args.start, "--start"))
    if args.end:
        s.end_at.FromDatetime(parse_rfc3339(args.end, "--end"))
    if args.max_runs < 0:
        raise InvalidArgument("--max-runs", f"must be >= 0, got {args.max_runs}")
    s.max_runs = args.max_runs

    if args.python_args is not None and args.python is None:
        raise InvalidArgument("--args", "only applies to --python tasks")
    if args.shell or args.python is not None:
        if args.shell and not args.shell_argv:
            raise InvalidArgument("--shell", "expected -- ARGV..., e.g. --shell -- /bin/echo hi")
        for flag, value in (("--method", args.method), ("--body", args.body)):
            if value is not None:
                raise InvalidArgument(flag, "only applies to --http/--http-post tasks")
        for flag, items in (("--header", args.header), ("--header-secret", args.header_secret)):
            if items:
                raise InvalidArgument(flag, "only applies to --http/--http-post tasks")
    if args.python is not None:
        _python_target(spec.python, args)
    elif args.shell:
        spec.shell.argv.extend(args.shell_argv)
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InvalidArgument("--env", f"expected K=V, got {item!r}")
            spec.shell.env[key] = value
        spec.shell.env_secrets.update(parse_secret_refs(args.env_secret, "--env-secret"))
        if args.workdir:
            spec.shell.working_dir = args.workdir
    else:
        _http_target(spec.http, args)
    if args.task_timeout is not None:
        spec.timeout.FromTimedelta(
            _positive(args.task_timeout, "--timeout", timedelta(milliseconds=1))
        )
    _policies(spec, args)
    return spec


E = TypeVar("E")


def _choice(names: Mapping[E, str], value: str) -> E:
    return next(k for k, v in names.items() if v == value)


def build_schedule(args: argparse.Namespace) -> pb.Schedule:
    """The Schedule of ``--cron/--every/--at``, ``--tz``, ``--jitter``, ``--dst-*`` (pure).

    Raises:
        InvalidArgument: naming the flag.
    """
    s = pb.Schedule()
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
    if args.jitter is not None:
        s.jitter.FromTimedelta(parse_duration(args.jitter, "--jitter"))
    if args.dst_nonexistent not in (None, "auto"):
        s.dst_nonexistent = _choice(DST_NONEXISTENT_NAMES, args.dst_nonexistent)  # type: ignore[assignment]
    if args.dst_ambiguous not in (None, "auto"):
        s.dst_ambiguous = _choice(DST_AMBIGUOUS_NAMES, args.dst_ambiguous)  # type: ignore[assignment]
    return s


def parse_retry_on(text: str) -> list[pb.RetryOn]:
    """``"5xx,429,timeout"`` -> RetryOn values (case-insensitive, duplicates dropped).

    Raises:
        InvalidArgument: ``--retry-on`` with the unknown name and the known ones.
    """
    out: list[pb.RetryOn] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in RETRY_ON_NAMES.values():
            known = ",".join(RETRY_ON_NAMES.values())
            raise InvalidArgument("--retry-on", f"unknown outcome {raw.strip()!r} (one of {known})")
        value = _choice(RETRY_ON_NAMES, name)
        if value not in out:
            out.append(value)
    if not out:
        raise InvalidArgument("--retry-on", "empty list")
    return out


def _policies(spec: pb.TaskSpec, args: argparse.Namespace) -> None:
    if args.overlap is not None:
        spec.overlap = _choice(OVERLAP_NAMES, args.overlap)
    if args.catch_up is not None:
        spec.catch_up = _choice(CATCH_UP_NAMES, args.catch_up)
    if args.catch_up_window is not None:
        window = parse_duration(args.catch_up_window, "--catch-up-window")
        spec.catch_up_window.FromTimedelta(window)
    if args.misfire_threshold is not None:
        threshold = parse_duration(args.misfire_threshold, "--misfire-threshold")
        spec.misfire_threshold.FromTimedelta(threshold)
    tuning = {
        "--backoff": args.backoff,
        "--max-backoff": args.max_backoff,
        "--backoff-multiplier": args.backoff_multiplier,
        "--retry-on": args.retry_on,
    }
    if args.max_attempts is None:
        for flag, value in tuning.items():
            if value is not None:
                raise InvalidArgument(flag, "has no effect without --max-attempts N (N >= 2)")
    if args.max_attempts is not None or args.deadline is not None:
        r = spec.retry
        if args.max_attempts is not None:
            r.max_attempts = args.max_attempts
        if args.backoff is not None:
            r.initial_backoff.FromTimedelta(parse_duration(args.backoff, "--backoff"))
        if args.max_backoff is not None:
            r.max_backoff.FromTimedelta(parse_duration(args.max_backoff, "--max-backoff"))
        if args.backoff_multiplier is not None:
            r.multiplier = args.backoff_multiplier
        if args.retry_on is not None:
            r.retry_on.extend(parse_retry_on(args.retry_on))
        if args.deadline is not None:
            r.deadline.FromTimedelta(_positive(args.deadline, "--deadline", timedelta(seconds=1)))
    if args.priority is not None:
        spec.priority = args.priority
    if args.on_failure is not None:
        if not TASK_ID_RE.match(args.on_failure):
            raise InvalidArgument(
                "--on-failure", f"{args.on_failure!r} must match [a-z0-9][a-z0-9._-]{{0,127}}"
            )
        spec.on_failure = args.on_failure


def parse_secret_refs(items: Sequence[str], flag: str) -> dict[str, str]:
    """``["Authorization=PAYMENTS_TOKEN", ...]`` -> ``{"Authorization": "PAYMENTS_TOKEN"}``.

    Raises:
        InvalidArgument: naming ``flag`` for an item that is not ``NAME=SECRET``.
    """
    refs = {}
    for item in items:
        name, sep, secret = item.partition("=")
        if not sep or not name.strip() or not secret.strip():
            raise InvalidArgument(flag, f"expected NAME=SECRET, got {item!r}")
        refs[name.strip()] = secret.strip()
    return refs


def _shell_only_flags(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--env", args.env),
        ("--env-secret", args.env_secret),
        ("--workdir", args.workdir),
    ):
        if value:
            raise InvalidArgument(flag, "only applies to --shell tasks")


def _python_target(target: pb.PythonTarget, args: argparse.Namespace) -> None:
    _shell_only_flags(args)
    if not args.python.strip():
        raise InvalidArgument("--python", "empty entry-point name")
    target.name = args.python.strip()
    if args.python_args is not None:
        try:
            value = json.loads(args.python_args)
        except ValueError as exc:
            raise InvalidArgument("--args", f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidArgument("--args", f"must be a JSON object, got {type(value).__name__}")
        target.args_json = args.python_args


def _http_target(http: pb.HttpTarget, args: argparse.Namespace) -> None:
    _shell_only_flags(args)
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
    http.header_secrets.update(parse_secret_refs(args.header_secret, "--header-secret"))
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
        _err(f"{args.id}: not run: {run.error}")
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
    _err(f"{args.server} ended the stream")
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
    "parse_secret_refs",
    "serve_flags",
    "split_shell_argv",
]
