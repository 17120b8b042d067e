"""One in-process engine on a real etcd, for the engine-risk tests: the only module that knows
how an engine is built, started, stopped, reconfigured and observed.

The tests (``tests/integration/test_engine_risks.py``) speak only to :class:`EngineHarness`. To
point them at another engine, change this module; the test bodies stay as they are.

What the harness relies on (the engine facade, :class:`peerd.engine.Engine`; the tests were
first written against the engine before it, ``peerd/runner/engine.py``, and failed there):

1. **Construction**: ``Engine(cfg, lease, tasks, ledger, ownership, executors, send_handoff,
   clock, supervisor)`` with a :class:`peerd.node_config.NodeConfig`, a
   :class:`peerd.coord.membership.Membership` (registered on a real lease before the engine
   starts), a :class:`peerd.coord.store.TaskCache`, a ledger (here a
   :class:`tests.faults.FaultyLedger` around the real ``Ledger``), an
   :class:`peerd.engine.ownership.OwnershipView` over that membership with no peer verdicts,
   the node's :class:`peerd.runner.executors.Executors`, no handoff, and a
   :class:`peerd.supervise.Supervisor`; keywords ``rules`` (the tzdata package) and
   ``tz_fence`` (none: the harness has no tzdata agreement, so its tasks must not depend on
   time-zone rules: UTC or ``every``/``at``). The engine subscribes to membership and cache changes
   in its constructor, so it is built before their loops start.
2. **Start**: ``await engine.start()`` starts the engine's supervised loops, next to
   ``membership.keepalive_loop()``, ``membership.watch_loop()`` and ``cache.run()``.
3. **Stop**: ``await engine.stop(grace_s)`` (waits for running executions, flushes the record
   writer, stops the loops), then the lease is revoked and the other loops are cancelled.
4. **Dispatch**: every attempt of every run goes through ``executors.run(spec, execution)``
   with a :class:`peerd.runner.base.Execution`; the harness replaces that one attribute with a
   wrapper that records a :class:`Started` (and can hold the attempt).
5. **Config**: ``engine.apply_config(cfg)`` raises to reject a config (as ``Node.reload``
   expects) and then changes nothing; the config in force is read from ``engine.cfg``, the
   shell executor's ``allow_list.patterns``, ``engine.pools.node.limit`` and
   ``engine.pools.kinds[kind].limit``.
6. **Logs**: the engine logs through structlog; the harness captures every event
   (``structlog.testing.capture_logs``) from :meth:`EngineHarness.start` to the end.
7. **Ledger calls**: the engine claims through ``ledger.claim(member_key, lease_id, records,
   modes)`` and writes records through ``ledger.update(records) -> UpdateResult``; those are
   the two calls :class:`tests.faults.FaultyLedger` can fail.

Each test runs on its own event loop (``asyncio.run``); leaving the harness cancels and awaits
everything still running on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Any

import structlog

from peerd.clock import SystemClock
from peerd.coord.etcd import Etcd
from peerd.coord.keys import Keys
from peerd.coord.ledger import Ledger
from peerd.coord.membership import Membership
from peerd.coord.store import TaskCache, TaskStore
from peerd.core.records import slot_ms
from peerd.engine import Engine
from peerd.engine.ownership import OwnershipView
from peerd.node_config import NodeConfig
from peerd.runner.base import Execution, Outcome
from peerd.runner.executors import Executors
from peerd.runner.shell import ShellExecutor
from peerd.supervise import Supervisor
from peerd.v1 import scheduler_pb2 as pb
from tests.faults import FaultyLedger
from tests.helpers import RULES

LEASE_TTL_S = 3
"""Membership lease TTL of the harness's node (seconds)."""
STOP_GRACE_S = 5.0
"""Seconds running executions get to finish when the harness stops the engine."""


@dataclass(frozen=True)
class Started:
    """One attempt the engine handed to an executor."""

    task_id: str
    slot_ms: int
    fencing_token: int
    attempt: int


@dataclass(frozen=True)
class AppliedConfig:
    """The configuration an engine has in force, as far as a reload can change it."""

    cfg: NodeConfig
    allow_shell: tuple[str, ...]
    pool_limits: dict[str, int]
    """``"node"`` (max concurrent runs) and one entry per executor kind."""


async def _settle() -> None:
    """Cancel and await every other task on this loop (the harness's loops, runs and waiters
    they left behind, the status tasks of closed etcd streams), so that nothing of one test
    outlives its loop: gRPC's poller would call back into the closed loop during the next."""
    rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in rest:
        t.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


class _NoVerdicts:
    """The peer layer of a node alone: nobody is dead, draining or not claiming."""

    def excluded(self) -> set[str]:
        return set()

    def on_change(self, fn: Callable[[], None]) -> None:
        return None


async def _never_alive(address: str) -> bool:
    """Membership's duplicate-node probe: no other process ever holds the harness's node id."""
    return False


class EngineHarness:
    """An engine in this process, on a real etcd, with a real lease and task cache.

    Use as ``async with EngineHarness(endpoint, cluster) as h``: write tasks
    (:meth:`put_specs`), arm faults on :attr:`faults`, then :meth:`start` the engine. Leaving
    the block releases every hold and fault, stops the engine, revokes the lease and closes the
    etcd client.

    Args:
        etcd_endpoint: ``HOST:PORT`` of the etcd.
        cluster: the cluster name (keys under ``/peerd/<cluster>/``).
        node_id: this node's id.
    """

    def __init__(self, etcd_endpoint: str, cluster: str, node_id: str = "n1") -> None:
        self.cfg = NodeConfig(
            node_id=node_id, etcd=(etcd_endpoint,), cluster=cluster, lease_ttl_s=LEASE_TTL_S
        )
        self.etcd = Etcd([etcd_endpoint])
        self.keys = Keys(self.cfg.prefix)
        self.ledger = Ledger(self.etcd, self.keys)
        """The real ledger, for reading records behind the engine's back."""
        self.faults = FaultyLedger(self.ledger)
        """The ledger the engine uses; arm faults on it (see :mod:`tests.faults`)."""
        self.started: list[Started] = []
        """Every attempt handed to an executor, in order."""
        self.logs: list[MutableMapping[str, Any]] = []
        """Every structlog event since :meth:`start` (``event``, ``log_level``, bound keys)."""
        self._holds: list[tuple[Callable[[Started], bool], asyncio.Event]] = []
        self._engine: Engine | None = None
        self._executors: Executors | None = None
        self._membership: Membership | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._capture: contextlib.ExitStack | None = None

    async def __aenter__(self) -> EngineHarness:
        await self.etcd.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._teardown()
        except Exception as teardown_error:
            if exc is None:
                raise
            exc.add_note(f"(engine harness teardown also failed: {teardown_error!r})")

    # -- set-up ------------------------------------------------------------------------------

    async def put_specs(self, specs: Sequence[pb.TaskSpec]) -> None:
        """Write task specs straight into etcd (no validation; 100 per transaction)."""
        store = TaskStore(self.etcd, self.keys)
        for i in range(0, len(specs), 100):
            await store.create(specs[i : i + 100])

    async def start(self, **cfg: Any) -> None:
        """Register on a new lease and start the engine with ``cfg`` (NodeConfig fields) over
        the harness's defaults."""
        self.cfg = replace(self.cfg, **cfg)
        self._capture = contextlib.ExitStack()
        self.logs = self._capture.enter_context(structlog.testing.capture_logs())
        clock = SystemClock()
        me = pb.Member(node_id=self.cfg.node_id, address="127.0.0.1:1")
        membership = Membership(self.etcd, self.keys, me, self.cfg.lease_ttl_s, _never_alive, clock)
        cache = TaskCache(self.etcd, self.keys, clock)
        executors = Executors(self.cfg, clock)
        engine = Engine(
            self.cfg,
            membership,
            cache,
            self.faults,
            OwnershipView(self.cfg.node_id, membership, _NoVerdicts()),
            executors,
            None,
            clock,
            Supervisor(clock),
            rules=RULES,
            tz_fence=lambda: None,
        )
        dispatch = executors.run

        async def recording_run(spec: pb.TaskSpec, execution: Execution) -> Outcome:
            started = Started(
                execution.task_id,
                slot_ms(execution.scheduled_at),
                execution.fencing_token,
                execution.attempt,
            )
            self.started.append(started)
            for match, released in list(self._holds):
                if match(started):
                    await released.wait()
            return await dispatch(spec, execution)

        executors.run = recording_run  # type: ignore[method-assign]
        await membership.register(first=True)
        self._engine, self._membership, self._executors = engine, membership, executors
        self._loops = [
            asyncio.create_task(membership.keepalive_loop()),
            asyncio.create_task(membership.watch_loop()),
            asyncio.create_task(cache.run()),
        ]
        await engine.start()

    # -- observing ---------------------------------------------------------------------------

    def starts(self, task_id: str) -> list[Started]:
        """The attempts of ``task_id`` handed to an executor so far, in order."""
        return [s for s in self.started if s.task_id == task_id]

    def hold_executions(self, match: Callable[[Started], bool]) -> None:
        """Make attempts that ``match`` wait (after being recorded as started, before the
        executor runs) until :meth:`release_executions`: a run that takes as long as the test
        wants."""
        self._holds.append((match, asyncio.Event()))

    def release_executions(self) -> None:
        """Let every held attempt run."""
        for _, released in self._holds:
            released.set()
        self._holds.clear()

    # -- reconfiguring -----------------------------------------------------------------------

    def apply_config(self, cfg: NodeConfig) -> bool:
        """Apply a reloaded configuration as ``Node.reload`` does (SIGHUP).

        Returns:
            True when the engine took it, False when it refused it (raised).
        """
        try:
            self._running().apply_config(cfg)
        except Exception:
            return False
        return True

    def applied_config(self) -> AppliedConfig:
        """The configuration the engine has in force now."""
        engine = self._running()
        limits = {kind: pool.limit for kind, pool in engine.pools.kinds.items()}
        limits["node"] = engine.pools.node.limit
        shell = self._executors.get("shell") if self._executors is not None else None
        assert isinstance(shell, ShellExecutor)
        return AppliedConfig(engine.cfg, shell.allow_list.patterns, limits)

    def cursors(self) -> dict[str, datetime | None] | None:
        """Each owned task's cursor (None: not loaded yet), or None while some cursor of an
        owned task is still to be read from the ledger."""
        planner = self._running().planner
        if planner.to_load:
            return None
        return {task_id: o.cursor for task_id, o in planner.owned.items()}

    # -- tear-down ---------------------------------------------------------------------------

    def _running(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the engine is not started (call start())")
        return self._engine

    async def _teardown(self) -> None:
        self.release_executions()
        self.faults.release_updates()
        errors: list[BaseException] = []
        try:
            if self._engine is not None:
                try:
                    await self._engine.stop(STOP_GRACE_S)
                except Exception as exc:  # e.g. a loop that died earlier re-raises here
                    errors.append(exc)
            if self._membership is not None:
                await self._membership.revoke()
        finally:
            await _settle()  # the loops started here, and whatever they left running
            if self._capture is not None:
                self._capture.close()
            await self.etcd.close()
            await _settle()  # the status tasks of the closed etcd streams
        if errors:
            raise errors[0]
