"""One peerd node: wires etcd, membership, the task cache, the engine and the gRPC server.

Start-up order matters:

1. bind the gRPC port (fails fast if it is taken) but do not serve yet;
2. register ``members/<node_id>`` on a lease, retrying while etcd is unreachable (a duplicate
   live node id is fatal);
3. start serving (health NOT_SERVING), watch members and tasks, start the engine, the etcd alarm
   monitor and the compactor (idle while ``etcd_compaction_interval`` is 0);
4. once both views are loaded, health turns SERVING.

Shutdown on SIGTERM/SIGINT: health NOT_SERVING, give the compactor key up, stop planning, let
running executions finish up to the grace period, revoke the lease (the member key disappears at
once, so survivors take over without waiting for the TTL), stop the server, exit 0.

SIGHUP re-reads the configuration (:meth:`Node.reload`): the reloadable fields
(:data:`peerd.config.RELOADABLE`: shell allow-list, run limits, catch-up rate, misfire threshold,
log level, drain grace, runs kept, etcd compaction interval) apply at once; the lease, the
registration and the tasks are not touched. An invalid file is rejected and the node keeps
running with its old configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from peerd import __version__
from peerd.clock import SystemClock
from peerd.config import NodeConfig, changed_fields, reload_config
from peerd.coord.alarms import AlarmMonitor
from peerd.coord.compaction import Compactor, space_hint
from peerd.coord.etcd import Etcd, retry_backoff
from peerd.coord.keys import Keys
from peerd.coord.ledger import Ledger
from peerd.coord.membership import Membership
from peerd.coord.store import TaskCache, TaskStore
from peerd.errors import DuplicateNode, InvalidArgument, Unavailable
from peerd.exitcodes import EXIT_ALREADY_EXISTS, EXIT_ERROR, EXIT_OK
from peerd.healthcheck import check_async
from peerd.log import set_level
from peerd.peer import PeerLayer, PeerService
from peerd.rpc.service import SchedulerService
from peerd.runner.engine import Engine
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import peer_pb2_grpc as ppb_grpc
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc

log = structlog.get_logger("peerd.node")

ReloadSource = tuple[Mapping[str, Any], Mapping[str, str], Path | None]
"""What a node's configuration was built from: ``(flags, env, config_file)`` as passed to
:func:`peerd.config.build_config`; SIGHUP re-reads it (:func:`peerd.config.reload_config`)."""


async def probe_health(address: str, timeout_s: float = 1.0) -> bool:
    """True when a gRPC server at ``address`` answers grpc.health.v1 Check in time, whatever
    the status (the membership probe asks whether a holder is alive, not whether it serves)."""
    return await check_async(address, timeout_s) is not None


class Node:
    """A running node. Construct, then ``await run()``; ``request_stop()`` ends it cleanly.

    Args:
        cfg: the configuration.
        clock: time source (default :class:`SystemClock`).
        reload_source: ``(flags, env, config_file)`` ``cfg`` was built from; without it
            :meth:`reload` has nothing to re-read and rejects every reload.
    """

    def __init__(
        self,
        cfg: NodeConfig,
        clock: SystemClock | None = None,
        reload_source: ReloadSource | None = None,
    ) -> None:
        self.cfg = cfg
        self._reload_source = reload_source
        self.clock = clock or SystemClock()
        interval, retention = cfg.etcd_compaction_interval, cfg.etcd_compaction_retention
        self.etcd = Etcd(cfg.etcd, space_hint=space_hint(interval, retention))
        self.keys = Keys(cfg.prefix)
        me = pb.Member(node_id=cfg.node_id, address=cfg.address, version=__version__)
        me.started_at.FromDatetime(self.clock.now())
        self.membership = Membership(
            self.etcd, self.keys, me, cfg.lease_ttl_s, probe_health, self.clock
        )
        self.store = TaskStore(self.etcd, self.keys)
        self.cache = TaskCache(self.etcd, self.keys, self.clock)
        self.ledger = Ledger(self.etcd, self.keys)
        self.engine = Engine(cfg, self.membership, self.cache, self.ledger, self.clock)
        self.alarms = AlarmMonitor(self.etcd, cfg.node_id, self.clock)
        self.engine.etcd_space = self.alarms.space_ok
        self.compactor = Compactor(
            self.etcd, self.keys, cfg.node_id, self.membership, self.alarms, self.clock,
            interval, retention,
        )  # fmt: skip
        self.peers = PeerLayer(self)
        self.engine.excluded = self.peers.excluded
        self.engine.handoff = self._handoff
        self.peers.on_change(self.engine.reconcile_all)
        self.health = HealthServicer()
        self._stop = asyncio.Event()
        self._fatal_msg = ""
        self._log = log.bind(node_id=cfg.node_id)

    def request_stop(self) -> None:
        """Begin a clean shutdown (signal-handler safe when called from the loop)."""
        self._stop.set()

    def reload(self) -> bool:
        """Re-read the configuration and apply its reloadable fields (SIGHUP; runs on the loop).

        Re-reads the config file with the flags and environment the node started with (they keep
        precedence), then applies the :data:`peerd.config.RELOADABLE` fields: the log level, and
        the engine (:meth:`Engine.apply_config`: executors, pools, limits; its shell allow-list
        is also what the API checks new tasks against). Membership, the lease and the tasks are
        not touched. Logs ``config_reloaded`` with the names of the changed fields (never their
        values), and one ``config_reload_restart_needed`` per non-reloadable field that changed
        in the file.

        Returns:
            True when the new configuration is in force; False when it was rejected (logged as
            ``config_reload_rejected`` with the reason) and the old one is kept.
        """
        if self._reload_source is None:
            self._log.error(
                "config_reload_rejected", reason="node was started without a reloadable source"
            )
            return False
        flags, env, config_file = self._reload_source
        try:
            new, warnings = reload_config(self.cfg, flags, env, config_file)
        except InvalidArgument as exc:
            self._log.error("config_reload_rejected", reason=str(exc), file=str(config_file))
            return False
        for warning in warnings:
            self._log.warning("config_reload_restart_needed", detail=warning)
        changed = changed_fields(self.cfg, new)
        try:
            self.engine.apply_config(new)
        except Exception as exc:
            self._log.error(
                "config_reload_rejected",
                reason=f"engine refused it: {type(exc).__name__}: {exc}",
                exc_info=True,
            )
            return False
        self.cfg = new
        set_level(new.log_level)
        self.compactor.set_interval(new.etcd_compaction_interval)
        self.etcd.space_hint = space_hint(
            new.etcd_compaction_interval, new.etcd_compaction_retention
        )
        self._log.info("config_reloaded", changed=changed, file=str(config_file))
        return True

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_SchedulerServicer_to_server(SchedulerService(self), server)
        ppb_grpc.add_PeerServicer_to_server(PeerService(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                pb.DESCRIPTOR.services_by_name["Scheduler"].full_name,
                ppb.DESCRIPTOR.services_by_name["Peer"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        try:
            server.add_insecure_port(self.cfg.listen)
        except RuntimeError as exc:
            return _fatal(f"cannot listen on {self.cfg.listen}: {exc}", EXIT_ERROR)
        await self.etcd.connect()
        if not await self._register():
            return _fatal(self._fatal_msg, EXIT_ALREADY_EXISTS)
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._log.info(
            "node_listening",
            listen=self.cfg.listen,
            address=self.cfg.address,
            etcd=",".join(self.cfg.etcd),
            cluster=self.cfg.cluster,
        )
        tasks = [
            asyncio.create_task(self.membership.keepalive_loop(), name="keepalive"),
            asyncio.create_task(self.membership.watch_loop(), name="members"),
            asyncio.create_task(self.cache.run(), name="tasks"),
            asyncio.create_task(self.engine.run(), name="engine"),
            asyncio.create_task(self.peers.run(), name="peers"),
            asyncio.create_task(self.alarms.run(), name="etcd-alarms"),
            asyncio.create_task(self.compactor.run(), name="etcd-compactor"),
        ]
        stop_waiter = asyncio.create_task(self._stop.wait())
        ready = asyncio.create_task(self._mark_ready())
        done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        code = EXIT_OK
        for t in done:
            failure = None if t is stop_waiter else t.exception()
            if failure is not None:
                code = EXIT_ALREADY_EXISTS if isinstance(failure, DuplicateNode) else EXIT_ERROR
                self._log.error("node_task_failed", task=t.get_name(), error=str(failure))
                print(f"peerd: error: {failure}", file=sys.stderr)
        self._log.info("node_stopping")
        ready.cancel()
        await self.health.enter_graceful_shutdown()
        await self.compactor.release()  # the next node takes compaction over at once
        if code == EXIT_OK and self.membership.claim_ready.is_set():
            # Drain: tell everyone we own nothing, hand every task over (no gap), then let
            # running executions finish within the grace period.
            await self.membership.set_draining()
            await self.engine.drain()
        await self.engine.stop(self.cfg.drain_grace_s)
        await self.membership.revoke()
        await self.peers.close()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await server.stop(1.0)
        await self.etcd.close()
        self._log.info("node_stopped", exit_code=code)
        return code

    async def _handoff(self, target: str, request: ppb.HandoffRequest) -> list[str]:
        member = self.membership.view.get(target)
        if member is None:
            return []
        try:
            resp = await self.peers.stub(member.address).Handoff(request, timeout=2.0)
        except grpc.aio.AioRpcError as exc:
            self._log.warning("handoff_failed", to_node=target, error=exc.code().name)
            return []
        return list(resp.accepted)

    async def _register(self) -> bool:
        backoff = retry_backoff()
        while not self._stop.is_set():
            try:
                await self.membership.register(first=True)
                return True
            except DuplicateNode as exc:
                self._fatal_msg = str(exc)
                return False
            except Unavailable as exc:
                delay_s = backoff.next_delay_s()
                self._log.warning("waiting_for_etcd", error=str(exc), retry_in_s=delay_s)
                await self.clock.sleep(delay_s)
        self._fatal_msg = "stopped before registering"
        return False

    async def _mark_ready(self) -> None:
        await self.membership.view_ready.wait()
        await self.cache.ready.wait()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._log.info("node_ready", members=self.membership.members(), tasks=len(self.cache.tasks))


def _fatal(message: str, code: int) -> int:
    print(f"peerd: error: {message}", file=sys.stderr)
    log.error("node_fatal", error=message)
    return code


def run_node(cfg: NodeConfig, reload_source: ReloadSource | None = None) -> int:
    """Run a node in this process until SIGTERM/SIGINT; returns the exit code.

    Args:
        cfg: the configuration.
        reload_source: ``(flags, env, config_file)`` ``cfg`` was built from, re-read on SIGHUP
            (see :meth:`Node.reload`); ``None``: SIGHUP is logged as a rejected reload.
    """

    async def main() -> int:
        node = Node(cfg, reload_source=reload_source)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.request_stop)
        loop.add_signal_handler(signal.SIGHUP, node.reload)
        return await node.run()

    return asyncio.run(main())
