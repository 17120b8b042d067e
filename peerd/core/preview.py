"""Schedule preview: the next slots of a schedule, when they fire and what DST did (pure).

:func:`preview` lists the slots strictly after an instant with the same
:meth:`~peerd.core.schedule.CompiledSchedule.next_after` the scheduler uses, so a preview shows
exactly what will run (bounds, ``max_runs``, DST policies and jitter included). Each slot comes
with its local time in the schedule's zone and, when a UTC-offset transition touched it, a note:

* ``"02:30 does not exist on 2026-03-29 (spring forward); shifted to 03:00"`` (policy shift);
* ``"02:30 does not exist on 2026-03-29 (spring forward); skipped"`` (policy skip: on the first
  slot after the missing time, to explain the hole before it);
* ``"02:30 occurs twice on 2026-10-25 (fall back); first of two"`` / ``"...; second of two"``,
  with ``" (the second does not fire)"`` / ``" (the first does not fire)"`` when the policy is
  first / last.

Several wall times of one gap are listed as ``"02:00, 02:30"`` (up to three) or
``"02:00 to 02:59 (60 times)"``; seconds are shown only for expressions that use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from peerd.core.schedule import CompiledSchedule, DstEvent
from peerd.v1 import scheduler_pb2 as pb

__all__ = ["PreviewSlot", "local_time", "preview", "to_proto"]


@dataclass(frozen=True)
class PreviewSlot:
    """One previewed slot.

    Attributes:
        scheduled_at: the slot (aware UTC, whole ms): its identity.
        fire_at: when it fires: ``scheduled_at`` + the task's jitter (aware UTC).
        local_time: ``scheduled_at`` in the schedule's zone, RFC 3339 with the zone's offset,
            seconds precision, milliseconds only when non-zero: ``2026-03-29T03:00:00+02:00``.
        note: what DST did to this slot (module docstring), "" when nothing.
    """

    scheduled_at: datetime
    fire_at: datetime
    local_time: str
    note: str


def local_time(slot: datetime, zone: tzinfo) -> str:
    """``slot`` (aware) in ``zone`` as RFC 3339 with offset, ``.mmm`` only when non-zero.

    (Offsets with seconds, pre-1900 local mean time, keep them; RFC 3339 cannot say them.)
    """
    local = slot.astimezone(zone)
    return local.isoformat(timespec="milliseconds" if local.microsecond else "seconds")


def preview(
    compiled: CompiledSchedule, task_id: str, after: datetime, count: int
) -> list[PreviewSlot]:
    """The first ``count`` slots strictly after ``after`` (aware), with fire instants and notes.

    ``task_id`` keys the jitter (:meth:`CompiledSchedule.fire_at`); fewer than ``count`` slots
    come back when the schedule ends. Cost: ``count`` calls of ``next_after`` plus the DST
    windows in the range.

    Raises:
        ValueError: when ``after`` is naive or ``count`` is negative.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    slots: list[datetime] = []
    t = after
    while len(slots) < count and (nxt := compiled.next_after(t)) is not None:
        slots.append(nxt)
        t = nxt
    events = compiled.dst_events(after, slots[-1]) if slots else []
    out: list[PreviewSlot] = []
    prev = after
    for slot in slots:
        out.append(
            PreviewSlot(
                scheduled_at=slot,
                fire_at=compiled.fire_at(task_id, slot),
                local_time=local_time(slot, compiled.zone),
                note=_note(slot, prev, events, compiled.zone),
            )
        )
        prev = slot
    return out


def to_proto(slot: PreviewSlot) -> pb.PreviewSlot:
    """``slot`` as ``pb.PreviewSlot``."""
    msg = pb.PreviewSlot(local_time=slot.local_time, note=slot.note)
    msg.scheduled_at.FromDatetime(slot.scheduled_at.astimezone(UTC))
    msg.fire_at.FromDatetime(slot.fire_at.astimezone(UTC))
    return msg


def _note(slot: datetime, prev: datetime, events: Sequence[DstEvent], zone: tzinfo) -> str:
    """The note for ``slot``; ``prev`` is the previous slot (or the preview's start)."""
    shifted = [e for e in events if e.nonexistent and slot in e.slots]
    skipped = [e for e in events if e.nonexistent and not e.slots and prev < e.transition <= slot]
    ambiguous = [e for e in events if not e.nonexistent and slot in e.slots]
    notes: list[str] = []
    if skipped:
        notes.append(f"{_gap(skipped)}; skipped")
    if shifted:
        target = slot.astimezone(zone).strftime(_fmt(shifted))
        notes.append(f"{_gap(shifted)}; shifted to {target}")
    for e in ambiguous:
        which = "first" if slot == e.instants[0] else "second"
        other = "second" if which == "first" else "first"
        text = f"{_hhmm([e])} occurs twice on {e.wall.date()} (fall back); {which} of two"
        if len(e.slots) == 1:
            text += f" (the {other} does not fire)"
        notes.append(text)
    return "; ".join(notes)


def _fmt(events: Sequence[DstEvent]) -> str:
    return "%H:%M:%S" if any(e.wall.second for e in events) else "%H:%M"


def _hhmm(events: Sequence[DstEvent]) -> str:
    fmt = _fmt(events)
    walls = sorted(e.wall for e in events)
    if len(walls) <= 3:
        return ", ".join(w.strftime(fmt) for w in walls)
    return f"{walls[0].strftime(fmt)} to {walls[-1].strftime(fmt)} ({len(walls)} times)"


def _gap(events: Sequence[DstEvent]) -> str:
    verb = "does" if len(events) == 1 else "do"
    day = min(e.wall for e in events).date()
    return f"{_hhmm(events)} {verb} not exist on {day} (spring forward)"
