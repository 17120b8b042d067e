"""Overlap policy decisions (pure): how a slot's claim treats its task's lock, and what happens
when the lock is taken.

The lock itself lives in etcd (``active/<task>`` and ``queued/<task>`` on the claimant's lease;
see :mod:`peerd.coord.ledger`), so these decisions hold cluster-wide: a run in progress on any
node, including a previous owner's, turns the slot away.

====================  ==================  ===============================================
policy                first claim mode    lock held by another run
====================  ==================  ===============================================
ALLOW (default)       none                (no lock: runs overlap)
FORBID                LOCK                SKIPPED (``SKIP_OVERLAP``)
BUFFER_ONE            LOCK                claim in QUEUE mode; if a slot is already queued:
                                          SKIPPED (``SKIP_OVERLAP``)
REPLACE               REPLACE             (never busy: the claim takes the lock over and the
                                          previous run is cancelled, recorded CANCELLED)
====================  ==================  ===============================================
"""

from __future__ import annotations

from peerd.v1 import scheduler_pb2 as pb

LOCK = "lock"
"""Claim the slot only if no run holds the task's lock, and take the lock."""
REPLACE = "replace"
"""Claim the slot and take the lock over from whichever run holds it."""
QUEUE = "queue"
"""Claim the slot as the one waiting slot (BUFFER_ONE); it takes the lock when it is free."""
CLAIM_MODES = (None, LOCK, REPLACE, QUEUE)
"""How a claim treats the task's overlap lock; None = ignore it (ALLOW)."""

SKIP = "skip"
"""Record the slot SKIPPED with ``SKIP_OVERLAP``."""

_FIRST: dict[int, str] = {
    pb.OVERLAP_FORBID: LOCK,
    pb.OVERLAP_BUFFER_ONE: LOCK,
    pb.OVERLAP_REPLACE: REPLACE,
}


def effective(policy: int) -> int:
    """The policy in force: UNSPECIFIED means ALLOW."""
    return policy or pb.OVERLAP_ALLOW


def first_mode(policy: int) -> str | None:
    """Claim mode of a slot's first claim under ``policy`` (a ``pb.OverlapPolicy`` value)."""
    return _FIRST.get(effective(policy))


def when_busy(policy: int, mode: str | None) -> str:
    """What to do with a slot whose claim in ``mode`` found the lock (or queue) taken:
    :data:`QUEUE` (claim it again as the waiting slot) or :data:`SKIP`.

    Raises:
        ValueError: for a mode that cannot be busy (None, REPLACE).
    """
    if mode not in (LOCK, QUEUE):
        raise ValueError(f"a claim in mode {mode!r} is never turned away by the lock")
    if mode == LOCK and effective(policy) == pb.OVERLAP_BUFFER_ONE:
        return QUEUE
    return SKIP


def needs_lock(policy: int) -> bool:
    """Whether runs of a task under ``policy`` must hold its lock while they run."""
    return effective(policy) != pb.OVERLAP_ALLOW


__all__ = [
    "CLAIM_MODES",
    "LOCK",
    "QUEUE",
    "REPLACE",
    "SKIP",
    "effective",
    "first_mode",
    "needs_lock",
    "when_busy",
]
