"""PythonExecutor with real entry points: the built-ins installed with peerd, plus callables of
this module registered for a test by adding entry points to the metadata scan."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from peerd.devtools.sink import WebhookSink
from peerd.runner import base
from peerd.runner import python as python_mod
from peerd.runner.base import OUTPUT_TAIL_BYTES, Execution, Outcome
from peerd.runner.python import GROUP, PythonExecutor, TaskContext, available
from peerd.v1 import scheduler_pb2 as pb

SLOT = datetime(2026, 11, 21, 6, 0, 1, tzinfo=UTC)
BUILTINS = {
    "peerd.echo": "peerd.tasks_builtin:echo",
    "peerd.sleep": "peerd.tasks_builtin:sleep",
    "peerd.fail": "peerd.tasks_builtin:fail",
    "peerd.post": "peerd.tasks_builtin:post",
}


def execution(timeout: float = 5.0, **kw: Any) -> Execution:
    fields: dict[str, Any] = {
        "task_id": "py-task",
        "scheduled_at": SLOT,
        "attempt": 2,
        "node_id": "node-p",
        "fencing_token": 321,
        "timeout": timedelta(seconds=timeout),
    }
    fields.update(kw)
    return Execution(**fields)


def target(name: str, args: Any = None) -> pb.PythonTarget:
    return pb.PythonTarget(name=name, args_json=json.dumps(args) if args is not None else "")


def run(t: pb.PythonTarget, ex: Execution | None = None, **kw: Any) -> Outcome:
    async def go() -> Outcome:
        executor = PythonExecutor(**kw)
        try:
            return await executor.run_target(t, ex or execution())
        finally:
            await executor.close()

    return asyncio.run(go())


# --- callables registered by the `extra` fixture ------------------------------------------------

RELEASE = threading.Event()
CANCELLED = threading.Event()


def blocking(ctx: TaskContext) -> str:
    RELEASE.wait(ctx.args.get("wait_s", 5))
    return "released"


async def records_cancel(ctx: TaskContext) -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        CANCELLED.set()
        raise


def returns(ctx: TaskContext) -> Any:
    kind = ctx.args["kind"]
    if kind == "str":
        return "plain text"
    if kind == "object":
        return object.__new__(Opaque)
    if kind == "big":
        return "x" * 10_000 + "END"
    return None


class Opaque:
    def __str__(self) -> str:
        return "<opaque>"


async def own_timeout(ctx: TaskContext) -> None:
    async with asyncio.timeout(0.01):
        await asyncio.sleep(1)


async def own_cancel(ctx: TaskContext) -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.cancel()
    await fut


def exits(ctx: TaskContext) -> None:
    raise SystemExit(3)


class AsyncCallable:
    async def __call__(self, ctx: TaskContext) -> str:
        await asyncio.sleep(0)
        return f"async object saw {ctx.task_id}"


async_object = AsyncCallable()
not_callable = 42

EXTRA = {
    "test.blocking": f"{__name__}:blocking",
    "test.records_cancel": f"{__name__}:records_cancel",
    "test.returns": f"{__name__}:returns",
    "test.own_timeout": f"{__name__}:own_timeout",
    "test.own_cancel": f"{__name__}:own_cancel",
    "test.exits": f"{__name__}:exits",
    "test.async_object": f"{__name__}:async_object",
    "test.not_callable": f"{__name__}:not_callable",
    "test.broken": "peerd_no_such_module_xyz:fn",
}


@pytest.fixture
def extra(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Add this module's callables to the installed entry points of the group."""
    real = python_mod.entry_points

    def with_extra(*, group: str) -> list[EntryPoint]:
        eps = list(real(group=group))
        if group == GROUP:
            eps += [EntryPoint(name, value, GROUP) for name, value in EXTRA.items()]
        return eps

    RELEASE.clear()
    CANCELLED.clear()
    monkeypatch.setattr(python_mod, "entry_points", with_extra)
    available(refresh=True)
    yield
    RELEASE.set()
    monkeypatch.undo()
    available(refresh=True)


# --- discovery -----------------------------------------------------------------------------------


def test_builtins_are_installed_entry_points() -> None:
    found = available(refresh=True)

    assert {k: v for k, v in found.items() if k in BUILTINS} == BUILTINS


def test_available_is_cached_until_refreshed(monkeypatch: pytest.MonkeyPatch) -> None:
    available(refresh=True)
    monkeypatch.setattr(
        python_mod, "entry_points", lambda *, group: [EntryPoint("only.one", "x:y", group)]
    )

    assert "peerd.echo" in available()  # cached
    assert available(refresh=True) == {"only.one": "x:y"}
    monkeypatch.undo()
    assert "peerd.echo" in available(refresh=True)


# --- built-ins -----------------------------------------------------------------------------------


def test_echo_sync_callable_returns_context_as_json() -> None:
    out = run(target("peerd.echo", {"hello": [1, 2]}))

    assert out.succeeded, out.error
    assert out.failure == ""
    assert (out.http_status, out.exit_code) == (0, None)
    assert json.loads(out.output_tail) == {
        "task_id": "py-task",
        "scheduled_at": "2026-11-21T06:00:01.000Z",
        "attempt": 2,
        "fencing_token": 321,
        "idempotency_key": f"py-task/{int(SLOT.timestamp() * 1000)}",
        "args": {"hello": [1, 2]},
        "cause": None,
    }


def test_empty_args_json_means_empty_dict() -> None:
    out = run(pb.PythonTarget(name="peerd.echo"))

    assert out.succeeded, out.error
    assert json.loads(out.output_tail)["args"] == {}


def test_cause_is_passed_parsed() -> None:
    cause = {"task_id": "charge", "status": "FAILED", "idempotency_key": "charge/1"}
    out = run(target("peerd.echo"), execution(cause_json=json.dumps(cause)))

    assert out.succeeded, out.error
    assert json.loads(out.output_tail)["cause"] == cause


def test_async_sleep_succeeds() -> None:
    t0 = time.monotonic()
    out = run(target("peerd.sleep", {"seconds": 0.2}))

    assert out.succeeded, out.error
    assert out.output_tail == ""
    assert 0.2 <= time.monotonic() - t0 < 2.0
    assert out.started_at <= out.finished_at


def test_async_timeout_is_reported_promptly() -> None:
    t0 = time.monotonic()
    out = run(target("peerd.sleep", {"seconds": 30}), execution(timeout=0.3))

    assert not out.succeeded
    assert out.failure == base.FAILURE_TIMEOUT
    assert out.error == "timeout after 0.3s"
    assert time.monotonic() - t0 < 2.0


def test_fail_raises_exception_class_and_message() -> None:
    out = run(target("peerd.fail", {"message": "card declined"}))

    assert not out.succeeded
    assert out.failure == base.FAILURE_EXCEPTION
    assert out.error == "RuntimeError: card declined"
    assert "Traceback" not in out.error


def test_fail_default_message() -> None:
    out = run(target("peerd.fail"))

    assert out.error == "RuntimeError: failed on purpose"


def test_bad_args_to_builtin_is_an_exception_failure() -> None:
    out = run(target("peerd.sleep", {"seconds": "soon"}))

    assert out.failure == base.FAILURE_EXCEPTION
    assert out.error.startswith("ValueError: args.seconds")


def test_post_sends_context_with_peerd_headers() -> None:
    with WebhookSink() as sink:
        url = sink.url + "/py"
        out = run(target("peerd.post", {"url": url}))
        deliveries = sink.deliveries()

    assert out.succeeded, out.error
    [d] = deliveries
    assert d.path == "/py"
    assert d.idempotency_key == f"py-task/{int(SLOT.timestamp() * 1000)}"
    assert d.fencing_token == 321
    doc = json.loads(d.body)
    assert doc["task_id"] == "py-task"
    assert doc["node_id"] == "node-p"
    assert doc["args"] == {"url": url}


def test_post_non_2xx_fails_the_run() -> None:
    with WebhookSink() as sink:
        out = run(target("peerd.post", {"url": sink.url + "/py?status=503"}))

    assert not out.succeeded
    assert out.failure == base.FAILURE_EXCEPTION
    assert out.error == "RuntimeError: HTTP 503"


# --- configuration failures ----------------------------------------------------------------------


def test_unknown_name_is_a_config_failure() -> None:
    out = run(target("nobody.installed.this"))

    assert not out.succeeded
    assert out.failure == base.FAILURE_CONFIG
    assert "'nobody.installed.this' is not installed on this node" in out.error


@pytest.mark.parametrize(
    ("args_json", "reason"),
    [("{oops", "not valid JSON"), ("[1]", "must be a JSON object"), ('"s"', "JSON object")],
)
def test_bad_args_json_is_a_config_failure(args_json: str, reason: str) -> None:
    out = run(pb.PythonTarget(name="peerd.echo", args_json=args_json))

    assert out.failure == base.FAILURE_CONFIG
    assert reason in out.error


def test_bad_cause_json_is_a_config_failure() -> None:
    out = run(target("peerd.echo"), execution(cause_json="[]"))

    assert out.failure == base.FAILURE_CONFIG
    assert "cause_json" in out.error


def test_entry_point_that_cannot_load_is_a_config_failure(extra: None) -> None:
    out = run(target("test.broken"))

    assert out.failure == base.FAILURE_CONFIG
    assert out.error.startswith("cannot load python task 'test.broken'")
    assert "ModuleNotFoundError" in out.error


def test_entry_point_that_is_not_callable_is_a_config_failure(extra: None) -> None:
    out = run(target("test.not_callable"))

    assert out.failure == base.FAILURE_CONFIG
    assert "is not callable" in out.error


def test_entry_point_installed_after_start_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    available(refresh=True)  # cache without the extras
    real = python_mod.entry_points
    monkeypatch.setattr(
        python_mod,
        "entry_points",
        lambda *, group: [*real(group=group), EntryPoint("late.one", f"{__name__}:returns", group)],
    )

    out = run(target("late.one", {"kind": "str"}))

    assert out.succeeded, out.error
    assert "late.one" in available()
    monkeypatch.undo()
    available(refresh=True)


# --- the callable contract -----------------------------------------------------------------------


def test_sync_timeout_reports_and_leaves_the_thread(extra: None) -> None:
    t0 = time.monotonic()
    out = run(target("test.blocking", {"wait_s": 10}), execution(timeout=0.3))
    elapsed = time.monotonic() - t0
    RELEASE.set()

    assert out.failure == base.FAILURE_TIMEOUT
    assert out.error == "timeout after 0.3s; the callable's thread keeps running until it returns"
    assert elapsed < 3.0


def test_sync_runs_wait_for_a_free_thread_within_their_timeout(extra: None) -> None:
    async def go() -> tuple[Outcome, Outcome]:
        executor = PythonExecutor(max_threads=1)
        first = asyncio.create_task(
            executor.run_target(target("test.blocking", {"wait_s": 10}), execution(timeout=5))
        )
        await asyncio.sleep(0.1)
        second = await executor.run_target(target("peerd.echo"), execution(timeout=0.3))
        RELEASE.set()
        done = await first
        await executor.close()
        return second, done

    second, first = asyncio.run(go())

    assert second.failure == base.FAILURE_TIMEOUT
    assert second.error == "timeout after 0.3s waiting for a free worker thread"
    assert first.succeeded, first.error
    assert first.output_tail == "released"


def test_async_callable_is_cancelled_on_timeout(extra: None) -> None:
    out = run(target("test.records_cancel"), execution(timeout=0.2))

    assert out.failure == base.FAILURE_TIMEOUT
    assert CANCELLED.is_set()


def test_cancellation_propagates_and_cancels_the_callable(extra: None) -> None:
    async def go() -> None:
        task = asyncio.create_task(
            PythonExecutor().run_target(target("test.records_cancel"), execution())
        )
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert CANCELLED.is_set()


def test_async_callable_object_is_awaited(extra: None) -> None:
    out = run(target("test.async_object"))

    assert out.succeeded, out.error
    assert out.output_tail == "async object saw py-task"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("str", "plain text"), ("object", "<opaque>"), ("none", "")],
)
def test_return_value_rendering(extra: None, kind: str, expected: str) -> None:
    out = run(target("test.returns", {"kind": kind}))

    assert out.succeeded, out.error
    assert out.output_tail == expected


def test_big_return_value_keeps_the_tail(extra: None) -> None:
    out = run(target("test.returns", {"kind": "big"}))

    assert len(out.output_tail.encode()) == OUTPUT_TAIL_BYTES
    assert out.output_tail.endswith("xEND")


def test_callables_own_timeout_error_is_an_exception_not_a_timeout(extra: None) -> None:
    out = run(target("test.own_timeout"))

    assert out.failure == base.FAILURE_EXCEPTION
    assert out.error == "TimeoutError"


def test_callables_own_cancelled_error_is_an_exception(extra: None) -> None:
    out = run(target("test.own_cancel"))

    assert out.failure == base.FAILURE_EXCEPTION
    assert out.error == "CancelledError"


def test_system_exit_in_a_callable_does_not_escape(extra: None) -> None:
    out = run(target("test.exits"))

    assert out.failure == base.FAILURE_EXCEPTION
    assert out.error == "SystemExit: 3"
