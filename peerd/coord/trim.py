"""Trimming run ledgers: finished records beyond ``runs_keep`` per task, or older than a cutoff.

One trim pass covers many tasks in a few etcd calls, whatever their number (a node firing 330
slots/s trims ~17 ledgers a second; one call or two per ledger cost each one grpc.aio's Python
layer, measured in issue 13's third round, docs/performance.md):

    1. read-only txn, 2 ops per task (up to 64 tasks, fewer when keep is large):
         range runs/<task>/ descending, keys only, limit keep+1   -> count, the (keep+1)th newest
         range [runs/<task>/, runs/<task>/<cutoff>), count only   -> records older than the cutoff
    2. read-only txn, one range per task with something to delete (up to TRIM_ROWS_PER_READ
       records per txn): [runs/<task>/, end) ascending, at most TRIM_READ_LIMIT records, where
       end = past the (keep+1)th newest key, or the cutoff, whichever is later
    3. delete txns: each finished record read, compared on its mod revision (128 per txn)

Safety is the single-task trim's: the range of each task is bounded by a *key* read in step 1,
never by a count, so records another trimmer deleted meanwhile cannot shift the bound into the
newest ``keep``; records still CLAIMED or RUNNING are never deleted; a record updated after it
was read fails its compare and stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peerd.coord.etcd import Etcd, prefix_end
from peerd.coord.etcd_messages import (
    cmp_mod_revision,
    op_delete,
    op_get,
    op_range,
    op_txn,
    range_request,
    txn_request,
)
from peerd.coord.keys import Keys
from peerd.core.budget import MAX_TXN_OPS, pack
from peerd.core.records import FINAL
from peerd.v1 import scheduler_pb2 as pb

TRIM_READ_LIMIT = 256
"""Oldest records read per task and pass; a longer backlog is trimmed over several passes."""
TRIM_ROWS_PER_READ = 1024
"""Records read per read transaction of step 2 at most (bounds the answer's size: a record is
~200-400 bytes), unless one task alone has more (its own transaction)."""
_TASKS_PER_COUNT = MAX_TXN_OPS // 2
"""Tasks per counting transaction at most (step 1: two range reads each)."""
COUNT_KEYS_PER_READ = 8192
"""Keys a counting transaction reads at most (``keep + 1`` per task; a key is ~40-60 bytes):
with a large ``runs_keep`` fewer tasks go in each, down to one, so the answer stays far below
the client's message limit (64 tasks x 100,001 keys would be ~300 MB)."""


async def trim_ledgers(
    etcd: Etcd, keys: Keys, task_ids: Sequence[str], keep: int, before_ms: int = 0
) -> int:
    """Delete the finished records of each of ``task_ids`` beyond the newest ``keep`` and those
    of slots before ``before_ms`` (epoch ms; 0 = no age limit), in the steps of the module
    docstring. Returns how many records were deleted.

    Raises:
        TypeError: ``task_ids`` is one ``str`` (a sequence of task ids is expected).
        Unavailable: etcd did not answer (what was deleted before stays deleted; the rest is
            trimmed by a later pass).
    """
    if isinstance(task_ids, str):
        raise TypeError("task_ids: a sequence of task ids, not one str")
    ids = list(dict.fromkeys(task_ids))
    spans: list[tuple[bytes, bytes, int]] = []
    per_count = max(1, min(_TASKS_PER_COUNT, COUNT_KEYS_PER_READ // (keep + 1)))
    for start in range(0, len(ids), per_count):
        spans += await _spans(etcd, keys, ids[start : start + per_count], keep, before_ms)
    done: list[tuple[bytes, int]] = []
    for batch in _read_batches([rows for _, _, rows in spans]):
        ops = [op_get(first, end, limit=TRIM_READ_LIMIT) for first, end, _ in spans[batch]]
        resp = await etcd.txn(txn_request([], ops))
        for op in resp.responses:
            for kv in op.response_range.kvs:
                if pb.RunRecord.FromString(kv.value).status in FINAL:
                    done.append((bytes(kv.key), int(kv.mod_revision)))
    deleted = 0
    for deletes in pack([1] * len(done), MAX_TXN_OPS):
        part = done[deletes.start : deletes.stop]
        ops = [op_txn([cmp_mod_revision(key, rev)], [op_delete(key)]) for key, rev in part]
        resp = await etcd.txn(txn_request([], ops))
        deleted += sum(bool(op.response_txn.succeeded) for op in resp.responses)
    return deleted


async def _spans(
    etcd: Etcd, keys: Keys, ids: list[str], keep: int, before_ms: int
) -> list[tuple[bytes, bytes, int]]:
    """Step 1 for up to :data:`_TASKS_PER_COUNT` tasks: ``(first key, end, records at most)`` of
    each task with records to examine."""
    ops: list[Any] = []
    for task_id in ids:
        prefix = keys.runs(task_id)
        newest = range_request(
            prefix, prefix_end(prefix), limit=keep + 1, descending=True, keys_only=True
        )
        ops.append(op_range(newest))
        if before_ms > 0:
            aged = range_request(prefix, keys.run(task_id, before_ms), count_only=True)
            ops.append(op_range(aged))
    resp = await etcd.txn(txn_request([], ops))
    step = 2 if before_ms > 0 else 1
    out = []
    for i, task_id in enumerate(ids):
        newest = resp.responses[i * step].response_range
        aged = int(resp.responses[i * step + 1].response_range.count) if step == 2 else 0
        prefix = keys.runs(task_id)
        end = keys.run(task_id, before_ms) if aged else prefix
        beyond = int(newest.count) - keep
        if beyond > 0:  # delete up to and including the (keep+1)th newest key
            end = max(end, bytes(newest.kvs[keep].key) + b"\0")
        if end > prefix:
            out.append((prefix, end, min(TRIM_READ_LIMIT, max(beyond, aged))))
    return out


def _read_batches(rows: list[int]) -> list[slice]:
    """Consecutive batches of step 2's reads: at most :data:`TRIM_ROWS_PER_READ` records and
    :data:`~peerd.core.budget.MAX_TXN_OPS` reads each (a task alone may exceed the rows)."""
    out: list[slice] = []
    start = total = 0
    for i, n in enumerate(rows):
        if i > start and (total + n > TRIM_ROWS_PER_READ or i - start >= MAX_TXN_OPS):
            out.append(slice(start, i))
            start, total = i, 0
        total += n
    if start < len(rows):
        out.append(slice(start, len(rows)))
    return out
