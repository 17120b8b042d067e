"""Python tasks shipped with peerd (entry-point group ``peerd.tasks``), for smoke tests.

=============== ======================================================================
``peerd.echo``  returns the context as JSON (shown in the run's ``output_tail``)
``peerd.sleep`` sleeps ``args["seconds"]`` (default 1), async
``peerd.fail``  raises ``RuntimeError(args.get("message", "failed on purpose"))``
``peerd.post``  POSTs the context as JSON to ``args["url"]``; raises on a non-2xx answer
``peerd.noop``  does nothing and returns at once, async (the fire path's own cost, benchmarks)
=============== ======================================================================

Example target: ``PythonTarget(name="peerd.echo", args_json='{"hello": 1}')``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from peerd.core.records import rfc3339
from peerd.runner.python import TaskContext


def context_doc(ctx: TaskContext) -> dict[str, Any]:
    """The JSON-ready view of ``ctx`` that :func:`echo` returns and :func:`post` sends.

    Keys: ``task_id``, ``scheduled_at`` (RFC 3339 UTC, ms), ``attempt``, ``fencing_token``,
    ``idempotency_key``, ``args``, ``cause`` (``None`` unless a compensation run).
    """
    return {
        "task_id": ctx.task_id,
        "scheduled_at": rfc3339(ctx.scheduled_at),
        "attempt": ctx.attempt,
        "fencing_token": ctx.fencing_token,
        "idempotency_key": ctx.idempotency_key,
        "args": ctx.args,
        "cause": ctx.cause,
    }


def echo(ctx: TaskContext) -> dict[str, Any]:
    """Return :func:`context_doc` of ``ctx`` (a plain function: runs in a worker thread)."""
    return context_doc(ctx)


async def sleep(ctx: TaskContext) -> None:
    """Sleep ``args["seconds"]`` seconds (default 1); cancelled cleanly on timeout.

    Raises:
        ValueError: ``seconds`` is not a non-negative number.
    """
    seconds = ctx.args.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError(f"args.seconds must be a number >= 0, got {seconds!r}")
    await asyncio.sleep(seconds)


def fail(ctx: TaskContext) -> None:
    """Always raise (to try retry policies and ``on_failure``).

    Raises:
        RuntimeError: with ``args["message"]`` (default "failed on purpose").
    """
    raise RuntimeError(str(ctx.args.get("message", "failed on purpose")))


async def post(ctx: TaskContext) -> None:
    """POST :func:`context_doc` of ``ctx`` plus ``node_id`` as JSON to ``args["url"]``.

    Sends ``Idempotency-Key``, ``Peerd-Fencing-Token`` and the attempt's W3C ``traceparent``
    like the HTTP executor; the request is bounded by ``ctx.timeout``; redirects are not
    followed.

    Raises:
        ValueError: ``args["url"]`` is missing or not an http(s) URL.
        RuntimeError: the answer is not 2xx (``"HTTP <status>"``).
        httpx.HTTPError: the request failed (connect error, timeout, ...).
    """
    url = ctx.args.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"args.url must be an http:// or https:// URL, got {url!r}")
    doc = {**context_doc(ctx), "node_id": ctx.node_id}
    headers = {
        "Idempotency-Key": ctx.idempotency_key,
        "Peerd-Fencing-Token": str(ctx.fencing_token),
        "traceparent": ctx.traceparent,
    }
    seconds = ctx.timeout.total_seconds()
    async with httpx.AsyncClient(follow_redirects=False, timeout=seconds) as client:
        response = await client.post(url, json=doc, headers=headers)
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"HTTP {response.status_code}")


async def noop(ctx: TaskContext) -> None:
    """Do nothing and return at once (async: runs on the event loop, no worker thread); the
    in-process task of ``bench/throughput.py``, which measures the fire path without a
    target's cost."""
