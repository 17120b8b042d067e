"""Settings defined once: a dataclass field carries everything about one setting (pure, no I/O).

A setting is a field of a frozen config dataclass whose ``metadata["setting"]`` is a
:class:`Setting` (made by :func:`setting`). From the field and its :class:`Setting` are derived:

    field name      ->  the TOML key and the attribute the code reads (``cfg.lease_ttl_s``)
    Setting.flag    ->  the command-line flag (``--lease-ttl``) and the name in every error
    Setting.env     ->  the environment variable (``PEERD_LEASE_TTL``)
    Setting.kind    ->  how a raw value (flag string, env string, TOML value) becomes the field's
                        type, the flag's metavar, and the type shown in the docs
    bounds          ->  checked after parsing; ``minimum``/``exclusive_minimum``/``maximum`` are
                        named as in JSON Schema (json-schema.org, "Validation", section 6.2)
    default, unit   ->  ``(default 10 s)`` in ``--help`` and in the docs table

The same idea as HfArgumentParser (huggingface/transformers) and simple_parsing: argparse
arguments computed from dataclass fields and their metadata; here also the environment, the
file, validation, hot reload and the docs page come from the same fields.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import timedelta
from typing import Any

from peerd.core.durations import format_duration, parse_duration
from peerd.core.labels import parse_labels
from peerd.errors import InvalidArgument


class _Required(enum.Enum):
    REQUIRED = "required"


REQUIRED = _Required.REQUIRED
"""The :attr:`Setting.default` of a setting that has none (its field has no default)."""

Parse = Callable[[Any, str], Any]
"""``(raw value, flag) -> typed value``; raises :class:`InvalidArgument` naming the flag."""


@dataclass(frozen=True)
class Kind:
    """How raw values of one type are read.

    Attributes:
        type_name: the type as the docs show it, e.g. ``"integer"``, ``"duration"``.
        metavar: the flag's value placeholder in ``--help``, e.g. ``"N"``, ``"DURATION"``.
        parse: raw value (a flag or env string, or a TOML value) -> the field's type.
        env_sep: list kinds: the separator between items in the environment variable.
        repeat: the flag may be given several times, one item each (argparse ``append``).
    """

    type_name: str
    metavar: str
    parse: Parse
    env_sep: str | None = None
    repeat: bool = False


@dataclass(frozen=True)
class Setting:
    """One setting: everything but its field name and default, which come from the field.

    Attributes:
        help: what the setting means (the ``--help`` text and the docs' "meaning").
        flag: the command-line flag, e.g. ``"--lease-ttl"``; errors name it.
        env: the environment variable, e.g. ``"PEERD_LEASE_TTL"``.
        kind: how raw values are parsed (:class:`Kind`).
        unit: the unit of a number shown after the default, e.g. ``"s"``, ``"slots/s"``.
        minimum, maximum: inclusive bounds in the field's type (``None``: unbounded).
        exclusive_minimum: exclusive lower bound (``> 0``).
        bound_reason: why the maximum is what it is (appended to the error).
        reloadable: a running node applies a new value on SIGHUP.
        name, default: filled in from the dataclass field by :func:`settings_of`.
    """

    help: str
    flag: str
    env: str
    kind: Kind
    unit: str = ""
    minimum: Any = None
    exclusive_minimum: Any = None
    maximum: Any = None
    bound_reason: str = ""
    reloadable: bool = False
    name: str = ""
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        """True when the setting has no default and must be given."""
        return self.default is REQUIRED

    def parse(self, raw: Any) -> Any:
        """The typed, bounds-checked value of ``raw``.

        Raises:
            InvalidArgument: naming :attr:`flag` and the reason, e.g. ``must be >= 2, got 1``.
        """
        value = self.kind.parse(raw, self.flag)
        if self.minimum is not None and value < self.minimum:
            raise InvalidArgument(self.flag, f"must be >= {show(self.minimum)}, got {show(value)}")
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            limit = show(self.exclusive_minimum)
            raise InvalidArgument(self.flag, f"must be > {limit}, got {show(value)}")
        if self.maximum is not None and value > self.maximum:
            why = f" ({self.bound_reason})" if self.bound_reason else ""
            raise InvalidArgument(
                self.flag, f"must be <= {show(self.maximum)}{why}, got {show(value)}"
            )
        return value

    def from_env(self, env: Mapping[str, str]) -> Any:
        """The raw value of :attr:`env` in ``env`` (a list for list kinds), ``None`` if unset or
        empty."""
        text = env.get(self.env)
        if not text:
            return None
        if self.kind.env_sep is not None:
            return [item for item in text.split(self.kind.env_sep) if item.strip()]
        return text

    def default_text(self) -> str:
        """The default as ``--help`` and the docs show it: ``"10 s"``, ``"5m"``, ``"none"``,
        ``"required"``; ``""`` for an empty string (the help text says what empty means)."""
        if self.required:
            return "required"
        text = show(self.default)
        if text and self.unit and not isinstance(self.default, timedelta):
            text = f"{text} {self.unit}"
        return text

    def bounds_text(self) -> str:
        """The bounds, e.g. ``"1..127"``, ``">= 2"``, ``"> 0"``; ``""`` when unbounded."""
        low = self.minimum
        if low is not None and self.maximum is not None:
            return f"{show(low)}..{show(self.maximum)}"
        if low is not None:
            return f">= {show(low)}"
        if self.exclusive_minimum is not None:
            return f"> {show(self.exclusive_minimum)}"
        return f"<= {show(self.maximum)}" if self.maximum is not None else ""

    def help_line(self) -> str:
        """The ``--help`` text: meaning, then default, bounds and environment variable, e.g.
        ``"... (default 10 s; >= 2; env PEERD_LEASE_TTL)"`` (``%`` escaped for argparse)."""
        default = self.default_text()
        if default and not self.required:
            default = f"default {default}"
        notes = [default, self.bounds_text(), f"env {self.env}"]
        text = f"{self.help} ({'; '.join(n for n in notes if n)})"
        return text.replace("%", "%%")


def setting(default: Any = MISSING, **spec: Any) -> Any:
    """A dataclass field holding a setting: ``default`` plus a :class:`Setting` built from
    ``spec`` (its attributes: ``help``, ``flag``, ``env``, ``kind``, ``unit``, bounds,
    ``reloadable``) in ``metadata["setting"]``. Without ``default`` the setting is required."""
    return field(default=default, metadata={"setting": Setting(**spec)})


def settings_of(cls: type) -> tuple[Setting, ...]:
    """The settings of dataclass ``cls`` in field order, with ``name`` and ``default`` filled.

    Raises:
        TypeError: a field of ``cls`` is not a setting (made by :func:`setting`).
    """
    out = []
    for f in fields(cls):
        if "setting" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not a setting")
        default = REQUIRED if f.default is MISSING else f.default
        out.append(replace(f.metadata["setting"], name=f.name, default=default))
    return tuple(out)


def show(value: Any) -> str:
    """A value as the docs, ``--help`` and errors show it: durations as ``1m30s``, numbers
    without a trailing ``.0``, lists comma-separated (``none`` when empty)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or "none"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Kinds


def _int(value: Any, flag: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        if isinstance(value, str):
            return int(value.strip())
    except ValueError:
        pass
    raise InvalidArgument(flag, f"expected an integer, got {value!r}")


def _number(value: Any, flag: str) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(flag, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidArgument(flag, f"expected a finite number, got {value!r}")
    return number


def _duration(value: Any, flag: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        return parse_duration(value, flag)
    raise InvalidArgument(flag, f"expected a duration such as 10s or 5m, got {value!r}")


def parse_hostport(value: str, field_name: str) -> str:
    """Validate ``HOST:PORT`` (IPv6 as ``[::1]:PORT``) and return it stripped.

    Raises:
        InvalidArgument: naming ``field_name`` when the value is not HOST:PORT with a port 0-65535.
    """
    host, sep, port = str(value).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(field_name, f"expected HOST:PORT, got {value!r}")
    return str(value).strip()


def _items(value: Any, sep: str) -> list[Any]:
    return str(value).split(sep) if isinstance(value, str) else list(value)


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _bool(value: Any, flag: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidArgument(flag, f"expected true or false, got {value!r}")


def _hostports(value: Any, flag: str) -> tuple[str, ...]:
    endpoints = tuple(parse_hostport(p, flag) for p in _items(value, ",") if str(p).strip())
    if not endpoints:
        raise InvalidArgument(flag, "at least one HOST:PORT is required")
    return endpoints


def _globs(value: Any, flag: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise InvalidArgument(flag, f"expected glob patterns (strings), got {value!r}")
    return tuple(items)


def _labels(value: Any, flag: str) -> tuple[str, ...]:
    """Node labels from flags/env (``KEY=VALUE`` strings, commas separating several) or a TOML
    table; returned as sorted ``key=value`` strings (a label value never contains a comma)."""
    if isinstance(value, Mapping):
        if not all(isinstance(v, str) for v in value.values()):
            raise InvalidArgument(flag, f"expected a table of strings, got {value!r}")
        items = [f"{k}={v}" for k, v in value.items()]
    else:
        raw = [value] if isinstance(value, str) else list(value)
        if not all(isinstance(item, str) for item in raw):
            raise InvalidArgument(flag, f"expected KEY=VALUE strings, got {value!r}")
        items = [part for item in raw for part in item.split(",") if part.strip()]
    labels = parse_labels(items, flag)
    return tuple(f"{k}={labels[k]}" for k in sorted(labels))


INTEGER = Kind("integer", "N", _int)
WHOLE_SECONDS = Kind("integer", "SECONDS", _int)
NUMBER = Kind("number", "X", _number)
DURATION = Kind("duration", "DURATION", _duration)
SECONDS = Kind("duration", "DURATION", lambda value, flag: _duration(value, flag).total_seconds())
"""A duration (``30s``, or a number of seconds) kept as float seconds (fields named ``*_s``)."""
BOOLEAN = Kind("boolean", "BOOL", _bool)
"""``true``/``false`` (also ``yes``/``no``, ``on``/``off``, ``1``/``0``; a TOML boolean)."""
HOSTPORT = Kind("HOST:PORT", "HOST:PORT", lambda value, flag: parse_hostport(value, flag))
OPTIONAL_HOSTPORT = Kind(
    "HOST:PORT or empty",
    "HOST:PORT",
    lambda value, flag: parse_hostport(value, flag) if str(value).strip() else "",
)
OPTIONAL_FILE = Kind("file path or empty", "FILE", lambda value, flag: str(value).strip())
"""A file the node reads at start (and on SIGHUP, where the setting says so); empty: none."""
TEXT = Kind("string", "TEXT", lambda value, flag: str(value).strip())
HOSTPORT_LIST = Kind("list of HOST:PORT", "HOST:PORT[,HOST:PORT...]", _hostports, env_sep=",")
GLOB_LIST = Kind("list of glob patterns", "PATTERN", _globs, env_sep=";", repeat=True)
LABELS = Kind("list of KEY=VALUE labels", "KEY=VALUE", _labels, env_sep=",", repeat=True)


def choice(*names: str) -> Kind:
    """A kind taking one of ``names`` (case-insensitive; stored lower-case)."""

    def parse(value: Any, flag: str) -> str:
        text = str(value).strip().lower()
        if text not in names:
            raise InvalidArgument(flag, f"must be {', '.join(names[:-1])} or {names[-1]}")
        return text

    return Kind("|".join(names), "|".join(names), parse)


def matching(pattern: re.Pattern[str], metavar: str) -> Kind:
    """A kind taking strings that match ``pattern`` (a name such as a node id)."""

    def parse(value: Any, flag: str) -> str:
        text = str(value)
        if not pattern.match(text):
            raise InvalidArgument(flag, f"{text!r} must match {pattern.pattern.strip('^$')}")
        return text

    return Kind(f"name matching {pattern.pattern.strip('^$')}", metavar, parse)


# ---------------------------------------------------------------------------------------------
# Docs


TABLE_BEGIN = "<!-- BEGIN settings table: generated by `python -m peerd.config --update FILE` -->"
TABLE_END = "<!-- END settings table -->"


def markdown_table(table: Sequence[Setting]) -> str:
    """A Markdown table of ``table``: flag, env, TOML key, type, default, bounds, reloadable,
    meaning (one row per setting, in order)."""
    rows = [
        "| Flag | Environment | TOML key | Type | Default | Bounds | Reloadable | Meaning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in table:
        unit = f" ({s.unit})" if s.unit else ""
        cells = [
            f"`{s.flag}`",
            f"`{s.env}`",
            f"`{s.name}`",
            _cell(s.kind.type_name + unit),
            _cell(s.default_text()),
            _cell(s.bounds_text()),
            "yes" if s.reloadable else "no",
            _cell(s.help),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    """Plain text as a Markdown table cell: ``|`` and ``<`` (an HTML tag opener) escaped."""
    return text.replace("|", "\\|").replace("<", "&lt;")


def replace_table(page: str, table: str) -> str:
    """``page`` with the text between :data:`TABLE_BEGIN` and :data:`TABLE_END` set to ``table``.

    Raises:
        ValueError: ``page`` lacks one of the markers.
    """
    head, begin, rest = page.partition(TABLE_BEGIN + "\n")
    _, end, tail = rest.partition(TABLE_END)
    if not begin or not end:
        raise ValueError(f"markers {TABLE_BEGIN!r} and {TABLE_END!r} not found")
    return head + begin + table + end + tail


__all__ = [
    "DURATION",
    "GLOB_LIST",
    "HOSTPORT",
    "HOSTPORT_LIST",
    "INTEGER",
    "LABELS",
    "NUMBER",
    "OPTIONAL_FILE",
    "OPTIONAL_HOSTPORT",
    "SECONDS",
    "TEXT",
    "WHOLE_SECONDS",
    "Kind",
    "Setting",
    "choice",
    "markdown_table",
    "matching",
    "parse_hostport",
    "replace_table",
    "setting",
    "settings_of",
    "show",
]
