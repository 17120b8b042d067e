"""The HTTP/JSON API: every route of :data:`peerd.http.rest_routes.ROUTES`, served as a gateway
onto the node's own gRPC server (as grpc-gateway does).

::

    HTTP client --JSON--> aiohttp handler --protobuf, grpc.aio--> unix socket of this node's
                                         <-- status, message ---  gRPC server: AuthInterceptor,
                                                                  ApiGuard, SchedulerService

Every REST call is a real gRPC call on the node's own server, so it passes the same
interceptors (authentication, authorisation, audit log, safe parsing, rate limit), the same
validation in the servicer and the same error mapping (:mod:`peerd.rpc.errors`) as any gRPC
client: there is no second path to keep in step. The gateway dials the server on a unix socket
the node adds for it (:class:`LoopbackSocket`, in a directory only the node's user can enter),
in plaintext and without a client certificate, so:

* **a REST caller is authenticated by its bearer token only** (the ``Authorization`` header,
  forwarded as ``authorization`` metadata). Without a token, under an auth policy, it is
  UNAUTHENTICATED (401): the gateway never lends a caller the node's certificate or any other
  credential. Without a policy every caller is unrestricted, as on gRPC.
* with mutual TLS on the node (``--tls-client-ca``) and the HTTP port served over HTTPS
  (``--http-tls``), a REST call must also come over a connection that presented a client
  certificate of the cluster CA, as every gRPC connection must (401 otherwise); the certificate
  admits the connection, it never names the principal.
* the rate limit counts REST callers by their own address: the gateway forwards it as
  ``peerd-forwarded-for`` metadata, which :func:`peerd.rpc.auth.peer_of` believes only on the
  unix socket (also the address ``api_denied`` logs).

Errors are answered with google.rpc's HTTP status for the gRPC status code and a
``google.rpc.Status`` body (:func:`peerd.http.rest_routes.status_body`).

WatchRuns is served as server-sent events (``text/event-stream``): one ``event: run`` with the
RunRecord's JSON on one ``data:`` line per record, a comment line every
:data:`KEEPALIVE_S`; the gRPC stream is cancelled when the HTTP client goes away (aiohttp's
handler cancellation) or the node stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import structlog
from aiohttp import web
from google.protobuf import message_factory
from google.protobuf.message import Message

from peerd.errors import InvalidArgument
from peerd.http.openapi import document
from peerd.http.rest_routes import (
    SERVICE,
    Route,
    build_request,
    http_status,
    match,
    status_body,
    to_json,
)
from peerd.rpc.auth import FORWARDED_FOR

log = structlog.get_logger("peerd.http.rest")

KEEPALIVE_S = 15.0
"""Seconds between two comment lines on an idle event stream: under the 30-60 s idle timeouts
of common proxies and load balancers, so an idle watch is not cut."""
CALL_TIMEOUT_S = 60.0
"""Deadline of one unary call through the gateway (the CLI's default is 10 s; an apply of many
tasks may take longer). A client that goes away cancels its call at once."""
Metadata = list[tuple[str, str]]


class LoopbackSocket:
    """The unix socket the node's gRPC server also listens on, for the gateway: ``grpc.sock``
    in a fresh directory from :func:`tempfile.mkdtemp` (mode 0700, so only the node's user can
    connect), made on the first read of :attr:`target`; :meth:`remove` deletes both."""

    def __init__(self) -> None:
        self._directory: Path | None = None

    @property
    def target(self) -> str:
        """``unix:/tmp/peerd-rest-XXXX/grpc.sock`` (the directory is made on first read)."""
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="peerd-rest-"))
        return f"unix:{self._directory / 'grpc.sock'}"

    def remove(self) -> None:
        """Delete the socket and its directory (idempotent)."""
        directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _peer_address(request: web.Request) -> str:
    """The HTTP client as ``context.peer()`` names a gRPC one (``ipv4:127.0.0.1:port``)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return "unknown"
    host, port = peer[0], peer[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def _error(code: grpc.StatusCode, message: str) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if code == grpc.StatusCode.UNAUTHENTICATED else {}
    return web.json_response(status_body(code, message), status=http_status(code), headers=headers)


class RestGateway:
    """The aiohttp handlers of the API (see the module docstring).

    Args:
        loopback: the node's loopback socket (the server listens on its target).
        client_cert_required: REST calls must come over a connection with a verified client
            certificate (mutual TLS on the node and HTTPS on the HTTP port).
    """

    def __init__(self, loopback: LoopbackSocket, client_cert_required: bool = False) -> None:
        self.loopback = loopback
        self.client_cert_required = client_cert_required
        self._channel: grpc.aio.Channel | None = None
        self._openapi = json.dumps(document()).encode()

    def add_routes(self, app: web.Application) -> None:
        """Register the OpenAPI document and one catch-all route for every API path."""
        app.router.add_get("/v1/openapi.json", self._openapi_doc)
        app.router.add_route("*", "/v1/{tail:.*}", self.dispatch)

    async def open(self) -> None:
        """Open the channel to the node's server (on the running loop; no-op when open)."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.loopback.target, options=[("grpc.max_receive_message_length", -1)]
            )

    async def close(self) -> None:
        """Close the channel (calls in progress end CANCELLED)."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def _openapi_doc(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    def _metadata(self, request: web.Request) -> Metadata:
        metadata = [(FORWARDED_FOR, _peer_address(request))]
        authorization = request.headers.get("Authorization")
        if authorization:
            if not (authorization.isascii() and authorization.isprintable()):
                raise InvalidArgument("Authorization", "not a printable ASCII header value")
            metadata.append(("authorization", authorization))
        return metadata

    def _admitted(self, request: web.Request) -> bool:
        if not self.client_cert_required:
            return True
        transport = request.transport
        return transport is not None and bool(transport.get_extra_info("peercert"))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route, map, call, answer (any method on any ``/v1/`` path)."""
        path = request.rel_url.raw_path
        route, path_id, allowed = match(path, request.method)
        if route is None:
            if allowed:
                response = _error(grpc.StatusCode.UNIMPLEMENTED, f"{request.method} not allowed")
                response.set_status(405)
                response.headers["Allow"] = ", ".join(allowed)
                return response
            return _error(grpc.StatusCode.NOT_FOUND, f"no route {path}")
        if not self._admitted(request):
            return _error(
                grpc.StatusCode.UNAUTHENTICATED,
                "the node requires a client certificate of the cluster CA (mutual TLS)",
            )
        try:
            metadata = self._metadata(request)
            body = await request.read() if route.body else b""
            message = build_request(route, path_id, list(request.rel_url.query.items()), body)
        except InvalidArgument as exc:
            return _error(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self.open()
        if route.stream:
            return await self._stream(request, route, message, metadata)
        return await self._unary(route, message, metadata)

    def _callable(self, route: Route, stream: bool) -> Any:
        assert self._channel is not None
        response = message_factory.GetMessageClass(route.method.output_type)
        name = f"/{SERVICE.full_name}/{route.rpc}"
        make = self._channel.unary_stream if stream else self._channel.unary_unary
        return make(
            name,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )

    async def _unary(self, route: Route, message: Message, metadata: Metadata) -> web.Response:
        call = self._callable(route, stream=False)
        try:
            answer = await call(message, metadata=metadata, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return _error(exc.code(), exc.details() or exc.code().name)
        return web.json_response(to_json(answer))

    async def _stream(
        self, request: web.Request, route: Route, message: Message, metadata: Metadata
    ) -> web.StreamResponse:
        call = self._callable(route, stream=True)(message, metadata=metadata)
        try:
            await call.initial_metadata()  # sent once the handler started: auth and checks passed
            if call.done():
                code = await call.code()
                if code != grpc.StatusCode.OK:
                    return _error(code, await call.details() or code.name)
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            await _pump(call, response.write)
            return response
        finally:
            call.cancel()


async def _pump(call: Any, write: Callable[[bytes], Any]) -> None:
    """Write every message of ``call`` as an event, a comment every :data:`KEEPALIVE_S` while
    idle, until the stream ends (an error ends it with an ``event: error`` holding the
    ``google.rpc.Status``)."""
    queue: asyncio.Queue[Message | grpc.aio.AioRpcError | None] = asyncio.Queue(maxsize=64)

    async def read() -> None:
        try:
            async for item in call:
                await queue.put(item)
            await queue.put(None)
        except grpc.aio.AioRpcError as exc:
            await queue.put(exc)

    reader = asyncio.create_task(read())
    try:
        await write(b": watching\n\n")
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await write(b": keep-alive\n\n")
                continue
            if item is None:
                return
            if isinstance(item, grpc.aio.AioRpcError):
                status = status_body(item.code(), item.details() or item.code().name)
                await write(f"event: error\ndata: {json.dumps(status)}\n\n".encode())
                return
            data = json.dumps(to_json(item), separators=(",", ":"))
            await write(f"event: run\ndata: {data}\n\n".encode())
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


__all__ = ["CALL_TIMEOUT_S", "KEEPALIVE_S", "LoopbackSocket", "RestGateway"]
