"""List-then-watch: keep a local copy of an etcd prefix current (the informer pattern).

The loop, run until cancelled::

    +--> range(prefix): kvs at revision R -------> on_list(kvs, R)
    |          | error                                   |
    |          v                                         v
    |    sleep backoff <------ stream broke ------ watch from R + 1 --> on_event(e), each change
    |          |                                         |
    +----------+<------------- Compacted (re-list at once)

Guarantees for the callbacks:

* ``on_list(kvs, revision)`` gets the *whole* state of the prefix at ``revision`` (every key, in
  key order); the consumer replaces its copy with it. It is called first, and again after every
  re-list, so a consumer never has to reconcile a gap itself.
* ``on_event(event)`` gets every change after the last list, in revision order, exactly once
  per watch; events of one transaction share a revision.
* After a compaction removed revision ``R + 1`` (etcd answers the watch with ``Compacted``) the
  loop re-lists at once, without backoff: the data is there, only the history is gone. Logged
  as ``<log_name>_watch_compacted_relisting``.
* When etcd cannot be reached, a read fails, or the watch stream breaks, the loop logs
  ``<log_name>_watch_broken``, sleeps the next delay of ``backoff`` on ``clock``, and re-lists
  (a broken stream is never resumed: changes made meanwhile arrive in the re-list). The
  backoff is reset after every successful list.
* An exception raised by a callback is not caught: it ends the loop (its supervisor restarts
  it) and the watch is cancelled.

This is the shape of Kubernetes' client-go reflector ("ListAndWatch": list, then watch from the
list's resourceVersion, re-list on "410 Gone") applied to etcd revisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import cast

import structlog
from structlog.typing import FilteringBoundLogger

from peerd.clock import Clock
from peerd.coord.etcd import KV, Compacted, Etcd, Event, prefix_end
from peerd.core.backoff import Backoff
from peerd.errors import PeerdError, Unavailable

log: FilteringBoundLogger = structlog.get_logger("peerd.watch")

STEP_S = 0.02
"""Most time spent handling watch events (or a list, in a consumer that steps) before yielding
to the event loop (seconds): peers probe with a 250 ms deadline, and a stalled loop looks dead."""

LIST_CHUNK = 5000
"""Key-values of a list converted to :class:`KV` between two yields to the event loop (4 µs
each: about 20 ms). In one go, the 100,000 tasks of ``bench/scale.py`` took 0.4 s on an idle
machine and stalled a restarted node's loop for a second on a busy one, so long that its peers
took it for dead (docs/performance.md, Part 2, fourth round). One read, not pages: with 20
pages of 5,000 keys the restarted node took 6.4 and 11 s to be ready in two runs (2.2 s in
the run before), each page waiting behind a busy etcd."""

OnList = Callable[[list[KV], int], Awaitable[None] | None]
"""``on_list(kvs, revision)``: the whole prefix as of ``revision`` (awaited when it returns an
awaitable: a large list is then processed in steps, and the watch starts after it)."""
OnEvent = Callable[[Event], None]
"""``on_event(event)``: one change after the last list."""


async def list_then_watch(
    etcd: Etcd,
    prefix: bytes,
    on_list: OnList,
    on_event: OnEvent,
    backoff: Backoff,
    clock: Clock,
    log_name: str,
    logger: FilteringBoundLogger | None = None,
) -> None:
    """List ``prefix``, then watch it, forever (see the module docstring). Returns only by
    cancellation or a callback's exception.

    Args:
        etcd: a connected client.
        prefix: the key prefix to mirror.
        on_list: called with the whole state after each (re-)list.
        on_event: called with each change after the last list.
        backoff: delays between retries after errors (reset after each successful list).
        clock: what the backoff sleeps on.
        log_name: prefix of the log event names, e.g. ``members``.
        logger: structlog logger to log on (e.g. bound with ``node_id``); default
            ``peerd.watch``.
    """
    logger = logger if logger is not None else log
    while True:
        try:
            kvs, revision = await list_prefix(etcd, prefix)
            listed = on_list(kvs, revision)
            if inspect.isawaitable(listed):
                await listed
            backoff.reset()
            await _follow(etcd, prefix, revision + 1, on_event, clock)
        except Compacted as exc:
            etcd.observer.watch_restarted(log_name, "compacted")
            logger.info(
                f"{log_name}_watch_compacted_relisting", compact_revision=exc.compact_revision
            )
        except PeerdError as exc:
            etcd.observer.watch_restarted(log_name, "broken")
            delay_s = backoff.next_delay_s()
            logger.warning(f"{log_name}_watch_broken", error=str(exc), retry_in_s=delay_s)
            await clock.sleep(delay_s)


async def list_prefix(etcd: Etcd, prefix: bytes, chunk: int = LIST_CHUNK) -> tuple[list[KV], int]:
    """Every key under ``prefix`` in key order, as of one revision: ``(kvs, revision)``, from
    one read whose key-values are converted ``chunk`` at a time (:meth:`Etcd.range_all`).

    Raises:
        PeerdError: the read failed (e.g. :class:`Unavailable`).
    """
    return await etcd.range_all(prefix, prefix_end(prefix), chunk)


async def _follow(
    etcd: Etcd, prefix: bytes, start_revision: int, on_event: OnEvent, clock: Clock
) -> None:
    """Feed every event from ``start_revision`` on to ``on_event``; closing the generator (on
    any exit) cancels the etcd watch. A watch response can carry thousands of events (a bulk
    create, a watcher that fell behind): after every :data:`STEP_S` of handling them the loop
    yields, so the event loop never stalls longer than that for them."""
    events = cast(AsyncGenerator[Event, None], etcd.watch_prefix(prefix, start_revision))
    step_end = clock.monotonic() + STEP_S
    async with contextlib.aclosing(events):
        async for event in events:
            on_event(event)
            if clock.monotonic() >= step_end:
                await asyncio.sleep(0)  # a yield, not a wait
                step_end = clock.monotonic() + STEP_S
    raise Unavailable("etcd watch ended")  # watch_prefix never ends on its own
