"""Values read from etcd, as the rest of peerd sees them (pure data; no aetcd, no I/O).

:mod:`peerd.coord.etcd` builds them from etcd's answers and re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KV:
    """One key-value as read from etcd. Revisions are etcd's int64 revisions."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Event:
    """A watch event: ``kind`` is ``"put"`` or ``"delete"``; ``revision`` is the event's mod
    revision."""

    kind: str
    kv: KV
    revision: int


@dataclass(frozen=True)
class Alarm:
    """An active etcd alarm: ``kind`` is ``"NOSPACE"`` or ``"CORRUPT"``; ``member_id`` is the
    member that raised it."""

    member_id: int
    kind: str


@dataclass(frozen=True)
class MemberStatus:
    """One member's ``Maintenance.Status`` (``endpoint``: the one asked, "" = the client's).
    Bytes: ``db_size`` is the file as etcd's quota counts it (free pages included);
    ``db_size_in_use`` leaves out the free pages, which a defragmentation gives back."""

    endpoint: str
    member_id: int
    leader_id: int
    revision: int
    raft_index: int
    db_size: int
    db_size_in_use: int
    alarms: tuple[Alarm, ...]
    errors: tuple[str, ...]


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, range_end)`` cover every key with ``prefix``."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


__all__ = ["KV", "Alarm", "Event", "MemberStatus", "prefix_end"]
