"""Test helpers: polling assertions, bounded async runs, a gRPC health server, a read of etcd's
keyspace, the ``peerd`` CLI as a subprocess, and the suite's handle on one real ``peerd serve``
process."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar, overload

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from peerd import cli as peerd_cli
from peerd.coord.etcd import Etcd, prefix_end
from peerd.coord.etcd_channel import EtcdSecurity
from peerd.core.tzrules import TimeZoneRules
from peerd.devtools.process import PeerdProcess
from peerd.devtools.sink import Delivery

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]

RULES = TimeZoneRules.load("package")
"""The time-zone rules the unit tests compute with: the PyPI tzdata package, a node's default
(independent implementations in the tests read their zones from it too)."""


def assert_eventually(
    fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.1, message: str = ""
) -> T:
    """Call ``fn()`` until it returns without raising ``AssertionError`` and, if it returns a value
    other than ``None``, until that value is truthy.

    Args:
        fn: the check; raise ``AssertionError`` (e.g. a bare ``assert``) while not yet true.
        timeout: seconds before giving up.
        interval: seconds between calls.
        message: added to the error raised on timeout.

    Returns:
        The last value ``fn()`` returned.

    Raises:
        AssertionError: at the deadline: the last ``AssertionError`` from ``fn`` (with ``message``
            prepended when given), or a new one if ``fn`` kept returning a falsy value.
    """
    deadline = time.monotonic() + timeout
    while True:
        last_error: AssertionError | None = None
        result: T | None = None
        try:
            result = fn()
        except AssertionError as exc:
            last_error = exc
        else:
            if result is None or result:
                return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _gave_up(last_error, result, timeout, message)
        time.sleep(interval)


@overload
async def assert_eventually_async(
    fn: Callable[[], Awaitable[T]], timeout: float = ..., interval: float = ..., message: str = ...
) -> T: ...


@overload
async def assert_eventually_async(
    fn: Callable[[], T], timeout: float = ..., interval: float = ..., message: str = ...
) -> T: ...


async def assert_eventually_async(
    fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1, message: str = ""
) -> Any:
    """:func:`assert_eventually` for a test on an event loop: ``fn`` may be a coroutine
    function (it is awaited), and the wait between calls is ``asyncio.sleep``, so the loop (an
    in-process engine, its etcd watches) keeps running while the test waits. Unlike
    :func:`until`, it has a deadline of its own and fails with ``fn``'s assertion message.

    Same arguments, return value and ``AssertionError`` at the deadline as
    :func:`assert_eventually`.
    """
    deadline = time.monotonic() + timeout
    while True:
        last_error: AssertionError | None = None
        result: Any = None
        try:
            value = fn()
            result = await value if inspect.isawaitable(value) else value
        except AssertionError as exc:
            last_error = exc
        else:
            if result is None or result:
                return result
        if time.monotonic() >= deadline:
            raise _gave_up(last_error, result, timeout, message)
        await asyncio.sleep(interval)


def _gave_up(
    last_error: AssertionError | None, result: object, timeout: float, message: str
) -> AssertionError:
    """What an eventually-assertion raises at its deadline (see :func:`assert_eventually`)."""
    prefix = f"{message}: " if message else ""
    if last_error is not None:
        if not message:
            return last_error
        error = AssertionError(f"{prefix}{last_error}")
        error.__cause__ = last_error  # as ``raise ... from last_error``
        return error
    return AssertionError(
        f"{prefix}condition still false after {timeout:.1f}s (last value: {result!r})"
    )


def run_async(main: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """``asyncio.run(main())`` under a hard timeout: a hung async test fails with
    ``TimeoutError`` after ``timeout_s`` seconds instead of hanging the run."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await main()

    return asyncio.run(bounded())


async def until(cond: Callable[[], bool], interval_s: float = 0.0) -> None:
    """Await until ``cond()`` is true, checking it every ``interval_s`` seconds (0: after every
    turn of the event loop). No deadline of its own: use it under :func:`run_async`."""
    while not cond():
        await asyncio.sleep(interval_s)


def keyspace(
    endpoint: str, prefix: bytes = b"", security: EtcdSecurity | None = None
) -> list[tuple[bytes, bytes, int]]:
    """Every etcd key under ``prefix`` (``b""``: the whole keyspace) as ``(key, value,
    mod_revision)``, in key order, read in one range request as ``security``'s user (default:
    plaintext, no user).

    Raises:
        peerd.errors.PeerdError: etcd refused the read (e.g. the user lacks the permission).
        peerd.errors.Unavailable: etcd cannot be reached.
    """

    async def read() -> list[tuple[bytes, bytes, int]]:
        etcd = Etcd([endpoint], security=security)
        await etcd.connect()
        try:
            kvs, _, _ = await etcd.range(prefix or b"\0", prefix_end(prefix))
            return [(kv.key, kv.value, kv.mod_revision) for kv in kvs]
        finally:
            await etcd.close()

    return asyncio.run(read())


def cli(
    node: PeerdProcess | str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``peerd`` command line, ``peerd --server NODE ARGS...``, to completion in this
    process: :func:`peerd.cli.main`, the function ``python -m peerd`` runs, with its output
    captured as text (about 1 s less per call than a new Python process; the process entry
    point itself is tested in ``test_api.test_cli_exit_codes``).

    Args:
        node: the node (or its ``host:port``) to talk to, over real gRPC.
        args: the rest of the command line.
        env: added to ``os.environ`` for the command (e.g. ``PEERD_CA``, ``PEERD_TOKEN``,
            ``EDITOR``).

    Returns:
        A ``CompletedProcess`` with the exit code, stdout and stderr.
    """
    address = node if isinstance(node, str) else node.address
    argv = ["--server", address, *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = peerd_cli.main(argv, env={**os.environ, **env} if env else None)
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["peerd", *argv], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def health_server(statuses: Mapping[str, int]) -> Iterator[tuple[str, health.HealthServicer]]:
    """A gRPC server on a free loopback port with only the ``grpc.health.v1`` service.

    Args:
        statuses: service name -> ``HealthCheckResponse.ServingStatus`` (``""`` is the overall
            health); other services answer NOT_FOUND.

    Yields:
        ``(address, servicer)``; ``servicer.set(name, status)`` changes a status meanwhile.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    for service, status in statuses.items():
        servicer.set(service, status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        done: threading.Event = server.stop(grace=None)
        done.wait(5)


class PeerdNode(PeerdProcess):
    """A :class:`PeerdProcess` with the suite's settings: JSON logs (``PEERD_LOG_FORMAT``, so a
    test's ``--config`` file is read as the node would read it), the workdir as the node's working
    directory, and a ``--- test harness: starting ...`` banner per start.

    Args:
        node_id: ``--node-id``.
        etcd: ``--etcd`` endpoint(s), ``HOST:PORT[,HOST:PORT...]``.
        cluster: ``--cluster``.
        workdir: where the log goes (and the process's working directory).
        allow_shell: one ``--allow-shell`` per pattern.
        settings: more flags (:func:`peerd.devtools.process.setting_args`).
        env: extra environment variables (on top of ``os.environ`` and ``PEERD_LOG_FORMAT=json``).
        kw: the rest of :class:`PeerdProcess`'s keywords (``lease_ttl_s`` (3 unless given),
            ``port`` (a free one unless given, kept across restarts), ``extra_args``, ...).
    """

    def __init__(
        self,
        node_id: str,
        etcd: str,
        cluster: str,
        workdir: Path,
        *,
        allow_shell: Sequence[str] = (),
        settings: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(
            node_id,
            etcd,
            cluster,
            workdir,
            settings={"allow_shell": list(allow_shell), **(settings or {})},
            env={"PEERD_LOG_FORMAT": "json", **(env or {})},
            label="test harness",
            cwd=Path(workdir),
            **kw,
        )


def retried_keys(deliveries: Sequence[Delivery]) -> dict[str, list[int | None]]:
    """Idempotency keys delivered more than once -> their fencing tokens in arrival order.

    A slot whose run was cut off by a kill -9 after its request went out but before its final
    record was written is run again by the new owner under a new fencing token (at-least-once,
    ``on_owner_lost`` RETRY; the receiver deduplicates by the key and rejects the older token).
    A *real* duplicate is a key delivered twice under the same token: :func:`real_duplicates`.
    """
    tokens: dict[str, list[int | None]] = {}
    for d in deliveries:
        if d.idempotency_key is not None:
            tokens.setdefault(d.idempotency_key, []).append(d.fencing_token)
    return {k: t for k, t in tokens.items() if len(t) > 1}


def real_duplicates(deliveries: Sequence[Delivery]) -> list[str]:
    """Keys delivered more than once under one fencing token (never allowed)."""
    return sorted(k for k, t in retried_keys(deliveries).items() if len(set(t)) < len(t))
