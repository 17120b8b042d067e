"""``peerd runs``, ``peerd preview``, ``peerd task preview`` and ``peerd audit``: the commands
that read a task's slots and run records (rendered by :mod:`peerd.cli_output_runs`)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from peerd.cli_auth import api_client
from peerd.cli_doc import print_result
from peerd.cli_output import to_json
from peerd.cli_output_runs import audit_text, preview_table, run_header, run_line, runs_table
from peerd.cli_spec import Parser, add_schedule, build_schedule, parse_rfc3339, print_error
from peerd.errors import InvalidArgument
from peerd.exitcodes import EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE
from peerd.v1 import scheduler_pb2 as pb

DEFAULT_RUNS_LIMIT = 20
DEFAULT_PREVIEW_COUNT = 10
MAX_PREVIEW_COUNT = 1000
MAX_FOLLOW_REPLAY = 1000

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


def register(sub: Any, tsub: Any, add: Any) -> None:
    """Add ``runs``, ``preview`` and ``audit`` to the top-level subcommands ``sub`` and
    ``preview`` to the ``task`` subcommands ``tsub`` (``add`` is
    :func:`peerd.cli.build_parser`'s helper)."""
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


def _preview_window(args: argparse.Namespace) -> tuple[int, datetime | None]:
    if not 1 <= args.count <= MAX_PREVIEW_COUNT:
        raise InvalidArgument("-n", f"must be between 1 and {MAX_PREVIEW_COUNT}, got {args.count}")
    return args.count, parse_rfc3339(args.from_, "--from") if args.from_ else None


def _cmd_task_preview(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    count, after = _preview_window(args)
    with api_client(args) as client:
        resp = client.preview(task_id=args.id, count=count, after=after)
    print_result(args, resp, lambda: preview_table(resp))
    return EXIT_OK


def _cmd_preview(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    schedule = build_schedule(args)
    count, after = _preview_window(args)
    with api_client(args) as client:
        resp = client.preview(schedule=schedule, count=count, after=after)
    print_result(args, resp, lambda: preview_table(resp))
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    since = parse_rfc3339(args.since, "--since") if args.since else None
    with api_client(args) as client:
        resp = client.audit_task(args.id, since)
    print_result(args, resp, lambda: audit_text(resp))
    return EXIT_ERROR if resp.multi_claims else EXIT_OK


def _follow_runs(args: argparse.Namespace) -> int:
    if args.limit > MAX_FOLLOW_REPLAY:
        raise InvalidArgument(
            "--limit", f"at most {MAX_FOLLOW_REPLAY} with --follow, got {args.limit}"
        )
    as_json = args.output == "json"
    with api_client(args) as client:
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
    with api_client(args) as client:
        runs = client.list_runs(args.id, args.limit)
    print_result(args, pb.ListRunsResponse(runs=runs), lambda: runs_table(runs))
    return EXIT_OK
