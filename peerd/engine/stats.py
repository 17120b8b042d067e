"""What the engine counts and how busy it is, as plain values read at scrape time.

The engine's modules count their events in plain attributes (an integer add on the fire path,
no allocation): :class:`EngineStats` gathers them into one snapshot when someone asks (the
Prometheus collector in :mod:`peerd.http.metrics`, ``peerd cluster`` through :class:`Load`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolStats:
    """One concurrency pool (:class:`peerd.runner.pools.PriorityLimiter`) at one moment."""

    limit: int
    in_use: int
    waiting: int


@dataclass(frozen=True)
class EngineStats:
    """Counters since start and gauges now, of one node's engine.

    Attributes:
        claimed: scheduled slots claimed as CLAIMED (won claims; manual triggers not counted).
        lost_races: claims another claimant won.
        skipped: ``pb.SkipReason`` value -> slots recorded SKIPPED by this node.
        started: executor kind -> runs started (scheduled, manual and taken-over retries).
        owned: tasks this node owns now.
        backlog: due tasks waiting for room (unclaimed) now; > 0 means saturated.
        active: runs in the registry now (claimed, running, or being recorded).
        capacity: runs the node admits at most now.
        pools: pool name (``node``, ``http``, ``shell``, ``python``) -> its state now.
        ring_changes: times the set of owning members changed.
        handed_off: tasks handed to a new owner and acked.
        handoff_timeouts: tasks given up without an ack.
        handoffs_accepted: tasks taken over from a peer's handoff.
    """

    claimed: int
    lost_races: int
    skipped: Mapping[int, int]
    started: Mapping[str, int]
    owned: int
    backlog: int
    active: int
    capacity: int
    pools: Mapping[str, PoolStats]
    ring_changes: int
    handed_off: int
    handoff_timeouts: int
    handoffs_accepted: int


@dataclass(frozen=True)
class Load:
    """How busy the node is: runs in flight (due, running or being recorded; not those claimed
    ahead that wait for their fire instant), the admission limit they count against, and due
    tasks waiting for room."""

    active: int
    capacity: int
    backlog: int

    @property
    def saturated(self) -> bool:
        return self.backlog > 0
