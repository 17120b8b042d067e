"""Owner-lost recovery: runs left CLAIMED or RUNNING by a claimant whose lease is gone.

Such a run's record can no longer be written by its claimant (updates are fenced on the lease it
claimed under), so the task's current owner resolves it, per ``TaskSpec.on_owner_lost``:

* RETRY (default): take the record over (:meth:`peerd.coord.ledger.Ledger.take_over`: only if
  the old lease is gone and the record is unchanged since read) as the next attempt, with a new
  fencing token and the same idempotency key, and run it here;
* MARK_LOST: record it LOST with the reason (and trigger the task's compensation task).

Candidates ("orphans") come from the newest records read when a task is acquired and from a
rescan of every owned task when a member's lease disappears (a run it claimed, e.g. a manual
one, may be of a task it did not own). An orphan is resolved only once its claimant's lease is
gone from this node's member view; a claimant that comes back keeps its run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import structlog

from peerd.clock import Clock
from peerd.coord.ledger import Ledger
from peerd.core.budget import MAX_TXN_OPS
from peerd.core.records import UNFINISHED, marked_lost, owner_lost_retry, rfc3339, run_key
from peerd.engine.batches import in_batches
from peerd.engine.lock import Lease
from peerd.engine.registry import RunKey, RunRegistry
from peerd.errors import PeerdError, ResourceExhausted, Unavailable
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

ORPHAN_CHECK_S = 0.5
"""How often runs of a possibly lost owner are re-checked (seconds)."""
SCAN_IN_FLIGHT = 4
"""Rescan reads (of up to 128 tasks each) in flight at a time. A rescan after a member's lease
vanished reads every owned task (33,000 at 100,000 tasks on 3 nodes). One read per task, 32 in
flight, all gathered at once (an asyncio task per owned task created in one callback), took
the CPU a restarting node needed: its restart fell from 7.5-8.4 s to 2.5-3.5 s at 20,000 tasks
with this and smaller handoff requests (docs/performance.md, Part 2)."""
RECENT_SCAN = 20
"""Run records read per task on a rescan (the newest; older unfinished runs are resolved when
the task is next acquired)."""


class OwnerLostRecovery:
    """Finds and resolves the runs of lost claimants for the tasks this node owns.

    Args:
        ledger: the run ledger.
        lease: this node's lease (take-overs are fenced on it).
        registry: this node's runs (never orphans).
        owns: ``(task_id) -> bool``, whether the task is owned here (no decode).
        owned_spec: ``(task_id) -> spec`` of an owned task (decoded on each call), or None
            when not owned.
        member_leases: ``() -> {node_id: lease_id}`` in this node's member view.
        can_claim: ``() -> bool``, whether this node may write claims now.
        retry: ``(spec, record)`` runs a taken-over record here (spawns it).
        compensate: ``(on_failure_task_id, lost_record)``.
        clock: sleeps.
    """

    def __init__(
        self,
        node_id: str,
        ledger: Ledger,
        lease: Lease,
        registry: RunRegistry,
        owns: Callable[[str], bool],
        owned_spec: Callable[[str], pb.TaskSpec | None],
        member_leases: Callable[[], Mapping[str, int]],
        can_claim: Callable[[], bool],
        retry: Callable[[pb.TaskSpec, pb.RunRecord], None],
        compensate: Callable[[str, pb.RunRecord], None],
        clock: Clock,
    ) -> None:
        self.node_id = node_id
        self.ledger = ledger
        self.lease = lease
        self.registry = registry
        self.owns = owns
        self.owned_spec = owned_spec
        self.member_leases = member_leases
        self.can_claim = can_claim
        self.retry = retry
        self.compensate = compensate
        self.clock = clock
        self._orphans: dict[RunKey, tuple[pb.RunRecord, int]] = {}
        self._to_scan: set[str] = set()
        self._known: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._log = log.bind(node_id=node_id)

    def note(self, recent: list[tuple[pb.RunRecord, int]]) -> None:
        """Remember unfinished runs (with their mod revisions) claimed by another incarnation:
        another node, or this node under an earlier lease."""
        for rec, mod in recent:
            if rec.status not in UNFINISHED:
                continue
            key = run_key(rec)
            mine = rec.node_id == self.node_id and rec.claim_lease_id == self.lease.lease_id
            if not mine and self.registry.get(key) is None:
                self._orphans[key] = (rec, mod)
                self._wake.set()

    def members_changed(self, owned: list[str]) -> None:
        """After a change of the member view: when a member's lease disappeared, rescan the
        recent runs of every owned task (``owned``)."""
        leases = dict(self.member_leases())
        gone = [n for n, lease in self._known.items() if leases.get(n) != lease]
        self._known = leases
        if gone:
            self._to_scan.update(owned)
        self._wake.set()

    def claimant_alive(self, rec: pb.RunRecord) -> bool:
        """Whether the claimant of ``rec`` still holds the lease it claimed under."""
        lease = self.member_leases().get(rec.node_id)
        if lease is None:
            return False
        return not rec.claim_lease_id or lease == rec.claim_lease_id

    async def run(self) -> None:
        """Resolve orphans until cancelled (supervised by the engine)."""
        while True:
            if not self._orphans and not self._to_scan:
                self._wake.clear()
                await self._wake.wait()
            if self._to_scan and self.can_claim():
                await self._scan()  # a failed read keeps its tasks to scan
            for key, (rec, mod) in list(self._orphans.items()):
                if not self.owns(rec.task_id) or self.registry.get(key) is not None:
                    self._orphans.pop(key, None)  # not ours to resolve, or ours after all
                    continue
                if self.claimant_alive(rec) or not self.can_claim():
                    continue
                spec = self.owned_spec(rec.task_id)
                if spec is None:
                    self._orphans.pop(key, None)
                    continue
                try:
                    await self._resolve(spec, rec, mod)
                except (Unavailable, ResourceExhausted):  # retried when etcd is back / has space
                    continue
                except PeerdError as exc:
                    self._log.error(
                        "owner_lost_resolve_failed", task_id=rec.task_id, error=str(exc)
                    )
                self._orphans.pop(key, None)
            await self.clock.sleep(ORPHAN_CHECK_S)

    async def _scan(self) -> None:
        """Read the newest records of every task to scan, :data:`MAX_TXN_OPS` tasks per read
        (:meth:`Ledger.recent_of`), :data:`SCAN_IN_FLIGHT` reads at a time. The tasks of a
        failed read stay to scan (next pass)."""
        ids = [t for t in self._to_scan if self.owns(t)]
        self._to_scan = set()

        async def scan(batch: list[str]) -> None:
            found = await self.ledger.recent_of(batch, RECENT_SCAN)
            for recent in found.values():
                self.note(recent)

        for batch, exc in await in_batches(ids, MAX_TXN_OPS, SCAN_IN_FLIGHT, scan):
            self._to_scan.update(batch)
            self._log.warning("orphan_scan_failed", tasks=len(batch), error=str(exc))

    async def _resolve(self, spec: pb.TaskSpec, rec: pb.RunRecord, mod: int) -> None:
        now = self.clock.now()
        mark = spec.on_owner_lost == pb.OWNER_LOST_MARK_LOST
        new = (
            marked_lost(rec, now)
            if mark
            else owner_lost_retry(rec, self.node_id, self.lease.lease_id, now)
        )
        token = await self.ledger.take_over(
            rec, mod, self.lease.member_key, self.lease.lease_id, new
        )
        if token is None:
            return
        fields = {
            "task_id": rec.task_id,
            "scheduled_at": rfc3339(rec.scheduled_at.ToDatetime()),
            "lost_node": rec.node_id,
        }
        if mark:
            self._log.warning("run_marked_lost", **fields)
            if spec.on_failure and spec.on_failure != spec.id:
                self.compensate(spec.on_failure, new)
            return
        new.fencing_token = token
        self._log.warning(
            "run_retried_owner_lost", **fields, attempt=new.attempt, fencing_token=token
        )
        self.retry(spec, new)
