"""The overlap lock seen from a run: wait for it, release it, replace its holder.

The lock itself is a key in etcd, taken in the claim transaction or later by
:meth:`peerd.coord.ledger.Ledger.acquire_lock` (the protocol is drawn in the header of
:mod:`peerd.coord.ledger`); these are the waits around it. Polls use :data:`LOCK_POLL_S`: a run
waiting for the lock held by a run on this node waits for that run's task instead.

A run holds the lock on the lease it was claimed under. When this node's lease changes under a
running run (it expired while the process was stopped), the lock went with the old lease and
another node may run the task already, so such runs are cancelled
(:meth:`OverlapLocks.cancel_unlocked`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC
from typing import Protocol

import structlog

from peerd.clock import Clock
from peerd.coord.ledger import Ledger
from peerd.core.backoff import Backoff
from peerd.core.overlap import needs_lock
from peerd.core.records import describe_holder, lock_holder, lock_value, rfc3339
from peerd.engine.registry import Run, RunRegistry
from peerd.errors import LeaseLost, PeerdError
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

LOCK_POLL_S = 0.25
"""How often a run waiting for its task's overlap lock, or a REPLACE run watching whether it
was replaced, polls the lock key (seconds)."""
REPLACE_WAIT_S = 5.0
"""How long a REPLACE run waits for the run it replaced to stop before it starts anyway."""


class Lease(Protocol):
    """This node's current registration (a narrow view of Membership)."""

    @property
    def member_key(self) -> bytes: ...

    @property
    def lease_id(self) -> int: ...


class OverlapLocks:
    """Lock waits of the runs of one node (see the module docstring).

    Args:
        ledger: the run ledger (lock operations).
        lease: this node's lease.
        registry: the node's runs (local holders are waited on, not polled).
        claimant_alive: ``(record) -> bool``, whether the claimant of a record still holds the
            lease it claimed under, in this node's member view.
        clock: sleeps and deadlines.
    """

    def __init__(
        self,
        ledger: Ledger,
        lease: Lease,
        registry: RunRegistry,
        claimant_alive: Callable[[pb.RunRecord], bool],
        clock: Clock,
        node_id: str,
    ) -> None:
        self.ledger = ledger
        self.lease = lease
        self.registry = registry
        self.claimant_alive = claimant_alive
        self.clock = clock
        self._log = log.bind(node_id=node_id)

    async def wait(self, run: Run, from_queue: bool) -> bool:
        """Wait until ``run`` holds its task's lock. False when this node's lease changed
        meanwhile (the run is then a lost owner's, resolved by the task's owner)."""
        rec = run.record
        while True:
            if self.lease.lease_id != rec.claim_lease_id:
                return False
            try:
                holder = await self.ledger.acquire_lock(
                    self.lease.member_key, rec.claim_lease_id, rec, from_queue
                )
            except LeaseLost:
                return False
            except PeerdError as exc:  # etcd trouble: try again
                self._log.debug("lock_acquire_failed", task_id=rec.task_id, error=str(exc))
                holder = b""
            if holder is None:
                return True
            local = self._local_task(rec.task_id, holder)
            if local is not None:
                await asyncio.wait([local], timeout=1.0)
            else:
                await self.clock.sleep(LOCK_POLL_S)

    def _local_task(self, task_id: str, holder: bytes) -> asyncio.Task[None] | None:
        held = lock_holder(holder)
        run = self.registry.get((task_id, held[0])) if held is not None else None
        return run.task if run is not None else None

    async def release(self, run: Run) -> None:
        """Release the lock of ``run``; retried until done or until its lease is gone."""
        backoff = Backoff(0.1, 2.0)
        while self.lease.lease_id == run.lease_id:
            try:
                await self.ledger.release_lock(run.record, run.lease_id)
                return
            except PeerdError:
                await self.clock.sleep(backoff.next_delay_s())

    async def cancel_replaced(self, run: Run, holder: bytes) -> None:
        """REPLACE: stop the run that held the lock before ``run`` took it, then return. A run
        on this node is cancelled at once; one on another node cancels itself when it sees the
        lock change (within :data:`LOCK_POLL_S`); we wait up to :data:`REPLACE_WAIT_S`."""
        rec = run.record
        held = lock_holder(holder)
        if held is None:
            return
        slot = held[0]
        reason = f"replaced by slot {rfc3339(rec.scheduled_at.ToDatetime(UTC))} (overlap REPLACE)"
        local = self.registry.get((rec.task_id, slot))
        if local is not None and local.task is not None:
            self.registry.cancel(local.key, reason)
            await asyncio.wait([local.task], timeout=REPLACE_WAIT_S)
            return
        deadline = self.clock.monotonic() + REPLACE_WAIT_S
        while self.clock.monotonic() < deadline:
            try:
                old = await self.ledger.get(rec.task_id, slot)
            except PeerdError:
                await self.clock.sleep(0.1)
                continue
            if old is None or old.status not in (pb.CLAIMED, pb.RUNNING):
                return
            if not self.claimant_alive(old):
                return
            await self.clock.sleep(0.1)
        self._log.warning(
            "replace_wait_timed_out", task_id=rec.task_id, replaced=describe_holder(holder)
        )

    async def watch_replaced(self, run: Run) -> None:
        """REPLACE: cancel ``run`` when another run takes the task's lock (on any node)."""
        rec = run.record
        mine = lock_value(
            self.ledger.keys.run(rec.task_id, rec.scheduled_at.ToMilliseconds()),
            rec.node_id,
            rec.claim_lease_id,
        )
        while True:
            await self.clock.sleep(LOCK_POLL_S)
            try:
                holder = await self.ledger.lock_holder(rec.task_id)
            except PeerdError:
                continue
            if holder is not None and holder != mine:
                self.registry.cancel(
                    run.key, f"replaced by {describe_holder(holder)} (overlap REPLACE)"
                )
                return

    def cancel_unlocked(self) -> None:
        """Cancel runs of overlap-controlled tasks claimed under a lease this node no longer
        holds: their lock went with that lease (call after every change of this node's lease)."""
        lease = self.lease.lease_id
        for run in self.registry:
            if run.lease_id == lease or not needs_lock(run.spec.overlap):
                continue
            if self.registry.cancel(run.key, f"lease {run.lease_id:x} lost while running"):
                self._log.warning(
                    "run_cancelled_lease_lost", **run.describe(), lease_id=f"{run.lease_id:x}"
                )
