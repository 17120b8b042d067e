"""Labels and label selectors with Kubernetes' syntax, limits and meaning (pure).

Tasks carry labels (``TaskSpec.labels``) that ``ListTasks`` filters on, and nodes carry labels
(``peerd serve --label``) that a task's ``node_selector`` is matched against. Both use one
syntax, the one Kubernetes users already know:

**Label key** (Kubernetes, "Labels and Selectors", *Syntax and character set*,
kubernetes.io/docs/concepts/overview/working-with-objects/labels/): an optional prefix and
``/``, then a name. The name is at most 63 characters, begins and ends with ``[a-zA-Z0-9]``
and has ``-``, ``_``, ``.`` or alphanumerics between. The prefix is a DNS subdomain
(RFC 1123): dot-separated lowercase labels of ``[a-z0-9-]`` that begin and end alphanumeric,
at most 253 characters in all (apimachinery ``IsQualifiedName``, ``IsDNS1123Subdomain``).

**Label value**: at most 63 characters, empty or like a name (apimachinery
``IsValidLabelValue``).

**Label selector** (same page, *Label selectors*; grammar of apimachinery
``pkg/labels/selector.go``)::

    selector     ::= "" | requirement ("," requirement)*
    requirement  ::= "!" KEY | KEY [ ("=" | "==" | "!=") VALUE | ("in" | "notin") "(" VALUE
                     ("," VALUE)* ")" ]

All requirements must hold (AND). Meaning, for labels ``L``:

==================  ===========================================
requirement         holds when
==================  ===========================================
``k=v``, ``k==v``   ``k`` in ``L`` and ``L[k] == v``
``k!=v``            ``k`` not in ``L`` or ``L[k] != v``
``k in (a,b)``      ``k`` in ``L`` and ``L[k]`` is ``a`` or ``b``
``k notin (a,b)``   ``k`` not in ``L`` or ``L[k]`` is neither
``k``               ``k`` in ``L``
``!k``              ``k`` not in ``L``
==================  ===========================================

The empty selector matches everything. peerd's own limits (not Kubernetes'): at most
:data:`MAX_LABELS` labels per task or node, selectors of at most :data:`MAX_SELECTOR_CHARS`.
The greater-than/less-than operators apimachinery accepts for node affinity are not supported.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from peerd.errors import InvalidArgument

MAX_NAME = 63
"""Longest key name or value (Kubernetes)."""
MAX_PREFIX = 253
"""Longest key prefix, a DNS subdomain (Kubernetes, RFC 1123)."""
MAX_LABELS = 64
"""Most labels on one task or node (peerd's limit; keeps specs and member keys small)."""
MAX_SELECTOR_CHARS = 4096
"""Longest selector (peerd's limit)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SPECIAL = "!=(),"
_OPERATORS = ("=", "==", "!=")


class LabelError(ValueError):
    """A malformed label key, value or selector; the message says what and why."""


def check_key(key: str) -> None:
    """Raise :class:`LabelError` unless ``key`` is a valid label key (module docstring)."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        raise LabelError(f"key {key!r}: the prefix before '/' is empty")
    if not name:
        raise LabelError(f"key {key!r}: the name is empty" if slash else "empty key")
    if len(name) > MAX_NAME:
        raise LabelError(f"key {key!r}: the name is {len(name)} characters, at most {MAX_NAME}")
    if not _NAME_RE.match(name):
        raise LabelError(
            f"key {key!r}: the name must begin and end with [A-Za-z0-9] and contain only "
            "[A-Za-z0-9], '-', '_' and '.'"
        )
    if slash:
        if len(prefix) > MAX_PREFIX:
            raise LabelError(
                f"key {key!r}: the prefix is {len(prefix)} characters, at most {MAX_PREFIX}"
            )
        if not all(_DNS_LABEL_RE.match(part) for part in prefix.split(".")):
            raise LabelError(
                f"key {key!r}: the prefix must be a DNS subdomain (lowercase [a-z0-9-] labels "
                "separated by '.', each beginning and ending alphanumeric)"
            )


def check_value(value: str, key: str = "") -> None:
    """Raise :class:`LabelError` unless ``value`` is a valid label value (``key`` names it)."""
    of = f" of {key!r}" if key else ""
    if len(value) > MAX_NAME:
        raise LabelError(f"value{of} is {len(value)} characters, at most {MAX_NAME}")
    if value and not _NAME_RE.match(value):
        raise LabelError(
            f"value {value!r}{of} must be empty or begin and end with [A-Za-z0-9] and contain "
            "only [A-Za-z0-9], '-', '_' and '.'"
        )


def validate_labels(labels: Mapping[str, str], field: str) -> None:
    """Check a label map (a task's or a node's).

    Raises:
        InvalidArgument: naming ``field`` (``task.labels``) and the reason, e.g.
            ``key 'Team Name': the name must begin ...``, or more than :data:`MAX_LABELS`.
    """
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(field, f"{len(labels)} labels, at most {MAX_LABELS}")
    for key, value in labels.items():
        try:
            check_key(key)
            check_value(value, key)
        except LabelError as exc:
            raise InvalidArgument(field, str(exc)) from None


def parse_labels(items: Iterable[str], field: str) -> dict[str, str]:
    """``["zone=eu-1", "disk=ssd"]`` -> ``{"zone": "eu-1", "disk": "ssd"}`` (``KEY=VALUE``
    items; the value may be empty), checked with :func:`validate_labels`.

    Raises:
        InvalidArgument: naming ``field`` (``--label``): an item without ``=``, a key given
            twice, or an invalid key or value.
    """
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.strip().partition("=")
        if not eq:
            raise InvalidArgument(field, f"expected KEY=VALUE, got {item!r}")
        key, value = key.strip(), value.strip()
        if key in out:
            raise InvalidArgument(field, f"label {key!r} given twice")
        out[key] = value
    validate_labels(out, field)
    return out


def format_labels(labels: Mapping[str, str]) -> str:
    """``key=value`` pairs sorted by key, comma-separated (``""`` for none)."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


@dataclass(frozen=True)
class Requirement:
    """One requirement of a selector: ``op`` is ``=``, ``!=``, ``in``, ``notin``, ``exists``
    or ``!`` (absent); ``values`` has one value for ``=``/``!=``, one or more for the sets,
    none otherwise."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this requirement (table in the module docstring)."""
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        return value is None or value not in self.values  # != and notin

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        return f"{self.key}{self.op}{self.values[0]}"


@dataclass(frozen=True)
class Selector:
    """A parsed label selector: all :attr:`requirements` must hold (none: matches all)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement."""
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(map(str, self.requirements))


def _tokens(text: str) -> list[tuple[int, str]]:
    """``(position, token)`` pairs: ``!=``, ``==`` and the characters of :data:`_SPECIAL` are
    tokens of their own; other runs of non-space characters are words."""
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith(("!=", "=="), i):
            out.append((i, text[i : i + 2]))
            i += 2
        elif ch in _SPECIAL:
            out.append((i, ch))
            i += 1
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in _SPECIAL:
                i += 1
            out.append((start, text[start:i]))
    return out


class _Parser:
    """Recursive descent over :func:`_tokens` (grammar in the module docstring)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.end = len(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def fail(self, what: str) -> LabelError:
        pos = self.tokens[self.i][0] if self.i < len(self.tokens) else self.end
        found = f"{self.peek()!r}" if self.peek() is not None else "the end"
        return LabelError(f"{what} at position {pos + 1}, found {found}")

    def take(self) -> str:
        token = self.peek()
        assert token is not None
        self.i += 1
        return token

    def word(self, what: str) -> str:
        token = self.peek()
        if token is None or token in _SPECIAL or token in _OPERATORS:
            raise self.fail(f"expected {what}")
        return self.take()

    def key(self) -> str:
        key = self.word("a label key")
        check_key(key)
        return key

    def value(self, key: str, empty_ok: bool) -> str:
        token = self.peek()
        if empty_ok and token in (None, ","):
            return ""
        value = self.word("a label value")
        check_value(value, key)
        return value

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            key = self.key()
            if self.peek() not in (None, ","):
                raise self.fail(f"expected ',' or the end after !{key}")
            return Requirement(key, "!")
        key = self.key()
        token = self.peek()
        if token in (None, ","):
            return Requirement(key, "exists")
        if token in _OPERATORS:
            op = "!=" if self.take() == "!=" else "="
            return Requirement(key, op, (self.value(key, empty_ok=True),))
        if token in ("in", "notin"):
            op = self.take()
            return Requirement(key, op, self.value_set(key))
        raise self.fail(f"expected =, ==, !=, in, notin, ',' or the end after key {key!r}")

    def value_set(self, key: str) -> tuple[str, ...]:
        if self.peek() != "(":
            raise self.fail("expected '('")
        self.take()
        values = [self.value(key, empty_ok=False)]
        while self.peek() == ",":
            self.take()
            values.append(self.value(key, empty_ok=False))
        if self.peek() != ")":
            raise self.fail("expected ',' or ')'")
        self.take()
        return tuple(sorted(set(values)))

    def selector(self) -> Selector:
        requirements = []
        if self.peek() is None:
            return Selector()
        while True:
            requirements.append(self.requirement())
            if self.peek() is None:
                return Selector(tuple(requirements))
            if self.peek() != ",":
                raise self.fail("expected ','")
            self.take()
            if self.peek() is None:
                raise self.fail("expected a requirement after ','")


@functools.lru_cache(maxsize=4096)
def parse_selector(text: str) -> Selector:
    """Parse a label selector (module docstring). Cached: ownership matches every task's
    selector against every member on each change of either.

    Raises:
        LabelError: with the position (1-based) and the reason, e.g. ``expected ',' or ')' at
            position 14, found the end``, or an invalid key or value.
    """
    if len(text) > MAX_SELECTOR_CHARS:
        raise LabelError(f"{len(text)} characters, at most {MAX_SELECTOR_CHARS}")
    return _Parser(text).selector()


def compile_selector(text: str, field: str) -> Selector:
    """:func:`parse_selector` for input: errors name ``field``.

    Raises:
        InvalidArgument: ``field`` with the selector and the reason.
    """
    try:
        return parse_selector(text)
    except LabelError as exc:
        raise InvalidArgument(field, f"{text[:200]!r}: {exc}") from None


def selector_matches(text: str, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` match the selector ``text``; a malformed selector matches nothing
    (a task whose stored selector this node cannot read runs nowhere rather than anywhere)."""
    try:
        return parse_selector(text).matches(labels)
    except LabelError:
        return False


__all__ = [
    "MAX_LABELS",
    "MAX_NAME",
    "MAX_PREFIX",
    "MAX_SELECTOR_CHARS",
    "LabelError",
    "Requirement",
    "Selector",
    "check_key",
    "check_value",
    "compile_selector",
    "format_labels",
    "parse_labels",
    "parse_selector",
    "selector_matches",
    "validate_labels",
]
