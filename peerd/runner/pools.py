"""Executor pools: how many runs of each kind a node runs at once, and which waiting run goes next.

A saturated node does not start runs in arrival order: a waiting run with a higher task priority
(``TaskSpec.priority``, -100..100) starts first, then the one with the earlier fire time, then
the one that asked first. :class:`PriorityLimiter` is that queue; :class:`Pools` holds one per
executor kind plus the node-wide one, with limits from :class:`~peerd.node_config.NodeConfig`
that can change while the node runs (SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from peerd.node_config import NodeConfig
from peerd.runner.executors import limits


def check_limit(limit: int) -> None:
    """Raise ``ValueError`` (naming the value) unless ``limit`` >= 1: a limiter's limit."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


@dataclass(order=True)
class _Waiter:
    key: tuple[int, float, int]
    future: asyncio.Future[None] = field(compare=False)


class PriorityLimiter:
    """At most ``limit`` holders at once; waiters are admitted by ``(-priority, fire_at_s, seq)``.

    Higher priority first, then the earlier fire time, then first come first served. A newcomer
    takes a free slot at once only when nobody is waiting (there is never a free slot while
    someone waits, so it cannot overtake a waiter).

    Args:
        limit: maximum holders at once, >= 1.

    Raises:
        ValueError: ``limit`` < 1.
    """

    def __init__(self, limit: int) -> None:
        check_limit(limit)
        self._limit = limit
        self._in_use = 0
        self._waiters: list[_Waiter] = []
        self._waiting = 0
        self._seq = itertools.count()

    @property
    def limit(self) -> int:
        """Maximum holders at once."""
        return self._limit

    @property
    def in_use(self) -> int:
        """Slots held now (may exceed :attr:`limit` for a while after it was lowered)."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return self._waiting

    def set_limit(self, limit: int) -> None:
        """Change the limit (config reload).

        Raising it admits waiters at once (best first). Lowering it takes nothing away: holders
        keep their slots and finish; no waiter is admitted until :attr:`in_use` is below the new
        limit.

        Raises:
            ValueError: ``limit`` < 1.
        """
        check_limit(limit)
        self._limit = limit
        self._admit()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int, fire_at_s: float) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``.

        Args:
            priority: higher is admitted first (``TaskSpec.priority``, -100..100).
            fire_at_s: when the run was due, epoch seconds; earlier is admitted first among
                equal priorities.

        Cancellation-safe: a caller cancelled while waiting leaves the queue and never holds (or
        leaks) a slot, even if the slot was granted just before the cancellation arrived; the
        slot is released when the body exits, however it exits.
        """
        await self.acquire(priority, fire_at_s)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, priority: int, fire_at_s: float) -> None:
        """Wait for a slot and take it (arguments as :meth:`slot`). Every caller that returns
        from it holds one slot and must :meth:`release` it exactly once, however it ends.

        For callers that hold slots of several limiters at once (:meth:`Pools.slot`), where one
        context manager per limiter would cost a generator per run; everyone else uses
        :meth:`slot`. Cancellation-safe as :meth:`slot`: cancelled while waiting, the caller
        holds no slot (do not release one)."""
        if self._waiting == 0 and self._in_use < self._limit:
            self._in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, _Waiter((-priority, fire_at_s, next(self._seq)), future))
        self._waiting += 1
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted (the slot was counted for us) but cancelled before we resumed.
                self.release()
            else:
                future.cancel()  # left in the heap; _admit discards it
                self._waiting -= 1
            raise

    def release(self) -> None:
        """Give back a slot taken by :meth:`acquire` (once per acquire that returned), admitting
        the best waiter if there is room. Only for callers of :meth:`acquire`."""
        self._in_use -= 1
        self._admit()

    def _admit(self) -> None:
        """Grant slots to the best waiters while there is room."""
        while self._in_use < self._limit and self._waiters:
            waiter = heapq.heappop(self._waiters)
            if waiter.future.done():  # cancelled while waiting
                continue
            waiter.future.set_result(None)
            self._waiting -= 1
            self._in_use += 1

    def __repr__(self) -> str:
        return (
            f"PriorityLimiter(limit={self._limit}, in_use={self._in_use}, waiting={self._waiting})"
        )


class Pools:
    """The node-wide limiter (``max_concurrent_runs``) and one per executor kind
    (``max_http_runs``, ``max_shell_runs``, ``max_python_runs``).

    Args:
        cfg: the node configuration the limits are read from.
    """

    def __init__(self, cfg: NodeConfig) -> None:
        self.node = PriorityLimiter(cfg.max_concurrent_runs)
        """The node-wide limiter."""
        self.kinds: dict[str, PriorityLimiter] = {
            kind: PriorityLimiter(limit) for kind, limit in self._kind_limits(cfg).items()
        }
        """One limiter per executor kind (:data:`peerd.runner.executors.KINDS`)."""

    @staticmethod
    def _kind_limits(cfg: NodeConfig) -> dict[str, int]:
        return limits(cfg)

    def check(self, cfg: NodeConfig) -> None:
        """Raise ``ValueError`` (changing nothing) if :meth:`apply` would refuse ``cfg``."""
        for limit in (*self._kind_limits(cfg).values(), cfg.max_concurrent_runs):
            check_limit(limit)

    def apply(self, cfg: NodeConfig) -> None:
        """Take the limits of ``cfg`` (config reload); see :meth:`PriorityLimiter.set_limit`."""
        for kind, limit in self._kind_limits(cfg).items():
            self.kinds[kind].set_limit(limit)
        self.node.set_limit(cfg.max_concurrent_runs)

    @contextlib.asynccontextmanager
    async def slot(self, kind: str, priority: int, fire_at_s: float) -> AsyncIterator[None]:
        """Hold a slot of the ``kind`` pool and one of the node-wide pool for the body.

        The kind's pool is acquired first, then the node-wide one, and every caller does it in
        this order, so no one ever holds a node slot while waiting for a kind slot: no cycle of
        waits, no deadlock. It also means a full pool of one kind (say 32 long shell runs) does
        not tie up node-wide slots with runs that cannot start, so runs of other kinds are not
        starved by it; only runs that can actually start compete for the node-wide slots, where
        they are again ordered by priority and fire time. Strict priority does let a sustained
        stream of higher-priority runs delay lower-priority ones indefinitely: that is the
        intended meaning of priority under saturation.

        Args:
            kind: ``"http"``, ``"shell"`` or ``"python"``.
            priority: the task's priority; higher is admitted first.
            fire_at_s: the run's fire time, epoch seconds.

        Raises:
            ValueError: unknown ``kind`` (raised before waiting).
        """
        try:
            pool = self.kinds[kind]
        except KeyError:
            raise ValueError(
                f"no executor pool for kind {kind!r}; expected one of {sorted(self.kinds)}"
            ) from None
        # The limiters' acquire/release rather than their ``slot`` context managers: the same
        # steps, two generator-based context managers fewer per run (the fire path).
        await pool.acquire(priority, fire_at_s)
        try:
            await self.node.acquire(priority, fire_at_s)
        except BaseException:
            pool.release()
            raise
        try:
            yield
        finally:
            self.node.release()
            pool.release()
