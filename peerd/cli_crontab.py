"""``peerd import-crontab``: turn a crontab file into shell tasks created in one atomic call.

Each entry becomes a :class:`TaskSpec` whose shell target runs ``$SHELL -c <command>`` (``SHELL``
from the crontab's environment, default ``/bin/sh``) with the crontab's environment (``PATH``
defaults to ``/usr/bin:/bin`` as in cron). When the entry has standard input (the part after an
unescaped ``%``), the command becomes ``printf '%s' <stdin> | { <command>\\n}``: the text the
parser produced (``%`` already turned into newlines) is piped into the command with a final
newline added when it is non-empty and lacks one, exactly as vixie cron's ``do_command.c`` writes
it; the newline before ``}`` keeps a trailing comment or ``&`` in the command harmless.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from peerd.cli_auth import api_client
from peerd.cli_output import import_table, to_json
from peerd.config import tzdata_rules
from peerd.core.crontab_format import HostHints
from peerd.errors import InvalidArgument
from peerd.exitcodes import EXIT_INVALID, EXIT_OK
from peerd.v1 import scheduler_pb2 as pb

MAX_TASKS_PER_IMPORT = 100
"""CreateTasks accepts at most this many tasks in one (atomic) call."""
TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
DEFAULT_CRON_PATH = "/usr/bin:/bin"
DESCRIPTION_MAX = 200
MAX_LISTED = 20
"""Lines listed when a file's format is ambiguous."""


class CrontabEntryLike(Protocol):
    """The parts of :class:`peerd.core.crontab.CrontabEntry` used here."""

    @property
    def line_no(self) -> int: ...
    @property
    def schedule(self) -> str: ...
    @property
    def command(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def time_zone(self) -> str | None: ...
    @property
    def stdin(self) -> str | None: ...


class CrontabErrorLike(Protocol):
    """The parts of :class:`peerd.core.crontab.CrontabError` used here."""

    @property
    def line_no(self) -> int: ...
    @property
    def line(self) -> str: ...
    @property
    def reason(self) -> str: ...


def crontab_task_id(prefix: str, path: Path, line_no: int) -> str:
    """``<prefix><basename>-<line_no>``; the basename is lowercased and reduced to
    ``[a-z0-9._-]`` (other runs of characters become ``-``) and shortened to fit 128 chars.

    Raises:
        InvalidArgument: naming ``--id-prefix`` when the resulting id is not a valid task id.
    """
    base = re.sub(r"[^a-z0-9._-]+", "-", path.name.lower()).strip("._-") or "crontab"
    suffix = f"-{line_no}"
    room = 128 - len(prefix) - len(suffix)
    task_id = prefix + base[: max(room, 1)] + suffix
    if room < 1 or not TASK_ID_RE.match(task_id):
        raise InvalidArgument(
            "--id-prefix",
            f"{prefix!r} gives the invalid task id {task_id!r} "
            "(ids must match [a-z0-9][a-z0-9._-]{0,127})",
        )
    return task_id


def entry_script(command: str, stdin: str | None) -> str:
    """The ``-c`` script for a crontab command, feeding it ``stdin`` (if any) as cron does: the
    text plus a trailing newline when it is non-empty and does not end with one."""
    if stdin is None:
        return command
    if stdin and not stdin.endswith("\n"):
        stdin += "\n"
    return f"printf '%s' {shlex.quote(stdin)} | {{ {command}\n}}"


def entry_spec(
    entry: CrontabEntryLike, *, path: Path, line_text: str, prefix: str, default_tz: str | None
) -> pb.TaskSpec:
    """The TaskSpec for one crontab entry (see the module docstring for the shell wrapping).

    ``path`` should be absolute (it is recorded in ``source``); ``line_text`` is the original
    line, kept (trimmed to 200 chars) as the description.
    """
    env = dict(entry.env)
    env.pop("CRON_TZ", None)
    env.setdefault("PATH", DEFAULT_CRON_PATH)
    shell = entry.env.get("SHELL") or "/bin/sh"
    spec = pb.TaskSpec(
        id=crontab_task_id(prefix, path, entry.line_no),
        description=line_text.strip()[:DESCRIPTION_MAX],
        source=f"crontab:{path}:{entry.line_no}",
    )
    spec.schedule.cron = entry.schedule
    spec.schedule.time_zone = entry.time_zone or default_tz or "UTC"
    spec.shell.argv.extend([shell, "-c", entry_script(entry.command, entry.stdin)])
    spec.shell.env.update(env)
    spec.shell.run_as = entry.user or ""
    return spec


def build_crontab_specs(
    path: Path,
    text: str,
    entries: Sequence[CrontabEntryLike],
    errors: Sequence[CrontabErrorLike],
    *,
    prefix: str = "",
    default_tz: str | None = None,
) -> tuple[list[pb.TaskSpec], list[str]]:
    """TaskSpecs for the parsed entries of the crontab ``text`` read from ``path`` (pure).

    Returns:
        ``(specs, problems)``; each problem reads ``line N: <reason>: <line>``, in line order.

    Raises:
        InvalidArgument: naming ``--id-prefix`` when it cannot form valid task ids.
    """
    lines = text.splitlines()
    abs_path = Path(os.path.abspath(path))
    specs = []
    for entry in entries:
        n = entry.line_no
        line_text = lines[n - 1] if 1 <= n <= len(lines) else entry.command
        specs.append(
            entry_spec(
                entry, path=abs_path, line_text=line_text, prefix=prefix, default_tz=default_tz
            )
        )
    problems = [
        f"line {e.line_no}: {e.reason}: {e.line.strip()}"
        for e in sorted(errors, key=lambda e: e.line_no)
    ]
    return specs, problems


def host_hints() -> HostHints:
    """What this host knows about a crontab's words: its users (passwd) and the executables
    on a PATH. Hints only (:mod:`peerd.core.crontab_format`): the file may come from elsewhere."""

    def is_account(name: str) -> bool:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return False
        return True

    return HostHints(is_account, lambda name, path: shutil.which(name, path=path) is not None)


def crontab_format(args: argparse.Namespace, path: Path, text: str) -> tuple[bool, str] | None:
    """``(system format?, why)`` of the crontab ``text`` read from ``path``: ``--system`` or
    ``--user-format`` when given, else system format when the path is ``/etc/crontab`` or in
    ``/etc/cron.d``, else the content decides (:func:`peerd.core.crontab_format.detect_format`).
    An ambiguous content is reported on stderr, line by line, and gives None."""
    from peerd.core.crontab import looks_like_system_crontab
    from peerd.core.crontab_format import detect_format

    if args.system or args.user_format:
        return bool(args.system), f"as --{'system' if args.system else 'user-format'} says"
    if looks_like_system_crontab(str(path)):
        return True, "as its path says (/etc/crontab, /etc/cron.d/*)"
    guess = detect_format(text, host_hints())
    if guess.system is not None:
        return guess.system, f"detected from its content: {guess.why}"
    for r in guess.ambiguous[:MAX_LISTED]:
        print(
            f"line {r.line_no} reads as {r.reading} format: {r.why}: {r.line.strip()}",
            file=sys.stderr,
        )
    if len(guess.ambiguous) > MAX_LISTED:
        print(f"... and {len(guess.ambiguous) - MAX_LISTED} more", file=sys.stderr)
    print(
        f"peerd: error: {path}: cannot tell whether it is a system crontab (a user column after "
        f"the schedule, as in /etc/cron.d) or a user crontab: {guess.why}; nothing imported "
        "(pass --system or --user-format)",
        file=sys.stderr,
    )
    return None


def import_crontab(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The ``import-crontab`` command: read, decide the format (:func:`crontab_format`),
    parse, convert, then one CreateTasks call. In table output the first line says which
    format was read and why.

    Invalid lines are listed on stderr and nothing is created (exit 2) unless ``--skip-invalid``.
    More than 100 tasks is an error (exit 2): CreateTasks is atomic and takes at most 100.

    Raises:
        grpc.RpcError: the CreateTasks call failed.
        InvalidArgument: a bad ``--id-prefix``.
    """
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"peerd: error: cannot read {path}: {reason}", file=sys.stderr)
        return EXIT_INVALID
    from peerd.core.crontab import parse_crontab

    fmt = crontab_format(args, path, text)
    if fmt is None:
        return EXIT_INVALID
    system, why = fmt
    parsed = parse_crontab(text, system=system, rules=tzdata_rules(None, env))
    specs, problems = build_crontab_specs(
        path, text, parsed.entries, parsed.errors, prefix=args.id_prefix, default_tz=args.tz
    )
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems and not args.skip_invalid:
        print(
            f"peerd: error: {path}: {len(problems)} invalid line(s); nothing imported "
            "(fix them or pass --skip-invalid to import the rest)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if problems:
        print(f"peerd: warning: skipped {len(problems)} invalid line(s)", file=sys.stderr)
    if len(specs) > MAX_TASKS_PER_IMPORT:
        print(
            f"peerd: error: {path} has {len(specs)} entries but one import creates at most "
            f"{MAX_TASKS_PER_IMPORT} (atomically); split the file into parts of at most "
            f"{MAX_TASKS_PER_IMPORT} entries (repeat the environment lines in each) and import "
            "each part with its own --id-prefix",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if not specs:
        print(f"peerd: nothing to import from {path}", file=sys.stderr)
        if args.output == "json":
            print(to_json(pb.CreateTasksResponse()))
        return EXIT_OK
    if args.output != "json":
        print(f"format: {'system (user column)' if system else 'user (no user column)'}, {why}")
    if args.dry_run:
        if args.output == "json":
            print(to_json(pb.CreateTasksRequest(tasks=specs)))
        else:
            print(import_table(specs))
            print(f"dry run: {len(specs)} task(s) would be created; nothing was sent")
        return EXIT_OK
    with api_client(args) as client:
        created = client.create_tasks(specs)
    if args.output == "json":
        print(to_json(pb.CreateTasksResponse(tasks=created)))
    else:
        print(import_table(created))
        print(f"created {len(created)} task(s)")
    return EXIT_OK


__all__ = [
    "MAX_TASKS_PER_IMPORT",
    "build_crontab_specs",
    "crontab_format",
    "crontab_task_id",
    "entry_script",
    "entry_spec",
    "host_hints",
    "import_crontab",
]
