"""Time-zone databases written by tests: a zoneinfo directory with a version and TZif zones.

:func:`write_database` makes what ``--tzdata PATH`` reads: ``tzdata.zi`` whose first line is
``# version <version>`` and one TZif file per zone. :func:`tzif` encodes a zone (RFC 8536,
version 2): a list of transitions and a fixed offset after the last one, as the POSIX TZ string
footer (``STD<offset>``; offsets may have seconds, which lets tests give two rule sets slots a
few seconds apart).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from peerd.core.tzrules import TimeZoneRules

H = 3600
BC_CHANGE = int(datetime(2026, 10, 22, 9, tzinfo=UTC).timestamp())
"""When the "new" rules below leave America/Vancouver on UTC-7 (before its 2026 fall back)."""

Zone = tuple[int, Sequence[tuple[int, int]]]
"""``(first offset, transitions)``: the UTC offset (s) before the first transition, then
``(UTC epoch s, UTC offset s from that instant on)`` ascending; the last one holds forever."""


def _posix_offset(offset_s: int) -> str:
    """POSIX TZ offsets are west-positive: UTC-7:59:40 is ``7:59:40``."""
    west = -offset_s
    sign = "-" if west < 0 else ""
    h, rest = divmod(abs(west), 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{h}" + (f":{m:02d}:{s:02d}" if m or s else "")


def tzif(zone: Zone) -> bytes:
    """The TZif (version 2) bytes of ``zone`` (see :data:`Zone`); abbreviation ``TST``."""
    first, transitions = zone
    final = transitions[-1][1] if transitions else first
    offsets = [first]  # type 0: the offset before the first transition (RFC 8536, 3.2)
    for _, off in transitions:
        if off not in offsets:
            offsets.append(off)
    chars = b"TST\0"
    types = b"".join(struct.pack(">lBB", off, 0, 0) for off in offsets)
    counts = (0, 0, 0, len(transitions), len(offsets), len(chars))

    def block(time_fmt: str) -> bytes:
        times = b"".join(struct.pack(time_fmt, t) for t, _ in transitions)
        idx = bytes(offsets.index(off) for _, off in transitions)
        return times + idx + types + chars

    head = b"TZif2" + bytes(15)
    v1 = head + struct.pack(">6l", *counts) + block(">l")
    v2 = head + struct.pack(">6l", *counts) + block(">q")
    return v1 + v2 + f"\nTST{_posix_offset(final)}\n".encode()


def write_database(root: Path, version: str, zones: Mapping[str, Zone]) -> Path:
    """Write a zoneinfo directory at ``root``: ``tzdata.zi`` declaring ``version`` and a TZif
    file per zone name (``America/Vancouver`` -> ``root/America/Vancouver``). Returns ``root``.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "tzdata.zi").write_text(f"# version {version}\n# written by a test\n")
    for name, zone in zones.items():
        write_zone(root, name, zone)
    return root


def write_zone(root: Path, name: str, zone: Zone) -> None:
    """(Re)write one zone file of the database at ``root``."""
    path = root.joinpath(*name.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tzif(zone))


def vancouver_releases(root: Path) -> tuple[TimeZoneRules, TimeZoneRules]:
    """Two releases that disagree like tzdata 2025b and 2026f: "2030a" keeps America/Vancouver
    on UTC-8 (no DST at all, for simple arithmetic), "2030b" moves it to UTC-7 for good from
    :data:`BC_CHANGE`. Both under ``root``; returns ``(old, new)``."""
    old = write_database(root / "old", "2030a", {"America/Vancouver": (-8 * H, [])})
    zones = {"America/Vancouver": (-8 * H, [(BC_CHANGE, -7 * H)])}
    new = write_database(root / "new", "2030b", zones)
    return TimeZoneRules.load(str(old)), TimeZoneRules.load(str(new))
