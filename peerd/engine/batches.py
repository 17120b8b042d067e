"""Bounded fan-out: a list of items worked on in batches, a few batches at a time.

Used where a node must read or send on behalf of many tasks at once: the owner-lost rescan
(:mod:`peerd.engine.recovery`, one etcd transaction per batch) and handoffs
(:mod:`peerd.engine.handoff`, one Peer call per batch). A failed batch does not cancel the
others; its items come back to the caller, who keeps them for the next pass, so no task is
forgotten because a neighbour's read timed out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def in_batches(
    items: Sequence[T],
    size: int,
    in_flight: int,
    work: Callable[[list[T]], Awaitable[object]],
) -> list[tuple[list[T], Exception]]:
    """Run ``work`` on consecutive batches of at most ``size`` items, at most ``in_flight``
    batches at a time, and wait for all of them.

    Returns:
        ``[(batch, error)]`` for every batch whose ``work`` raised an :class:`Exception`, in
        the order of the batches (empty when all succeeded).

    Raises:
        ValueError: ``size`` or ``in_flight`` below 1.
        asyncio.CancelledError: when the caller is cancelled (the batches are cancelled too).
    """
    if size < 1 or in_flight < 1:
        raise ValueError(f"size and in_flight must be >= 1, got {size} and {in_flight}")
    sem = asyncio.Semaphore(in_flight)

    async def one(batch: list[T]) -> None:
        async with sem:
            await work(batch)

    batches = [list(items[i : i + size]) for i in range(0, len(items), size)]
    results = await asyncio.gather(*(one(b) for b in batches), return_exceptions=True)
    failed: list[tuple[list[T], Exception]] = []
    for batch, result in zip(batches, results, strict=True):
        if isinstance(result, asyncio.CancelledError):
            raise result
        if isinstance(result, Exception):
            failed.append((batch, result))
        elif isinstance(result, BaseException):
            raise result
    return failed
