"""``peerd.healthcheck.check`` and ``check_async`` against a real gRPC health server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from grpc_health.v1 import health, health_pb2

from peerd.devtools.spawn import free_port
from peerd.healthcheck import check, check_async
from tests.helpers import health_server


@pytest.fixture
def server() -> Iterator[tuple[str, health.HealthServicer]]:
    """A health server: overall health SERVING, service ``"drain"`` NOT_SERVING."""
    serving = health_pb2.HealthCheckResponse.SERVING
    with health_server({"": serving, "drain": health_pb2.HealthCheckResponse.NOT_SERVING}) as s:
        yield s


def test_check_returns_the_status_name(server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = server
    assert check(address, 2.0) == "SERVING"
    assert check(address, 2.0, service="drain") == "NOT_SERVING"
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert check(address, 2.0) == "NOT_SERVING"


def test_check_async_returns_the_status_name(server: tuple[str, health.HealthServicer]) -> None:
    address, _ = server

    async def both() -> tuple[str | None, str | None]:
        return await check_async(address, 2.0), await check_async(address, 2.0, "drain")

    assert asyncio.run(both()) == ("SERVING", "NOT_SERVING")


def test_no_answer_is_none(server: tuple[str, health.HealthServicer]) -> None:
    address, _ = server
    closed = f"127.0.0.1:{free_port()}"
    assert check(closed, 1.0) is None
    assert asyncio.run(check_async(closed, 1.0)) is None
    # an unknown service is an RPC error (NOT_FOUND), not a status
    assert check(address, 2.0, service="nope") is None
    assert asyncio.run(check_async(address, 2.0, "nope")) is None


def test_http_proxy_is_not_used(
    server: tuple[str, health.HealthServicer], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, _ = server
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for var in ("http_proxy", "https_proxy", "grpc_proxy"):
        monkeypatch.setenv(var, dead_proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert check(address, 2.0) == "SERVING"
    assert asyncio.run(check_async(address, 2.0)) == "SERVING"
