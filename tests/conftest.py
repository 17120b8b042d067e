"""Shared fixtures: one real etcd per session, a unique cluster per test, real peerd nodes and a
webhook sink. Tests under ``tests/integration`` are marked ``integration`` automatically."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

import peerd  # noqa: F401  # first: it turns off gRPC's fork handlers before gRPC is imported
from peerd.devtools.etcd_server import EmbeddedEtcd, EtcdNotInstalled, find_etcd_binary
from peerd.devtools.sink import WebhookSink
from tests.helpers import PeerdNode

settings.register_profile("peerd", max_examples=40, derandomize=True, database=None, deadline=None)
"""The suite's default hypothesis profile: deterministic (the same examples on every run, CI
included) and of bounded cost (the hostile-input suite runs in about 30 s)."""
settings.register_profile("long", max_examples=2000, derandomize=False, deadline=None)
"""For a long search: ``pytest --hypothesis-profile long tests/integration/test_hostile_input.py``
(randomized; failures are kept in ``.hypothesis/``)."""
settings.load_profile("peerd")

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
NODE_LOG_LINES = 80

_STARTED_NODES = pytest.StashKey[list[PeerdNode]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _node_logs(started: list[PeerdNode]) -> str:
    parts = []
    for node in started:
        parts.append(
            f"----- {node.node_id} ({node.address}, log {node.log_path}), "
            f"last {NODE_LOG_LINES} lines -----\n{node.log_tail(NODE_LOG_LINES)}"
        )
    return "\n".join(parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every node log to the report of a failed setup, call or teardown."""
    report = yield
    started = item.stash.get(_STARTED_NODES, None)
    if report.failed and started:
        report.sections.append((f"peerd node logs ({report.when})", _node_logs(started)))
    return report


@contextlib.contextmanager
def running_etcd(root: Path, **kw: Any) -> Iterator[EmbeddedEtcd]:
    """A started :class:`EmbeddedEtcd` with its data and log under ``root`` (``kw`` goes to its
    constructor), stopped on exit; skips the test if etcd is not installed."""
    try:
        find_etcd_binary()
    except EtcdNotInstalled as exc:
        pytest.skip(f"integration tests need a real etcd: {exc}")
    server = EmbeddedEtcd(root / "data", log_path=root / "etcd.log", **kw)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEtcd]:
    """One real etcd for the whole session (skips dependent tests if etcd is not installed)."""
    with running_etcd(tmp_path_factory.mktemp("etcd"), name="peerd-test") as server:
        yield server


@pytest.fixture
def etcd_endpoint(etcd_server: EmbeddedEtcd) -> str:
    """``127.0.0.1:PORT`` of the session etcd."""
    return etcd_server.endpoint


@pytest.fixture
def cluster_name() -> str:
    """A cluster name unique to this test, so tests sharing one etcd never see each other."""
    return f"t-{uuid.uuid4().hex[:10]}"


NodesFactory = Callable[..., list[PeerdNode]]


@pytest.fixture
def nodes(
    request: pytest.FixtureRequest, etcd_endpoint: str, cluster_name: str, tmp_path: Path
) -> Iterator[NodesFactory]:
    """Factory ``nodes(count=1, wait=True, timeout=20.0, **kw) -> list[PeerdNode]``.

    Starts ``count`` nodes on this test's cluster (ids continue across calls: ``n1``, ``n2``, ...),
    all launched before any is waited for. ``kw`` goes to :class:`PeerdNode` (``lease_ttl_s``,
    ``allow_shell``, ``extra_args``, ``env``, ...). Every node is killed at teardown; when the test
    fails, the last lines of every node log are attached to the report.
    """
    started: list[PeerdNode] = []
    request.node.stash[_STARTED_NODES] = started

    def factory(
        count: int = 1, *, wait: bool = True, timeout: float = 20.0, **kw: Any
    ) -> list[PeerdNode]:
        new = []
        for _ in range(count):
            node = PeerdNode(f"n{len(started) + 1}", etcd_endpoint, cluster_name, tmp_path, **kw)
            started.append(node)
            new.append(node)
            node.start(wait=False)
        if wait:
            for node in new:
                node.wait_ready(timeout)
        return new

    yield factory

    errors: list[BaseException] = []
    for node in started:
        try:
            node.kill()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        print(_node_logs(started))
        raise errors[0]


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[WebhookSink]:
    """A started :class:`WebhookSink` on a free loopback port (also writing ``sink.jsonl``)."""
    s = WebhookSink(jsonl_path=tmp_path / "sink.jsonl")
    s.start()
    try:
        yield s
    finally:
        s.stop()
