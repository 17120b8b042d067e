"""Executing one claimed run: its overlap lock, its attempts under the retry policy, its record.

:meth:`Execution.execute` is what the run registry starts for every claimed run:

1. take the task's overlap lock if the claim did not (BUFFER_ONE's waiting slot, a retried run
   of a lost owner), cancel the run a REPLACE claim took the lock from, and watch for being
   replaced in turn;
2. wait for the slot's fire instant if it was claimed ahead of it, then run the attempts: each
   waits for a slot of its executor's pool (priority, then fire time),
   runs with the per-attempt timeout cut to the retry policy's overall deadline, and is
   recorded (``history`` keeps the earlier ones); failures the policy retries wait a full-jitter
   backoff on the clock;
3. record the final status (SUCCEEDED, FAILED, CANCELLED), trigger the task's compensation task
   after a final failure, and release the lock.

A run cancelled on purpose (``Run.cancel_reason``: replaced, lease lost) is recorded CANCELLED
with the reason; an unexpected error inside is recorded FAILED ("internal error"), never left
CLAIMED or RUNNING.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from google.protobuf import json_format

from peerd.clock import Clock
from peerd.core.overlap import QUEUE, effective, needs_lock
from peerd.core.records import (
    attempt_of,
    duration_of,
    rfc3339,
    set_duration,
    set_time,
    time_of,
)
from peerd.core.retry import NO_RETRY, Retry, attempt_timeout, next_attempt, retry_from_proto
from peerd.engine.lock import OverlapLocks
from peerd.engine.registry import Run, RunRegistry
from peerd.engine.writer import RecordWriter
from peerd.errors import PeerdError
from peerd.runner.base import FAILURE_CONFIG, FAILURE_TIMEOUT, Outcome
from peerd.runner.base import Execution as Attempt
from peerd.runner.pools import Pools
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

DEFAULT_TIMEOUT = timedelta(seconds=60)
"""Per-attempt timeout of a task that sets none."""


class Executors(Protocol):
    """Runs one attempt with the executor of the task's target kind."""

    async def run(self, spec: pb.TaskSpec, attempt: Attempt) -> Outcome: ...


class Execution:
    """Executes the runs of one node (see the module docstring).

    Args:
        node_id: this node.
        registry: the node's runs (state transitions, cancel reasons).
        executors: dispatch to the executor of a task's kind.
        pools: concurrency limits per executor kind and node-wide.
        locks: overlap lock waits.
        writer: where records go.
        compensate: ``(on_failure_task_id, failed_record) -> None``: triggers a compensation
            run; ``has_task(task_id)`` tells whether that task exists.
        clock: time source (record times, backoff sleeps).
    """

    def __init__(
        self,
        node_id: str,
        registry: RunRegistry,
        executors: Executors,
        pools: Pools,
        locks: OverlapLocks,
        writer: RecordWriter,
        compensate: Callable[[str, pb.RunRecord], None],
        has_task: Callable[[str], bool],
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.registry = registry
        self.executors = executors
        self.pools = pools
        self.locks = locks
        self.writer = writer
        self.compensate = compensate
        self.has_task = has_task
        self.clock = clock
        self.rng = rng or random.Random()
        self._log = log.bind(node_id=node_id)

    async def execute(self, run: Run) -> None:
        """Run one claimed slot to its final record (started by the run registry)."""
        locked = run.mode is not None or needs_lock(run.spec.overlap)
        watcher: asyncio.Task[None] | None = None
        if run.kind not in self.pools.kinds:  # a target this node has no executor for
            self._finish(run, pb.FAILED, f"no executor for target {run.kind or 'none'!r} here")
            return
        try:
            waits = locked and run.mode in (QUEUE, None)
            if waits and not await self.locks.wait(run, from_queue=run.mode == QUEUE):
                self.registry.transition(run, "abandon")  # the task's owner resolves it
                return
            if run.mode == QUEUE:
                run.record.error = ""  # no longer "buffered: waiting for ..."
            if run.replaced:
                await self.locks.cancel_replaced(run, run.replaced)
            if effective(run.spec.overlap) == pb.OVERLAP_REPLACE:
                watcher = asyncio.create_task(self.locks.watch_replaced(run))
            await self._attempts(run)
        except asyncio.CancelledError:
            if run.cancel_reason is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._finish(run, pb.CANCELLED, run.cancel_reason)
        except Exception as exc:  # a bug must not leave the record CLAIMED/RUNNING forever
            self._log.exception("run_crashed", task_id=run.spec.id, trace_id=run.trace_id)
            self._finish(run, pb.FAILED, f"internal error: {exc!r}")
        finally:
            if watcher is not None:
                watcher.cancel()
            if locked:
                await self.locks.release(run)

    def _retry_policy(self, spec: pb.TaskSpec) -> Retry:
        if not spec.HasField("retry"):
            return NO_RETRY
        try:
            return retry_from_proto(spec.retry)
        except PeerdError as exc:  # stored before a validation rule existed
            self._log.error("task_retry_policy_invalid", task_id=spec.id, error=str(exc))
            return NO_RETRY

    async def _attempts(self, run: Run) -> None:
        """Attempts of one slot under the task's retry policy; the final one decides."""
        spec, rec = run.spec, run.record
        slot = time_of(rec.scheduled_at)
        fire_at = time_of(rec.fire_at) if rec.HasField("fire_at") else slot
        retry = self._retry_policy(spec)
        per_attempt = duration_of(spec.timeout) if spec.HasField("timeout") else DEFAULT_TIMEOUT
        early_s = (fire_at - self.clock.now()).total_seconds()
        if early_s > 0:  # claimed ahead (peerd.engine.planner, "Claim-ahead"): wait to fire
            self.registry.waiting_instant(run, True)  # takes no room meanwhile (fireloop)
            try:
                await self.clock.sleep(early_s)
            finally:
                self.registry.waiting_instant(run, False)
        cause_json = ""
        if rec.HasField("cause"):
            cause_json = json_format.MessageToJson(
                rec.cause, preserving_proto_field_name=True, indent=None
            )
        while True:
            async with self.pools.slot(run.kind, spec.priority, fire_at.timestamp()):
                started = self.clock.now()
                self._start(run, started, fire_at)
                timeout = attempt_timeout(retry, per_attempt, fire_at, started)
                outcome = await self._one(run, Attempt(
                    spec.id, slot, rec.attempt, self.node_id, rec.fencing_token, timeout,
                    cause_json=cause_json, fire_at=fire_at,
                ))  # fmt: skip
            rec.http_status = outcome.http_status
            rec.ClearField("exit_code")
            if outcome.exit_code is not None:
                rec.exit_code = outcome.exit_code
            rec.output_tail = outcome.output_tail
            if outcome.succeeded:
                set_time(rec.finished_at, outcome.finished_at)
                self._finish(run, pb.SUCCEEDED, "")
                return
            now = self.clock.now()
            nxt = next_attempt(retry, rec.attempt, outcome.failure, fire_at, now, self.rng)
            if nxt is None:
                set_time(rec.finished_at, outcome.finished_at)
                if timeout < per_attempt and outcome.failure == FAILURE_TIMEOUT and retry.deadline:
                    error = (
                        f"overall deadline {retry.deadline.total_seconds():g}s reached: "
                        f"{outcome.error}"
                    )
                    self._finish(run, pb.CANCELLED, error, failed=True)
                else:
                    self._finish(run, pb.FAILED, outcome.error, failed=True)
                return
            wait_s = max(0.0, (nxt - now).total_seconds())
            self._wait_retry(run, outcome, nxt, wait_s)
            await self.clock.sleep(wait_s)

    def _start(self, run: Run, started: datetime, fire_at: datetime) -> None:
        rec = run.record
        if not rec.HasField("started_at"):
            set_duration(rec.lateness, started - fire_at)
        rec.status = pb.RUNNING
        set_time(rec.started_at, started)
        rec.ClearField("finished_at")
        rec.ClearField("next_attempt_at")
        self.registry.transition(run, "start")
        self.writer.progress(rec)

    async def _one(self, run: Run, attempt: Attempt) -> Outcome:
        started = self.clock.now()
        if attempt.timeout <= timedelta(0):
            return Outcome(False, started, started, error="no time left", failure=FAILURE_TIMEOUT)
        try:
            return await self.executors.run(run.spec, attempt)
        except Exception as exc:  # an executor bug must still leave a record
            self._log.exception("executor_crashed", task_id=run.spec.id, trace_id=run.trace_id)
            return Outcome(
                False,
                started,
                self.clock.now(),
                error=f"executor error: {exc!r}",
                failure=FAILURE_CONFIG,
            )

    def _wait_retry(self, run: Run, outcome: Outcome, at: datetime, wait_s: float) -> None:
        rec = run.record
        prev = attempt_of(rec, pb.FAILED, outcome.error)
        prev.finished_at.FromDatetime(outcome.finished_at)
        rec.history.append(prev)
        rec.attempt += 1
        rec.next_attempt_at.FromDatetime(at)
        rec.error = f"attempt {prev.attempt} failed ({outcome.failure}): {outcome.error}"
        self.writer.progress(rec, lasting_s=wait_s)
        self._log.info(
            "run_retrying",
            task_id=run.spec.id,
            scheduled_at=rfc3339(rec.scheduled_at.ToDatetime(UTC)),
            trace_id=run.trace_id,
            attempt=rec.attempt,
            at=rfc3339(at),
            error=outcome.error,
        )

    def _finish(self, run: Run, status: int, error: str, failed: bool = False) -> None:
        """Record the final status; trigger the compensation task after a failure."""
        spec, rec = run.spec, run.record
        rec.status = status  # type: ignore[assignment]
        rec.error = error
        rec.ClearField("next_attempt_at")
        if not rec.HasField("finished_at"):
            set_time(rec.finished_at, self.clock.now())
        if failed and spec.on_failure:
            if not self.has_task(spec.on_failure):
                rec.error += f" (on_failure task {spec.on_failure!r} does not exist)"
            else:
                self.compensate(spec.on_failure, rec)
        self.registry.transition(run, "finish")
        self.writer.final(run, rec)
        if status != pb.SUCCEEDED:
            self._log.info(
                "run_failed",
                task_id=spec.id,
                trace_id=run.trace_id,
                status=pb.RunStatus.Name(status),  # type: ignore[arg-type]
                fencing_token=rec.fencing_token,
                error=rec.error,
            )
