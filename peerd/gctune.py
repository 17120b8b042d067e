"""The garbage collector of a node holding many tasks: its pauses measured, its work bounded.

CPython's cyclic collector stops the whole interpreter, and with it the event loop, while it
runs. A *full* collection (generation 2) traverses every object the collector tracks; a node
holding 100,000 tasks tracks about 290,000 of them (about 2,900 per owned task, 300 per task it
only knows of), and one full collection of them took 240 ms on the project's 2-core machine,
more under contention (docs/performance.md, Part 2). CPython runs one whenever the objects that
survived the younger generations grew by a quarter of those already old (``long_lived_pending >
long_lived_total / 4`` in ``Modules/gcmodule.c``), so a node that acquires a few thousand
tasks (a peer died, the node restarted) runs several of them exactly when its peers probe it.

Almost all of those objects live as long as the node holds the task: the task view's entries,
the owned tasks' specs, schedules and cursors. :func:`gc.freeze` moves every tracked object to
a *permanent* generation that no collection traverses (added for Instagram's pre-fork servers,
bpo-31558, Python 3.7). Objects frozen are still freed by reference counting when the last
reference goes; only garbage *cycles* among them stay until :func:`gc.unfreeze`: the young
generations are collected before each freeze, so what a freeze keeps is cyclic garbage that had
already reached the oldest generation (the RSS per task did not grow in the benchmark).

:class:`Freezer` freezes when the long-lived set grew: once the node has listed the tasks (also
while its first ownership pass still runs: a restarted node at 100,000 tasks whose pass was
restarted by ring changes froze nothing for 8 s, and ran full collections of 140-220 ms
meanwhile), and after a batch that added at least :data:`FREEZE_GROWTH` of
it (a bulk create, an acquisition after a membership change), looked at every :data:`CHECK_S`
(freezing is a constant-time list splice). When the set shrinks (tasks handed off), growing back
counts as growth again, and so do tasks acquired while as many were let go between two checks
(a ring change in one pass): in a 100,000-task run the objects of such acquisitions stayed
unfrozen, and full collections of them took 50-1,140 ms (docs/performance.md, Part 2, fourth
round). Before freezing it runs a collection of the young
generations (a few milliseconds), so short-lived cycles are collected rather than frozen.

:class:`GcPauses` measures every collection through :data:`gc.callbacks` and logs those longer
than :data:`LOG_OVER_MS` as ``gc_pause`` (generation, milliseconds, objects frozen), from its own
loop: never from inside the callback, which runs wherever a collection starts, possibly inside
the log handler holding its lock.

The thresholds of the generations stay CPython's: with generation 0 collected every 2,000 or
7,000 allocations instead of 700, collections of generation 1 (up to ten times as many objects)
took 51-127 ms in the benchmark (with 700, one of 109 ms in three runs, on a saturated machine),
and the CPU saved was not measurable (docs/performance.md, Part 2).
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from peerd.clock import Clock

log = structlog.get_logger("peerd.gc")

LOG_OVER_MS = 50.0
"""A collection longer than this is logged (half the 100 ms stall the issue allows)."""
FREEZE_GROWTH = 0.1
"""Freeze once the long-lived set grew by this share since the last freeze (and by at least
:data:`FREEZE_MIN`)."""
FREEZE_MIN = 1000
"""Growth (in the units of the size callable: tasks) below which nothing is frozen."""
PENDING_MAX = 100
"""Long collections kept for :meth:`GcPauses.report` (older ones are dropped, still counted)."""
CHECK_S = 1.0
"""How often :meth:`Freezer.run` looks at the size (seconds)."""


class GcPauses:
    """Times the collector's runs (see the module docstring). :meth:`install` adds the callback,
    :meth:`uninstall` removes it; one instance per process is enough.

    Attributes:
        count: collections seen, per generation (0, 1, 2).
        total_s: time spent in them, per generation (seconds).
        worst_ms: the longest, per generation (milliseconds).
    """

    def __init__(self, log_over_ms: float = LOG_OVER_MS) -> None:
        self.log_over_ms = log_over_ms
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.worst_ms = [0.0, 0.0, 0.0]
        self._started = 0.0
        self.pending: deque[tuple[int, float, int]] = deque(maxlen=PENDING_MAX)
        """Long collections not yet logged: ``(generation, ms, objects collected)``."""

    def install(self) -> None:
        """Start measuring (idempotent)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop measuring."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = int(info.get("generation", 2))
        took_s = time.perf_counter() - self._started
        self.count[gen] += 1
        self.total_s[gen] += took_s
        took_ms = took_s * 1000
        self.worst_ms[gen] = max(self.worst_ms[gen], took_ms)
        if took_ms > self.log_over_ms:
            # Kept, not logged: logging here could re-enter the log handler's lock (a
            # collection may start inside its print) and hang the process.
            self.pending.append((gen, round(took_ms, 1), int(info.get("collected", 0))))

    def report(self) -> int:
        """Log the long collections seen since the last report as ``gc_pause`` (generation,
        milliseconds, objects collected, objects frozen). Returns how many were logged."""
        if not self.pending:
            return 0
        # Counted once per report: gc.get_freeze_count() walks the whole permanent generation
        # (5 ms for 400,000 objects on an idle machine), and up to PENDING_MAX are kept.
        frozen = gc.get_freeze_count()
        n = 0
        while self.pending:
            gen, pause_ms, collected = self.pending.popleft()
            log.warning(
                "gc_pause", generation=gen, pause_ms=pause_ms, collected=collected, frozen=frozen
            )
            n += 1
        return n

    async def run(self, clock: Clock) -> None:
        """:meth:`report` every :data:`CHECK_S` seconds of ``clock``, until cancelled."""
        while True:
            await clock.sleep(CHECK_S)
            self.report()


class Freezer:
    """Freezes the long-lived objects after they grew (see the module docstring).

    Args:
        size: the size of the long-lived set now (e.g. tasks known plus tasks owned).
        ready: whether the node has listed the tasks (nothing is frozen before).
        clock: what :meth:`run` sleeps on.
        growth: share of growth that triggers a freeze (:data:`FREEZE_GROWTH`).
        minimum: least growth that triggers one (:data:`FREEZE_MIN`).
        added: ``() -> how many members the set has gained since start`` (never decreases;
            e.g. tasks acquired), so that a set that lost and regained as many members between
            two checks (a ring change handing tasks off and acquiring others in one pass)
            counts as grown; None: only :data:`size` counts.
    """

    def __init__(
        self,
        size: Callable[[], int],
        ready: Callable[[], bool],
        clock: Clock,
        growth: float = FREEZE_GROWTH,
        minimum: int = FREEZE_MIN,
        added: Callable[[], int] | None = None,
    ) -> None:
        self._size = size
        self._ready = ready
        self.clock = clock
        self.growth = growth
        self.minimum = minimum
        self._added = added
        self.frozen_at = 0
        """The size at the last freeze, or the least size since if it shrank (0: never)."""
        self.added_at = 0
        """``added()`` at the last freeze."""
        self.freezes = 0

    def check(self) -> bool:
        """Freeze now if the node is ready and it never froze, or the set grew enough since the
        last freeze (in size, or by members added). Returns whether it froze.

        The first freeze does not wait for growth: what a node holds at start, whatever its
        task count, is mostly the modules it imported (about 60,000 tracked objects, a full
        collection of 55 ms on an idle machine and 70-125 ms in the chaos set-up). Unfrozen,
        those collections lowered the adaptive execution limit of nodes holding a few hundred
        tasks, which then logged ``node_saturated`` (docs/performance.md, Part 1)."""
        size = self._size()
        added = self._added() if self._added is not None else 0
        self.frozen_at = min(self.frozen_at, size)  # shrunk: growing back is growth again
        grown = max(size - self.frozen_at, added - self.added_at)
        if not self._ready():
            return False
        if self.freezes and grown < max(self.minimum, self.growth * size):
            return False
        gc.collect(1)  # young cycles are collected, not frozen
        gc.freeze()
        self.frozen_at = size
        self.added_at = added
        self.freezes += 1
        log.info("gc_frozen", size=size, frozen=gc.get_freeze_count())
        return True

    async def run(self) -> None:
        """Check every :data:`CHECK_S` seconds, until cancelled."""
        while True:
            await self.clock.sleep(CHECK_S)
            self.check()


__all__ = ["FREEZE_GROWTH", "LOG_OVER_MS", "Freezer", "GcPauses"]
