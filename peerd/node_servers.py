"""What a node serves, built from its parts: the gRPC server and its services, the HTTP port
(metrics, health, the HTTP/JSON gateway), the OpenTelemetry export, and the start-up warnings
about an exposed port.

Part of the composition root with :mod:`peerd.node`: :class:`peerd.node.Node` builds its
components and calls these functions to put them behind its ports. Nothing here runs a loop or
talks to etcd; aiohttp and the OpenTelemetry SDK are imported only when their port or exporter is
configured (aiohttp costs ~0.3 s per start).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from peerd.coord.etcd_channel import host_of
from peerd.core import health
from peerd.node_config import NodeConfig
from peerd.rpc.auth import AuthInterceptor
from peerd.rpc.guard import ApiGuard, RateLimiter
from peerd.rpc.peer_service import PeerService
from peerd.rpc.service import SchedulerService
from peerd.security.authn import Authenticator
from peerd.security.tls import ServerTls
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import peer_pb2_grpc as ppb_grpc
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from peerd.http.metrics import MetricSources
    from peerd.http.rest import LoopbackSocket
    from peerd.http.server import HttpServer
    from peerd.node import Node
    from peerd.observe.otel import OtelExport


def is_loopback(listen: str) -> bool:
    """Whether ``HOST:PORT`` binds only a loopback address (``localhost`` counts)."""
    host = host_of(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_tls(cfg: NodeConfig) -> ServerTls | None:
    """The node's TLS material from ``--tls-cert``/``--tls-key``/``--tls-client-ca``; ``None``
    without ``--tls-cert``.

    Raises:
        InvalidArgument: a file cannot be read or does not hold what it should.
    """
    if not cfg.tls_cert:
        return None
    client_ca = Path(cfg.tls_client_ca) if cfg.tls_client_ca else None
    return ServerTls(Path(cfg.tls_cert), Path(cfg.tls_key), client_ca)


def grpc_server(node: Node) -> grpc.aio.Server:
    """The gRPC server with every service of ``node`` added (Scheduler, Peer, grpc.health.v1,
    reflection) behind authentication, then the API rate limit; no port added yet."""
    cfg = node.cfg
    mutual = node.tls is not None and node.tls.mutual
    limiter = RateLimiter(lambda: node.cfg.api_rate_limit, lambda: node.cfg.api_burst, node.clock)
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", cfg.max_message_size),
        ],
        # Authentication first: the rate limit then counts per authenticated principal.
        interceptors=[
            AuthInterceptor(node.authn, node.store, node_certs=mutual),
            ApiGuard(limiter),
        ],
    )
    scheduler = SchedulerService(
        node.store,
        node.ledger,
        node.runs,
        node.executors,
        node.engine,
        node.cluster,
        lambda: node.cfg,
        node.clock,
        node.rules,
        node.tzdata,
    )
    pb_grpc.add_SchedulerServicer_to_server(scheduler, server)
    ppb_grpc.add_PeerServicer_to_server(PeerService(node, node.peers, node.engine), server)
    health_pb2_grpc.add_HealthServicer_to_server(node.health, server)
    reflection.enable_server_reflection(
        (
            pb.DESCRIPTOR.services_by_name["Scheduler"].full_name,
            ppb.DESCRIPTOR.services_by_name["Peer"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return server


def http_server(node: Node) -> tuple[HttpServer, LoopbackSocket]:
    """The HTTP port of ``node`` (``--http-listen``: metrics, health and the HTTP/JSON API) and
    the loopback socket its gateway calls the node's gRPC server on (docs/http-api.md).

    ``node.metrics`` must be set (it is whenever ``--http-listen`` is).
    """
    from peerd.http.rest import LoopbackSocket, RestGateway
    from peerd.http.server import HttpServer

    cfg = node.cfg
    assert node.metrics is not None
    https = node.tls.https_context() if node.tls is not None and cfg.http_tls else None
    mutual = node.tls is not None and node.tls.mutual
    loopback = LoopbackSocket()
    server = HttpServer(
        cfg.http_listen,
        node.metrics,
        node.health_facts,
        cfg.node_id,
        rest=RestGateway(loopback, client_cert_required=mutual),
        ssl_context=https,
        # JSON spells a message out at up to a few times its protobuf size.
        max_body_bytes=4 * cfg.max_message_size,
    )
    return server, loopback


def metric_sources(node: Node) -> MetricSources:
    """Where ``node``'s ``/metrics`` reads its gauges from (callables, read at each scrape)."""
    from peerd.http.metrics import EtcdView, MetricSources

    def etcd_view() -> EtcdView | None:
        status = node.alarms.status
        if not node.compactor.holding or status is None:
            return None
        kinds = tuple(a.kind for a in node.alarms.alarms)
        return EtcdView(status.db_size, status.db_size_in_use, kinds)

    return MetricSources(
        engine=lambda: node.engine.stats,
        degraded_loops=lambda: len(node.loops.failures) + len(node.engine.supervisor.failures),
        ready=lambda: not health.readiness_problems(node.health_facts()),
        members=lambda: len(node.membership.view),
        etcd=etcd_view,
        leader=lambda: node.compactor.holding,
    )


def otel_export(node: Node) -> OtelExport | None:
    """Spans of claims, runs and records of ``node`` to ``--otel-endpoint``
    (docs/observability.md), wired to the engine; ``None`` without an endpoint (the SDK is
    imported only then)."""
    cfg = node.cfg
    if not cfg.otel_endpoint:
        return None
    from peerd.observe.otel import OtelExport

    otel = OtelExport(cfg.node_id, cfg.otel_endpoint, node.clock, os.environ)
    node.engine.claims.on_transaction(otel.claim_transaction)
    node.engine.registry.on_finish(otel.run_finished)
    node.engine.registry.on_recorded(otel.run_recorded)
    return otel


def warn_if_exposed(
    cfg: NodeConfig, tls: ServerTls | None, authn: Authenticator, logger: structlog.BoundLogger
) -> None:
    """Log at start what anyone who reaches a non-loopback port could do: a plaintext HTTP port
    next to TLS gRPC (``http_plaintext_with_tls``), no TLS (``serve_plaintext_on_network``),
    no auth policy (``serve_without_auth_policy``)."""
    http = cfg.http_listen
    if http and tls is not None and not cfg.http_tls and not is_loopback(http):
        logger.warning(
            "http_plaintext_with_tls",
            listen=http,
            detail="the HTTP port serves plaintext: bearer tokens sent to its /v1/ API "
            "cross the network readable; give --http-tls (docs/http-api.md)",
        )
    if is_loopback(cfg.listen):
        return
    if tls is None:
        logger.warning(
            "serve_plaintext_on_network",
            listen=cfg.listen,
            detail="no --tls-cert: API calls, tokens and peer traffic cross the network in "
            "plaintext; anyone on the path can read or forge them (docs/security.md)",
        )
    if authn.policy is None:
        logger.warning(
            "serve_without_auth_policy",
            listen=cfg.listen,
            detail="no --auth-policy: whoever reaches this port may create, change, run "
            "and delete every task (docs/security.md)",
        )
