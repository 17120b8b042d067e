"""Claiming: planned slots become run records in etcd, in batches fenced on this node's lease.

:meth:`Claims.claim` sends the claims in transactions sized from etcd's operation budget
(:func:`peerd.core.budget.pack` with :func:`peerd.coord.ledger.claim_cost`), at most
``claim_batch`` each. A claim of a task with an overlap policy that finds the task's lock taken
is followed up in a next round: BUFFER_ONE claims the slot again as the one waiting slot, FORBID
(or a full queue) records it SKIPPED naming the run in the way.

Every claim reports back once, when it has *settled* (``on_settled``): claimed by us, lost to
another claimant, or recorded SKIPPED after an overlap follow-up. The caller starts the runs of
claimed CLAIMED records at that moment and moves cursors over settled slots only, so a round
that fails after earlier batches committed loses nothing and repeats nothing: the committed
claims have settled and run; the failed ones are planned again. A claim the tzdata fence refused
(:mod:`peerd.coord.ledger`: the cluster agrees on other time-zone rules than this node's view
says) does not settle either: its slot is planned again, by whichever node owns it then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from peerd.coord.ledger import ClaimResult, Ledger, claim_cost
from peerd.core.budget import pack
from peerd.core.overlap import QUEUE, when_busy
from peerd.core.records import describe_holder, overlap_skipped
from peerd.engine.lock import Lease
from peerd.v1 import scheduler_pb2 as pb

SLOW_CLAIM_S = 0.2
"""A claim transaction unanswered after this long (seconds) reports ``on_slow`` (the node checks
its lease at once, :meth:`peerd.coord.membership.Membership.etcd_slow`) and goes on waiting up
to its own deadline (:data:`peerd.coord.ledger.CLAIM_TIMEOUT_S`)."""


@dataclass(eq=False)
class Claim:
    """One record to claim, the task it belongs to, and how it treats the overlap lock."""

    spec: pb.TaskSpec
    record: pb.RunRecord
    mode: str | None


Settled = Callable[[Claim, ClaimResult], None]
"""``on_settled(claim, result)``: a claim's final answer (see the module docstring)."""
Transaction = Callable[[float, Sequence[Claim], Sequence[ClaimResult]], None]
"""``fn(duration_s, claims, results)``: one claim transaction etcd answered."""


class Claims:
    """Claims slots for one node.

    Args:
        ledger: the run ledger.
        lease: this node's lease (every claim is fenced on it).
        batch: ``() -> claim_batch`` (at most this many claims per transaction; hot reload).
        now: the clock's ``now`` (time of overlap SKIPPED records).
        tz_fence: ``() -> the revision claims of zone-dependent slots are fenced on``, None
            while this node's tzdata is not the agreed version
            (:meth:`peerd.coord.tzdata.TzdataAgreement.fence`).
        monotonic: the clock's ``monotonic`` (claim transaction latency, :meth:`on_transaction`).
        on_slow: ``()``, called when a claim transaction has waited :data:`SLOW_CLAIM_S`.
    """

    def __init__(
        self,
        ledger: Ledger,
        lease: Lease,
        batch: Callable[[], int],
        now: Callable[[], object],
        tz_fence: Callable[[], int | None],
        monotonic: Callable[[], float],
        on_slow: Callable[[], None] = lambda: None,
    ) -> None:
        self.ledger = ledger
        self.on_slow = on_slow
        self.lease = lease
        self.batch = batch
        self.now = now
        self.tz_fence = tz_fence
        self.monotonic = monotonic
        self.lost_races = 0
        """Claims another claimant won (since start)."""
        self.fenced = 0
        """Claims the tzdata fence refused (since start)."""
        self._listeners: list[Transaction] = []

    def on_transaction(self, fn: Transaction) -> None:
        """Call ``fn(duration_s, claims, results)`` after every claim transaction that etcd
        answered (the claims sent and their results, in order)."""
        self._listeners.append(fn)

    async def claim(self, claims: Sequence[Claim], on_settled: Settled) -> None:
        """Claim ``claims`` and their overlap follow-ups; ``on_settled`` is called for each
        claim once, as soon as its answer is final.

        Raises:
            LeaseLost: this node's lease is gone (nothing of that transaction was written).
            Unavailable: etcd did not answer; claims not yet settled may or may not have been
                written (a retry recognises its own committed claims).
            PeerdError: etcd refused a transaction.
        """
        pending = list(claims)
        while pending:
            follow: list[Claim] = []
            for batch in pack([claim_cost(c.record, c.mode) for c in pending], self.batch()):
                part = pending[batch.start : batch.stop]
                started = self.monotonic()
                results = await self._send(part)
                for fn in self._listeners:
                    fn(self.monotonic() - started, part, results)
                for claim, res in zip(part, results, strict=True):
                    if res.fenced:
                        self.fenced += 1
                        continue
                    nxt = self._follow_up(claim, res)
                    if nxt is None:
                        on_settled(claim, res)
                    else:
                        follow.append(nxt)
            pending = follow

    async def _send(self, part: Sequence[Claim]) -> list[ClaimResult]:
        """One claim transaction; ``on_slow`` once it has waited :data:`SLOW_CLAIM_S`."""
        call = asyncio.ensure_future(
            self.ledger.claim(
                self.lease.member_key,
                self.lease.lease_id,
                [c.record for c in part],
                [c.mode for c in part],
                self.tz_fence(),
            )
        )
        try:
            done, _ = await asyncio.wait({call}, timeout=SLOW_CLAIM_S)
        except BaseException:
            call.cancel()
            raise
        if not done:
            self.on_slow()
        return await call

    def _follow_up(self, claim: Claim, res: ClaimResult) -> Claim | None:
        """The next round's claim for a claim the overlap lock turned away, else None."""
        rec = claim.record
        if res.claimed:
            rec.fencing_token = res.token
            return None
        if res.busy is None or rec.status != pb.CLAIMED:
            self.lost_races += 1
            return None
        if when_busy(claim.spec.overlap, claim.mode) == QUEUE:
            rec.error = f"buffered: waiting for {describe_holder(res.busy)} to finish"
            return Claim(claim.spec, rec, QUEUE)
        now = self.now()
        skip = overlap_skipped(rec, res.busy, claim.mode == QUEUE, now)  # type: ignore[arg-type]
        return Claim(claim.spec, skip, None)
