"""``python -m peerd.healthcheck [HOST:PORT]``: exit 0 when a peerd node reports SERVING.

A container health probe that needs no extra tools: it asks the node's ``grpc.health.v1`` service
(overall health, service name ``""``) and exits 0 when the answer is SERVING, else 1 with one line
on stderr (not serving, unreachable, timed out). Invalid usage exits 2.

Without an address it probes the port of ``PEERD_LISTEN`` (default ``127.0.0.1:7070``) on the
loopback interface when the node listens on a wildcard address (``0.0.0.0``, ``::``), so the
Docker image's ``HEALTHCHECK`` follows a changed listen port.

TLS (:func:`tls_from_env`): a client's ``PEERD_CA``/``PEERD_CERT``/``PEERD_KEY`` when set, else
the node's own ``PEERD_TLS_CLIENT_CA``/``PEERD_TLS_CERT``/``PEERD_TLS_KEY`` (a node certificate
is a client certificate too), so the image's ``HEALTHCHECK`` works on a TLS node unchanged.
``--http PATH`` (``/readyz``, ``/livez``) asks the node's HTTP port instead (``--http-listen``;
without an address, the port of ``PEERD_HTTP_LISTEN``): exit 0 on a 200 answer, else 1 with the
status and the first line of the body (the readiness problem).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from peerd.errors import InvalidArgument
from peerd.node_config import DEFAULT_LISTEN
from peerd.security.tls import ClientTls

DEFAULT_TIMEOUT_S = 3.0
"""Seconds to wait for the Check answer (connection included)."""

EXIT_SERVING = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2

_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]", "*"}


def default_address(env: Mapping[str, str], http: bool = False) -> str:
    """The address to probe when none is given: ``PEERD_LISTEN``'s port (``http``:
    ``PEERD_HTTP_LISTEN``'s), on loopback if the node listens on a wildcard address.

    Args:
        env: the process environment (pass ``os.environ``).
        http: the HTTP port's address instead of the gRPC port's.
    """
    default = "" if http else DEFAULT_LISTEN
    listen = (env.get("PEERD_HTTP_LISTEN" if http else "PEERD_LISTEN") or default).strip()
    host, _, port = listen.rpartition(":")
    if host in _WILDCARD_HOSTS:
        host = "[::1]" if host in ("::", "[::]") else "127.0.0.1"
    return f"{host}:{port}"


_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
"""Probe the address itself: an ``http_proxy`` in the environment would otherwise carry the call
(and a proxy that refuses it reads as a dead node)."""


def _status_name(response: health_pb2.HealthCheckResponse) -> str:
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


def tls_from_env(env: Mapping[str, str]) -> ClientTls | None:
    """The TLS a probe presents (module docstring); None: plaintext.

    Raises:
        InvalidArgument: a certificate without its key.
    """
    client = ClientTls.from_options(None, None, None, env)
    if client is not None or not env.get("PEERD_TLS_CERT"):
        return client
    ca, cert, key = (env.get(f"PEERD_TLS_{n}") for n in ("CLIENT_CA", "CERT", "KEY"))
    return ClientTls.from_options(ca, cert, key, {})


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    return grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)


def _probe(
    address: str,
    timeout_s: float,
    service: str,
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """The status name at ``address``; raises :class:`grpc.RpcError` when there is no answer."""
    with _channel(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return _status_name(stub.Check(request, timeout=timeout_s))


def check(
    address: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
) -> str | None:
    """Ask ``grpc.health.v1.Health/Check`` at ``address``, blocking.

    Args:
        address: ``HOST:PORT`` of the node's gRPC server.
        timeout_s: deadline for the call, connecting included.
        service: health service name; ``""`` is the node's overall health.
        credentials: TLS credentials (None: plaintext).

    Returns:
        The status name (``"SERVING"``, ``"NOT_SERVING"``, ``"SERVICE_UNKNOWN"``, ...), or
        ``None`` when nothing answered in time (refused, unreachable, deadline exceeded, or any
        other RPC error). Never raises for an RPC failure.
    """
    try:
        return _probe(address, timeout_s, service, credentials)
    except grpc.RpcError:
        return None


async def check_async(
    address: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
) -> str | None:
    """:func:`check` on the running event loop (``grpc.aio``): the same arguments and result."""
    if credentials is None:
        channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
    else:
        channel = grpc.aio.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
    try:
        async with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            return _status_name(await stub.Check(request, timeout=timeout_s))
    except grpc.RpcError:
        return None


def check_http(address: str, path: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """GET ``http://address{path}``; None on a 200 answer, else why not (one line)."""
    url = f"http://{address}{path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy
    try:
        with opener.open(url, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace").strip().splitlines()
        return f"HTTP {exc.code}: {body[0] if body else exc.reason}"
    except (OSError, ValueError) as exc:
        return f"no answer: {exc}"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Parse the command line, probe once, print a reason on failure and return the exit code.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).
        env: environment for the default address (default ``os.environ``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m peerd.healthcheck",
        description="Exit 0 when the peerd node at HOST:PORT reports grpc.health.v1 SERVING.",
    )
    parser.add_argument(
        "address",
        nargs="?",
        metavar="HOST:PORT",
        help="node to probe (default: the port of PEERD_LISTEN on loopback, else 127.0.0.1:7070)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"deadline for the check (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--http",
        metavar="PATH",
        help="probe PATH (/readyz, /livez) on the node's HTTP port instead (default address: "
        "the port of PEERD_HTTP_LISTEN on loopback)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return EXIT_USAGE if exc.code else EXIT_SERVING
    if args.timeout <= 0:
        print("peerd.healthcheck: --timeout must be > 0", file=sys.stderr)
        return EXIT_USAGE
    environ = os.environ if env is None else env
    if args.http is not None:
        address = args.address or default_address(environ, http=True)
        problem = check_http(address, args.http, args.timeout)
        if problem is not None:
            print(f"peerd.healthcheck: {address}{args.http}: {problem}", file=sys.stderr)
            return EXIT_UNHEALTHY
        return EXIT_SERVING
    address = args.address or default_address(environ)
    try:
        tls = tls_from_env(environ)
        credentials = tls.credentials() if tls is not None else None
    except InvalidArgument as exc:
        print(f"peerd.healthcheck: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        status = _probe(address, args.timeout, "", credentials)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        status = f"health check failed: {code.name if code is not None else 'ERROR'}"
    if status != "SERVING":
        print(f"peerd.healthcheck: {address}: {status}", file=sys.stderr)
        return EXIT_UNHEALTHY
    return EXIT_SERVING


if __name__ == "__main__":
    raise SystemExit(main())
