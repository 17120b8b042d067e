"""The life of one run on the node that claimed it (pure state machine, no I/O, no clock).

A run is one claimed slot of one task, identified by ``(task_id, slot_ms)``. The node's run
registry (:mod:`peerd.engine.registry`) holds exactly one entry per run from the moment its
claim committed until its final record is written, and moves it through this table; an illegal
transition raises :class:`IllegalTransition` and changes nothing.

=============  ============  =============  ===============================================
from           event         to             when
=============  ============  =============  ===============================================
(none)         ``claimed``   CLAIMED        the claim (or owner-lost take-over) committed
CLAIMED        ``start``     RUNNING        the run holds its lock and a pool slot
RUNNING        ``start``     RUNNING        the next attempt of a retry starts
CLAIMED        ``finish``    FINISHING      ended before starting (cancelled, lease lost)
RUNNING        ``finish``    FINISHING      the final attempt ended; final record queued
FINISHING      ``written``   DONE           the final record is in etcd
FINISHING      ``dropped``   DONE           the final record could not be written (fenced
                                            off: the claimant's lease is gone; logged)
CLAIMED        ``abandon``   DONE           nothing to record (the claim's lease is gone and
RUNNING        ``abandon``   DONE           the task's new owner resolves the run)
=============  ============  =============  ===============================================

A run in DONE leaves the registry. Because the registry refuses a second ``claimed`` for a run
it still holds, a slot is spawned at most once per claim, however often the claim is answered.
"""

from __future__ import annotations

from enum import Enum


class RunState(Enum):
    """Where a run is in its life on this node."""

    CLAIMED = "claimed"
    RUNNING = "running"
    FINISHING = "finishing"
    DONE = "done"


class IllegalTransition(Exception):
    """An event that the run's current state does not allow (a bug in the caller)."""

    def __init__(self, state: RunState | None, event: str) -> None:
        name = state.name if state is not None else "(none)"
        super().__init__(f"run in state {name} cannot take event {event!r}")
        self.state = state
        self.event = event


TRANSITIONS: dict[tuple[RunState | None, str], RunState] = {
    (None, "claimed"): RunState.CLAIMED,
    (RunState.CLAIMED, "start"): RunState.RUNNING,
    (RunState.RUNNING, "start"): RunState.RUNNING,
    (RunState.CLAIMED, "finish"): RunState.FINISHING,
    (RunState.RUNNING, "finish"): RunState.FINISHING,
    (RunState.FINISHING, "written"): RunState.DONE,
    (RunState.FINISHING, "dropped"): RunState.DONE,
    (RunState.CLAIMED, "abandon"): RunState.DONE,
    (RunState.RUNNING, "abandon"): RunState.DONE,
}
"""``(state, event) -> next state``; the docstring's table."""


def step(state: RunState | None, event: str) -> RunState:
    """The state after ``event``.

    Raises:
        IllegalTransition: ``event`` is not allowed in ``state``.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None
