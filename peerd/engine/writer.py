"""The record writer: run record updates go to etcd in batches, and the ledger is trimmed.

Writes per fire. A run's claim writes its record once (CLAIMED). Its final status is written
once more. Progress records (RUNNING, waiting for a retry) are written only for runs still going
after :data:`PROGRESS_DELAY_S`: a quick run's final record supersedes its RUNNING record before
it is due, so a run that ends within the delay costs two writes in all (claim, final) instead of
three. Nothing depends on the RUNNING write for safety: an unfinished run is CLAIMED or RUNNING
either way, and a lost claimant's run is resolved the same way from both (see
:mod:`peerd.engine.recovery`).

Updates are keyed by run: a newer record for the same run replaces a pending one. The writer
flushes every due update in one :meth:`peerd.coord.ledger.Ledger.update` (transactions sized
from etcd's operation budget). A final record that etcd rejects because the claimant's lease is
gone (fenced off) is logged (``run_record_fenced_off``), never dropped silently; its run is
then the task owner's to resolve. While etcd is unreachable, updates stay pending and are
retried with backoff; a record that etcd refuses for another reason is isolated and logged
(``run_record_dropped``). The registry learns when a run's final record is written, and only
then lets the run go.

Trims delete finished records beyond ``runs_keep`` per task and older than ``runs_max_age``
(:meth:`peerd.coord.ledger.Ledger.trim`; records still CLAIMED or RUNNING are never deleted).
The ledgers asked for are trimmed together, at most every :data:`TRIM_INTERVAL_S`, by a loop
of their own (:meth:`RecordWriter.trims`), so a trim never holds up record updates.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from peerd.clock import Clock, wait_event
from peerd.coord.ledger import Ledger
from peerd.core.backoff import Backoff
from peerd.core.records import copy, rfc3339, run_key
from peerd.core.trace import trace_id
from peerd.engine.registry import Run, RunKey, RunRegistry
from peerd.errors import PeerdError, Unavailable
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

PROGRESS_DELAY_S = 1.0
"""A RUNNING (or retry-wait) record is written only if nothing newer for the run came within
this many seconds."""
MAX_BATCH = 512
"""Updates written per flush at most (several transactions)."""
GATHER_S = 0.025
"""After the first due update, the writer waits this long for more, so records of runs that end
together share a transaction (runs ending at a steady 400/s on a node: ~10 records per
transaction rather than ~4 with 10 ms; a final record reaches etcd up to 25 ms later)."""
TRIMS_PER_PASS = 128
"""Task ledgers trimmed per pass at most: the ledgers of tasks created together come due
together (every :data:`peerd.engine.fireloop.TRIM_EVERY` slots), and a sweep asks for every
owned task; such a wave is spread over passes a second apart. 128 a second is what a node asks
for at 2,560 fires/s (one per ``TRIM_EVERY`` = 20 slots; 17 at 330 fires/s); a sweep of 33,000
owned tasks takes ~4.5 minutes, within the sweep's interval unless ``runs_max_age`` is under
45 minutes (then ledgers keep a few minutes' records more than they should, until the pass)."""
TRIM_INTERVAL_S = 1.0
"""Trim passes start at most this often (seconds): the ledgers asked for meanwhile are trimmed
together, in a few etcd calls (:func:`peerd.coord.trim.trim_ledgers`) instead of one or two per
ledger (a node firing 330 slots/s asks for ~17 a second). A ledger may hold up to this long's
worth of records beyond ``runs_keep``."""


@dataclass
class _Pending:
    record: pb.RunRecord
    due_s: float
    run: Run | None
    """Set for a final record: the run to release once it is written."""


class RecordWriter:
    """Batched run record updates and ledger trims (see the module docstring).

    Args:
        ledger: where records go.
        registry: told when a run's final record is written (or fenced off).
        clock: time source (monotonic for due times; sleeps).
        retention: ``() -> (runs_keep, runs_max_age_s)``, read at each trim (hot reload).
        node_id: for log lines.
    """

    def __init__(
        self,
        ledger: Ledger,
        registry: RunRegistry,
        clock: Clock,
        retention: Callable[[], tuple[int, float]],
        node_id: str,
        progress_delay_s: float = PROGRESS_DELAY_S,
    ) -> None:
        self.ledger = ledger
        self.registry = registry
        self.clock = clock
        self.retention = retention
        self.progress_delay_s = progress_delay_s
        self._pending: dict[RunKey, _Pending] = {}
        self._trims: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._backoff = Backoff(0.1, 2.0)
        self._gathered = False
        self._trim_wake = asyncio.Event()
        self._asleep_until = -math.inf
        """Monotonic time the loop sleeps until (-inf while it is awake: it looks at every
        pending update before it sleeps again)."""
        self._log = log.bind(node_id=node_id)

    @property
    def pending(self) -> int:
        """Updates not yet written."""
        return len(self._pending)

    def progress(self, rec: pb.RunRecord, *, lasting_s: float = 0.0) -> None:
        """Write ``rec`` (RUNNING, or waiting for a retry) unless a newer record of the run
        comes within the progress delay; at once when the state is known to last longer than
        that (``lasting_s``: a retry backoff)."""
        key = run_key(rec)
        now = self.clock.monotonic()
        due = now if lasting_s > self.progress_delay_s else now + self.progress_delay_s
        current = self._pending.get(key)
        if current is not None and current.run is not None:
            return  # a final record is pending: never go back
        due = min(current.due_s, due) if current else due
        self._pending[key] = _Pending(copy(rec), due, None)
        self._kick(due)

    def final(self, run: Run, rec: pb.RunRecord) -> None:
        """Write the final record of ``run`` as soon as possible; the registry lets the run go
        once it is written (or fenced off)."""
        now = self.clock.monotonic()
        self._pending[run.key] = _Pending(copy(rec), now, run)
        self._kick(now)

    def trim(self, task_id: str) -> None:
        """Trim ``task_id``'s ledger at the next trim pass (:meth:`trims`)."""
        self._trims.add(task_id)
        self._trim_wake.set()

    def _kick(self, due_s: float) -> None:
        """Something is due at ``due_s`` (monotonic): wake the loop if it sleeps past that (a
        RUNNING record due in a second does not wake a writer that wakes before then anyway:
        one wake-up of the loop fewer per run started)."""
        self._idle.clear()
        if due_s < self._asleep_until:
            self._wake.set()

    async def run(self) -> None:
        """Flush due updates until cancelled (supervised by the engine)."""
        while True:
            now = self.clock.monotonic()
            due = [k for k, p in self._pending.items() if p.due_s <= now][:MAX_BATCH]
            if due and len(due) < MAX_BATCH and not self._gathered:
                self._gathered = True
                await self.clock.sleep(GATHER_S)
                continue
            self._gathered = False
            if not due:
                if not self._pending:
                    self._idle.set()
                self._wake.clear()
                wait = min((p.due_s for p in self._pending.values()), default=now + 60.0) - now
                self._asleep_until = now + wait
                try:
                    await wait_event(self.clock, self._wake, max(0.0, wait))
                finally:
                    self._asleep_until = -math.inf
                continue
            try:
                await self._flush(due)
                self._backoff.reset()
            except Unavailable as exc:
                delay = self._backoff.next_delay_s()
                self._log.warning(
                    "ledger_update_failed_retrying", error=str(exc), n=len(due), retry_in_s=delay
                )
                await self.clock.sleep(delay)

    async def _flush(self, keys: list[RunKey]) -> None:
        batch = [self._pending[k] for k in keys]
        try:
            result = await self.ledger.update([p.record for p in batch])
        except Unavailable:
            raise
        except PeerdError as exc:  # not transient: isolate the record(s) at fault
            self._log.error("ledger_update_batch_failed", error=str(exc), n=len(batch))
            for key in keys:
                await self._flush_one(key)
            return
        rejected = {run_key(r) for r in result.rejected}
        for key, p in zip(keys, batch, strict=True):
            if self._pending.get(key) is p:
                del self._pending[key]
            self._settle(p, written=key not in rejected)

    async def _flush_one(self, key: RunKey) -> None:
        p = self._pending[key]
        try:
            result = await self.ledger.update([p.record])
        except Unavailable:
            raise
        except PeerdError as exc:
            self._log.error(
                "run_record_dropped",
                task_id=key[0],
                scheduled_at=rfc3339(p.record.scheduled_at.ToDatetime()),
                status=pb.RunStatus.Name(p.record.status),
                error=str(exc),
            )
            written = False
        else:
            written = bool(result.written)
        if self._pending.get(key) is p:
            del self._pending[key]
        self._settle(p, written)

    def _settle(self, p: _Pending, written: bool) -> None:
        if not written:
            rec = p.record
            (self._log.warning if p.run is not None else self._log.info)(
                "run_record_fenced_off",
                task_id=rec.task_id,
                scheduled_at=rfc3339(rec.scheduled_at.ToDatetime()),
                trace_id=trace_id(rec.idempotency_key),
                status=pb.RunStatus.Name(rec.status),
                fencing_token=rec.fencing_token,
                claim_lease_id=f"{rec.claim_lease_id:x}",
                reason="the claimant's lease is gone (or the record was deleted); the task's "
                "owner resolves the run",
            )
        if p.run is not None:
            self.registry.transition(p.run, "written" if written else "dropped")

    async def trims(self) -> None:
        """Trim the ledgers asked for (:meth:`trim`), all of them in one pass at most every
        :data:`TRIM_INTERVAL_S`, until cancelled (supervised by the engine). A loop of its own:
        a pass never holds up the record updates (before, the writer trimmed between flushes,
        one ledger at a time, and the ledgers of tasks created together all came due together:
        a second or more without a flush, the finished runs filling the node's room)."""
        backoff = Backoff(0.1, 2.0)
        while True:
            self._trim_wake.clear()
            if not self._trims:
                await self._trim_wake.wait()
            try:
                await self._trim_all()
                backoff.reset()
            except Unavailable as exc:
                delay = backoff.next_delay_s()
                self._log.warning("ledger_trim_failed_retrying", error=str(exc), retry_in_s=delay)
                await self.clock.sleep(delay)
                continue
            await self.clock.sleep(TRIM_INTERVAL_S)

    async def _trim_all(self) -> None:
        trims = [self._trims.pop() for _ in range(min(TRIMS_PER_PASS, len(self._trims)))]
        keep, max_age_s = self.retention()
        before_ms = round((self.clock.now().timestamp() - max_age_s) * 1000) if max_age_s else 0
        try:
            await self.ledger.trim(trims, keep, before_ms)
        except Unavailable:
            self._trims.update(trims)
            raise
        except PeerdError as exc:
            self._log.error(
                "ledger_trim_failed", task_ids=trims[:10], tasks=len(trims), error=str(exc)
            )

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every pending update is written, at most ``timeout_s``; returns whether
        nothing is pending any more. Progress records become due at once."""
        now = self.clock.monotonic()
        for p in self._pending.values():
            p.due_s = min(p.due_s, now)
        self._kick(now)
        return await wait_event(self.clock, self._idle, timeout_s)
