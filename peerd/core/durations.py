"""Go-style durations: ``"500ms"``, ``"10s"``, ``"1m30s"``, ``"2h"``, ``"1d"`` (pure)."""

from __future__ import annotations

import re
from datetime import timedelta

from peerd.errors import InvalidArgument

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str, field: str) -> timedelta:
    """Parse a duration made of ``<number><unit>`` parts (units ms, s, m, h, d).

    A bare number is read as seconds. The result is rounded to whole milliseconds.

    Raises:
        InvalidArgument: naming ``field`` when the text is empty, malformed or negative.
    """
    s = text.strip().lower().replace(" ", "")
    if not s:
        raise InvalidArgument(field, "empty duration")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return timedelta(milliseconds=round(float(s) * 1000))
    pos = 0
    total_ms = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total_ms += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise InvalidArgument(
            field, f"{text!r} is not a duration (examples: 500ms, 10s, 1m30s, 2h, 1d)"
        )
    return timedelta(milliseconds=round(total_ms))


def format_duration(d: timedelta) -> str:
    """Format a timedelta compactly, e.g. ``timedelta(seconds=90)`` -> ``"1m30s"``."""
    ms = round(d.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        out.append(f"{ms}ms")
    return sign + "".join(out)
