"""Which revision peerd compacts etcd to, and when, and when a NOSPACE recovery may run (pure).

No I/O and no clock reads: every method takes ``now_s``, monotonic seconds (intervals only, so a
step of the wall clock changes nothing). :mod:`peerd.coord.compaction` does the etcd calls.

**Compaction plan** (after kube-apiserver, which compacts every 5 minutes to the revision it saw
one interval earlier: k8s.io/apiserver/pkg/storage/etcd3/compact.go). With a separate retention:

    every `interval`:  sample (now, current revision)
                       target = the newest sample taken at least `retention` ago
                       compact to target if it is above the last compacted revision,
                       then forget every sample up to target

A watcher therefore keeps at least `retention` of history to resume from (at most
`retention + interval`): a watch that falls further behind gets "compacted" and re-lists. A
new holder starts with no samples, so its first compaction comes `retention` (rounded up to a
whole number of intervals) after it took over.

**NOSPACE recovery backoff** (:class:`RecoveryBackoff`): the first recovery runs at once. If
the alarm comes back, the next one waits until :data:`MIN_GAP_S` after the end of the previous
one, then twice as long each time, up to :data:`MAX_GAP_S` — the live keyspace itself is over
the quota and defragmenting again cannot help; an operator must raise the quota or delete
tasks. A recovery that starts :data:`STABLE_S` or more after its wait was over (the alarm
stayed away that long) starts the sequence over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

MIN_GAP_S = 30.0
"""Wait before a second recovery when the alarm came back soon after the first (seconds)."""
MAX_GAP_S = 3600.0
"""Longest wait between two recoveries (seconds)."""
STABLE_S = 600.0
"""A recovery this long (seconds) after the previous one's wait was over is a fresh start."""


@dataclass(frozen=True)
class Sample:
    """etcd's store revision as seen at ``at_s`` (monotonic seconds)."""

    at_s: float
    revision: int


class CompactionPlan:
    """The holder's samples and the revision it last compacted to.

    Args:
        interval: time between samples (> 0); :attr:`interval_s` may be changed later.
        retention: minimum age of the revision compacted to (>= 0; 0 compacts to each sample
            as it is taken: no history is kept).

    Raises:
        ValueError: ``interval`` is not positive, or ``retention`` is negative.
    """

    def __init__(self, interval: timedelta, retention: timedelta) -> None:
        if interval <= timedelta(0) or retention < timedelta(0):
            raise ValueError(f"need interval > 0 and retention >= 0, got {interval}, {retention}")
        self.interval_s = interval.total_seconds()
        self.retention_s = retention.total_seconds()
        self.samples: list[Sample] = []
        self.compacted = 0
        self._next_s: float | None = None

    def seconds_until_due(self, now_s: float) -> float:
        """Seconds until the next sample is due (0 when it is due now)."""
        return 0.0 if self._next_s is None else max(0.0, self._next_s - now_s)

    def sample(self, now_s: float, revision: int) -> int | None:
        """Record ``revision`` as seen at ``now_s``; the next sample is due one interval later.

        Returns:
            The revision to compact to now, or None (no sample is old enough, or the newest
            old-enough one is not above the last compaction).
        """
        self.samples.append(Sample(now_s, revision))
        self._next_s = now_s + self.interval_s
        target = None
        for s in self.samples:
            if now_s - s.at_s >= self.retention_s:
                target = s.revision
        return target if target is not None and target > self.compacted else None

    def compacted_to(self, revision: int) -> None:
        """etcd is compacted up to ``revision`` (by us or anyone): forget the samples it covers."""
        self.compacted = max(self.compacted, revision)
        self.samples = [s for s in self.samples if s.revision > self.compacted]

    def reset(self) -> None:
        """Forget everything (this node no longer holds the compactor key)."""
        self.samples = []
        self.compacted = 0
        self._next_s = None


class RecoveryBackoff:
    """When the next NOSPACE recovery may start (see the module docstring)."""

    def __init__(self) -> None:
        self.streak = 0
        self._any = False  # a recovery has finished before
        self._next_s = 0.0

    def ready(self, now_s: float) -> bool:
        """True when a recovery may start at ``now_s``."""
        return now_s >= self._next_s

    def seconds_until_ready(self, now_s: float) -> float:
        """Seconds until :meth:`ready` (0 when it is ready now)."""
        return max(0.0, self._next_s - now_s)

    def started(self, now_s: float) -> None:
        """A recovery starts at ``now_s``: count it in the streak unless it starts at least
        :data:`STABLE_S` after the previous one's wait was over (the alarm stayed away)."""
        recent = self._any and now_s - self._next_s < STABLE_S
        self.streak = self.streak + 1 if recent else 0

    def finished(self, now_s: float) -> None:
        """The recovery ended at ``now_s``: the next one waits ``MIN_GAP_S * 2**streak`` (capped
        at :data:`MAX_GAP_S`) if the alarm returns."""
        self._any = True
        self._next_s = now_s + min(MAX_GAP_S, MIN_GAP_S * 2**self.streak)


def recovery_node(holder: str | None, members: Sequence[str]) -> str | None:
    """The node that recovers etcd from NOSPACE: the compactor key's holder; when nobody holds
    it (its holder died, and the key cannot be written while the alarm is on: etcd refuses the
    put), the smallest live member id. None when there is no member."""
    if holder:
        return holder
    return min(members) if members else None


def defragment_order(members: Sequence[tuple[int, int]]) -> list[int]:
    """Member ids in the order to defragment them: followers first, the leader last (a member
    being defragmented answers nothing, and a blocked leader stalls every write). ``members``:
    ``(member_id, leader_id)`` as each member reported; duplicates are dropped."""
    ids = list(dict.fromkeys(m for m, _ in members))
    leaders = {leader for _, leader in members}
    return sorted(ids, key=lambda m: m in leaders)
