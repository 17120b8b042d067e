"""Backpressure from the event loop: measure its lag, adapt the node's execution limit to it.

A timer that should fire every :data:`TICK_S` measures how late it fires: that is how long the
loop's other work (executions, claims, record writes) kept it from running ready callbacks, such
as a peer's probe answer or the lease keepalive. The worst lag of each step feeds
:class:`peerd.core.admission.AdaptiveLimit`, whose limit becomes the node-wide pool's limit
(never above ``--max-concurrent-runs``). The engine admits new runs only up to a multiple of
that limit (:mod:`peerd.engine.facade`), so a node that cannot keep up claims less, instead of
queueing work it cannot run while its probes and keepalives starve.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from peerd.clock import Clock
from peerd.core.admission import AdaptiveLimit
from peerd.runner.pools import PriorityLimiter

log = structlog.get_logger("peerd.engine")

TICK_S = 0.05
"""How often the lag is sampled (seconds)."""
WINDOW_S = 0.25
"""The limit adapts once per window, to the worst lag sampled in it (seconds)."""


class Backpressure:
    """Adapts the node-wide execution limit to the event loop's lag.

    Args:
        node_pool: the node-wide pool, whose limit this sets.
        maximum: the configured limit (``max_concurrent_runs``).
        waiting: ``() -> bool``: whether runs or due tasks wait for room.
        clock: the sleeps and the monotonic time of the lag measurement.
        node_id: for log lines.
    """

    def __init__(
        self,
        node_pool: PriorityLimiter,
        maximum: int,
        waiting: Callable[[], bool],
        clock: Clock,
        node_id: str,
    ) -> None:
        self.node_pool = node_pool
        self.limit = AdaptiveLimit(maximum)
        node_pool.set_limit(self.limit.limit)
        self.waiting = waiting
        self.clock = clock
        self.lag_s = 0.0
        """The worst lag of the last step (seconds)."""
        self._worst_s = 0.0
        self._window_start_s = clock.monotonic()
        self._log = log.bind(node_id=node_id)

    def set_maximum(self, maximum: int) -> None:
        """A reloaded ``max_concurrent_runs``."""
        self.limit.set_maximum(maximum)
        self.node_pool.set_limit(self.limit.limit)

    async def run(self) -> None:
        """Sample the lag and adapt the limit until cancelled (supervised by the engine)."""
        while True:
            start = self.clock.monotonic()
            await self.clock.sleep(TICK_S)
            now = self.clock.monotonic()
            self._worst_s = max(self._worst_s, now - start - TICK_S)
            if now - self._window_start_s < WINDOW_S:
                continue
            self.lag_s, self._worst_s, self._window_start_s = self._worst_s, 0.0, now
            before = self.limit.limit
            after = self.limit.step(self.lag_s, self.waiting())
            if after != before:
                self.node_pool.set_limit(after)
                if after < before:
                    self._log.info(
                        "execution_limit_lowered", limit=after, loop_lag_ms=round(self.lag_s * 1000)
                    )
