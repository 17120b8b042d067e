"""Durable task specs in etcd (``tasks/<task_id>``, protobuf ``TaskSpec``) and a watched cache.

Writes are conditional transactions, so a rejected request writes nothing: create succeeds only
if the key does not exist, updates only if the key's mod revision is the one read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from peerd.clock import Clock, SystemClock
from peerd.coord.etcd import (
    KV,
    Etcd,
    Event,
    cmp_create_revision,
    cmp_mod_revision,
    op_delete,
    op_put,
    prefix_end,
    retry_backoff,
    txn_request,
)
from peerd.coord.keys import Keys
from peerd.coord.watch import list_then_watch
from peerd.errors import AlreadyExists, InvalidArgument, NotFound, PeerdError
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.store")

MAX_BATCH_CREATE = 100


class TaskStore:
    """CRUD for task specs. All methods raise :class:`peerd.errors.Unavailable` when etcd is
    unreachable (and then nothing was written)."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    async def create(self, specs: Sequence[pb.TaskSpec]) -> int:
        """Create all ``specs`` in one transaction, or none of them.

        Returns:
            The revision of the write.

        Raises:
            AlreadyExists: naming the first id that exists already (nothing written).
            InvalidArgument: more than :data:`MAX_BATCH_CREATE` specs, or duplicate ids.
        """
        if len(specs) > MAX_BATCH_CREATE:
            raise InvalidArgument("tasks", f"at most {MAX_BATCH_CREATE} tasks per call")
        ids = [s.id for s in specs]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidArgument("tasks", f"task id {dup!r} appears more than once")
        keys = [self.keys.task(i) for i in ids]
        resp = await self.etcd.txn(
            txn_request(
                [cmp_create_revision(k, 0) for k in keys],
                [op_put(k, s.SerializeToString()) for k, s in zip(keys, specs, strict=True)],
            )
        )
        if not resp.succeeded:
            existing = []
            for task_id in ids:
                if await self.etcd.get(self.keys.task(task_id)) is not None:
                    existing.append(task_id)
            raise AlreadyExists(f"task {existing[0] if existing else ids[0]!r} already exists")
        return int(resp.header.revision)

    async def get(self, task_id: str) -> tuple[pb.TaskSpec, int]:
        """The spec and its mod revision.

        Raises:
            NotFound: no such task.
        """
        kv = await self.etcd.get(self.keys.task(task_id))
        if kv is None:
            raise NotFound(f"task {task_id!r} not found")
        return pb.TaskSpec.FromString(kv.value), kv.mod_revision

    async def list(self, page_size: int, page_token: str) -> tuple[list[pb.TaskSpec], str]:
        """Tasks in id order starting after ``page_token`` (a task id); returns the page and the
        next token ("" when done)."""
        start = self.keys.task(page_token) + b"\0" if page_token else self.keys.tasks
        kvs, _, _ = await self.etcd.range(start, prefix_end(self.keys.tasks), limit=page_size + 1)
        specs = [pb.TaskSpec.FromString(kv.value) for kv in kvs[:page_size]]
        token = specs[-1].id if len(kvs) > page_size and specs else ""
        return specs, token

    async def update(
        self, task_id: str, mutate: Callable[[pb.TaskSpec], None], retries: int = 5
    ) -> pb.TaskSpec:
        """Read-modify-write with compare-and-swap on the mod revision.

        Raises:
            NotFound: no such task.
            PeerdError: still conflicting after ``retries`` attempts.
        """
        for _ in range(retries):
            spec, rev = await self.get(task_id)
            mutate(spec)
            key = self.keys.task(task_id)
            resp = await self.etcd.txn(
                txn_request([cmp_mod_revision(key, rev)], [op_put(key, spec.SerializeToString())])
            )
            if resp.succeeded:
                return spec
        raise PeerdError(f"task {task_id!r} changed concurrently; try again")

    async def delete(self, task_id: str) -> None:
        """Delete the task and its run records in one transaction.

        Raises:
            NotFound: no such task.
        """
        key = self.keys.task(task_id)
        runs = self.keys.runs(task_id)
        resp = await self.etcd.txn(
            txn_request(
                [cmp_create_revision(key, 0)],
                [],
                [op_delete(key), op_delete(runs, prefix_end(runs))],
            )
        )
        if resp.succeeded:  # create_revision == 0: it did not exist
            raise NotFound(f"task {task_id!r} not found")


class TaskCache:
    """Every task spec of the cluster, kept current by a watch on ``tasks/``.

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
        self.tasks: dict[str, pb.TaskSpec] = {}
        self.revision = 0
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

    def _on_listed(self, kvs: list[KV], revision: int) -> None:
        self.tasks = {
            self.keys.id_of(kv.key, self.keys.tasks): pb.TaskSpec.FromString(kv.value) for kv in kvs
        }
        self.revision = revision
        self.ready.set()
        self._notify("", None)

    def _on_event(self, ev: Event) -> None:
        task_id = self.keys.id_of(ev.kv.key, self.keys.tasks)
        spec = pb.TaskSpec.FromString(ev.kv.value) if ev.kind == "put" else None
        if spec is None:
            self.tasks.pop(task_id, None)
        else:
            self.tasks[task_id] = spec
        self.revision = ev.revision
        self._notify(task_id, spec)

    def _notify(self, task_id: str, spec: pb.TaskSpec | None) -> None:
        for fn in self._listeners:
            try:
                fn(task_id, spec)
            except Exception:
                log.exception("task_listener_failed")
