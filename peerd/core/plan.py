"""Planning: which slots of one task to run, skip or leave for later (pure).

The planner is called with the task's *cursor* (the last slot already handled: fired or recorded
as skipped) and ``now``. Due slots are those in ``(cursor, now]``. For each due slot:

* **on time** when ``now - slot <= misfire_threshold``: it fires;
* **late** (a *misfire*) otherwise. Late slots never all run: if at least one slot is on time,
  every late slot is skipped; if none is, the *most recent* late slot fires once (catch-up runs
  once, like anacron / Kubernetes CronJob after downtime) and the older ones are skipped.

Skipped slots are counted exactly (``skipped_count``) but only the most recent
``skip_record_limit`` are listed (to be written as SKIPPED run records). Counting is closed-form
for ``every`` and calendar arithmetic for ``cron`` (see :mod:`peerd.core.schedule`), so a day of
downtime with ``every 1s`` costs the same as a minute of it. At most ``max_fire`` on-time slots
fire per call: the earliest ones; the cursor then stops at the last one fired and ``next_at``
(<= ``now``) says "call again now" for the rest.

Example: ``every 1m`` anchored at 00:00, cursor 00:00, ``now`` 01:00:10, threshold 30 s. Due:
00:01 .. 01:00 (60 slots). 01:00 is 10 s old: on time, fires. The 59 others are late: skipped,
``skipped_count`` 59. New cursor 01:00, ``next_at`` 01:01. Had ``now`` been 01:00:40, nothing would
be on time: 01:00 fires as catch-up, 00:01 .. 00:59 are skipped (59), cursor 01:00.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from peerd.core.schedule import CompiledSchedule

_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Plan:
    """What to do with one task's due slots (all datetimes aware UTC, whole ms).

    Attributes:
        fire: slots to claim and run now, ascending.
        skipped: misfired slots to record as SKIPPED, ascending: the most recent
            ``skip_record_limit`` of them.
        skipped_count: total misfired slots not run (>= ``len(skipped)``).
        cursor: the new cursor: the last slot considered (fired or skipped), or the old cursor.
        next_at: the first slot after the new cursor that is not yet planned: normally the first
            slot strictly after ``now``; ``<= now`` only when ``max_fire`` cut the batch short (plan
            again immediately). None when the schedule is exhausted.
    """

    fire: list[datetime]
    skipped: list[datetime]
    skipped_count: int
    cursor: datetime
    next_at: datetime | None


def plan_due(
    schedule: CompiledSchedule,
    cursor: datetime,
    now: datetime,
    misfire_threshold: timedelta,
    *,
    max_fire: int = 1000,
    skip_record_limit: int = 100,
) -> Plan:
    """Plan the slots of ``schedule`` due in ``(cursor, now]`` (rules in the module docstring).

    Args:
        schedule: the task's compiled schedule (bounds and ``max_runs`` already applied).
        cursor: last slot handled (aware); slots at or before it are never planned again.
        now: current time (aware).
        misfire_threshold: how late (``now - slot``) a slot may be and still fire on time (>= 0).
        max_fire: most on-time slots fired per call (>= 1).
        skip_record_limit: most skipped slots listed (>= 0); the count is always exact.

    Raises:
        ValueError: for naive datetimes, a negative threshold, ``max_fire < 1`` or
            ``skip_record_limit < 0``.
    """
    if cursor.tzinfo is None or now.tzinfo is None:
        raise ValueError("cursor and now must be timezone-aware")
    if misfire_threshold < timedelta(0) or max_fire < 1 or skip_record_limit < 0:
        raise ValueError("need misfire_threshold >= 0, max_fire >= 1, skip_record_limit >= 0")
    if now <= cursor:
        return Plan([], [], 0, cursor, schedule.next_after(cursor))
    late_until = now - misfire_threshold - _US  # late <=> slot < now - threshold
    on_time = schedule.slots_between(max(cursor, late_until), now, max_fire + 1)
    late = schedule.count_between(cursor, late_until) if late_until > cursor else 0
    capped = len(on_time) > max_fire
    if on_time:
        fire = on_time[:max_fire]
        skipped = schedule.last_slots(cursor, late_until, skip_record_limit) if late else []
        skipped_count = late
    elif late:
        tail = schedule.last_slots(cursor, late_until, skip_record_limit + 1)
        fire, skipped, skipped_count = tail[-1:], tail[:-1], late - 1
    else:
        fire, skipped, skipped_count = [], [], 0
    new_cursor = fire[-1] if fire else cursor
    next_at = schedule.next_after(new_cursor if capped else max(new_cursor, now))
    return Plan(fire, skipped, skipped_count, new_cursor, next_at)
