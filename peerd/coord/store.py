"""Durable task specs in etcd (``tasks/<task_id>``, protobuf ``TaskSpec``), their change history
(``history/<task_id>/<revision>``, protobuf ``TaskChange``) and a watched cache.

Writes are conditional transactions, so a rejected request writes nothing: a create succeeds
only if the key does not exist, an update or delete only if the key's mod revision is the one
read (or, for a delete with no expected revision, if the key exists). :meth:`TaskStore.write`
puts creates, updates and deletes in one transaction, all or nothing::

    compare  create_revision(tasks/<c>) == 0          for each create
             mod_revision(tasks/<u>) == revision read  for each update
             mod_revision(tasks/<d>) == expected       for each delete (or: it exists)
    success  put tasks/<c>
             put tasks/<u>; put history/<u>/<revision read>; delete its oldest history records
             delete tasks/<d>, runs/<d>/..., history/<d>/...
    failure  get each compared key                     -> which one failed, and why

A spec's ``revision`` is its key's mod revision, set on every read and never stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog

from peerd.clock import Clock, SystemClock
from peerd.coord.etcd import KV, Etcd, Event, prefix_end, retry_backoff
from peerd.coord.etcd_messages import (
    cmp_create_revision,
    cmp_exists,
    cmp_mod_revision,
    op_delete,
    op_get,
    op_put,
    range_kvs,
    txn_request,
)
from peerd.coord.keys import Keys
from peerd.coord.watch import STEP_S, list_then_watch
from peerd.core.budget import MAX_TXN_OPS
from peerd.core.placement import COMMON, Placement, Placements
from peerd.core.taskspec import write_ops
from peerd.errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.store")

MAX_BATCH_CREATE = 100
HISTORY_KEEP = 50
"""Change records kept per task: the write that adds one deletes those beyond the newest 50."""
UPDATE_RETRIES = 5
"""Read-modify-write attempts of :meth:`TaskStore.update` before it gives up (ABORTED)."""


@dataclass(frozen=True)
class TaskUpdate:
    """One update of :meth:`TaskStore.write`: the spec to store, the revision it replaces (the
    write fails unless the key still has it), and the change record to add (or None)."""

    spec: pb.TaskSpec
    revision: int
    change: pb.TaskChange | None = None


def _stored(spec: pb.TaskSpec) -> bytes:
    """The value of ``tasks/<id>``: the spec without its (read-only) ``revision``."""
    if not spec.revision:
        return spec.SerializeToString()
    copy = pb.TaskSpec()
    copy.CopyFrom(spec)
    copy.ClearField("revision")
    return copy.SerializeToString()


def _spec(kv: KV) -> pb.TaskSpec:
    spec = pb.TaskSpec.FromString(kv.value)
    spec.revision = kv.mod_revision
    return spec


class TaskStore:
    """Task specs and their history. All methods raise :class:`peerd.errors.Unavailable` when
    etcd is unreachable (and then nothing was written)."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    async def create(self, specs: Sequence[pb.TaskSpec]) -> int:
        """Create all ``specs`` in one transaction, or none of them.

        Returns:
            The revision of the write (each spec's ``revision`` is set to it).

        Raises:
            AlreadyExists: naming the first id that exists already (nothing written).
            InvalidArgument: more than :data:`MAX_BATCH_CREATE` specs, or duplicate ids.
        """
        if len(specs) > MAX_BATCH_CREATE:
            raise InvalidArgument("tasks", f"at most {MAX_BATCH_CREATE} tasks per call")
        return await self.write(creates=specs)

    async def write(
        self,
        creates: Sequence[pb.TaskSpec] = (),
        updates: Sequence[TaskUpdate] = (),
        deletes: Sequence[tuple[str, int]] = (),
    ) -> int:
        """Create, update and delete tasks in one transaction (see the module docstring).

        ``deletes`` are ``(task_id, expected revision)``, 0 = whatever the revision. A task
        deleted goes with its run records and history. Each change record gets the
        revision it replaces as ``previous_revision``.

        Returns:
            The revision of the write; the ``revision`` of every spec written is set to it.

        Raises:
            InvalidArgument: a task named twice, or more than etcd's 128 operations
                (:func:`peerd.core.taskspec.write_ops`).
            AlreadyExists: a task to create exists; NotFound: one to update or delete does
                not; Aborted: one to update or delete has another revision. Nothing written.
        """
        ids = [s.id for s in creates] + [u.spec.id for u in updates] + [d for d, _ in deletes]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidArgument("tasks", f"task id {dup!r} appears more than once")
        ops = write_ops(len(creates), len(updates), len(deletes))
        if ops > MAX_TXN_OPS:
            raise InvalidArgument(
                "tasks", f"{ops} etcd operations, more than the {MAX_TXN_OPS} of one transaction"
            )
        trims = await asyncio.gather(*(self._history_trim(u.spec.id) for u in updates))
        compare, success = [], []
        for spec in creates:
            compare.append(cmp_create_revision(self.keys.task(spec.id), 0))
            success.append(op_put(self.keys.task(spec.id), _stored(spec)))
        for u, trim in zip(updates, trims, strict=True):
            compare.append(cmp_mod_revision(self.keys.task(u.spec.id), u.revision))
            success += self._update_ops(u, trim)
        for task_id, revision in deletes:
            key = self.keys.task(task_id)
            compare.append(cmp_mod_revision(key, revision) if revision else cmp_exists(key))
            success += [op_delete(key)] + [
                op_delete(p, prefix_end(p))
                for p in (self.keys.runs(task_id), self.keys.history(task_id))
            ]
        if not compare:
            return 0
        resp = await self.etcd.txn(
            txn_request(compare, success, [op_get(self.keys.task(i)) for i in ids])
        )
        if not resp.succeeded:
            expected = [0] * len(creates) + [u.revision for u in updates] + [r for _, r in deletes]
            raise _refused(ids, len(creates), expected, [range_kvs(r) for r in resp.responses])
        revision = int(resp.header.revision)
        for spec in [*creates, *(u.spec for u in updates)]:
            spec.revision = revision
        return revision

    def _update_ops(self, u: TaskUpdate, trim: bytes | None) -> list[object]:
        ops = [op_put(self.keys.task(u.spec.id), _stored(u.spec))]
        if u.change is not None:
            change = pb.TaskChange()
            change.CopyFrom(u.change)
            change.previous_revision = u.revision
            change.ClearField("revision")
            ops.append(op_put(self.keys.change(u.spec.id, u.revision), change.SerializeToString()))
            if trim is not None:
                ops.append(op_delete(self.keys.history(u.spec.id), trim))
        return ops

    async def _history_trim(self, task_id: str) -> bytes | None:
        """The end of the range of ``task_id``'s change records to delete so that, with one
        more, :data:`HISTORY_KEEP` remain (None: nothing to delete)."""
        prefix = self.keys.history(task_id)
        kvs, count, _ = await self.etcd.range(prefix, prefix_end(prefix), keys_only=True)
        extra = count + 1 - HISTORY_KEEP
        return kvs[extra - 1].key + b"\0" if extra > 0 and len(kvs) >= extra else None

    async def history(self, task_id: str) -> list[pb.TaskChange]:
        """The task's change records, newest first, ``revision`` set (the write's revision)."""
        prefix = self.keys.history(task_id)
        kvs, _, _ = await self.etcd.range(prefix, prefix_end(prefix), descending=True)
        out = []
        for kv in kvs:
            change = pb.TaskChange.FromString(kv.value)
            change.revision = kv.mod_revision
            out.append(change)
        return out

    async def get(self, task_id: str) -> tuple[pb.TaskSpec, int]:
        """The spec (``revision`` set) and its mod revision.

        Raises:
            NotFound: no such task.
        """
        kv = await self.etcd.get(self.keys.task(task_id))
        if kv is None:
            raise NotFound(f"task {task_id!r} not found")
        return _spec(kv), kv.mod_revision

    async def list(self, page_size: int, page_token: str) -> tuple[list[pb.TaskSpec], str]:
        """Tasks in id order starting after ``page_token`` (a task id), ``revision`` set;
        returns the page and the next token ("" when done)."""
        start = self.keys.task(page_token) + b"\0" if page_token else self.keys.tasks
        kvs, _, _ = await self.etcd.range(start, prefix_end(self.keys.tasks), limit=page_size + 1)
        specs = [_spec(kv) for kv in kvs[:page_size]]
        token = specs[-1].id if len(kvs) > page_size and specs else ""
        return specs, token

    async def update(
        self,
        task_id: str,
        mutate: Callable[[pb.TaskSpec], None],
        record: Callable[[pb.TaskSpec, pb.TaskSpec], pb.TaskChange | None] | None = None,
        expected_revision: int = 0,
    ) -> pb.TaskSpec:
        """Read-modify-write with compare-and-swap on the mod revision; a ``mutate`` that
        changes nothing writes nothing (the spec read is returned, revision unchanged).
        ``record(before, after)`` gives the change record written with it.

        With ``expected_revision`` the task must have that revision, read and at the write;
        without, a write that lost a race is retried on a fresh read (:data:`UPDATE_RETRIES`).

        Raises:
            NotFound: no such task.
            Aborted: the revision is not ``expected_revision`` (or the retries ran out).
        """
        for _ in range(UPDATE_RETRIES):
            current, revision = await self.get(task_id)
            if expected_revision and revision != expected_revision:
                raise _moved(task_id, expected_revision, revision)
            new = pb.TaskSpec()
            new.CopyFrom(current)
            mutate(new)
            new.revision = revision
            if new == current:
                return current
            change = record(current, new) if record is not None else None
            try:
                await self.write(updates=[TaskUpdate(new, revision, change)])
            except Aborted:
                if expected_revision:
                    raise
                continue
            return new
        raise Aborted(f"task {task_id!r} kept changing during the update; try again")

    async def delete(self, task_id: str) -> None:
        """Delete the task, its run records and its history in one transaction.

        Raises:
            NotFound: no such task.
        """
        await self.write(deletes=[(task_id, 0)])


def _moved(task_id: str, expected: int, actual: int) -> Aborted:
    return Aborted(
        f"task {task_id!r} changed meanwhile: revision {actual}, expected {expected}; "
        "read it again and retry"
    )


def _refused(
    ids: list[str], n_creates: int, revisions: list[int], found: list[list[KV]]
) -> Exception:
    """The error for a write whose compares failed, from the failure branch's reads."""
    for i, (task_id, kvs) in enumerate(zip(ids, found, strict=True)):
        if i < n_creates:
            if kvs:
                return AlreadyExists(f"task {task_id!r} already exists")
            continue
        expected = revisions[i]
        if not kvs:
            return NotFound(f"task {task_id!r} not found")
        if expected and kvs[0].mod_revision != expected:
            return _moved(task_id, expected, kvs[0].mod_revision)
    return Aborted("the tasks changed meanwhile; try again")


class TaskCache:
    """Every task of the cluster, kept current by a watch on ``tasks/``, held compactly.

    A node owns about 1/N of the tasks but must know all of them to compute ownership. So the
    cache keeps each task as its stored bytes (about 0.25 KiB per task with 100,000 tasks,
    against 1.3 KiB for a decoded ``TaskSpec``) and, only for the tasks whose :class:`peerd.core.
    placement.Placement` is not the :data:`~peerd.core.placement.COMMON` one, that placement
    (shared objects): no tuple per task, so one object fewer per task for the garbage collector
    to track and 56 bytes less. :attr:`tasks` decodes a spec when it is asked for (the engine
    keeps the tasks it owns as bytes too, :class:`peerd.engine.planner.Owned`). The specs
    decoded here carry no ``revision``.

    ``listener(task_id, spec_or_None)`` is called for each change (``None`` = deleted) and with
    ``("", None)`` after a full re-list.

    Args:
        etcd: the etcd client.
        keys: the cluster keyspace.
        clock: what retries after etcd errors sleep on (default :class:`SystemClock`).
    """

    def __init__(self, etcd: Etcd, keys: Keys, clock: Clock | None = None) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._values: dict[str, bytes] = {}
        """Task id -> its stored bytes."""
        self._uncommon: dict[str, Placement] = {}
        """Task id -> its placement, for the tasks whose placement is not :data:`COMMON`."""
        self._placements = Placements()  # bounded by the distinct placements: never cleared
        self.tasks: Mapping[str, pb.TaskSpec] = _View(
            self._values, lambda _, value: pb.TaskSpec.FromString(value)
        )
        """Task id -> spec, decoded on each lookup (iteration and ``in`` decode nothing)."""
        self.placements: Mapping[str, Placement] = _View(
            self._values, lambda task_id, _: self._uncommon.get(task_id, COMMON)
        )
        """Task id -> placement (shared objects; nothing decoded)."""
        self.revision = 0
        self.creating = ""
        """While listeners are told of a task's creation (its key's first put): its id; else
        "". A new task has no run records, so its owner need not read its cursor."""
        self.ready = asyncio.Event()
        self._listeners: list[Callable[[str, pb.TaskSpec | None], None]] = []

    def on_change(self, fn: Callable[[str, pb.TaskSpec | None], None]) -> None:
        """Call ``fn(task_id, spec_or_None)`` after every change (see the class)."""
        self._listeners.append(fn)

    async def run(self) -> None:
        """List ``tasks/`` then watch it forever; re-list after compaction or a broken watch
        (:func:`peerd.coord.watch.list_then_watch`). Runs until cancelled."""
        await list_then_watch(
            self.etcd,
            self.keys.tasks,
            self._on_listed,
            self._on_event,
            retry_backoff(),
            self.clock,
            "tasks",
            log,
        )

    def _put(
        self, values: dict[str, bytes], uncommon: dict[str, Placement], task_id: str, value: bytes
    ) -> pb.TaskSpec:
        """Enter ``task_id`` with ``value`` into ``values`` and ``uncommon``; returns the spec."""
        spec = pb.TaskSpec.FromString(value)
        values[task_id] = value
        placement = self._placements.of(spec)
        if placement is COMMON:
            uncommon.pop(task_id, None)
        else:
            uncommon[task_id] = placement
        return spec

    async def _on_listed(self, kvs: list[KV], revision: int) -> None:
        """Replace the entries with the list, yielding the event loop every
        :data:`peerd.coord.watch.STEP_S` (decoding 100,000 specs takes about a second); an
        unchanged value is not decoded again (a re-list after a compaction costs little)."""
        old, old_uncommon = dict(self._values), dict(self._uncommon)
        values: dict[str, bytes] = {}
        uncommon: dict[str, Placement] = {}
        step_end = self.clock.monotonic() + STEP_S
        for i, kv in enumerate(kvs):
            task_id = self.keys.id_of(kv.key, self.keys.tasks)
            if old.get(task_id) == kv.value:
                values[task_id] = kv.value
                if task_id in old_uncommon:
                    uncommon[task_id] = old_uncommon[task_id]
            else:
                self._put(values, uncommon, task_id, kv.value)
            if i % 256 == 255 and self.clock.monotonic() >= step_end:
                await asyncio.sleep(0)  # a yield, not a wait
                step_end = self.clock.monotonic() + STEP_S
        self._values.clear()  # the views keep referring to these dicts
        self._values.update(values)
        self._uncommon.clear()
        self._uncommon.update(uncommon)
        self.revision = revision
        self.ready.set()
        self._notify("", None)

    def _on_event(self, ev: Event) -> None:
        task_id = self.keys.id_of(ev.kv.key, self.keys.tasks)
        spec: pb.TaskSpec | None = None
        if ev.kind == "put":
            spec = self._put(self._values, self._uncommon, task_id, ev.kv.value)
        else:
            self._values.pop(task_id, None)
            self._uncommon.pop(task_id, None)
        self.revision = ev.revision
        created = spec is not None and ev.kv.create_revision == ev.kv.mod_revision
        self.creating = task_id if created else ""
        try:
            self._notify(task_id, spec)
        finally:
            self.creating = ""

    def _notify(self, task_id: str, spec: pb.TaskSpec | None) -> None:
        for fn in self._listeners:
            try:
                fn(task_id, spec)
            except Exception:
                log.exception("task_listener_failed")


_V = TypeVar("_V")


class _View(Mapping[str, _V]):
    """A read-only view of the cache's entries, each seen through ``pick(task_id, bytes)``."""

    def __init__(self, entries: dict[str, bytes], pick: Callable[[str, bytes], _V]) -> None:
        self._entries = entries
        self._pick = pick

    def __getitem__(self, task_id: str) -> _V:
        return self._pick(task_id, self._entries[task_id])

    def get(self, task_id: str, default: _V | None = None) -> _V | None:  # type: ignore[override]
        """The entry of ``task_id``, else ``default`` (one call: :meth:`Mapping.get` goes
        through ``__getitem__`` and an exception, and ownership looks up every task)."""
        value = self._entries.get(task_id)
        return default if value is None else self._pick(task_id, value)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
