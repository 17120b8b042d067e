"""Keeping the owned tasks in step with the task view and the owning members, in small steps.

When the owning members change (a node joins, dies, drains, a filter's answers change), every
task's owner must be computed again: one rendezvous weight per eligible member and task
(:func:`peerd.core.ring.owner`, 2-5 µs each on the project's machine). With 100,000 tasks and
3 members that is 0.6-1.5 s of CPU: done in one go it would stall the event loop, and with it
lease keepalives and probe answers, long enough for peers to suspect this node (their probe
deadline is 250 ms). So a full pass over the tasks runs in steps of at most :data:`STEP_S` of
work, yielding to the loop between them (measured: a membership change at 100,000 tasks
stalls the loop for at most the step plus what else was ready, docs/performance.md (Part 2)).

The pass decides task by task, on the task's current placement (the view may change between
steps; a task changed meanwhile was already placed by its event, :meth:`Reconciler.place`):

=====================================  =====================================================
owner of the task in this node's view  action
=====================================  =====================================================
this node (and not paused)             keep it (cancel a handoff in progress), or acquire it
another node, or none                  release it, if this node plans it
=====================================  =====================================================

A change of the members during a pass restarts the pass from the first task (the steps done
stay done: they were right for the members they saw, and the new pass corrects them). A pass
over at most :data:`INLINE_TASKS` tasks runs at once, without yielding (a few milliseconds).

:attr:`Reconciler.owners` keeps every task's owner as last computed (None: paused or
unschedulable): ``peerd cluster`` counts it instead of hashing every task on each call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping

import structlog

from peerd.clock import Clock
from peerd.core.placement import Placement
from peerd.engine.ownership import OwnershipView

log = structlog.get_logger("peerd.engine")

STEP_S = 0.02
"""Most CPU time one step of a pass may take before it yields (seconds); well under the
100 ms the event loop may stall (issue 13) and the peers' 250 ms probe deadline."""
INLINE_TASKS = 2000
"""A pass over at most this many tasks runs at once (about 10-30 ms with 3 members)."""


class Reconciler:
    """The owned set, kept in step (see the module docstring).

    Args:
        node_id: this node.
        placements: the task view, task id -> placement (current at each lookup).
        ownership: the owning members and the owner computation.
        owned: the ids of the tasks this node plans now (the planner's).
        keep: ``keep(task_id)``: the task is owned here (acquire it unless planned already).
        release: ``release(task_id)``: the task is not owned here (hand it off or drop it).
        clock: the monotonic time the steps are measured on.
    """

    def __init__(
        self,
        node_id: str,
        placements: Mapping[str, Placement],
        ownership: OwnershipView,
        owned: Callable[[], Collection[str]],
        keep: Callable[[str], None],
        release: Callable[[str], None],
        clock: Clock,
    ) -> None:
        self.node_id = node_id
        self.placements = placements
        self.ownership = ownership
        self._owned = owned
        self._keep = keep
        self._release = release
        self.clock = clock
        self.owners: dict[str, str | None] = {}
        """Task id -> its owner in this node's view as last computed (None: nobody)."""
        self.passes = 0
        """Full passes completed (since start)."""
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def place(self, task_id: str) -> bool:
        """Compute the owner of one task now, acquire or release it; returns whether this node
        owns it. A task not in the view is released."""
        placement = self.placements.get(task_id)
        if placement is None:
            self.owners.pop(task_id, None)
            if task_id in self._owned():
                self._release(task_id)
            return False
        found = None if placement.paused else self.ownership.owner_of(task_id, placement)
        self.owners[task_id] = found
        if found == self.node_id:
            self._keep(task_id)
            return True
        if task_id in self._owned():
            self._release(task_id)
        return False

    def request(self) -> None:
        """The members (or the whole view) changed: run a full pass, at once when the view is
        small, else in steps in the background (a pass already running restarts)."""
        self._dirty = True
        if len(self.placements) <= INLINE_TASKS and (self._task is None or self._task.done()):
            self._dirty = False
            self._pass_inline()
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def busy(self) -> bool:
        """Whether a pass is pending or running."""
        return self._dirty or (self._task is not None and not self._task.done())

    def _pass_inline(self) -> None:
        for task_id in list(self.placements):
            self.place(task_id)
        self._finish()

    async def _run(self) -> None:
        """Passes in steps until no change arrived during the last one."""
        while self._dirty:
            self._dirty = False
            ids = list(self.placements)
            step_end = self.clock.monotonic() + STEP_S
            for i, task_id in enumerate(ids):
                self.place(task_id)
                if i % 64 == 63 and self.clock.monotonic() >= step_end:
                    await asyncio.sleep(0)
                    if self._dirty:
                        break  # the members changed: start over
                    step_end = self.clock.monotonic() + STEP_S
            else:
                self._finish()

    def _finish(self) -> None:
        """End of a full pass: release planned tasks no longer in the view, forget owners of
        deleted tasks. The view's ids are copied into a set once (a few ms at 100,000 tasks):
        looking each task up through the view's ``in`` took 30-50 ms in one go there on the
        project's machine (docs/performance.md, Part 2, fourth round)."""
        known = set(self.placements)
        for task_id in [t for t in self._owned() if t not in known]:
            self._release(task_id)
        for task_id in self.owners.keys() - known:
            del self.owners[task_id]
        self.passes += 1

    def stop(self) -> None:
        """Cancel a pass in progress."""
        if self._task is not None:
            self._task.cancel()


__all__ = ["INLINE_TASKS", "STEP_S", "Reconciler"]
