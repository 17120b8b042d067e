"""The run ledger: ``runs/<task_id>/<slot_ms>`` holds one ``RunRecord`` per claimed slot.

Claim protocol (the safety mechanism of peerd; ownership is only an optimisation):

    outer txn:  compare  members/<me> is attached to my lease
                success  for each slot: nested txn
                             compare  create_revision(runs/<task>/<slot>) == 0
                             success  put runs/<task>/<slot> = RunRecord{CLAIMED, node, attempt}
                failure  (nothing)

A record of a slot computed with time-zone rules (``tzdata_version`` set: a cron schedule in a
zone that is not a fixed offset) also compares ``mod_revision(tzdata/agreed)`` in its nested
transaction: the revision at which the claimant saw its own tzdata version agreed
(:mod:`peerd.coord.tzdata`). Once the cluster agrees on other rules, no node claims such a slot
with the old ones, whatever its view; a claim refused that way is *fenced* (not settled: the
planner plans it again, and its owner changes as soon as the view catches up).

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

Overlap (tasks whose overlap policy is not ALLOW) uses a per-task lock key, ``active/<task>``,
written on the claimant's lease in the claim transaction itself, so "is a run of this task in
progress anywhere in the cluster?" is decided by etcd, not by one node's memory:

    LOCK     compare  create_revision(run) == 0  and  create_revision(active) == 0
             success  put run; put active = <run key|node|lease> (on the lease)
             failure  get run; get active          -> busy: the holder's run key
    REPLACE  compare  create_revision(run) == 0
             success  get active; put run; put active   -> replaced: the previous holder
    QUEUE    compare  create_revision(run) == 0  and  create_revision(queued) == 0
             success  put run; put queued (on the lease)  -> waits for the lock (BUFFER_ONE)

The lock is released (deleted, compared on its value) when the run ends, and vanishes with the
claimant's lease if the claimant dies. etcd evaluates every compare of a transaction, nested
ones included, against the state before the transaction, so a claim batch must hold at most one
lock-taking slot per task (the engine plans one slot per overlap-controlled task per round).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from peerd.coord.etcd import Etcd, prefix_end
from peerd.coord.etcd_messages import (
    TxnBuilder,
    cmp_create_revision,
    cmp_lease,
    cmp_mod_revision,
    cmp_value,
    op_delete,
    op_get,
    op_put,
    op_txn,
    range_kvs,
    txn_request,
)
from peerd.coord.etcd_values import KV
from peerd.coord.keys import Keys
from peerd.coord.trim import trim_ledgers
from peerd.core.budget import MAX_TXN_OPS, pack
from peerd.core.overlap import CLAIM_MODES, LOCK, QUEUE, REPLACE
from peerd.core.records import lock_value, ts_ms
from peerd.errors import LeaseLost
from peerd.v1 import scheduler_pb2 as pb

CLAIM_COST = {None: 1, LOCK: 2, QUEUE: 2, REPLACE: 3}
"""Size of a claim's nested transaction by claim mode (``max(compares, success ops, failure
ops)``, see :mod:`peerd.core.budget`): a plain claim 1, a lock or queue claim 2 (two compares,
two puts, two reads), a REPLACE claim 3 (read the lock, put the run, put the lock)."""
_COMPARES = {None: 1, LOCK: 2, QUEUE: 2, REPLACE: 1}
"""Compares of a claim's nested transaction by claim mode (before the tzdata fence)."""
UPDATE_COST = 2
"""Size of an update's nested transaction: two compares (lease, existence)."""
CLAIM_TIMEOUT_S = 0.5
"""Deadline of a claim transaction (seconds; a healthy etcd answers a 64-claim batch in ~8 ms,
bench/claims.py). Short, so an etcd leader change (writes forwarded to a dead leader hang ~7 s)
costs one retry instead of a misfire, and a node cut off from etcd stops claiming — and tells its
peers — within half a second. A claim that committed but timed out is recognised as ours on the
retry."""


@dataclass
class UpdateResult:
    """What :meth:`Ledger.update` did: records ``written``, and records ``rejected`` because
    their claimant no longer holds the lease they were claimed under (fenced off) or their key
    is gone."""

    written: list[pb.RunRecord] = field(default_factory=list)
    rejected: list[pb.RunRecord] = field(default_factory=list)


def claim_cost(record: pb.RunRecord, mode: str | None) -> int:
    """Size of the nested transaction claiming ``record`` (see :data:`CLAIM_COST`): one more
    compare when it is fenced on the agreed tzdata version (``record.tzdata_version`` set)."""
    cost = CLAIM_COST[mode]
    return max(cost, _COMPARES[mode] + 1) if record.tzdata_version else cost


@dataclass(frozen=True)
class ClaimResult:
    """Outcome of one slot in a claim batch: ``token`` is the fencing token when ``claimed``.

    ``busy`` (not claimed; LOCK or QUEUE mode): the lock (or queue) value of the run in the way.
    ``replaced`` (claimed in REPLACE mode): the lock value of the run this claim replaced, if any.
    ``fenced`` (not claimed): the cluster does not agree on the record's tzdata version (at the
    revision given), or none was given; nobody claimed the slot.
    """

    task_id: str
    slot_ms: int
    claimed: bool
    token: int
    busy: bytes | None = None
    replaced: bytes | None = None
    fenced: bool = False


class Ledger:
    """Claims and run records. Methods raise :class:`peerd.errors.Unavailable` when etcd cannot
    be reached."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    async def claim(
        self,
        member_key: bytes,
        lease_id: int,
        records: Sequence[pb.RunRecord],
        modes: Sequence[str | None] | None = None,
        tz_fence: int | None = None,
    ) -> list[ClaimResult]:
        """Claim one slot per record (``task_id`` + ``scheduled_at``) in one etcd transaction.

        Each record is written as given (normally status CLAIMED; SKIPPED for misfires).
        ``modes[i]`` (one of :data:`peerd.core.overlap.CLAIM_MODES`) says how record i treats
        its task's overlap lock; at most one non-None mode per task per call. A record with a
        ``tzdata_version`` is claimed only if ``tzdata/agreed`` is still at revision
        ``tz_fence`` (module docstring); with ``tz_fence`` None it is not sent at all, and
        comes back ``fenced``.

        Raises:
            LeaseLost: ``member_key`` is not attached to ``lease_id``; nothing was written.
            ValueError: the records do not fit one transaction (see :data:`CLAIM_COST` and
                :func:`peerd.core.budget.pack`), or ``modes`` has another length.
        """
        if not records:
            return []
        modes = list(modes) if modes is not None else [None] * len(records)
        if len(modes) != len(records):
            raise ValueError("one mode per record")
        cost = max(claim_cost(r, m) for r, m in zip(records, modes, strict=True))
        if len(records) + cost > MAX_TXN_OPS:
            raise ValueError(
                f"{len(records)} claims do not fit one transaction of {MAX_TXN_OPS} operations"
            )
        sent = [(r, m) for r, m in zip(records, modes, strict=True) if _sendable(r, tz_fence)]
        resp = None
        if sent:
            txn = TxnBuilder()
            txn.compare_lease(member_key, lease_id)
            for r, m in sent:
                self._add_claim(txn.nested(), r, m, lease_id, tz_fence)
            resp = await self.etcd.txn(txn.txn, timeout_s=CLAIM_TIMEOUT_S)
            if not resp.succeeded:
                raise LeaseLost("member key is not on this node's lease")
        answers = iter(resp.responses if resp is not None else [])
        revision = int(resp.header.revision) if resp is not None else 0
        results = []
        for r, mode in zip(records, modes, strict=True):
            if not _sendable(r, tz_fence):
                results.append(ClaimResult(r.task_id, _ms(r), False, 0, fenced=True))
                continue
            nested = next(answers).response_txn
            if nested.succeeded:
                replaced = None
                if mode == REPLACE:
                    prev = nested.responses[0].response_range.kvs
                    replaced = bytes(prev[0].value) if prev else None
                results.append(ClaimResult(r.task_id, _ms(r), True, revision, replaced=replaced))
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
                and existing.status == r.status
            )
            token = kvs[0].create_revision if ours else 0
            busy = None
            if not ours and existing is None and mode in (LOCK, QUEUE):
                held = nested.responses[1].response_range.kvs
                busy = bytes(held[0].value) if held else None
            # Refused with no record and no lock in the way: only the tzdata fence is left.
            fenced = existing is None and busy is None and bool(r.tzdata_version)
            results.append(ClaimResult(r.task_id, _ms(r), ours, token, busy=busy, fenced=fenced))
        return results

    def _add_claim(
        self,
        txn: TxnBuilder,
        r: pb.RunRecord,
        mode: str | None,
        lease_id: int,
        tz_fence: int | None,
    ) -> None:
        """Fill ``txn`` (a nested transaction) with the claim of ``r`` in ``mode``."""
        if mode is not None and mode not in CLAIM_MODES:
            raise ValueError(f"unknown claim mode {mode!r}")
        key = self.keys.run(r.task_id, _ms(r))
        txn.compare_create_revision(key, 0)
        if r.tzdata_version and tz_fence is not None:
            txn.compare_mod_revision(self.keys.tzdata_agreed, tz_fence)
        if mode is None:
            txn.put(key, r.SerializeToString())
            txn.get(key, failure=True)
            return
        holder = lock_value(key, r.node_id, lease_id)
        if mode == REPLACE:
            active = self.keys.active(r.task_id)
            txn.get(active)
            txn.put(key, r.SerializeToString())
            txn.put(active, holder, lease_id)
            txn.get(key, failure=True)
            return
        lock = self.keys.active(r.task_id) if mode == LOCK else self.keys.queued(r.task_id)
        txn.compare_create_revision(lock, 0)
        txn.put(key, r.SerializeToString())
        txn.put(lock, holder, lease_id)
        txn.get(key, failure=True)
        txn.get(lock, failure=True)

    async def acquire_lock(
        self, member_key: bytes, lease_id: int, rec: pb.RunRecord, from_queue: bool
    ) -> bytes | None:
        """Take the overlap lock of ``rec``'s task for that run (a buffered run whose turn may
        have come, or a retried run of a lost owner); ``from_queue`` also frees the queue key
        this run holds.

        Returns:
            None when the lock is now held for ``rec``, else the current holder's lock value.
        Raises:
            LeaseLost: this node's lease is gone.
        """
        key = self.keys.run(rec.task_id, _ms(rec))
        active = self.keys.active(rec.task_id)
        holder = lock_value(key, rec.node_id, lease_id)
        success = [op_put(active, holder, lease_id)]
        if from_queue:
            queued = self.keys.queued(rec.task_id)
            success.append(op_txn([cmp_value(queued, holder)], [op_delete(queued)]))
        resp = await self.etcd.txn(
            txn_request(
                [cmp_lease(member_key, lease_id)],
                [op_txn([cmp_create_revision(active, 0)], success, [op_get(active)])],
            )
        )
        if not resp.succeeded:
            raise LeaseLost("member key is not on this node's lease")
        nested = resp.responses[0].response_txn
        if nested.succeeded:
            return None
        kvs = nested.responses[0].response_range.kvs
        return bytes(kvs[0].value) if kvs else b""

    async def lock_holder(self, task_id: str) -> bytes | None:
        """The value of ``task_id``'s overlap lock, or None when no run holds it."""
        kv = await self.etcd.get(self.keys.active(task_id))
        return kv.value if kv is not None else None

    async def release_lock(self, rec: pb.RunRecord, lease_id: int) -> bool:
        """Delete the overlap lock (and a queue mark) of ``rec``'s task if ``rec``'s run holds
        it under ``lease_id``. Returns whether anything was released."""
        key = self.keys.run(rec.task_id, _ms(rec))
        holder = lock_value(key, rec.node_id, lease_id)
        ops = [
            op_txn([cmp_value(lock, holder)], [op_delete(lock)])
            for lock in (self.keys.active(rec.task_id), self.keys.queued(rec.task_id))
        ]
        resp = await self.etcd.txn(txn_request([], ops))
        return any(op.response_txn.succeeded for op in resp.responses)

    async def update(self, records: Sequence[pb.RunRecord]) -> UpdateResult:
        """Write each record if its claimant still holds the lease it claimed under
        (``claim_lease_id``; records without one: if the key's create revision is still the
        fencing token).

        Several records for the same run (e.g. RUNNING then SUCCEEDED) are coalesced: the last
        one in ``records`` wins. (etcd rejects a transaction naming one key twice.) Batches are
        sized from etcd's operation budget (:data:`UPDATE_COST`).

        Returns:
            The records written and those that were not (their claimant lost its lease, or the
            key was deleted): see :class:`UpdateResult`.
        Raises:
            Unavailable: etcd did not answer; records of the failed transaction may or may not
                have been written (writing them again is harmless).
        """
        latest: dict[bytes, pb.RunRecord] = {}
        for r in records:
            latest[self.keys.run(r.task_id, _ms(r))] = r
        items = list(latest.items())
        result = UpdateResult()
        for batch in pack([UPDATE_COST] * len(items), MAX_TXN_OPS):
            chunk = items[batch.start : batch.stop]
            txn = TxnBuilder()
            for key, r in chunk:
                self._add_fenced_put(txn.nested(), key, r)
            resp = await self.etcd.txn(txn.txn)
            for (_, r), op in zip(chunk, resp.responses, strict=True):
                (result.written if op.response_txn.succeeded else result.rejected).append(r)
        return result

    def _add_fenced_put(self, txn: TxnBuilder, key: bytes, r: pb.RunRecord) -> None:
        """Fill ``txn`` (a nested transaction) with the put of ``r`` at ``key``, fenced on the
        claimant's lease (or, without one, on the key's create revision)."""
        if r.claim_lease_id:
            txn.compare_lease(self.keys.member(r.node_id), r.claim_lease_id)
            txn.compare_exists(key)
        else:
            txn.compare_create_revision(key, r.fencing_token)
        txn.put(key, r.SerializeToString())

    async def recent(self, task_id: str, limit: int) -> list[tuple[pb.RunRecord, int]]:
        """The newest ``limit`` records of a task with their mod revisions, newest first (one
        range read: the cursor and any unfinished runs of a lost owner come from it)."""
        prefix = self.keys.runs(task_id)
        kvs, _, _ = await self.etcd.range(prefix, prefix_end(prefix), limit=limit, descending=True)
        return [(_record(kv), kv.mod_revision) for kv in kvs]

    async def recent_of(
        self, task_ids: Sequence[str], limit: int
    ) -> dict[str, list[tuple[pb.RunRecord, int]]]:
        """:meth:`recent` of each of up to :data:`~peerd.core.budget.MAX_TXN_OPS` tasks in one
        read-only transaction (one round trip instead of one per task: a rescan of every owned
        task after a member's lease vanished costs 1/128 of the calls). Tasks without records
        are absent.

        Raises:
            ValueError: more than ``MAX_TXN_OPS`` task ids.
        """
        if len(task_ids) > MAX_TXN_OPS:
            raise ValueError(f"at most {MAX_TXN_OPS} tasks per read, got {len(task_ids)}")
        out: dict[str, list[tuple[pb.RunRecord, int]]] = {}
        for task_id, kv in await self._newest(list(dict.fromkeys(task_ids)), limit):
            out.setdefault(task_id, []).append((_record(kv), kv.mod_revision))
        return out

    async def _newest(self, batch: list[str], limit: int) -> list[tuple[str, KV]]:
        """The newest ``limit`` run records of each task of ``batch`` (at most ``MAX_TXN_OPS``),
        newest first per task, in one read-only transaction of descending range reads."""
        ops = [
            op_get(p, prefix_end(p), limit=limit, descending=True)
            for p in (self.keys.runs(t) for t in batch)
        ]
        resp = await self.etcd.txn(txn_request([], ops))
        pairs = zip(batch, resp.responses, strict=True)
        return [(t, kv) for t, op in pairs for kv in range_kvs(op)]

    async def newest_of(self, task_ids: Sequence[str]) -> dict[str, pb.RunRecord]:
        """The record of each task's newest slot (fencing token filled in), by task id; tasks
        without records are absent. One read-only transaction of descending range reads with
        limit 1 per :data:`~peerd.core.budget.MAX_TXN_OPS` tasks, sent concurrently: a page of
        50 tasks is one round trip."""
        ids = list(dict.fromkeys(task_ids))
        batches = [ids[i : i + MAX_TXN_OPS] for i in range(0, len(ids), MAX_TXN_OPS)]
        out: dict[str, pb.RunRecord] = {}
        for found in await asyncio.gather(*(self._newest(b, 1) for b in batches)):
            for task_id, kv in found:
                out[task_id] = _record(kv)
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

    async def get(self, task_id: str, slot_ms: int) -> pb.RunRecord | None:
        """One run record, with its fencing token filled in from the create revision."""
        kv = await self.etcd.get(self.keys.run(task_id, slot_ms))
        if kv is None:
            return None
        return _record(kv)

    async def list(
        self, task_id: str, page_size: int, page_token: str
    ) -> tuple[list[pb.RunRecord], str]:
        """Run records newest slot first. ``page_token`` is the slot ms to continue below."""
        prefix = self.keys.runs(task_id)
        end = self.keys.run(task_id, int(page_token)) if page_token else prefix_end(prefix)
        kvs, _, _ = await self.etcd.range(prefix, end, limit=page_size + 1, descending=True)
        runs = [_record(kv) for kv in kvs[:page_size]]
        token = str(self.keys.slot_of(kvs[page_size - 1].key)) if len(kvs) > page_size else ""
        return runs, token

    async def trim(self, task_ids: Sequence[str], keep: int, before_ms: int = 0) -> int:
        """Delete finished records of each task of ``task_ids``: all but the newest ``keep``, and
        those of slots before ``before_ms`` (epoch ms; 0 = no age limit), in a few transactions
        for all the tasks (:func:`peerd.coord.trim.trim_ledgers`).

        Records still CLAIMED or RUNNING are never deleted, whatever their age or rank, and each
        delete is compared on the mod revision read, so a record updated meanwhile stays. At
        most :data:`~peerd.coord.trim.TRIM_READ_LIMIT` of the oldest records of a task are
        examined per call.

        Returns:
            How many records were deleted.
        Raises:
            TypeError: ``task_ids`` is one ``str``.
        """
        return await trim_ledgers(self.etcd, self.keys, task_ids, keep, before_ms)


def _sendable(record: pb.RunRecord, tz_fence: int | None) -> bool:
    """Whether a claim of ``record`` may be sent: it needs no tzdata fence, or has one."""
    return not record.tzdata_version or tz_fence is not None


def _ms(record: pb.RunRecord) -> int:
    return ts_ms(record.scheduled_at)


def _record(kv: KV) -> pb.RunRecord:
    """The run record stored in ``kv``, its fencing token filled in from the key's create
    revision when the record does not carry one."""
    rec = pb.RunRecord.FromString(kv.value)
    if not rec.fencing_token:
        rec.fencing_token = kv.create_revision
    return rec
