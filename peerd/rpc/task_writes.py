"""Task writes of the Scheduler API: create, update, apply, pause and resume.

Every change is validated completely before anything is written, and written by one conditional
etcd transaction (:meth:`peerd.coord.store.TaskStore.write`), so a rejected request changes
nothing. An update that changes no field writes nothing and keeps the task's revision. Every
accepted update (UpdateTask, ApplyTasks, PauseTask, ResumeTask) writes a change record in the
same transaction (:class:`peerd.v1.scheduler_pb2.TaskChange`): when, who (empty until peerd
authenticates callers), which call, which node, and the fields that changed
(:func:`peerd.core.taskspec.field_changes`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from peerd.clock import Clock
from peerd.coord.store import TaskStore, TaskUpdate
from peerd.core.records import set_time
from peerd.core.redact import redact_spec, restore_redacted
from peerd.core.taskspec import (
    SERVER_FIELDS,
    field_changes,
    normalise,
    prepare_update,
    schedule_changed,
    set_paused,
)
from peerd.core.tzrules import TimeZoneRules
from peerd.core.validate import new_task_id, validate_pause_note, validate_task, validate_task_id
from peerd.errors import Aborted, InvalidArgument
from peerd.rpc.caller import authenticated_name
from peerd.v1 import scheduler_pb2 as pb


class TargetCheck(Protocol):
    """Whether the answering node can run a task (see :class:`peerd.runner.executors.Executors`)."""

    def check(self, spec: pb.TaskSpec, field: str) -> None: ...


Record = Callable[[pb.TaskSpec, pb.TaskSpec], pb.TaskChange]
"""``record(before, after) -> the change record of that update``."""


class TaskWrites:
    """Validates and writes task changes for one node's API.

    Args:
        store: task specs in etcd.
        targets: the executors' API checks (run for a new or changed target).
        clock: time source (``created_at``, ``updated_at``, the change time).
        node_id: ``() -> this node's id`` (named in change records).
        rules: the node's time-zone rules (a task's zone must be known to them).
    """

    def __init__(
        self,
        store: TaskStore,
        targets: TargetCheck,
        clock: Clock,
        node_id: Callable[[], str],
        rules: TimeZoneRules,
    ) -> None:
        self.rules = rules
        self.store = store
        self.targets = targets
        self.clock = clock
        self.node_id = node_id

    def prepare_create(self, given: pb.TaskSpec, field: str) -> pb.TaskSpec:
        """The spec to store for a create: an id generated when empty, normalised, validated,
        the target checked on this node, server fields set (``created_at``, ``updated_at``) or
        cleared.

        Raises:
            InvalidArgument: naming ``<field>.<path>``. PermissionDenied: a shell command this
                node does not allow.
        """
        spec = pb.TaskSpec()
        spec.CopyFrom(given)
        if not spec.id:
            spec.id = new_task_id()
        now = self.clock.now()
        normalise(spec, field)
        validate_task(spec, now, field, rules=self.rules)
        self.targets.check(spec, field)
        for name in SERVER_FIELDS:
            spec.ClearField(name)
        set_time(spec.created_at, now)
        spec.updated_at.CopyFrom(spec.created_at)
        if spec.paused:
            spec.paused_at.CopyFrom(spec.created_at)
        return spec

    def _prepare_update(
        self, current: pb.TaskSpec, desired: pb.TaskSpec, now: datetime, field: str
    ) -> pb.TaskSpec:
        """``desired`` replacing ``current`` (:func:`peerd.core.taskspec.prepare_update`),
        validated: a changed schedule like a new one (no ``at``/``end_at`` in the past); a
        changed target checked on this node."""
        desired = _copy(desired)
        restore_redacted(desired, current, field)  # a redacted spec sent back keeps its values
        new = prepare_update(current, desired, now, field)
        validate_task(new, now, field, rules=self.rules, creating=schedule_changed(current, new))
        if not _same_target(current, new):
            self.targets.check(new, field)
        return new

    def _record(self, operation: str, now: datetime) -> Record:
        def record(before: pb.TaskSpec, after: pb.TaskSpec) -> pb.TaskChange:
            change = pb.TaskChange(
                task_id=after.id,
                operation=operation,
                changes=field_changes(before, after, redact_spec),
                node_id=self.node_id(),
                principal=authenticated_name(),
            )
            change.changed_at.FromDatetime(now)
            return change

        return record

    async def update(self, desired: pb.TaskSpec, expected_revision: int) -> pb.TaskSpec:
        """UpdateTask: replace the task ``desired.id`` (see the proto). Returns the task as
        stored, ``revision`` set (unchanged when nothing changed).

        Raises:
            InvalidArgument, PermissionDenied: as :meth:`prepare_create`, naming ``task.*``.
            NotFound: no such task. Aborted: ``expected_revision`` (non-zero) does not match.
        """
        validate_task_id(desired.id, "task.id")
        if expected_revision < 0:
            raise InvalidArgument("expected_revision", f"must be >= 0, got {expected_revision}")
        now = self.clock.now()

        def mutate(spec: pb.TaskSpec) -> None:
            spec.CopyFrom(self._prepare_update(spec, desired, now, "task"))

        return await self.store.update(
            desired.id, mutate, self._record("UpdateTask", now), expected_revision
        )

    async def set_paused(self, task_id: str, paused: bool, note: str = "") -> pb.TaskSpec:
        """PauseTask / ResumeTask (:func:`peerd.core.taskspec.set_paused`).

        Raises:
            InvalidArgument: a malformed id or a note over 1024 characters. NotFound.
        """
        validate_task_id(task_id, "id")
        validate_pause_note(note, "note")
        now = self.clock.now()

        def mutate(spec: pb.TaskSpec) -> None:
            if set_paused(spec, paused, note, now):
                spec.updated_at.FromDatetime(now)

        operation = "PauseTask" if paused else "ResumeTask"
        return await self.store.update(task_id, mutate, self._record(operation, now))

    async def apply(self, request: pb.ApplyTasksRequest) -> pb.ApplyTasksResponse:
        """ApplyTasks: every create, update and delete validated, then one transaction.

        Raises:
            InvalidArgument: naming ``create[i].*``, ``update[i].task.*``, ``delete[i].id``, or
                too many changes for one transaction. AlreadyExists, NotFound, Aborted (an
                update or delete whose task changed since its expected revision, or since this
                node read it). PermissionDenied. Nothing is written.
        """
        creates = [self.prepare_create(t, f"create[{i}]") for i, t in enumerate(request.create)]
        for i, u in enumerate(request.update):
            validate_task_id(u.task.id, f"update[{i}].task.id")
        for i, d in enumerate(request.delete):
            validate_task_id(d.id, f"delete[{i}].id")
        now = self.clock.now()
        record = self._record("ApplyTasks", now)
        currents = await asyncio.gather(*(self.store.get(u.task.id) for u in request.update))
        updates = []
        for i, (u, (current, revision)) in enumerate(zip(request.update, currents, strict=True)):
            if u.expected_revision and revision != u.expected_revision:
                raise Aborted(
                    f"update[{i}]: task {u.task.id!r} changed meanwhile: revision {revision}, "
                    f"expected {u.expected_revision}"
                )
            new = self._prepare_update(current, u.task, now, f"update[{i}].task")
            change = record(current, new)
            if change.changes:
                updates.append(TaskUpdate(new, revision, change))
        deletes = [(d.id, d.expected_revision) for d in request.delete]
        revision = await self.store.write(creates, updates, deletes)
        return pb.ApplyTasksResponse(
            created=creates,
            updated=[u.spec for u in updates],
            deleted=[d for d, _ in deletes],
            revision=revision,
        )


def _same_target(a: pb.TaskSpec, b: pb.TaskSpec) -> bool:
    kind = a.WhichOneof("target")
    return kind == b.WhichOneof("target") and (
        kind is None or bool(getattr(a, kind) == getattr(b, kind))
    )


def _copy(spec: pb.TaskSpec) -> pb.TaskSpec:
    out = pb.TaskSpec()
    out.CopyFrom(spec)
    return out
