"""The node's HTTP server (aiohttp) on ``--http-listen``, beside the gRPC port.

=============  =================================================================================
route          answer
=============  =================================================================================
``/metrics``   Prometheus text format 0.0.4 (:mod:`peerd.http.metrics`)
``/livez``     200 ``ok`` while the event loop runs handlers at all
``/readyz``    200 ``ok``, or 503 with one reason per line (:func:`peerd.core.health.
               readiness_problems`: not registered, views not loaded, no live lease, a degraded
               loop, an etcd alarm, draining)
``/``          the read-only web dashboard (:mod:`peerd.http.dashboard`)
=============  =================================================================================

The node binds the port before it registers (:meth:`HttpServer.start`: a taken port fails the
start at once, like the gRPC port) and then runs :meth:`HttpServer.run` under its supervisor,
which keeps serving until cancelled and re-binds after a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from aiohttp import web

from peerd.core.health import HealthFacts, readiness_problems
from peerd.http.dashboard import add_dashboard
from peerd.http.metrics import CONTENT_TYPE, NodeMetrics

log = structlog.get_logger("peerd.http")


class HttpServer:
    """Serves the routes of the module table on ``listen``.

    Args:
        listen: ``HOST:PORT`` (IPv6 as ``[::1]:PORT``; port 0: a free one, see :attr:`address`).
        metrics: the node's metrics.
        health: ``() -> HealthFacts`` now (read per ``/readyz`` request).
        node_id: for the log.
    """

    def __init__(
        self,
        listen: str,
        metrics: NodeMetrics,
        health: Callable[[], HealthFacts],
        node_id: str,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.metrics = metrics
        self.health = health
        self._runner: web.AppRunner | None = None
        self._log = log.bind(node_id=node_id)
        # TEMPORARY: the REST stand-in's routes (peerd/http/_rest_standin.py); dropped with it.
        self.extra_routes: list[Callable[[web.Application], None]] = []

    @property
    def address(self) -> str:
        """``HOST:PORT`` actually bound (the chosen port when ``listen`` had port 0)."""
        if self._runner is not None and self._runner.addresses:
            host, port = self._runner.addresses[0][:2]
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"{self.host}:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application with the routes of the module table."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        add_dashboard(app)
        for add in self.extra_routes:
            add(app)
        return app

    async def start(self) -> None:
        """Bind and start serving (no-op when started).

        Raises:
            OSError: the address cannot be bound (taken, not local).
        """
        if self._runner is not None:
            return
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._log.info("http_listening", address=self.address)

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

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.scrape(), headers={"Content-Type": CONTENT_TYPE})

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = readiness_problems(self.health())
        if not problems:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="".join(f"{p}\n" for p in problems))
