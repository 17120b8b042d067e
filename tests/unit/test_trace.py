"""Trace context of runs (peerd.core.trace) and where it is handed to targets."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from peerd.core.records import idempotency_key
from peerd.core.trace import TRACEPARENT_RE, span_id, trace_id, traceparent
from peerd.devtools.sink import WebhookSink
from peerd.runner.base import Execution
from peerd.runner.http import build_headers
from peerd.runner.python import PythonExecutor
from peerd.runner.shell import ShellAllowList, ShellExecutor
from peerd.tasks_builtin import post
from peerd.v1 import scheduler_pb2 as pb

SLOT = datetime(2026, 11, 21, 6, 0, 1, tzinfo=UTC)
KEY = idempotency_key("nightly", int(SLOT.timestamp() * 1000))


def attempt(n: int, **kw: object) -> Execution:
    return Execution(
        "nightly",
        SLOT,
        n,
        "node-a",
        42,
        timedelta(seconds=5),
        **kw,  # type: ignore[arg-type]
    )


def test_traceparent_is_a_valid_w3c_header() -> None:
    for n in (1, 2, 17):
        value = traceparent(KEY, n)
        assert TRACEPARENT_RE.match(value), value
        version, trace, span, flags = value.split("-")
        assert (version, flags) == ("00", "01")
        assert (len(trace), len(span)) == (32, 16)


def test_the_derivation_is_the_documented_one() -> None:
    # Recomputed here from the module docstring's table, independently of the module.
    trace = hashlib.blake2b(KEY.encode(), digest_size=16, person=b"peerd.trace").hexdigest()
    span = hashlib.blake2b(f"{KEY}#3".encode(), digest_size=8, person=b"peerd.span").hexdigest()
    assert traceparent(KEY, 3) == f"00-{trace}-{span}-01"


def test_attempts_of_a_slot_share_the_trace_and_differ_in_span() -> None:
    spans = {span_id(KEY, n) for n in range(1, 50)}
    assert len(spans) == 49
    assert {traceparent(KEY, n).split("-")[1] for n in range(1, 50)} == {trace_id(KEY)}


def test_slots_and_tasks_get_their_own_traces() -> None:
    keys = [idempotency_key(t, ms) for t in ("a", "b", "nightly") for ms in range(0, 5000, 1000)]
    assert len({trace_id(k) for k in keys}) == len(keys)


def test_deterministic_across_calls_and_nodes() -> None:
    assert attempt(2).traceparent == attempt(2).traceparent == traceparent(KEY, 2)
    assert attempt(2).trace_id == trace_id(KEY)


def test_attempt_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1, got 0"):
        span_id(KEY, 0)


def test_http_runs_send_traceparent_and_users_cannot_forge_it() -> None:
    target = pb.HttpTarget(url="http://x", headers={"TraceParent": "00-forged", "X-A": "b"})
    headers = build_headers(target, attempt(2), json_body=True)
    assert headers["traceparent"] == traceparent(KEY, 2)
    assert headers["X-A"] == "b"


def test_shell_runs_get_traceparent_in_the_environment() -> None:
    sh = shutil.which("sh") or "/bin/sh"
    target = pb.ShellTarget(argv=[sh, "-c", 'printf "%s" "$TRACEPARENT"'])
    target.env["TRACEPARENT"] = "forged"
    out = asyncio.run(ShellExecutor(ShellAllowList(["*"])).run_target(target, attempt(4)))
    assert out.succeeded, out.error
    assert out.output_tail == traceparent(KEY, 4)


def test_python_runs_get_traceparent_in_the_context() -> None:
    target = pb.PythonTarget(name="peerd.echo")
    context = PythonExecutor._context(target, attempt(5))
    assert context.traceparent == traceparent(KEY, 5)


def test_peerd_post_sends_the_attempts_traceparent(sink: WebhookSink) -> None:
    target = pb.PythonTarget(name="peerd.post", args_json=f'{{"url": "{sink.url}/hook"}}')
    context = PythonExecutor._context(target, attempt(3))
    asyncio.run(post(context))
    (delivery,) = sink.deliveries()
    assert delivery.headers["traceparent"] == traceparent(KEY, 3)
    assert delivery.idempotency_key == KEY
