"""The ``task create`` flags and the TaskSpec they describe (pure: no server involved).

The flags are defined once, here: ``task create`` takes them, ``task update`` takes them all
optional (only the flags given change the task), and the task document format of ``peerd apply``
and ``task get -o yaml`` uses their names as keys (:mod:`peerd.cli_doc`), so a document is read
by exactly the code that reads a command line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import NoReturn, TypeVar

from peerd.cli_output import (
    CATCH_UP_NAMES,
    DST_AMBIGUOUS_NAMES,
    DST_NONEXISTENT_NAMES,
    OVERLAP_NAMES,
    RETRY_ON_NAMES,
)
from peerd.core.durations import parse_duration
from peerd.core.labels import compile_selector, parse_labels
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def print_error(message: str) -> None:
    """``peerd: error: <message>`` on one line of stderr."""
    print(f"peerd: error: {' '.join(message.split())}", file=sys.stderr)


class UsageError(Exception):
    """A command line argparse rejects (exit 2)."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors raise :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("peerd").strip()
        hint = f" (see 'peerd {where} --help')" if where else " (see 'peerd --help')"
        raise UsageError(f"{where}: {message}{hint}" if where else f"{message}{hint}")


def add_schedule(p: Parser, required: bool = True) -> None:
    """--cron/--every/--at (one of them ``required``) and the flags shaping the slots (shared by
    create, update and preview)."""
    sched = p.add_mutually_exclusive_group(required=required)
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


def add_create(p: Parser, update: bool = False) -> None:
    """The ``task create`` arguments on ``p``. ``update``: for ``task update``, the ID is
    required and every flag optional, and a flag not given is absent from the parsed namespace
    (so only the flags given change the task)."""
    if update:
        p.add_argument("id", metavar="ID", help="the task to change")
    else:
        p.add_argument("id", nargs="?", default="", metavar="ID", help="generated when omitted")
    add_schedule(p, required=not update)
    p.add_argument("--start", metavar="RFC3339")
    p.add_argument("--end", metavar="RFC3339")
    p.add_argument("--max-runs", type=int, default=0, metavar="N")
    p.add_argument("--paused", action="store_true")
    p.add_argument("--description", default="", metavar="TEXT")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label of the task (repeat; Kubernetes syntax); 'task list -l' selects on them",
    )
    p.add_argument(
        "--node-selector",
        metavar="SELECTOR",
        help="run only on nodes whose labels match, e.g. 'zone=eu-1,disk in (ssd,nvme)' "
        "(nodes: serve --label)",
    )
    p.add_argument(
        "--on-owner-lost",
        choices=["retry", "mark-lost"],
        default=None,
        help="a run left unfinished by a node whose lease is gone: run it again (default) or "
        "record it LOST",
    )
    target = p.add_mutually_exclusive_group(required=not update)
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
    if update:
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                action.default = argparse.SUPPRESS


def create_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    """``dest -> flag name without dashes`` of every option of a parser made by
    :func:`add_create` (``task_timeout -> timeout``, ``http_post -> http-post``)."""
    return {
        a.dest: a.option_strings[-1].removeprefix("--")
        for a in p._actions
        if a.option_strings and a.dest != "help"
    }


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
    spec.labels.update(parse_labels(args.label, "--label"))
    if args.node_selector is not None:
        compile_selector(args.node_selector, "--node-selector")
        spec.node_selector = args.node_selector.strip()
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
