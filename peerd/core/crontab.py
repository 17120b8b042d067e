"""crontab(5) syntax (pure): cron expressions and crontab files.

Expressions: :func:`normalise_cron` is *the* validator for ``Schedule.cron`` (re-exported by
:mod:`peerd.core.schedule`) and for every crontab line, so a crontab imports exactly what the
scheduler accepts. :func:`parse_cron_fields` turns 5 or 6 fields (6 = leading seconds) into value
sets plus a canonical expression (explicit value lists) that is what croniter is given.

Syntax accepted (Vixie cron / cronie, crontab(5)): ``*``, numbers, ``a-b``, lists ``a,b``,
``/step`` after ``*``, a range or a number (``5/10`` = ``5-59/10``, as cronie and croniter);
month names ``jan``..``dec`` and day names ``sun``..``sat`` (any case) wherever a number may stand;
day-of-week 7 = Sunday; descriptors ``@hourly @daily @midnight @weekly @monthly @yearly
@annually``. Rejected: ``@reboot``, reversed ranges (``5-1``), extensions (``L W # ? H``, a year
field) and expressions whose day-of-month never occurs in the listed months (``0 0 30 2 *``).

Files: :func:`parse_crontab` reads a user crontab or a system one (``/etc/crontab``,
``/etc/cron.d/*``: a user column after the 5 time fields) into :class:`CrontabEntry` objects and
reports each line it cannot convert as a :class:`CrontabError`. Which of the two a file is, when
its path does not say, is :mod:`peerd.core.crontab_format`'s question.
"""

from __future__ import annotations

import calendar
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from croniter import CroniterError, croniter

from peerd.core.durations import parse_duration
from peerd.core.tzrules import TimeZoneRules
from peerd.errors import InvalidArgument

DESCRIPTORS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_MONTHS = {n: i + 1 for i, n in enumerate(_MONTH_NAMES)}
_DOWS = {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_NONE: dict[str, int] = {}
_FIELDS = (  # name, min, max, names; seconds first (5-field expressions start at index 1)
    ("second", 0, 59, _NONE),
    ("minute", 0, 59, _NONE),
    ("hour", 0, 23, _NONE),
    ("day of month", 1, 31, _NONE),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DOWS),
)


@dataclass(frozen=True)
class CronFields:
    """A parsed cron expression: the value set of each field (dow 0 = Sunday, 7 folded into 0).

    ``dom_full``/``dow_full``: the field covers its whole range (``*``, ``*/1``, ``1-31``,
    ``0-7``) - croniter's test for "unrestricted" in the dom/dow OR rule. ``six``: the expression
    had a seconds field. ``canonical``: 5 or 6 fields with ``*`` or explicit sorted lists.
    """

    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    dom: frozenset[int]
    months: frozenset[int]
    dow: frozenset[int]
    dom_full: bool
    dow_full: bool
    six: bool
    canonical: str


def _value(tok: str, name: str, lo: int, hi: int, names: dict[str, int]) -> int:
    if tok.isdigit():
        v = int(tok)
        if not lo <= v <= hi:
            raise ValueError(f"{name} {v} out of range {lo}-{hi}")
        return v
    if tok.lower() in names:
        return names[tok.lower()]
    raise ValueError(f"invalid {name} value {tok!r}")


def _field(text: str, idx: int) -> set[int]:
    name, lo, hi, names = _FIELDS[idx]
    top = 6 if idx == 5 else hi  # implicit end of '*' and 'a/step' (day of week: Saturday)
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        if slash and (not step_text.isdigit() or int(step_text) == 0):
            raise ValueError(f"invalid step {step_text!r} in {name} field")
        step = int(step_text) if slash else 1
        if base == "*":
            a, b = lo, top
        elif "-" in base:
            x, _, y = base.partition("-")
            a, b = _value(x, name, lo, hi, names), _value(y, name, lo, hi, names)
            if a > b:
                raise ValueError(f"{name} range {base} is reversed")
        else:
            a = _value(base, name, lo, hi, names)
            b = top if slash else a
        values.update(range(a, b + 1, step))
    return (values - {7}) | {0} if idx == 5 and 7 in values else values


@lru_cache(maxsize=4096)
def parse_cron_fields(expr: str) -> CronFields:
    """Parse a 5- or 6-field expression (no descriptors) into :class:`CronFields`.

    Cached by expression (the result is immutable): a node compiles the schedule of every task
    it acquires, and most tasks of a cluster share a few expressions.

    Raises:
        ValueError: with a specific reason, e.g. ``"minute 61 out of range 0-59"``,
            ``"expected 5 or 6 fields, got 7"``, ``"day of week range fri-mon is reversed"``.
    """
    parts = expr.split()
    if len(parts) not in (5, 6):
        raise ValueError(f"expected 5 or 6 fields, got {len(parts)}")
    six = len(parts) == 6
    sets = ([] if six else [{0}]) + [_field(p, i + (0 if six else 1)) for i, p in enumerate(parts)]
    tops = [hi for _, _, hi, _ in _FIELDS[:5]] + [6]
    full = [s == set(range(f[1], t + 1)) for s, f, t in zip(sets, _FIELDS, tops, strict=True)]
    texts = ["*" if f else ",".join(map(str, sorted(s))) for s, f in zip(sets, full, strict=True)]
    sec, mn, hr, dom, mon, dow = (frozenset(s) for s in sets)
    longest = max(calendar.monthrange(2000, m)[1] for m in mon)  # 2000: leap year
    if not full[3] and full[5] and min(dom) > longest:
        raise ValueError("no listed day of month occurs in the listed months (never fires)")
    canonical = " ".join(texts if six else texts[1:])
    return CronFields(sec, mn, hr, dom, mon, dow, full[3], full[5], six, canonical)


@lru_cache(maxsize=4096)
def normalise_cron(expr: str, field: str) -> tuple[str | None, timedelta | None]:
    """Validate a ``Schedule.cron`` string: ``(cron, None)``, or ``(None, every)`` for ``@every``.

    Cached by ``(expr, field)`` (errors are not cached): croniter's check costs about 0.3 ms,
    which made compiling the schedules of 33,000 acquired tasks take 10 s.

    ``cron`` comes back normalised (descriptor lowercased, fields single-spaced). Accepted: 5
    fields, 6 fields (leading seconds), the descriptors above, ``@every <duration>`` (Go-style
    duration, :func:`peerd.core.durations.parse_duration`, >= 1 s). The fields are also fed to
    croniter, so anything it would refuse is refused here.

    Raises:
        InvalidArgument: naming ``field``, e.g. ``"'61 * * * *': minute 61 out of range 0-59"``,
            ``"'* * * * * * *': expected 5 or 6 fields, got 7"``, ``"@reboot is not supported"``,
            ``"every must be at least 1s"``.
    """
    text = " ".join(expr.split())
    if not text:
        raise InvalidArgument(field, "empty cron expression")
    if text.startswith("@"):
        word, _, rest = text.partition(" ")
        word = word.lower()
        if word == "@every":
            every = parse_duration(rest, field)
            if every < timedelta(seconds=1):
                raise InvalidArgument(field, "every must be at least 1s")
            return None, every
        if word == "@reboot":
            raise InvalidArgument(field, "@reboot is not supported")
        if word not in DESCRIPTORS:
            raise InvalidArgument(field, f"unknown descriptor {word!r} ({' '.join(DESCRIPTORS)})")
        if rest:
            raise InvalidArgument(field, f"unexpected text after {word}: {rest!r}")
        return word, None
    try:
        parsed = parse_cron_fields(text)
        croniter(parsed.canonical, datetime(2000, 1, 1, tzinfo=UTC), second_at_beginning=parsed.six)
    except (ValueError, CroniterError) as e:
        raise InvalidArgument(field, f"{text!r}: {e}") from None
    return text, None


@dataclass(frozen=True)
class CrontabEntry:
    """One convertible crontab line.

    ``schedule``: normalised 5-field expression or ``@descriptor``; ``command``: the text cron
    passes to ``$SHELL -c`` (up to the first unescaped ``%``, ``\\%`` -> ``%``); ``stdin``: the text
    after that ``%`` with ``%`` -> newline (None without ``%``); ``user``: system format only;
    ``env``: the ``NAME=value`` assignments above the line; ``time_zone``: ``CRON_TZ`` (else
    ``TZ``) in effect, validated against the caller's time-zone rules.
    """

    line_no: int
    schedule: str
    command: str
    user: str | None
    env: dict[str, str] = field(default_factory=dict)
    time_zone: str | None = None
    stdin: str | None = None


@dataclass(frozen=True)
class CrontabError:
    """A line that cannot be converted: 1-based ``line_no``, the raw ``line``, a ``reason``."""

    line_no: int
    line: str
    reason: str


@dataclass(frozen=True)
class CrontabParse:
    """Result of :func:`parse_crontab`: entries and errors, each in line order."""

    entries: list[CrontabEntry]
    errors: list[CrontabError]


USER_NAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$")
"""A user name as useradd(8) accepts it by default (Debian's NAME_REGEX, plus ``.`` and a
trailing ``$`` of machine accounts): the user column of a system crontab, and what
``ShellTarget.run_as`` accepts."""
_ENV = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*")
_TOKEN = re.compile(r"\S+")


def _split_percent(text: str) -> tuple[str, str | None]:
    """Vixie cron do_command.c: the first unescaped ``%`` ends the command; ``\\%`` -> ``%`` in
    both parts; in the stdin part ``%`` -> newline and other backslashes are kept."""
    cmd: list[str] = []
    escaped = False
    cut = -1
    for i, ch in enumerate(text):
        if escaped:
            if ch == "%":
                cmd[-1] = "%"
            else:
                cmd.append(ch)
            escaped = False
        elif ch == "%":
            cut = i
            break
        else:
            cmd.append(ch)
            escaped = ch == "\\"
    if cut < 0:
        return "".join(cmd), None
    out: list[str] = []
    escaped = False
    for ch in text[cut + 1 :]:
        if escaped and ch != "%":
            out.append("\\")
        elif not escaped and ch == "%":
            ch = "\n"
        escaped = ch == "\\"
        if not escaped:
            out.append(ch)
    if escaped:
        out.append("\\")
    return "".join(cmd), "".join(out)


def _entry(
    line: str, no: int, system: bool, env: dict[str, str], rules: TimeZoneRules
) -> CrontabEntry:
    """Convert one schedule line. Raises ValueError with the reason."""
    word = line.split(None, 1)[0].lower()
    if word == "@reboot":
        raise ValueError("@reboot has no schedule slot; not convertible")
    if word == "@every":
        raise ValueError("@every is not crontab syntax")
    k = 1 if word.startswith("@") else 5  # schedule tokens
    n = k + (1 if system else 0)
    tokens = list(_TOKEN.finditer(line))
    command = line[tokens[n - 1].end() :].strip(" \t") if len(tokens) > n else ""
    if not command:
        what = "a descriptor" if k == 1 else "5 time fields"
        col = ", a user" if system else ""
        raise ValueError(f"expected {what}{col} and a command, got {len(tokens)} fields")
    sched = " ".join(t.group() for t in tokens[:k])
    try:
        cron, _ = normalise_cron(sched, "schedule")
    except InvalidArgument as e:
        raise ValueError(e.reason) from None
    tz = env.get("CRON_TZ") or env.get("TZ") or None
    if tz:
        try:
            rules.zone(tz, "CRON_TZ")
        except InvalidArgument as e:
            raise ValueError(f"CRON_TZ: {e.reason}") from None
    cmd, stdin = _split_percent(command)
    assert cron is not None
    user = tokens[n - 1].group() if system else None
    if user is not None and not USER_NAME_RE.match(user):
        raise ValueError(f"the user column {user!r} is not a user name")
    return CrontabEntry(no, cron, cmd, user, dict(env), tz, stdin)


def schedule_lines(text: str) -> Iterator[tuple[int, str, dict[str, str]]]:
    """``(line_no, line, env)`` for each schedule line of crontab ``text``: blank lines and
    ``#`` comments (first non-blank character) are skipped; ``NAME = value`` lines set the
    environment (a copy is yielded) for the lines below, matching surrounding quotes stripped
    like cron's env.c."""
    env: dict[str, str] = {}
    for no, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _ENV.fullmatch(line)
        if m is not None:
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[m.group(1)] = value
            continue
        yield no, line, dict(env)


def parse_crontab(text: str, *, system: bool, rules: TimeZoneRules) -> CrontabParse:
    """Parse crontab ``text`` (user format, or ``system`` format with a user column);
    ``CRON_TZ``/``TZ`` zones are checked against ``rules``.

    Lines are read as :func:`schedule_lines` says; every schedule line has 5 time fields or one
    ``@descriptor``, then (system) the user, then the command. Nothing raises; unconvertible
    lines become errors.
    """
    entries: list[CrontabEntry] = []
    errors: list[CrontabError] = []
    for no, line, env in schedule_lines(text):
        try:
            entries.append(_entry(line, no, system, env, rules))
        except ValueError as e:
            errors.append(CrontabError(no, line, str(e)))
    return CrontabParse(entries, errors)


def looks_like_system_crontab(path: str) -> bool:
    """True for ``/etc/crontab`` and files directly under ``/etc/cron.d/`` (pure path check)."""
    p = posixpath.normpath(path)
    return p == "/etc/crontab" or posixpath.dirname(p) == "/etc/cron.d"
