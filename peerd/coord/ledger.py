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

Later updates of a record (RUNNING, SUCCEEDED, ...) are fenced on the create revision being the
token, so a record deleted by retention and re-claimed is never overwritten by an old claimant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peerd.coord.etcd import (
    Etcd,
    cmp_create_revision,
    cmp_lease,
    op_delete,
    op_put,
    op_txn,
    prefix_end,
    txn_request,
)
from peerd.coord.keys import Keys
from peerd.errors import LeaseLost
from peerd.v1 import scheduler_pb2 as pb

MAX_NESTED = 127


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
                    op_txn([cmp_create_revision(k, 0)], [op_put(k, r.SerializeToString())])
                    for k, r in zip(keys, records, strict=True)
                ],
            )
        )
        if not resp.succeeded:
            raise LeaseLost("member key is not on this node's lease")
        revision = int(resp.header.revision)
        return [
            ClaimResult(r.task_id, _ms(r), bool(op.response_txn.succeeded), revision)
            for r, op in zip(records, resp.responses, strict=True)
        ]

    async def update(self, records: Sequence[pb.RunRecord]) -> int:
        """Write each record if its run key still has ``create_revision == fencing_token``.

        Several records for the same run (e.g. RUNNING then SUCCEEDED) are coalesced: the last
        one in ``records`` wins. (etcd rejects a transaction naming one key twice.)

        Returns:
            How many records were written (a record whose claim was trimmed or re-claimed is not).
        """
        latest: dict[bytes, pb.RunRecord] = {}
        for r in records:
            latest[self.keys.run(r.task_id, _ms(r))] = r
        items = list(latest.items())
        written = 0
        for start in range(0, len(items), MAX_NESTED):
            ops = [
                op_txn(
                    [cmp_create_revision(key, r.fencing_token)],
                    [op_put(key, r.SerializeToString())],
                )
                for key, r in items[start : start + MAX_NESTED]
            ]
            resp = await self.etcd.txn(txn_request([], ops))
            written += sum(bool(op.response_txn.succeeded) for op in resp.responses)
        return written

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
