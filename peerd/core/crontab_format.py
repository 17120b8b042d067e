"""Is a crontab file in system format (a user column after the schedule) or user format? (pure)

cron knows by where a file lives: ``/etc/crontab`` and ``/etc/cron.d/*`` have the user column,
the files ``crontab -e`` writes do not. A file copied elsewhere to be migrated has lost that
hint, and reading Debian's ``/etc/cron.d/mdadm`` as a user crontab makes ``root`` part of the
command (``/bin/sh -c 'root if [ -x … ]'``), which fails at every run. So when the path does not
say, the content is read: each schedule line is given a reading from the word after its
schedule (``t``, the sixth field, or the second after an ``@descriptor``) and what follows it
(``r``). The first rule that applies wins:

===  ==========================================================  ===========================
#    condition                                                   reading
===  ==========================================================  ===========================
1    ``t`` is not a user name (``/usr/bin/x``, ``[``, ``X=1``)   user format
2    nothing follows ``t``                                       user format
3    ``r`` begins with an option or shell syntax (``-``, ``>``)  user format
4    ``t`` is a shell keyword or builtin (``test``, ``cd``)      user format
5    ``t`` is a known command and not a known account            user format
6    ``t`` is a known account (``root``, or in the host's        system format
     passwd)
7    ``r`` begins a command line: ``if``, ``[``, ``[[``, ``{``,  system format
     ``(``, ``!``, a loop or ``case``, ``exec``, ``test -…``,
     ``command -…``, ``cd DIR``, or ``NAME=value`` then more
8    anything else (``backup nightly``: user ``backup``, or      either
     the command ``backup nightly``?)
===  ==========================================================  ===========================

*Known commands* are a short built-in list (interpreters and wrappers such as ``nice``,
``flock``, ``env``, ``python3``) plus, as a hint, what the host finds on the entry's ``PATH``;
*known accounts* are ``root`` plus, as a hint, the host's passwd (:class:`HostHints`; the
defaults know neither, so the reading of a file does not depend on the host unless asked).

The file is in system format when some line reads so and none reads as user format (lines read
"either" follow the others): every entry's sixth field is then a plausible user name followed by
a command. It is in user format when some line reads so and none as system format. Lines of both
readings, or only lines that read either way, make the file ambiguous: :attr:`FormatGuess.system`
is None and :attr:`FormatGuess.ambiguous` lists those lines, for an error that asks for
``--system`` or ``--user-format``. A file without schedule lines is in user format.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from peerd.core.crontab import USER_NAME_RE, schedule_lines

SYSTEM = "system"
USER = "user"
EITHER = "either"
"""The readings of a line."""

_SHELL_WORDS = (
    "if then else elif fi case esac for while until do done in function select time "
    "[ [[ ]] { } ! . : alias bg bind break builtin cd command continue declare echo eval exec "
    "exit export false fc fg getopts hash jobs kill let local printf pwd read readonly return "
    "set shift shopt source test times trap true type typeset ulimit umask unalias unset "
    "wait"
)
SHELL_WORDS = frozenset(_SHELL_WORDS.split())
"""Keywords and builtins of sh/bash: as the sixth field, it is the command (rule 4)."""
_KNOWN_COMMANDS = (
    "sh bash dash zsh ksh env nice ionice nohup timeout flock sudo su runuser chronic run-parts "
    "xargs python python3 perl php ruby node java curl wget rsync find tar logger systemctl "
    "sleep date cp mv rm mkdir ln chmod chown cat grep sed awk gzip make git docker"
)
KNOWN_COMMANDS = frozenset(_KNOWN_COMMANDS.split())
"""Commands often written first on a crontab line (interpreters, wrappers, tools)."""
KNOWN_ACCOUNTS = frozenset({"root"})
"""Accounts known without asking the host."""
_STARTERS = frozenset({"if", "[", "[[", "{", "(", "!", "for", "while", "until", "case", "exec"})
_WITH_OPTION = frozenset({"test", "command"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SYNTAX = ("-", ">", "<", "|", "&", ";")
DEFAULT_PATH = "/usr/bin:/bin"
"""cron's PATH when the crontab sets none."""


def _never(*_: str) -> bool:
    return False


@dataclass(frozen=True)
class HostHints:
    """What the host knows, used as hints only (rules 5 and 6).

    Attributes:
        is_account: ``(name) -> True`` when ``name`` is a user on this host (its passwd).
        is_command: ``(name, PATH) -> True`` when ``name`` is an executable on that PATH.
    """

    is_account: Callable[[str], bool] = _never
    is_command: Callable[[str, str], bool] = _never


NO_HINTS = HostHints()
"""Hints that know nothing: the reading depends on the file alone."""


@dataclass(frozen=True)
class LineReading:
    """How one schedule line reads: :data:`SYSTEM`, :data:`USER` or :data:`EITHER`, and why."""

    line_no: int
    line: str
    reading: str
    why: str


@dataclass(frozen=True)
class FormatGuess:
    """The format of a file judged by its content.

    Attributes:
        system: True (system format), False (user format), None (ambiguous).
        why: one sentence, e.g. ``"every entry's sixth field reads as a user name followed by
            a command (line 12: 'root' is the root account)"``.
        readings: every schedule line's reading, in line order.
        ambiguous: when ``system`` is None, the lines that make it so.
    """

    system: bool | None
    why: str
    readings: list[LineReading] = field(default_factory=list)
    ambiguous: list[LineReading] = field(default_factory=list)


def _begins_command(rest: str) -> bool:
    """Rule 7: ``rest`` begins a command line (see the module docstring)."""
    words = rest.split()
    first = words[0]
    if first in _STARTERS or first.startswith(("[", "(", "{")):
        return True
    if first in _WITH_OPTION:
        return len(words) > 1 and words[1].startswith("-")
    if first == "cd":
        return len(words) > 1 and words[1].startswith(("/", "~", "$"))
    return bool(_ASSIGNMENT.match(first)) and len(words) > 1


def read_line(line: str, path: str, hints: HostHints = NO_HINTS) -> tuple[str, str] | None:
    """The reading of one schedule line and why (module docstring), or None when it has no
    word after its schedule (it is invalid either way). ``path``: the PATH in effect."""
    k = 1 if line.lstrip().startswith("@") else 5
    parts = line.split(None, k + 1)
    if len(parts) <= k:
        return None
    t, rest = parts[k], parts[k + 1].strip() if len(parts) > k + 1 else ""
    known, on_host = t in KNOWN_ACCOUNTS, hints.is_account(t)
    account = known or on_host
    if not USER_NAME_RE.match(t):
        return USER, f"{t!r} is not a user name"
    if not rest:
        return USER, f"nothing follows {t!r}: it is the command"
    if rest.startswith(_SYNTAX):
        return USER, f"{rest.split()[0]!r} continues the command {t!r}"
    if t in SHELL_WORDS:
        return USER, f"{t!r} is a shell keyword or builtin"
    if not account and (t in KNOWN_COMMANDS or hints.is_command(t, path)):
        return USER, f"{t!r} is a command"
    if account:
        return SYSTEM, f"{t!r} is a user account{'' if known else ' on this host'}"
    if _begins_command(rest):
        return SYSTEM, f"{t!r} is followed by a command ({rest.split()[0]!r} ...)"
    return EITHER, f"{t!r} may be a user running {rest.split()[0]!r} ..., or the command"


def detect_format(text: str, hints: HostHints = NO_HINTS) -> FormatGuess:
    """The format of crontab ``text`` by its content (module docstring)."""
    readings = []
    for no, line, env in schedule_lines(text):
        reading = read_line(line, env.get("PATH") or DEFAULT_PATH, hints)
        if reading is not None:
            readings.append(LineReading(no, line, *reading))
    system = [r for r in readings if r.reading == SYSTEM]
    user = [r for r in readings if r.reading == USER]
    if system and user:
        why = "some lines read as system format (a user column), others as user format"
        return FormatGuess(None, why, readings, system + user)
    if system:
        why = (
            "every entry's sixth field reads as a user name followed by a command "
            f"(line {system[0].line_no}: {system[0].why})"
        )
        return FormatGuess(True, why, readings)
    if user:
        why = f"the entries have no user column (line {user[0].line_no}: {user[0].why})"
        return FormatGuess(False, why, readings)
    if readings:
        why = "every line reads either way: with a user column or without one"
        return FormatGuess(None, why, readings, readings)
    return FormatGuess(False, "it has no schedule lines", readings)


__all__ = [
    "EITHER",
    "KNOWN_ACCOUNTS",
    "KNOWN_COMMANDS",
    "NO_HINTS",
    "SHELL_WORDS",
    "SYSTEM",
    "USER",
    "FormatGuess",
    "HostHints",
    "LineReading",
    "detect_format",
    "read_line",
]
