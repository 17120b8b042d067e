"""Read-only views of the run ledger for the API: records with their key metadata, and a watch.

:class:`peerd.coord.ledger.Ledger` is the engine's write path; this module serves AuditTask
(every record of a task with the create revision of its key) and WatchRuns (the newest records,
then every change as it happens). Records are returned as stored: ``fencing_token`` is *not*
filled in from the create revision here (:meth:`RunEntry.filled` does that), because the audit
compares the two.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import cast

import structlog

from peerd.clock import Clock, SystemClock
from peerd.coord.etcd import KV, Compacted, Etcd, Event, prefix_end, retry_backoff
from peerd.coord.keys import Keys
from peerd.errors import Unavailable
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.runs_view")

PAGE = 1000
"""Keys per range read when a whole prefix is read."""


@dataclass(frozen=True)
class RunEntry:
    """One run record with the metadata of its key (etcd revisions)."""

    key: bytes
    record: pb.RunRecord
    create_revision: int
    mod_revision: int

    def filled(self) -> pb.RunRecord:
        """A copy of the record with ``fencing_token`` set to the key's create revision when
        the stored record has none (what ListRuns returns)."""
        out = pb.RunRecord()
        out.CopyFrom(self.record)
        if not out.fencing_token:
            out.fencing_token = self.create_revision
        return out


def _entry(kv: KV) -> RunEntry:
    return RunEntry(kv.key, pb.RunRecord.FromString(kv.value), kv.create_revision, kv.mod_revision)


class RunsView:
    """Reads of ``runs/``. Methods raise :class:`peerd.errors.Unavailable` when etcd cannot be
    reached (the watch retries instead, see :meth:`watch`).

    Args:
        etcd: the etcd client.
        keys: the cluster keyspace.
        clock: what the watch's retries sleep on (default :class:`SystemClock`).
    """

    def __init__(self, etcd: Etcd, keys: Keys, clock: Clock | None = None) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock: Clock = clock if clock is not None else SystemClock()

    def _prefix(self, task_id: str | None) -> bytes:
        return self.keys.runs(task_id) if task_id else self.keys.runs_root

    async def _scan(self, prefix: bytes) -> tuple[list[KV], int]:
        """Every key under ``prefix`` in key order, read in pages of :data:`PAGE`; the revision
        is the one the first page was served at (later pages may be newer)."""
        end = prefix_end(prefix)
        start = prefix
        out: list[KV] = []
        first_revision = 0
        while True:
            kvs, _, revision = await self.etcd.range(start, end, limit=PAGE)
            first_revision = first_revision or revision
            out.extend(kvs)
            if len(kvs) < PAGE:
                return out, first_revision
            start = kvs[-1].key + b"\0"

    async def entries(self, task_id: str) -> tuple[list[RunEntry], int]:
        """Every record of one task, oldest slot first, and the revision of the read.

        Read in pages of :data:`PAGE` keys (a task holds about ``--runs-keep`` records).
        """
        kvs, revision = await self._scan(self.keys.runs(task_id))
        return [_entry(kv) for kv in kvs], revision

    async def newest(self, task_id: str | None, n: int) -> tuple[list[RunEntry], int]:
        """The newest ``n`` records and the revision to watch after (``revision + 1``).

        For one task, newest = latest slots (one range read, a consistent snapshot). For all
        tasks (``task_id`` None), newest = most recently written (highest mod revision), found
        by reading the whole ``runs/`` prefix in pages: cost proportional to the records kept.
        Either way the result is in the order the records were written/scheduled, oldest first.
        """
        prefix = self._prefix(task_id)
        if n <= 0:
            _, _, revision = await self.etcd.range(prefix, prefix_end(prefix), count_only=True)
            return [], revision
        if task_id:
            kvs, _, revision = await self.etcd.range(
                prefix, prefix_end(prefix), limit=n, descending=True
            )
            return [_entry(kv) for kv in reversed(kvs)], revision
        all_kvs, revision = await self._scan(prefix)
        top = heapq.nlargest(n, all_kvs, key=lambda kv: (kv.mod_revision, kv.key))
        return [_entry(kv) for kv in reversed(top)], revision

    async def watch(
        self,
        task_id: str | None,
        start_revision: int,
        seen: Mapping[bytes, int] | None = None,
    ) -> AsyncGenerator[RunEntry, None]:
        """Every put under ``runs/<task_id>/`` (all of ``runs/`` when ``task_id`` is None) from
        ``start_revision`` on, forever. Deletes (trims, task deletion) are not yielded.

        Args:
            task_id: one task, or None for every task.
            start_revision: first revision to report (the revision of a read, plus one).
            seen: key -> mod revision already delivered to the caller (e.g. from a paged read
                that went past ``start_revision``); older or equal versions are not repeated.

        When etcd compacted ``start_revision`` away (or the revision reached after a broken
        stream), the prefix is re-listed: records written since the last delivered revision are
        yielded (oldest write first), then the watch goes on from the fresh revision. A broken
        stream (etcd unreachable) is re-opened with backoff
        (:func:`peerd.coord.etcd.retry_backoff`: 0.2 s doubling to 2 s) from the last delivered
        revision, so nothing is lost or repeated. Ends only when the consumer
        stops iterating (or the task is cancelled).
        """
        prefix = self._prefix(task_id)
        skip: dict[bytes, int] = dict(seen or {})
        skip_until = max(skip.values(), default=0)
        done_rev = start_revision - 1  # every change up to here was delivered (or read before)
        cur_rev, cur_keys = 0, set[bytes]()  # revision being delivered (one txn has many keys)
        backoff = retry_backoff()

        def fresh(entry: RunEntry) -> bool:
            if entry.mod_revision <= done_rev:
                return False
            if entry.mod_revision == cur_rev and entry.key in cur_keys:
                return False
            return not (entry.key in skip and entry.mod_revision <= skip[entry.key])

        def delivered(entry: RunEntry) -> None:
            nonlocal done_rev, cur_rev, cur_keys, skip
            if entry.mod_revision != cur_rev:
                done_rev = max(done_rev, cur_rev)
                cur_rev, cur_keys = entry.mod_revision, set()
            cur_keys.add(entry.key)
            if skip and entry.mod_revision > skip_until:
                skip = {}

        while True:
            try:
                # watch_prefix is an async generator; closing it cancels the etcd watch.
                events = cast(
                    AsyncGenerator[Event, None],
                    self.etcd.watch_prefix(prefix, cur_rev or done_rev + 1),
                )
                async with contextlib.aclosing(events):
                    async for ev in events:
                        backoff.reset()
                        if ev.kind != "put":
                            continue
                        entry = _entry(ev.kv)
                        if fresh(entry):
                            delivered(entry)
                            yield entry
            except Compacted as exc:
                log.info("runs_watch_compacted_relisting", compact_revision=exc.compact_revision)
                kvs, revision = await self._relist(prefix)
                for kv in sorted(kvs, key=lambda kv: (kv.mod_revision, kv.key)):
                    entry = _entry(kv)
                    if fresh(entry):
                        delivered(entry)
                        yield entry
                # Pages after the first may be newer than `revision`: the watch from
                # revision + 1 repeats those changes, which `skip` drops.
                skip = {kv.key: kv.mod_revision for kv in kvs if kv.mod_revision > revision}
                skip_until = max(skip.values(), default=0)
                done_rev, cur_rev, cur_keys = revision, 0, set()
            except Unavailable as exc:
                log.info("runs_watch_broken_retrying", error=str(exc))
                await self.clock.sleep(backoff.next_delay_s())

    async def _relist(self, prefix: bytes) -> tuple[list[KV], int]:
        backoff = retry_backoff()
        while True:
            try:
                return await self._scan(prefix)
            except Unavailable:
                await self.clock.sleep(backoff.next_delay_s())
