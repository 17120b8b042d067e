"""The run registry: one entry per run this node claimed, from claim to final record.

Every run this node executes enters here through :meth:`RunRegistry.spawn`, which registers it
and starts its execution in one step, and refuses a run it already holds. So a slot is started
at most once per claim on this node, however often a claim is answered as ours (an ambiguous
commit recognised on retry, a claim round retried after a later round failed). The entry stays
until the run's final record is in etcd (or was fenced off), so a claim cannot be answered as
ours again while its run is still being recorded.

Each entry moves through :mod:`peerd.core.runstate` (CLAIMED, RUNNING, FINISHING, DONE). The
registry is also the one place that knows what runs where on this node: the runs of a task (for
handoff and overlap), how many runs of each executor kind are in the node (admission), and why
a run was cancelled.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from peerd.core.records import idempotency_key, rfc3339, run_key
from peerd.core.runstate import RunState, step
from peerd.core.trace import trace_id
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.engine")

RunKey = tuple[str, int]
"""``(task_id, slot_ms)``."""


@dataclass(eq=False)
class Run:
    """One run on this node.

    Attributes:
        spec: the task as it was when the run was claimed.
        record: the run's current record (the execution updates it; copies go to the writer).
        mode: how the claim treated the task's overlap lock (:data:`peerd.core.overlap.
            CLAIM_MODES`); ``None`` for tasks without one.
        replaced: REPLACE claims: the lock value of the run this claim took the lock from.
        kind: the executor kind (``TaskSpec.target``), for admission per pool.
        state: see :mod:`peerd.core.runstate`.
        task: the asyncio task executing it.
        cancel_reason: set when the run is cancelled on purpose (REPLACE, lease lost); the
            execution records it as CANCELLED with this reason.
    """

    spec: pb.TaskSpec
    record: pb.RunRecord
    mode: str | None = None
    replaced: bytes | None = None
    kind: str = ""
    state: RunState | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    cancel_reason: str | None = None
    ahead: bool = False
    """Claimed ahead and waiting for its fire instant (:meth:`RunRegistry.waiting_instant`)."""
    key: RunKey = field(init=False, repr=False)
    """``(task_id, slot_ms)`` of :attr:`record` (fixed for the run's life)."""

    def __post_init__(self) -> None:
        self.key = run_key(self.record)

    @property
    def trace_id(self) -> str:
        """The W3C trace id of this slot, shared by all its attempts (:mod:`peerd.core.trace`);
        log lines about the run carry it."""
        return trace_id(idempotency_key(*self.key))

    @property
    def lease_id(self) -> int:
        """The lease the run was claimed under (its record updates are fenced on it)."""
        return self.record.claim_lease_id

    def describe(self) -> dict[str, Any]:
        """Log fields naming the run."""
        return {
            "task_id": self.record.task_id,
            "scheduled_at": rfc3339(self.record.scheduled_at.ToDatetime()),
            "fencing_token": self.record.fencing_token,
            "trace_id": self.trace_id,
        }


class RunRegistry:
    """The runs of this node (see the module docstring). Not thread-safe; one event loop."""

    def __init__(self) -> None:
        self._runs: dict[RunKey, Run] = {}
        self._kinds: Counter[str] = Counter()
        self._ahead: Counter[str] = Counter()
        self._listeners: list[Callable[[], None]] = []
        self._finish_listeners: list[Callable[[Run], None]] = []
        self._recorded_listeners: list[Callable[[Run, bool], None]] = []
        self.started: Counter[str] = Counter()
        """Runs started (registered and executing) per executor kind, since start."""

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(list(self._runs.values()))

    def get(self, key: RunKey) -> Run | None:
        return self._runs.get(key)

    def of_task(self, task_id: str) -> list[Run]:
        """The runs of ``task_id`` on this node."""
        return [r for r in self._runs.values() if r.key[0] == task_id]

    def active(self, kind: str | None = None) -> int:
        """Runs in the registry (claimed, running or being recorded), of ``kind`` or of all."""
        return len(self._runs) if kind is None else self._kinds[kind]

    def in_flight(self, kind: str | None = None) -> int:
        """Runs in the registry (of ``kind`` or of all) less those claimed ahead that wait for
        their fire instant: the runs due, running, or waiting for their final record."""
        return self.active(kind) - self.ahead(kind)

    def ahead(self, kind: str | None = None) -> int:
        """Runs claimed ahead that wait for their fire instant, of ``kind`` or of all."""
        return self._ahead.total() if kind is None else self._ahead[kind]

    def waiting_instant(self, run: Run, waiting: bool) -> None:
        """Mark ``run`` (claimed ahead, :mod:`peerd.engine.planner`) as waiting for its fire
        instant, or no longer; a run not in the registry is left alone."""
        if run.ahead == waiting or self._runs.get(run.key) is not run:
            return
        run.ahead = waiting
        self._ahead[run.kind] += 1 if waiting else -1

    def on_leave(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` whenever a run leaves the registry (capacity was freed)."""
        self._listeners.append(fn)

    def on_finish(self, fn: Callable[[Run], None]) -> None:
        """Call ``fn(run)`` when a run reaches its final status (its record holds it), before
        the record is written. ``fn`` must be cheap: it runs on the fire path."""
        self._finish_listeners.append(fn)

    def on_recorded(self, fn: Callable[[Run, bool], None]) -> None:
        """Call ``fn(run, written)`` when etcd answered for a run's final record: written, or
        fenced off (``written`` false). ``fn`` must be cheap: it runs on the writer's path."""
        self._recorded_listeners.append(fn)

    def spawn(
        self, run: Run, execute: Callable[[Run], Coroutine[Any, Any, None]]
    ) -> asyncio.Task[None] | None:
        """Register ``run`` and start ``execute(run)`` as a task, unless the registry already
        holds a run of the same slot: then nothing happens and None is returned (logged, since
        it means a claim was answered as ours twice)."""
        existing = self._runs.get(run.key)
        if existing is not None:
            log.warning(
                "run_already_registered",
                **run.describe(),
                registered_token=existing.record.fencing_token,
                state=existing.state.name if existing.state else None,
            )
            return None
        run.state = step(None, "claimed")
        self._runs[run.key] = run
        self._kinds[run.kind] += 1
        self.started[run.kind] += 1
        run.task = asyncio.get_running_loop().create_task(execute(run))
        return run.task

    def transition(self, run: Run, event: str) -> None:
        """Move ``run`` by ``event`` (:mod:`peerd.core.runstate`); a run reaching DONE leaves.

        Raises:
            IllegalTransition: the event is not allowed in the run's state (nothing changes).
        """
        run.state = step(run.state, event)
        if event == "finish":
            for listener in self._finish_listeners:
                listener(run)
        elif event in ("written", "dropped"):
            for recorded in self._recorded_listeners:
                recorded(run, event == "written")
        if run.state is RunState.DONE and self._runs.get(run.key) is run:
            self.waiting_instant(run, False)
            del self._runs[run.key]
            self._kinds[run.kind] -= 1
            for fn in self._listeners:
                fn()

    def cancel(self, key: RunKey, reason: str) -> bool:
        """Cancel the run of ``key`` with ``reason`` (kept if one was given before). Returns
        whether a running execution was cancelled."""
        run = self._runs.get(key)
        if run is None or run.task is None or run.task.done():
            return False
        if run.cancel_reason is None:
            run.cancel_reason = reason
        run.task.cancel()
        return True

    def tasks(self) -> list[asyncio.Task[None]]:
        """The executions still going."""
        return [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]
