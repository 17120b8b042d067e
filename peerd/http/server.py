"""The node's HTTP server (aiohttp) on ``--http-listen``, beside the gRPC port.

=============  =================================================================================
route          answer
=============  =================================================================================
``/metrics``   Prometheus text format 0.0.4 (:mod:`peerd.http.metrics`)
``/livez``     200 ``ok`` while the event loop runs handlers at all
``/readyz``    200 ``ok``, or 503 with one reason per line (:func:`peerd.core.health.
               readiness_problems`: not registered, views not loaded, no live lease, a degraded
               loop, an etcd alarm, draining)
``/v1/...``    the HTTP/JSON API (:mod:`peerd.http.rest`, routes in :mod:`peerd.http.rest_routes`;
               ``/v1/openapi.json`` its OpenAPI document), when the node gives a gateway
``/``          the read-only web dashboard (:mod:`peerd.http.dashboard`), which reads ``/v1/``
=============  =================================================================================

With an SSL context (``--http-tls``) the port serves HTTPS with the node's certificate.

The node binds the port before it registers (:meth:`HttpServer.start`: a taken port fails the
start at once, like the gRPC port) and then runs :meth:`HttpServer.run` under its supervisor,
which keeps serving until cancelled and re-binds after a crash.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import structlog
from aiohttp import web

from peerd.core.health import HealthFacts, readiness_problems
from peerd.http.dashboard import add_dashboard
from peerd.http.metrics import CONTENT_TYPE, NodeMetrics
from peerd.http.rest import RestGateway

log = structlog.get_logger("peerd.http")


class HttpServer:
    """Serves the routes of the module table on ``listen``.

    Args:
        listen: ``HOST:PORT`` (IPv6 as ``[::1]:PORT``; port 0: a free one, see :attr:`address`).
        metrics: the node's metrics.
        health: ``() -> HealthFacts`` now (read per ``/readyz`` request).
        node_id: for the log.
        rest: the HTTP/JSON API's gateway; ``None``: no ``/v1/`` routes.
        ssl_context: serve HTTPS with it; ``None``: plain HTTP.
        max_body_bytes: largest request body taken (aiohttp answers 413 above it).
    """

    def __init__(
        self,
        listen: str,
        metrics: NodeMetrics,
        health: Callable[[], HealthFacts],
        node_id: str,
        rest: RestGateway | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_body_bytes: int = 1024**2,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.metrics = metrics
        self.health = health
        self.rest = rest
        self.ssl_context = ssl_context
        self.max_body_bytes = max_body_bytes
        self._runner: web.AppRunner | None = None
        self._log = log.bind(node_id=node_id)

    @property
    def address(self) -> str:
        """``HOST:PORT`` actually bound (the chosen port when ``listen`` had port 0)."""
        if self._runner is not None and self._runner.addresses:
            host, port = self._runner.addresses[0][:2]
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"{self.host}:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application with the routes of the module table."""
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        if self.rest is not None:
            self.rest.add_routes(app)
        add_dashboard(app)
        return app

    async def start(self) -> None:
        """Bind and start serving (no-op when started).

        Raises:
            OSError: the address cannot be bound (taken, not local).
        """
        if self._runner is not None:
            return
        # Handler cancellation: a client that goes away cancels its gRPC call (an event stream).
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, handler_cancellation=True
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        scheme = "https" if self.ssl_context is not None else "http"
        self._log.info("http_listening", address=self.address, scheme=scheme)

    async def run(self) -> None:
        """Serve until cancelled (a supervised loop): start if needed, then wait; the port is
        released when the loop ends."""
        try:
            await self.start()
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop serving and release the port (no-op when stopped)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self.rest is not None:
            await self.rest.close()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.scrape(), headers={"Content-Type": CONTENT_TYPE})

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = readiness_problems(self.health())
        if not problems:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="".join(f"{p}\n" for p in problems))
