"""Python executor: call a callable that an installed package registers as an entry point.

No code travels in requests: a task names an entry point of the group ``peerd.tasks``
(``PythonTarget.name``), and the node runs it only if a package installed on the node registers
that name, e.g. in the package's ``pyproject.toml``::

    [project.entry-points."peerd.tasks"]
    "billing.nightly" = "billing.jobs:nightly"

The callable contract
---------------------
The callable receives one positional argument, a :class:`TaskContext`.

* ``async def``: awaited on the node's event loop; on timeout (or cancellation) it is cancelled
  (``asyncio.CancelledError`` is raised at its current ``await``).
* A plain function: run in a worker thread of a pool dedicated to Python tasks
  (:data:`MAX_THREADS` threads; further calls wait for a free thread, and that wait counts
  against the timeout). Python cannot kill a thread: on timeout the attempt is reported as timed
  out, but the function keeps running in its thread until it returns, occupying that thread.
  Long sync callables should check ``ctx.timeout`` themselves, or be written ``async``.
* The return value, if not ``None``, is kept in ``RunRecord.output_tail`` (last 4 KiB): a
  ``str`` as is, anything else JSON-encoded, or ``str()``-ed when it is not JSON-serialisable.
* Raising fails the attempt with failure class ``exception``; the error is
  ``"ExcType: message"`` (the traceback is logged at debug level only).
* The callable must not block the event loop (an ``async def`` that calls blocking I/O does).

Run failures never raise; they are reported in the returned :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from peerd.clock import Clock, SystemClock
from peerd.errors import InvalidArgument
from peerd.runner.base import (
    FAILURE_CONFIG,
    FAILURE_EXCEPTION,
    FAILURE_TIMEOUT,
    Execution,
    Outcome,
    tail,
)
from peerd.runner.http import parse_cause
from peerd.v1 import scheduler_pb2 as pb

if TYPE_CHECKING:
    from peerd.node_config import NodeConfig

log = structlog.get_logger(__name__)

GROUP = "peerd.tasks"
"""The entry-point group Python tasks are looked up in."""

MAX_THREADS = 16
"""Worker threads for plain (non-async) callables, per executor."""

_ERROR_CHARS = 1024
"""Longest ``error`` kept from an exception message (characters)."""

_entry_points: dict[str, EntryPoint] | None = None


def _scan() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found:
            if found[ep.name].value != ep.value:
                log.warning(
                    "python.entry_point_duplicate",
                    name=ep.name,
                    kept=found[ep.name].value,
                    ignored=ep.value,
                )
            continue
        found[ep.name] = ep
    return found


def _entry_point_map(refresh: bool = False) -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None or refresh:
        _entry_points = _scan()
    return _entry_points


def available(refresh: bool = False) -> dict[str, str]:
    """Python tasks this node can run: entry-point name -> ``"module:attr"``.

    Read from the installed packages' metadata once and cached; ``refresh=True`` re-reads it
    (after a package was installed while the node runs). When two packages register the same
    name, the first one found is kept (and a warning logged).
    """
    return {name: ep.value for name, ep in _entry_point_map(refresh).items()}


@dataclass(frozen=True)
class TaskContext:
    """What a Python task callable receives (its only argument).

    Attributes:
        task_id: the task.
        scheduled_at: the slot (aware UTC datetime).
        fire_at: when the slot was due (slot + jitter), aware UTC; ``None`` only when built
            outside the engine.
        attempt: 1 for the first attempt of the slot.
        node_id: the node running it.
        idempotency_key: ``<task_id>/<slot epoch ms>``, the same for every attempt of the slot.
        fencing_token: etcd revision of this attempt's claim; larger is newer.
        args: ``PythonTarget.args_json`` parsed (``{}`` when empty).
        cause: for a compensation run (``TaskSpec.on_failure``), the failed run as a dict (the
            protobuf JSON mapping of ``RunRecord``); ``None`` otherwise.
        timeout: the per-attempt time limit.
        traceparent: W3C ``traceparent`` of this attempt (:mod:`peerd.core.trace`); pass it on
            to the services the callable calls.
    """

    task_id: str
    scheduled_at: datetime
    fire_at: datetime | None
    attempt: int
    node_id: str
    idempotency_key: str
    fencing_token: int
    args: dict[str, Any]
    cause: dict[str, Any] | None
    timeout: timedelta
    traceparent: str = ""


class _Refused(Exception):
    """The run cannot start (unknown name, bad args); the message is the Outcome error."""


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 (an object with an async __call__)
    return call is not None and inspect.iscoroutinefunction(call)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


def render_result(result: Any) -> str:
    """``output_tail`` text for a callable's return value (see the module docstring)."""
    if result is None:
        return ""
    if isinstance(result, str):
        text = result
    else:
        try:
            text = json.dumps(result, ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(result)
    return tail(text.encode("utf-8", errors="replace"))


class PythonExecutor:
    """Runs :class:`pb.PythonTarget` tasks: entry points of the group :data:`GROUP`.

    Args:
        clock: source of ``started_at``/``finished_at`` (default :class:`SystemClock`).
            Timeouts are enforced by the event loop, not by this clock.
        max_threads: worker threads for plain (non-async) callables.
    """

    def __init__(self, clock: Clock | None = None, max_threads: int = MAX_THREADS) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._threads = ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="peerd-python-task"
        )
        self._loaded: dict[str, Callable[[TaskContext], Any]] = {}
        self._async: dict[str, bool] = {}
        """Whether each loaded callable is async (asked once per name, not per run)."""

    kind: ClassVar[str] = "python"
    """The ``TaskSpec.target`` this executor runs (and the name of its pool)."""
    node_id = ""
    """The node it runs on (named in API errors)."""
    limit_setting: ClassVar[str] = "max_python_runs"
    """The node setting that caps its concurrent runs (also the size of its thread pool)."""

    @classmethod
    def from_config(cls, cfg: NodeConfig, clock: Clock) -> PythonExecutor:
        """The executor a node with ``cfg`` runs (``max_python_runs`` worker threads)."""
        executor = cls(clock=clock, max_threads=cfg.max_python_runs)
        executor.node_id = cfg.node_id
        return executor

    def check(self, spec: pb.TaskSpec, field: str) -> None:
        """API validation on the answering node: the entry point must be installed here (a
        node without it fails such runs with the reason).

        Raises:
            InvalidArgument: naming ``{field}.python.name`` and what is installed.
        """
        name = spec.python.name
        if name in available() or name in available(refresh=True):
            return
        installed = ", ".join(sorted(available())) or "none"
        raise InvalidArgument(
            f"{field}.python.name",
            f"no entry point {name!r} in group {GROUP} on node {self.node_id}; "
            f"installed: {installed}",
        )

    def configure(self, cfg: NodeConfig) -> None:
        """Nothing changes on a reload (the thread pool keeps its size until restart)."""

    async def run(self, spec: pb.TaskSpec, execution: Execution) -> Outcome:
        """Run one attempt of ``spec`` (its ``python`` target): see :meth:`run_target`."""
        return await self.run_target(spec.python, execution)

    async def close(self) -> None:
        """Stop the worker threads: queued calls are dropped, running ones are not waited for
        (they cannot be interrupted). Idempotent."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def run_target(self, target: pb.PythonTarget, execution: Execution) -> Outcome:
        """Call the entry point ``target.name`` with a :class:`TaskContext` for ``execution``.

        ``execution.timeout`` bounds the call (see the module docstring for what a timeout does
        to a plain function's thread). Success means the callable returned.

        Never raises for a failed run: those are returned as
        ``Outcome(succeeded=False, error=..., failure=...)`` with ``failure``
        :data:`FAILURE_EXCEPTION` (the callable raised), :data:`FAILURE_TIMEOUT`, or
        :data:`FAILURE_CONFIG` (no such entry point on this node, it cannot be loaded, or
        ``args_json``/``cause_json`` is not a JSON object). ``asyncio.CancelledError``
        propagates (an async callable is cancelled with it).
        """
        started = self._clock.now()
        try:
            fn = self._resolve(target.name)
            ctx = self._context(target, execution)
        except _Refused as exc:
            return self._outcome(started, error=str(exc), failure=FAILURE_CONFIG)

        seconds = execution.timeout.total_seconds()
        deadline = asyncio.timeout(seconds)
        is_async = self._async[target.name]
        # set once a plain callable started in its thread (not needed for an async one)
        in_thread = None if is_async else threading.Event()
        try:
            async with deadline:
                if is_async:
                    result = await fn(ctx)
                else:
                    assert in_thread is not None
                    result = await self._call(fn, ctx, in_thread)
        except TimeoutError as exc:
            if not deadline.expired():  # the callable's own TimeoutError
                return self._raised(started, execution, target, exc)
            error = f"timeout after {seconds}s"
            if in_thread is not None and in_thread.is_set():
                error += "; the callable's thread keeps running until it returns"
            elif in_thread is not None:
                error += " waiting for a free worker thread"
            log.warning(
                "python.timeout",
                task_id=execution.task_id,
                trace_id=execution.trace_id,
                name=target.name,
                error=error,
            )
            return self._outcome(started, error=error, failure=FAILURE_TIMEOUT)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled
            # The callable itself raised CancelledError (e.g. it awaited a cancelled future).
            return self._raised(started, execution, target, exc)
        except (Exception, SystemExit) as exc:
            return self._raised(started, execution, target, exc)
        return self._outcome(started, output=render_result(result))

    async def _call(
        self, fn: Callable[[TaskContext], Any], ctx: TaskContext, in_thread: threading.Event
    ) -> Any:
        """Call the plain function ``fn`` in a worker thread."""

        def call() -> Any:
            in_thread.set()
            return fn(ctx)

        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._threads, functools.partial(contextvars.copy_context().run, call)
        )
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            result = await result
        return result

    def _resolve(self, name: str) -> Callable[[TaskContext], Any]:
        """The callable registered as ``name``, loaded once.

        Raises:
            _Refused: no such entry point (after re-reading the metadata once), or loading it
                failed, or it is not callable.
        """
        fn = self._loaded.get(name)
        if fn is not None:
            return fn
        eps = _entry_point_map()
        if name not in eps:
            eps = _entry_point_map(refresh=True)  # installed after start?
        ep = eps.get(name)
        if ep is None:
            raise _Refused(
                f"python task {name!r} is not installed on this node (no entry point in group "
                f"{GROUP!r}; `python -m peerd.runner.python` on the node lists them)"
            )
        try:
            loaded = ep.load()
        except Exception as exc:
            log.debug("python.load_failed", name=name, value=ep.value, exc_info=True)
            raise _Refused(
                f"cannot load python task {name!r} ({ep.value}): {_describe(exc)}"
            ) from None
        if not callable(loaded):
            raise _Refused(f"python task {name!r} ({ep.value}) is not callable")
        self._async[name] = _is_async(loaded)
        self._loaded[name] = loaded
        return loaded

    @staticmethod
    def _context(target: pb.PythonTarget, execution: Execution) -> TaskContext:
        """Build the TaskContext.

        Raises:
            _Refused: ``args_json`` or ``cause_json`` is not a JSON object.
        """
        args: Any = {}
        if target.args_json:
            try:
                args = json.loads(target.args_json)
            except ValueError as exc:
                raise _Refused(f"args_json is not valid JSON: {exc}") from None
            if not isinstance(args, dict):
                raise _Refused(f"args_json must be a JSON object, got {type(args).__name__}")
        try:
            cause = parse_cause(execution.cause_json)
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        return TaskContext(
            task_id=execution.task_id,
            scheduled_at=execution.scheduled_at,
            fire_at=execution.fire_at,
            attempt=execution.attempt,
            node_id=execution.node_id,
            idempotency_key=execution.idempotency_key,
            fencing_token=execution.fencing_token,
            args=args,
            cause=cause,
            timeout=execution.timeout,
            traceparent=execution.traceparent,
        )

    def _raised(
        self, started: datetime, execution: Execution, target: pb.PythonTarget, exc: BaseException
    ) -> Outcome:
        log.debug(
            "python.raised",
            task_id=execution.task_id,
            name=target.name,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return self._outcome(started, error=_describe(exc), failure=FAILURE_EXCEPTION)

    def _outcome(
        self, started: datetime, *, error: str = "", failure: str = "", output: str = ""
    ) -> Outcome:
        return Outcome(
            succeeded=not error,
            started_at=started,
            finished_at=self._clock.now(),
            output_tail=output,
            error=error,
            failure=failure if error else "",
        )


if __name__ == "__main__":  # `python -m peerd.runner.python`: what this machine can run
    for _name, _target in sorted(available(refresh=True).items()):
        print(f"{_name}\t{_target}")
