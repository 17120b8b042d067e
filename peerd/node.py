"""One peerd node: the composition root. Every component is built and wired here, and only here
(with :mod:`peerd.node_servers`, which puts the components behind the node's ports, and
:mod:`peerd.node_reload`, SIGHUP).

Start-up order matters:

1. bind the gRPC port (fails fast if it is taken) but do not serve yet;
2. register ``members/<node_id>`` on a lease, retrying while etcd is unreachable (a duplicate
   live node id is fatal);
3. start serving (health NOT_SERVING), watch members and tasks, start the engine, the etcd alarm
   monitor and the compactor (idle while ``etcd_compaction_interval`` is 0);
4. once both views are loaded, health turns SERVING.

With ``--http-listen`` the HTTP port (:mod:`peerd.http`: ``/metrics``, ``/livez``, ``/readyz``)
is bound with the gRPC port (step 1) and served as a supervised loop from step 3. With
``--otel-endpoint`` spans of claims, runs and records are exported (:mod:`peerd.observe.otel`),
and flushed last at shutdown. Health per
grpc.health.v1 service and ``/readyz`` come from one set of facts (:meth:`Node.health_facts`,
:mod:`peerd.core.health`), refreshed every :data:`HEALTH_REFRESH_S`.

Background loops (keepalive, member and task watches, the prober, the engine's loops) run under
a :class:`peerd.supervise.Supervisor`: a crash is logged and the loop restarts with backoff,
and the health of service :data:`LOOPS_HEALTH` is NOT_SERVING while any loop is degraded.

Shutdown on SIGTERM/SIGINT: health NOT_SERVING, give the compactor key up, hand every task over
(drain), let running executions finish up to the grace period, revoke the lease (the member key
disappears at once, so survivors take over without waiting for the TTL), stop the server, exit 0.

SIGHUP re-reads the configuration (:meth:`Node.reload`): the reloadable fields apply at once,
all or nothing; the lease, the registration and the tasks are not touched. It also re-reads the
TLS files (new connections use them; peers are dialled again) and the auth policy, each all or
nothing on its own.

Security (docs/security.md): with ``--tls-cert`` the port serves TLS, with ``--tls-client-ca``
mutual TLS; every call passes :class:`peerd.rpc.auth.AuthInterceptor` (the ``--auth-policy``).
A node that listens on a non-loopback address without TLS, or without a policy, says so at
start (``serve_plaintext_on_network``, ``serve_without_auth_policy``).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from peerd import __version__
from peerd.clock import Clock, SystemClock
from peerd.cluster import ClusterView
from peerd.config import NodeConfig, check_security
from peerd.coord.alarms import AlarmMonitor
from peerd.coord.compaction import Compactor, space_hint
from peerd.coord.etcd import Etcd, retry_backoff
from peerd.coord.etcd_channel import EtcdSecurity
from peerd.coord.keys import Keys
from peerd.coord.ledger import Ledger
from peerd.coord.membership import Membership
from peerd.coord.runs_view import RunsView
from peerd.coord.store import TaskCache, TaskStore
from peerd.coord.tzdata import TzdataAgreement
from peerd.core import health
from peerd.core.tzrules import TimeZoneRules
from peerd.engine import Engine
from peerd.engine.ownership import OwnershipView, matches_node_selector
from peerd.errors import DuplicateNode, InvalidArgument, Unauthenticated, Unavailable
from peerd.exitcodes import (
    EXIT_ALREADY_EXISTS,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PERMISSION_DENIED,
)
from peerd.gctune import Freezer, GcPauses
from peerd.healthcheck import check_async
from peerd.node_reload import ReloadSource, reload_node
from peerd.node_servers import (
    grpc_server,
    http_server,
    metric_sources,
    otel_export,
    server_tls,
    warn_if_exposed,
)
from peerd.peer.client import PeerClient
from peerd.peer.detection import PeerLayer
from peerd.runner.executors import Executors
from peerd.security.authn import Authenticator
from peerd.supervise import Supervisor
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import scheduler_pb2 as pb

if TYPE_CHECKING:  # imported when --http-listen (aiohttp: ~0.3 s per start) or --otel-endpoint
    # (the OpenTelemetry SDK) is set
    from peerd.http.metrics import NodeMetrics
    from peerd.http.rest import LoopbackSocket
    from peerd.http.server import HttpServer

log = structlog.get_logger("peerd.node")

LOOPS_HEALTH = health.LOOPS
"""grpc.health.v1 service name whose status is NOT_SERVING while a supervised loop is degraded
(crashed and not yet running cleanly again)."""
HEALTH_REFRESH_S = 0.5
"""Seconds between two refreshes of the grpc.health.v1 statuses (a lease loss or an etcd alarm
shows within this; a degraded loop shows at once)."""


class Node:
    """A running node. Construct, then ``await run()``; ``request_stop()`` ends it cleanly.

    Args:
        cfg: the configuration.
        clock: time source (default :class:`SystemClock`).
        reload_source: ``(flags, env, config_file)`` ``cfg`` was built from; without it
            :meth:`reload` has nothing to re-read and rejects every reload.

    Raises:
        InvalidArgument: ``--tzdata`` names rules that cannot be read (:meth:`TimeZoneRules.
            load`).
    """

    def __init__(
        self,
        cfg: NodeConfig,
        clock: Clock | None = None,
        reload_source: ReloadSource | None = None,
    ) -> None:
        self.cfg = cfg
        self._reload_source = reload_source
        self.clock: Clock = clock or SystemClock()
        self.logger = log.bind(node_id=cfg.node_id)
        check_security(cfg)
        self.tls = server_tls(cfg)
        self.authn = Authenticator(Path(cfg.auth_policy) if cfg.auth_policy else None)
        interval, retention = cfg.etcd_compaction_interval, cfg.etcd_compaction_retention
        security = EtcdSecurity.from_settings(
            cfg.etcd_cacert, cfg.etcd_cert, cfg.etcd_key, cfg.etcd_user, cfg.etcd_password_file
        )
        self.metrics: NodeMetrics | None = None
        if cfg.http_listen:
            from peerd.http.metrics import NodeMetrics

            self.metrics = NodeMetrics(metric_sources(self), per_task=cfg.metrics_per_task)
        self.etcd = Etcd(
            cfg.etcd,
            space_hint=space_hint(interval, retention),
            security=security,
            observer=self.metrics,
        )
        keys = Keys(cfg.prefix)
        self.rules = TimeZoneRules.load(cfg.tzdata)
        me = pb.Member(
            node_id=cfg.node_id,
            address=cfg.address,
            version=__version__,
            tzdata_version=self.rules.version,
            tzdata_source=self.rules.where,
            labels=cfg.label_map,
        )
        me.started_at.FromDatetime(self.clock.now())
        self.membership = Membership(self.etcd, keys, me, cfg.lease_ttl_s, self._probe, self.clock)
        self.store = TaskStore(self.etcd, keys)
        self.cache = TaskCache(self.etcd, keys, self.clock)
        self.ledger = Ledger(self.etcd, keys)
        self.runs = RunsView(self.etcd, keys, self.clock)
        self.loops = Supervisor(self.clock, fatal=(DuplicateNode,), logger=self.logger)
        self.peer_client = PeerClient(cfg.node_id, self._address_of, self._peer_credentials)
        self.peers = PeerLayer(cfg.node_id, self.membership, self.peer_client, self.clock)
        self.ownership = OwnershipView(cfg.node_id, self.membership, self.peers)
        self.tzdata = TzdataAgreement(
            self.etcd, keys, cfg.node_id, self.rules.version, self.membership, self.clock
        )
        self.ownership.add_filter(self.tzdata.eligible)
        self.ownership.add_filter(matches_node_selector)  # a task's node selector
        self.executors = Executors(cfg, self.clock)
        self.alarms = AlarmMonitor(self.etcd, cfg.node_id, self.clock)
        self.compactor = Compactor(
            self.etcd, keys, cfg.node_id, self.membership, self.alarms, self.clock,
            interval, retention,
        )  # fmt: skip
        self.engine = Engine(
            cfg,
            self.membership,
            self.cache,
            self.ledger,
            self.ownership,
            self.executors,
            self.peer_client.handoff,
            self.clock,
            Supervisor(self.clock, logger=self.logger),
            self.alarms.space_ok,
            rules=self.rules,
            tz_fence=self.tzdata.fence,
        )
        self.tzdata.on_change(self.engine.rules_changed)
        self.cluster = ClusterView(
            cfg.cluster,
            cfg.node_id,
            self.membership,
            self.ownership,
            self.peers,
            lambda: self.cache.placements,
            lambda: self.engine.reconciler.owners,
            self.engine.load,
            self.alarms,
            lambda: self.compactor.holder,
            lambda: (self.tzdata.agreed, self.tzdata.pinned),
        )
        self.gc_pauses = GcPauses()
        self.freezer = Freezer(
            lambda: len(self.cache.placements) + len(self.engine.planner.owned),
            self.cache.ready.is_set,
            self.clock,
            added=lambda: self.engine.planner.acquired,
        )
        self._tune_gc = False
        self.health = HealthServicer()
        self._health_now: dict[str, bool] = {}
        self._serving = False
        self._draining = False
        self._stop = asyncio.Event()
        for supervisor in (self.loops, self.engine.supervisor):
            supervisor.on_change(self._loops_changed)
        self.http: HttpServer | None = None
        self.loopback: LoopbackSocket | None = None
        if self.metrics is not None:
            self.engine.registry.on_finish(self.metrics.run_finished)
            self.engine.claims.on_transaction(self.metrics.claim_done)
            self.peers.on_verdict(self.metrics.verdict)
            self.http, self.loopback = http_server(self)
        self.otel = otel_export(self)

    def health_facts(self) -> health.HealthFacts:
        """What the health checks are computed from, now (:mod:`peerd.core.health`)."""
        degraded = (*self.loops.failures, *self.engine.supervisor.failures)
        return health.HealthFacts(
            serving=self._serving,
            registered=self.membership.registered_once.is_set(),
            watching=self.membership.view_ready.is_set() and self.cache.ready.is_set(),
            claiming=self.membership.claim_ready.is_set(),
            draining=self._draining,
            degraded_loops=tuple(sorted(degraded)),
            alarms=tuple(sorted({a.kind for a in self.alarms.alarms})),
        )

    async def _refresh_health(self) -> None:
        """Set every grpc.health.v1 status that changed (no-op once shutdown began)."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for service, up in health.service_status(self.health_facts()).items():
            if self._health_now.get(service) != up:
                self._health_now[service] = up
                await self.health.set(service, serving if up else not_serving)

    async def _health_loop(self) -> None:
        """Refresh the grpc.health.v1 statuses every :data:`HEALTH_REFRESH_S` (supervised)."""
        while True:
            await self._refresh_health()
            await self.clock.sleep(HEALTH_REFRESH_S)

    def _peer_credentials(self) -> grpc.ChannelCredentials | None:
        return self.tls.peer_credentials() if self.tls is not None else None

    async def _probe(self, address: str) -> bool:
        """Whether a peerd node answers grpc.health.v1 at ``address`` (duplicate node ids)."""
        creds = self._peer_credentials()
        return await check_async(address, timeout_s=1.0, credentials=creds) is not None

    def _address_of(self, node_id: str) -> str | None:
        member = self.membership.view.get(node_id)
        return member.address if member is not None else None

    def ping_answer(self) -> ppb.PingResponse:
        """What this node says about itself in a Ping answer (the Peer servicer adds rumours)."""
        load = self.engine.load()
        return ppb.PingResponse(
            node_id=self.cfg.node_id,
            lease_id=self.membership.lease_id,
            draining=self.ownership.draining,
            claiming=self.membership.claiming,
            load=ppb.Load(active_runs=load.active, capacity=load.capacity, backlog=load.backlog),
        )

    def _loops_changed(self) -> None:
        if self._serving:
            asyncio.get_running_loop().create_task(self._refresh_health())

    def tune_gc(self) -> None:
        """Own the process's garbage collector (:mod:`peerd.gctune`): log long collections and
        freeze the long-lived task objects as they grow (a loop from :meth:`run` on). For a
        process that runs one node; tests that run nodes in their own process leave it alone."""
        self._tune_gc = True
        self.gc_pauses.install()

    def request_stop(self) -> None:
        """Begin a clean shutdown (signal-handler safe when called from the loop)."""
        self._stop.set()

    def reload(self) -> bool:
        """Re-read the configuration, the TLS files and the auth policy (SIGHUP; runs on the
        loop); see :func:`peerd.node_reload.reload_node`.

        Returns:
            True when the new configuration is in force; False when it was rejected and the old
            one is kept.
        """
        return reload_node(self, self._reload_source)

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        try:
            return await self._run()
        finally:
            if self.loopback is not None:
                self.loopback.remove()

    async def _run(self) -> int:
        server = grpc_server(self)
        try:
            if self.tls is not None:
                server.add_secure_port(self.cfg.listen, self.tls.server_credentials())
            else:
                server.add_insecure_port(self.cfg.listen)
            if self.loopback is not None:
                server.add_insecure_port(self.loopback.target)  # the REST gateway's
        except RuntimeError as exc:
            return _fatal(f"cannot listen on {self.cfg.listen}: {exc}", EXIT_ERROR)
        warn_if_exposed(self.cfg, self.tls, self.authn, self.logger)
        if self.http is not None:
            try:
                await self.http.start()
            except OSError as exc:
                return _fatal(f"cannot listen on {self.cfg.http_listen}: {exc}", EXIT_ERROR)
        await self.etcd.connect()
        failure = await self._register()
        if failure is not None:
            if self.http is not None:
                await self.http.stop()
            return _fatal(*failure)
        await self._refresh_health()
        await server.start()
        self._serving = True
        self.logger.info(
            "node_listening",
            listen=self.cfg.listen,
            address=self.cfg.address,
            http=self.http.address if self.http is not None else "",
            etcd=",".join(self.cfg.etcd),
            cluster=self.cfg.cluster,
            tzdata=self.rules.describe(),
        )
        if self.http is not None:
            self.loops.spawn("http.server", self.http.run)
        self.loops.spawn("node.health", self._health_loop)
        self.loops.spawn("membership.keepalive", self.membership.keepalive_loop)
        self.loops.spawn("membership.watch", self.membership.watch_loop)
        self.loops.spawn("tasks.watch", self.cache.run)
        if self._tune_gc:
            self.loops.spawn("gc.freeze", self.freezer.run)
            self.loops.spawn("gc.pauses", lambda: self.gc_pauses.run(self.clock))
        self.loops.spawn("peers.probe", self.peers.run)
        self.loops.spawn("etcd.alarms", self.alarms.run)
        self.loops.spawn("etcd.compactor", self.compactor.run)
        self.loops.spawn("tzdata.watch", self.tzdata.watch_loop)
        self.loops.spawn("tzdata.agree", self.tzdata.agree_loop)
        await self.engine.start()
        ready = asyncio.create_task(self._mark_ready())
        stop = asyncio.create_task(self._stop.wait())
        fatal = asyncio.create_task(self.loops.wait_fatal())
        await asyncio.wait([stop, fatal], return_when=asyncio.FIRST_COMPLETED)
        code = EXIT_OK
        if fatal.done():
            error = fatal.result()
            code = EXIT_ALREADY_EXISTS if isinstance(error, DuplicateNode) else EXIT_ERROR
            print(f"peerd: error: {error}", file=sys.stderr)
        for t in (stop, fatal, ready):
            t.cancel()
        await self._shutdown(server, drain=code == EXIT_OK)
        self.logger.info("node_stopped", exit_code=code)
        return code

    async def _shutdown(self, server: grpc.aio.Server, drain: bool) -> None:
        self.logger.info("node_stopping")
        self._draining = True
        await self.health.enter_graceful_shutdown()
        await self.compactor.release()  # the next node takes compaction over at once
        if drain and self.membership.claim_ready.is_set():
            # Drain: tell everyone we own nothing, hand every task over (no gap), then let
            # running executions finish within the grace period.
            await self.membership.set_draining()
            await self.engine.drain(timeout_s=3.0)
        await self.engine.stop(self.cfg.drain_grace_s)
        await self.executors.close()
        await self.membership.revoke()
        await self.loops.stop()
        await self.peer_client.close()
        await server.stop(1.0)
        await self.etcd.close()
        if self.otel is not None:
            await self.otel.close()

    async def _register(self) -> tuple[str, int] | None:
        """Register this node, retrying while etcd is unreachable; on failure the reason and
        the exit code."""
        backoff = retry_backoff()
        while not self._stop.is_set():
            try:
                await self.membership.register(first=True)
                return None
            except DuplicateNode as exc:
                return str(exc), EXIT_ALREADY_EXISTS
            except Unauthenticated as exc:
                return str(exc), EXIT_PERMISSION_DENIED
            except InvalidArgument as exc:
                return str(exc), EXIT_INVALID
            except Unavailable as exc:
                delay_s = backoff.next_delay_s()
                self.logger.warning("waiting_for_etcd", error=str(exc), retry_in_s=delay_s)
                await self.clock.sleep(delay_s)
        return "stopped before registering", EXIT_ALREADY_EXISTS

    async def _mark_ready(self) -> None:
        await self.membership.view_ready.wait()
        await self.cache.ready.wait()
        await self._refresh_health()
        self.logger.info(
            "node_ready", members=self.membership.members(), tasks=len(self.cache.tasks)
        )


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
        node.tune_gc()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.request_stop)
        loop.add_signal_handler(signal.SIGHUP, node.reload)
        return await node.run()

    return asyncio.run(main())
