"""Supervised background loops: every long-running coroutine of a node is watched and restarted.

A bare ``asyncio.create_task(loop())`` whose exception nobody reads dies silently. A
:class:`Supervisor` runs each named loop instead. When the loop...

* **raises an** ``Exception`` (a crash): the supervisor logs ``loop_crashed`` once (``loop`` name,
  ``exc_info``, ``restart_in_s``), records the error in :attr:`~Supervisor.failures` (health:
  degraded), sleeps the loop's next backoff delay, then calls the factory again for a fresh
  coroutine.
* **runs** ``healthy_after_s`` **after a restart without crashing**: it is removed from
  :attr:`~Supervisor.failures` (``loop_recovered``) and its backoff is reset, so the next crash
  restarts quickly again. A crash before that keeps it degraded and lengthens the next delay.
* **raises one of the** ``fatal`` **types**: ``loop_fatal`` is logged, the error stays in
  :attr:`~Supervisor.failures`, the loop is not restarted, and :meth:`~Supervisor.wait_fatal`
  returns the error (the node exits, e.g. on a duplicate node id).
* **returns**: ``loop_finished`` is logged; it is not restarted and any failure recorded for it
  is cleared.
* **ends with** ``CancelledError``: not a crash, not restarted (logged as ``loop_cancelled``
  unless :meth:`~Supervisor.stop` cancelled it).

:attr:`Supervisor.healthy` is True while no loop has a recorded failure. Every change of
:attr:`Supervisor.failures` calls the ``on_change`` callbacks (no arguments; read ``healthy`` and
``failures``), which is where the node flips its gRPC health and, later, counts crashes.

Time (the backoff sleeps and the healthy-again timer) comes from the injected
:class:`peerd.clock.Clock`, so a :class:`peerd.clock.FakeClock` drives the tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from peerd.clock import Clock
from peerd.core.backoff import Backoff

log: FilteringBoundLogger = structlog.get_logger("peerd.supervise")

RESTART_INITIAL_S = 1.0
"""First restart delay (seconds). A crash is a bug or a persistent fault, not a blip that a
quick retry fixes (etcd blips are retried inside the loops): restarting at most once a second
keeps a crash loop from flooding the log."""
RESTART_MAX_S = 30.0
"""Cap of the restart delay (seconds): a fault that goes away is picked up within this."""
HEALTHY_AFTER_S = 10.0
"""A restarted loop counts as healthy again after running this long (seconds) without a crash:
five times the etcd retry cap (:data:`peerd.coord.etcd.RETRY_MAX_S`, 2 s), so a loop that fails
again on its first etcd round trips is still degraded when it does."""

LoopFactory = Callable[[], Coroutine[Any, Any, None]]
"""Returns a fresh coroutine of the loop each time it is called (a coroutine runs only once)."""


def restart_backoff() -> Backoff:
    """The default restart backoff: :data:`RESTART_INITIAL_S` doubling to :data:`RESTART_MAX_S`."""
    return Backoff(RESTART_INITIAL_S, RESTART_MAX_S)


class Supervisor:
    """Runs named background loops and restarts them when they crash (see the module table).

    Args:
        clock: time source for backoff sleeps and the healthy-again timer.
        backoff: returns a fresh :class:`Backoff` per loop (default :func:`restart_backoff`).
        healthy_after_s: seconds a restarted loop must run without crashing to count as
            healthy again (default :data:`HEALTHY_AFTER_S`).
        fatal: exception types that end the loop for good instead of restarting it.
        logger: structlog logger (e.g. bound with ``node_id``); default ``peerd.supervise``.

    Attributes:
        failures: loop name -> the last error of each loop that is degraded now (crashed and
            not yet healthy again, or ended by a fatal error).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        backoff: Callable[[], Backoff] = restart_backoff,
        healthy_after_s: float = HEALTHY_AFTER_S,
        fatal: tuple[type[Exception], ...] = (),
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        if healthy_after_s < 0:
            raise ValueError(f"healthy_after_s must be >= 0, got {healthy_after_s!r}")
        self.clock = clock
        self.healthy_after_s = healthy_after_s
        self.failures: dict[str, Exception] = {}
        self._new_backoff = backoff
        self._fatal = fatal
        self._log = logger if logger is not None else log
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._fatal_error: Exception | None = None
        self._fatal_event = asyncio.Event()
        self._stopping = False

    @property
    def healthy(self) -> bool:
        """True while no loop is degraded (:attr:`failures` is empty)."""
        return not self.failures

    def on_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change of :attr:`failures` (a crash, a recovery, a fatal
        error). Exceptions from ``fn`` are logged and ignored."""
        self._listeners.append(fn)

    def running(self) -> list[str]:
        """Names of the loops that are still supervised (not finished, fatal or cancelled)."""
        return sorted(name for name, task in self._tasks.items() if not task.done())

    def spawn(self, name: str, factory: LoopFactory) -> None:
        """Start supervising ``factory()`` under ``name`` (needs a running event loop).

        Raises:
            ValueError: a loop of that name is still running.
            RuntimeError: :meth:`stop` was called.
        """
        if self._stopping:
            raise RuntimeError(f"supervisor is stopped; cannot spawn {name!r}")
        current = self._tasks.get(name)
        if current is not None and not current.done():
            raise ValueError(f"loop {name!r} is already running")
        self._tasks[name] = asyncio.create_task(self._supervise(name, factory), name=name)

    async def wait_fatal(self) -> Exception:
        """Wait until a loop ends with one of the ``fatal`` exception types; returns it."""
        await self._fatal_event.wait()
        assert self._fatal_error is not None
        return self._fatal_error

    async def stop(self) -> None:
        """Cancel every loop and wait until all have ended. Nothing is restarted afterwards,
        and :meth:`spawn` raises."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one loop ------------------------------------------------------------------------------

    async def _supervise(self, name: str, factory: LoopFactory) -> None:
        backoff = self._new_backoff()
        try:
            while True:
                error = await self._run_once(name, factory, backoff)
                if error is None:
                    self._log.info("loop_finished", loop=name)
                    self._set_failure(name, None)
                    return
                if isinstance(error, self._fatal):
                    self._log.error("loop_fatal", loop=name, exc_info=error)
                    self._set_failure(name, error)
                    if self._fatal_error is None:
                        self._fatal_error = error
                        self._fatal_event.set()
                    return
                delay_s = backoff.next_delay_s()
                self._log.error("loop_crashed", loop=name, restart_in_s=delay_s, exc_info=error)
                self._set_failure(name, error)
                await self.clock.sleep(delay_s)
        except asyncio.CancelledError:
            if not self._stopping:
                self._log.warning("loop_cancelled", loop=name)
            raise

    async def _run_once(
        self, name: str, factory: LoopFactory, backoff: Backoff
    ) -> Exception | None:
        """Run one incarnation; returns its exception, or None when it returned."""
        recovery = None
        if name in self.failures:
            recovery = asyncio.create_task(self._recover_after(name, backoff))
        try:
            await factory()
        except Exception as exc:
            return exc
        finally:
            if recovery is not None:
                recovery.cancel()
        return None

    async def _recover_after(self, name: str, backoff: Backoff) -> None:
        await self.clock.sleep(self.healthy_after_s)
        backoff.reset()
        self._log.info("loop_recovered", loop=name, healthy_after_s=self.healthy_after_s)
        self._set_failure(name, None)

    def _set_failure(self, name: str, error: Exception | None) -> None:
        if error is None:
            if self.failures.pop(name, None) is None:
                return
        else:
            self.failures[name] = error
        for fn in self._listeners:
            try:
                fn()
            except Exception:  # a listener bug must not take the supervisor down
                self._log.exception("supervisor_listener_failed")
