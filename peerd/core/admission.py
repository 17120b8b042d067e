"""How many runs a node executes at once, adapted to its own event loop's lag (pure).

A node's event loop also answers peer probes and keeps its etcd lease alive. When executions
take all of its CPU, the loop falls behind: probe answers and keepalives wait, peers declare the
node dead although it is only busy, its lease may expire, and work moves and repeats. So the
node's execution concurrency is not a constant: :class:`AdaptiveLimit` lowers it while the loop
lags and raises it again while the loop keeps up and there is work waiting.

Algorithm: additive increase, multiplicative decrease (AIMD; Chiu and Jain, "Analysis of the
Increase and Decrease Algorithms for Congestion Avoidance in Computer Networks", 1989; the same
rule as TCP congestion control and Netflix's concurrency-limits ``AIMDLimit``), driven by the
loop lag measured since the last step:

=======================================  =================================================
condition at a step                      new limit
=======================================  =================================================
lag > ``high_lag_s``                     ``max(minimum, floor(limit * decrease))``
lag < ``low_lag_s`` and work waiting     ``min(maximum, limit + max(1, limit * increase))``
otherwise                                unchanged
=======================================  =================================================

The caller steps it once per measurement window (the worst lag of the window), so one slow
iteration lowers the limit once. The limit starts low (``start``) and grows while the loop keeps
up, like TCP's slow start, so a burst of due work at start-up (a thousand tasks created at once)
cannot flood the loop before the first measurement. The thresholds keep the lag well under the
peers' probe deadline (250 ms): above 100 ms is backed off, below 40 ms is room to grow. They
are not tighter on purpose: the lag also counts time the process waits for a CPU the machine
gives to others (on a 2-core box running 3 nodes, etcd and a receiver, the lag never fell under
10 ms, whatever the node's own load; ``bench/cluster.py --overload``), and a controller that
reacts to that only starves its own node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class AdaptiveLimit:
    """The execution limit of one node (see the module docstring).

    Attributes:
        maximum: the configured limit (``--max-concurrent-runs``); the limit never exceeds it.
        minimum: the limit never goes below this (clamped to ``maximum``).
        start: the first limit (clamped to ``minimum..maximum``).
        limit: the current limit.

    Raises:
        ValueError: ``maximum`` < 1.
    """

    maximum: int
    minimum: int = 16
    start: int = 32
    high_lag_s: float = 0.1
    low_lag_s: float = 0.04
    decrease: float = 0.75
    increase: float = 0.1
    limit: int = field(init=False)

    def __post_init__(self) -> None:
        if self.maximum < 1:
            raise ValueError(f"maximum must be >= 1, got {self.maximum}")
        self.minimum = max(1, min(self.minimum, self.maximum))
        self.limit = min(self.maximum, max(self.minimum, self.start))

    def set_maximum(self, maximum: int) -> None:
        """A new configured limit (hot reload); the current limit is clamped to it."""
        self.maximum = max(1, maximum)
        self.minimum = min(self.minimum, self.maximum)
        self.limit = min(self.limit, self.maximum)

    def step(self, lag_s: float, waiting: bool) -> int:
        """Adapt to ``lag_s`` (the loop's worst lag in the window just ended, seconds);
        ``waiting``: whether runs are waiting for room. Returns the new limit."""
        if lag_s > self.high_lag_s:
            self.limit = max(self.minimum, math.floor(self.limit * self.decrease))
        elif lag_s < self.low_lag_s and waiting:
            self.limit = min(self.maximum, self.limit + max(1, int(self.limit * self.increase)))
        return self.limit
