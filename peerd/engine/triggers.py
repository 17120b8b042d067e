"""Manual triggers and compensation runs: a slot claimed *now*, outside the schedule.

A trigger (``TriggerTask``, a ``trigger`` on-failure action) claims slot = now (ms) with status
``manual`` through the same fenced claim as scheduled slots, so the task's overlap policy holds
for it too. Two triggers in the same millisecond would ask for the same slot: the later one
tries the next millisecond, up to :data:`TRIGGER_TRIES` times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from peerd.clock import Clock
from peerd.coord.ledger import ClaimResult
from peerd.core.overlap import first_mode
from peerd.core.records import from_ms, manual_record, slot_ms
from peerd.engine.claims import Claim, Claims
from peerd.engine.ports import NodeLease
from peerd.errors import LeaseLost, PeerdError, ResourceExhausted, Unavailable
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

TRIGGER_TRIES = 5
"""Manual slots tried (1 ms apart) when a trigger's slot is taken."""

Spawn = Callable[[pb.TaskSpec, pb.RunRecord, str | None, bytes | None], None]
"""``(spec, CLAIMED record, overlap mode, replaced lock holder) -> None``: start the run."""


class Triggers:
    """Claims and starts manual runs for one node.

    Args:
        node_id: this node.
        lease: this node's registration (claims need a live lease).
        claims: the claim batcher (the fenced claim transaction).
        spec_of: ``task id -> spec or None``, from the watched tasks (a compensation looks up
            the task it triggers).
        etcd_space: set while etcd has space (no claim is sent while it is clear).
        space_hint: ``() -> what to do about a full etcd`` (the ResourceExhausted detail).
        spawn: starts a claimed run (the registry's single entry point).
        clock: time source.
    """

    def __init__(
        self,
        node_id: str,
        lease: NodeLease,
        claims: Claims,
        spec_of: Callable[[str], pb.TaskSpec | None],
        etcd_space: asyncio.Event,
        space_hint: Callable[[], str],
        spawn: Spawn,
        clock: Clock,
    ) -> None:
        self.node_id = node_id
        self.lease = lease
        self.claims = claims
        self.spec_of = spec_of
        self.etcd_space = etcd_space
        self.space_hint = space_hint
        self.spawn = spawn
        self.clock = clock
        self.background: set[asyncio.Task[None]] = set()
        """Compensations in progress (the engine waits for them when it stops)."""
        self._log = log.bind(node_id=node_id)

    async def trigger(self, spec: pb.TaskSpec, cause: pb.RunRecord | None = None) -> pb.RunRecord:
        """Run ``spec`` once now on this node (slot = now, ``manual``), honouring the claim and
        the task's overlap policy: the answer is the CLAIMED record, or the SKIPPED one when the
        policy turned the trigger away. ``cause``: the failed run a compensation run is for.

        Raises:
            Unavailable: etcd unreachable, or this node has no live lease.
            ResourceExhausted: etcd's NOSPACE alarm is on.
        """
        if not self.lease.claim_ready.is_set():
            raise Unavailable("this node has no live membership lease; try another node")
        if not self.etcd_space.is_set():  # a claim is a nested txn: etcd would let it past
            raise ResourceExhausted("no node claims while the alarm is on", self.space_hint())
        now = self.clock.now()
        ms = slot_ms(now)
        answer: list[pb.RunRecord] = []

        def settled(claim: Claim, res: ClaimResult) -> None:
            if not res.claimed:
                return
            answer.append(claim.record)
            if claim.record.status == pb.CLAIMED:
                self.spawn(claim.spec, claim.record, claim.mode, res.replaced)

        for offset in range(TRIGGER_TRIES):
            rec = manual_record(
                spec.id,
                from_ms(ms + offset),
                self.node_id,
                self.lease.lease_id,
                now,
                priority=spec.priority,
                cause=cause,
            )
            try:
                await self.claims.claim([Claim(spec, rec, first_mode(spec.overlap))], settled)
            except LeaseLost as exc:
                self.lease.lease_lost()
                raise Unavailable("this node lost its membership lease; try again") from exc
            if answer:
                return answer[0]
        raise Unavailable("could not claim a slot for the trigger; try again")

    def compensate(self, task_id: str, cause: pb.RunRecord) -> None:
        """Trigger ``task_id`` with ``cause`` in the background (failures are logged)."""
        spec = self.spec_of(task_id)
        if spec is None:
            self._log.error("compensation_failed", task_id=cause.task_id, error="no such task")
            return

        async def go() -> None:
            try:
                run = await self.trigger(spec, cause=cause)
                self._log.info(
                    "compensation_triggered",
                    task_id=cause.task_id,
                    on_failure=task_id,
                    status=pb.RunStatus.Name(run.status),
                )
            except PeerdError as exc:
                self._log.error("compensation_failed", task_id=cause.task_id, error=str(exc))

        task = asyncio.get_running_loop().create_task(go())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
