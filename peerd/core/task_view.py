"""What a task list shows (pure): which tasks a ListTasks filter keeps, and each task's status.

A filter (:class:`TaskFilter`) is the conjunction of its parts; an empty part keeps every task:

================  ===========================================================================
part              keeps a task when
================  ===========================================================================
``selector``      its labels match the label selector (:mod:`peerd.core.labels`)
``id_contains``   its id contains the substring (case-sensitive)
``paused``        ``PAUSED_FILTER_ACTIVE``: it is not paused; ``PAUSED_FILTER_PAUSED``: it is
================  ===========================================================================

A task's status (:func:`task_status`) joins what the spec says about the future (the next slot
after ``now`` and its fire instant, none while paused) with what the ledger says about the past
(the record of the newest slot, read by the caller). The clock is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from peerd.core.labels import Selector, compile_selector
from peerd.core.task_schedule import TaskSchedule
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

MAX_ID_CONTAINS = 128
"""Longest ``id_contains`` accepted: a task id has at most 128 characters."""

_PAUSED_FILTERS = frozenset(pb.ListTasksRequest.PausedFilter.values())


@dataclass(frozen=True)
class TaskFilter:
    """The filter of a ListTasks request (module table); :meth:`empty` when it keeps all."""

    selector: Selector | None = None
    id_contains: str = ""
    paused: int = pb.ListTasksRequest.PAUSED_FILTER_UNSPECIFIED

    @classmethod
    def of(cls, request: pb.ListTasksRequest) -> TaskFilter:
        """The filter of ``request``.

        Raises:
            InvalidArgument: a malformed ``label_selector`` (position and reason), an
                ``id_contains`` longer than :data:`MAX_ID_CONTAINS`, or an unknown ``paused``.
        """
        if (n := len(request.id_contains)) > MAX_ID_CONTAINS:
            raise InvalidArgument("id_contains", f"at most {MAX_ID_CONTAINS} characters, got {n}")
        if request.paused not in _PAUSED_FILTERS:
            raise InvalidArgument("paused", f"unknown paused filter {request.paused}")
        selector = (
            compile_selector(request.label_selector, "label_selector")
            if request.label_selector
            else None
        )
        return cls(selector, request.id_contains, request.paused)

    @property
    def empty(self) -> bool:
        """Whether the filter keeps every task (the store's pages are the answer's pages)."""
        return (
            self.selector is None
            and not self.id_contains
            and self.paused == pb.ListTasksRequest.PAUSED_FILTER_UNSPECIFIED
        )

    def matches(self, spec: pb.TaskSpec) -> bool:
        """Whether ``spec`` passes every part of the filter."""
        if self.id_contains and self.id_contains not in spec.id:
            return False
        if self.paused == pb.ListTasksRequest.PAUSED_FILTER_ACTIVE and spec.paused:
            return False
        if self.paused == pb.ListTasksRequest.PAUSED_FILTER_PAUSED and not spec.paused:
            return False
        return self.selector is None or self.selector.matches(spec.labels)


def task_status(
    spec: pb.TaskSpec,
    schedule: TaskSchedule | None,
    last_run: pb.RunRecord | None,
    now: datetime,
) -> pb.TaskStatus:
    """The status of ``spec`` at ``now`` (aware).

    Args:
        spec: the stored task.
        schedule: its compiled schedule (:func:`peerd.core.task_schedule.task_schedule`), or
            None when it does not compile on this node (no next slot is given then).
        last_run: the record of its newest slot, if any.
        now: the instant the next slot must follow.

    Returns:
        ``TaskStatus`` with ``next_slot``/``next_fire_at`` unless the task is paused or has no
        slot after ``now``, and ``last_run`` when given.
    """
    out = pb.TaskStatus(task_id=spec.id)
    if last_run is not None:
        out.last_run.CopyFrom(last_run)
    if spec.paused or schedule is None:
        return out
    slot = schedule.next_after(now)
    if slot is not None:
        out.next_slot.FromDatetime(slot)
        out.next_fire_at.FromDatetime(schedule.fire_at(spec.id, slot))
    return out
