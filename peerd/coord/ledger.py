"""The run ledger: ``runs/<task_id>/<slot_ms>`` holds one ``RunRecord`` per claimed slot.

Claim protocol (the safety mechanism of peerd; ownership is only an optimisation):

    outer txn:  compare  members/<me> is attached to my lease
                success  for each slot: nested txn
                             compare  create_revision(runs/<task>/<slot>) == 0
                             success  put runs/<task>/<slot> = RunRecord{CLAIMED, node, attempt}
                failure  (nothing)

A slot is claimed at most once, by a node that held a live lease at the moment of the claim. The
revision of the write (the create revision of the run key) is the claim's **fencing token**: it
increases with every claim, so a target can reject work from a stale claimant. Many slots go in
one outer transaction (up to 127 nested transactions; etcd's default ``--max-txn-ops`` is 128),
which is what makes thousands of claims per second possible from one process.

Later updates of a record (RUNNING, SUCCEEDED, ...) are fenced on the claimant still holding the
lease it claimed under (``claim_lease_id``): a node whose lease expired cannot write the record
any more. Its run then belongs to the task's new owner, which takes the record over
(:meth:`Ledger.take_over`) only once that lease is gone, and either retries it (a new attempt with
a new fencing token, the revision of the take-over) or marks it LOST.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peerd.coord.etcd import (
    Etcd,
    cmp_create_revision,
    cmp_exists,
    cmp_lease,
    cmp_mod_revision,
    op_delete,
    op_get,
    op_put,
    op_txn,
    prefix_end,
    txn_request,
)
from peerd.coord.keys import Keys
from peerd.errors import LeaseLost
from peerd.v1 import scheduler_pb2 as pb

MAX_NESTED = 127
"""Nested transactions per claim transaction. etcd (--max-txn-ops 128) lets a nested
transaction use only the operations its parent leaves: 128 - 127 = 1 compare each, which is what
a claim needs."""
UPDATE_CHUNK = 64
"""Nested transactions per update transaction: each has 2 compares (lease, existence), so the
outer one may hold at most 126; 64 leaves room."""
CLAIM_TIMEOUT_S = 0.5
"""Deadline of a claim transaction (seconds; a healthy etcd answers a 64-claim batch in ~8 ms,
bench/claims.py). Short, so an etcd leader change (writes forwarded to a dead leader hang ~7 s)
costs one retry instead of a misfire, and a node cut off from etcd stops claiming — and tells its
peers — within half a second. A claim that committed but timed out is recognised as ours on the
retry."""


@dataclass(frozen=True)
class ClaimResult:
    """Outcome of one slot in a claim batch: ``token`` is the fencing token when ``claimed``."""

    task_id: str
    slot_ms: int
    claimed: bool
    token: int


class Ledger:
    """Claims and run records. Methods raise :class:`peerd.errors.Unavailable` when etcd cannot
    be reached."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    async def claim(
        self, member_key: bytes, lease_id: int, records: Sequence[pb.RunRecord]
    ) -> list[ClaimResult]:
        """Claim one slot per record (``task_id`` + ``scheduled_at``) in one etcd transaction.

        Each record is written as given (normally status CLAIMED; SKIPPED for misfires).

        Raises:
            LeaseLost: ``member_key`` is not attached to ``lease_id``; nothing was written.
            ValueError: more than 127 records.
        """
        if len(records) > MAX_NESTED:
            raise ValueError(f"at most {MAX_NESTED} claims per transaction")
        if not records:
            return []
        keys = [self.keys.run(r.task_id, _ms(r)) for r in records]
        resp = await self.etcd.txn(
            txn_request(
                [cmp_lease(member_key, lease_id)],
                [
                    op_txn(
                        [cmp_create_revision(k, 0)], [op_put(k, r.SerializeToString())], [op_get(k)]
                    )
                    for k, r in zip(keys, records, strict=True)
                ],
            ),
            timeout_s=CLAIM_TIMEOUT_S,
        )
        if not resp.succeeded:
            raise LeaseLost("member key is not on this node's lease")
        revision = int(resp.header.revision)
        results = []
        for r, op in zip(records, resp.responses, strict=True):
            nested = op.response_txn
            if nested.succeeded:
                results.append(ClaimResult(r.task_id, _ms(r), True, revision))
                continue
            # Already claimed. If by this very incarnation, an earlier claim committed but its
            # answer was lost (a timeout during an etcd leader change): the slot is ours.
            kvs = nested.responses[0].response_range.kvs
            existing = pb.RunRecord.FromString(kvs[0].value) if kvs else None
            ours = (
                existing is not None
                and r.claim_lease_id != 0
                and existing.node_id == r.node_id
                and existing.claim_lease_id == r.claim_lease_id
                and existing.attempt == r.attempt
                and existing.status == pb.CLAIMED
            )
            token = kvs[0].create_revision if ours else 0
            results.append(ClaimResult(r.task_id, _ms(r), ours, token))
        return results

    async def update(self, records: Sequence[pb.RunRecord]) -> int:
        """Write each record if its claimant still holds the lease it claimed under
        (``claim_lease_id``; records without one: if the key's create revision is still the
        fencing token).

        Several records for the same run (e.g. RUNNING then SUCCEEDED) are coalesced: the last
        one in ``records`` wins. (etcd rejects a transaction naming one key twice.)

        Returns:
            How many records were written (not: records whose claimant lost its lease, or whose
            key was trimmed).
        """
        latest: dict[bytes, pb.RunRecord] = {}
        for r in records:
            latest[self.keys.run(r.task_id, _ms(r))] = r
        items = list(latest.items())
        written = 0
        for start in range(0, len(items), UPDATE_CHUNK):
            ops = [
                op_txn(self._fence(key, r), [op_put(key, r.SerializeToString())])
                for key, r in items[start : start + UPDATE_CHUNK]
            ]
            resp = await self.etcd.txn(txn_request([], ops))
            written += sum(bool(op.response_txn.succeeded) for op in resp.responses)
        return written

    def _fence(self, key: bytes, r: pb.RunRecord) -> list[Any]:
        if r.claim_lease_id:
            return [cmp_lease(self.keys.member(r.node_id), r.claim_lease_id), cmp_exists(key)]
        return [cmp_create_revision(key, r.fencing_token)]

    async def recent(self, task_id: str, limit: int) -> list[tuple[pb.RunRecord, int]]:
        """The newest ``limit`` records of a task with their mod revisions, newest first (one
        range read: the cursor and any unfinished runs of a lost owner come from it)."""
        prefix = self.keys.runs(task_id)
        kvs, _, _ = await self.etcd.range(prefix, prefix_end(prefix), limit=limit, descending=True)
        out = []
        for kv in kvs:
            rec = pb.RunRecord.FromString(kv.value)
            if not rec.fencing_token:
                rec.fencing_token = kv.create_revision
            out.append((rec, kv.mod_revision))
        return out

    async def take_over(
        self,
        old: pb.RunRecord,
        mod_revision: int,
        member_key: bytes,
        lease_id: int,
        new: pb.RunRecord,
    ) -> int | None:
        """Replace the record of a run whose claimant lost its lease.

        Succeeds only if this node still holds ``lease_id`` on ``member_key``, the old claimant's
        member key is no longer attached to the lease it claimed under, and the record is
        unchanged since it was read (``mod_revision``).

        Returns:
            The revision of the write (the new attempt's fencing token), or None if a condition
            failed (the old claimant came back, or someone else already took it over).
        """
        key = self.keys.run(new.task_id, _ms(new))
        compare = [cmp_lease(member_key, lease_id), cmp_mod_revision(key, mod_revision)]
        if old.claim_lease_id:
            compare.append(cmp_lease(self.keys.member(old.node_id), old.claim_lease_id, False))
        resp = await self.etcd.txn(txn_request(compare, [op_put(key, new.SerializeToString())]))
        return int(resp.header.revision) if resp.succeeded else None

    async def last_slot_ms(self, task_id: str) -> int | None:
        """The newest claimed slot of a task (epoch ms), or None: one range read, limit 1."""
        prefix = self.keys.runs(task_id)
        kvs, _, _ = await self.etcd.range(
            prefix, prefix_end(prefix), limit=1, descending=True, keys_only=True
        )
        return self.keys.slot_of(kvs[0].key) if kvs else None

    async def get(self, task_id: str, slot_ms: int) -> pb.RunRecord | None:
        """One run record, with its fencing token filled in from the create revision."""
        kv = await self.etcd.get(self.keys.run(task_id, slot_ms))
        if kv is None:
            return None
        rec = pb.RunRecord.FromString(kv.value)
        if not rec.fencing_token:
            rec.fencing_token = kv.create_revision
        return rec

    async def list(
        self, task_id: str, page_size: int, page_token: str
    ) -> tuple[list[pb.RunRecord], str]:
        """Run records newest slot first. ``page_token`` is the slot ms to continue below."""
        prefix = self.keys.runs(task_id)
        end = self.keys.run(task_id, int(page_token)) if page_token else prefix_end(prefix)
        kvs, _, _ = await self.etcd.range(prefix, end, limit=page_size + 1, descending=True)
        runs = []
        for kv in kvs[:page_size]:
            rec = pb.RunRecord.FromString(kv.value)
            if not rec.fencing_token:
                rec.fencing_token = kv.create_revision
            runs.append(rec)
        token = str(self.keys.slot_of(kvs[page_size - 1].key)) if len(kvs) > page_size else ""
        return runs, token

    async def trim(self, task_id: str, keep: int) -> int:
        """Delete all but the newest ``keep`` records of a task; returns how many were deleted."""
        prefix = self.keys.runs(task_id)
        kvs, count, _ = await self.etcd.range(
            prefix, prefix_end(prefix), limit=keep + 1, descending=True, keys_only=True
        )
        if count <= keep:
            return 0
        oldest_kept_plus_one = kvs[keep].key  # the newest record to delete
        resp = await self.etcd.txn(
            txn_request([], [op_delete(prefix, oldest_kept_plus_one + b"\0")])
        )
        return int(resp.responses[0].response_delete_range.deleted)


def _ms(record: pb.RunRecord) -> int:
    return record.scheduled_at.ToMilliseconds()
