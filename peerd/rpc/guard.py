"""The gate in front of the gRPC servicers: hostile input is answered with a documented status
before any handler runs.

=======================================  ==================  ===================================
request                                  status              where
=======================================  ==================  ===================================
larger than ``--max-message-size``       RESOURCE_EXHAUSTED  gRPC itself, before parsing
not a valid message of the method's      INVALID_ARGUMENT    :func:`safe_deserializer` (here)
type (bad wire format, invalid UTF-8 in
a string, nesting deeper than protobuf's
limit of 100)
over the caller's rate (public API only) RESOURCE_EXHAUSTED  :class:`RateLimiter` (here)
everything else                          the handler's       the handler
=======================================  ==================  ===================================

Statuses come from :mod:`peerd.rpc.errors` (``InvalidArgument``, ``RateLimited``), the one
mapping.

gRPC's own answer to a request its deserializer cannot parse is INTERNAL ("Exception
deserializing request!"), which says "server bug"; :class:`ApiGuard` swaps every peerd
method's deserializer for one that turns a parse failure into a :class:`Malformed` value, and
the wrapped handler answers INVALID_ARGUMENT for it.

The rate limit is a token bucket per principal (:func:`peerd.rpc.caller.principal`) from
:mod:`peerd.core.ratelimit`: ``--api-rate-limit`` requests per second, ``--api-burst`` at once.
It applies to the public ``peerd.v1.Scheduler`` service only: node-to-node probes and health
checks are never throttled (a throttled probe would look like a dead node). A streaming call
(WatchRuns) costs one token when it starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from peerd.clock import Clock
from peerd.core.ratelimit import TokenBucket
from peerd.errors import InvalidArgument, RateLimited
from peerd.rpc.caller import principal
from peerd.rpc.errors import abort_for

GUARDED_PREFIX = "/peerd.v1."
"""Methods whose requests are parsed safely (the public API and the Peer service)."""
LIMITED_PREFIX = "/peerd.v1.Scheduler/"
"""Methods under the per-principal rate limit (the public API)."""
MAX_PRINCIPALS = 10_000
"""Buckets kept; past this, full (idle) buckets are dropped first, then the oldest."""


@dataclass(frozen=True)
class Malformed:
    """A request that did not parse: what the safe deserializer returns instead of raising."""

    type_name: str
    error: str


def safe_deserializer(parse: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    """``parse`` that returns :class:`Malformed` instead of raising."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:
            return Malformed(type_name, f"{type(exc).__name__}: {exc}")

    return deserialize


class RateLimiter:
    """One token bucket per principal (see the module docstring).

    Args:
        rate_per_s: ``() -> requests per second`` (read at every call; 0 = no limit).
        burst: ``() -> bucket depth``.
        clock: monotonic time.
    """

    def __init__(
        self, rate_per_s: Callable[[], float], burst: Callable[[], int], clock: Clock
    ) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def admit(self, who: str) -> float | None:
        """Take one token for ``who``: ``None`` when admitted, else the seconds until the next
        token."""
        rate, burst = self._rate(), max(1, self._burst())
        if rate <= 0:
            return None
        now = self._clock.monotonic()
        bucket = self._buckets.pop(who, None)  # re-inserted last: the dict is in LRU order
        if bucket is None:
            if len(self._buckets) >= MAX_PRINCIPALS:
                self._evict(now)
            bucket = TokenBucket(rate, burst, now)
        elif bucket.rate_per_s != rate or bucket.burst != burst:
            bucket.set_rate(rate, now, burst)
        self._buckets[who] = bucket
        if bucket.take(1, now):
            return None
        return max(0.0, bucket.next_at_s(now) - now)

    def _evict(self, now: float) -> None:
        idle = [k for k, b in self._buckets.items() if b.available(now) >= b.burst]
        for key in idle or [next(iter(self._buckets))]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class ApiGuard(grpc.aio.ServerInterceptor):
    """Server interceptor: safe parsing for every peerd method, the rate limit for the public
    API (module docstring).

    Args:
        limiter: the per-principal rate limit.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(GUARDED_PREFIX):
            return handler
        return self._wrap(handler, method, method.startswith(LIMITED_PREFIX))

    async def _check(self, request: Any, context: grpc.aio.ServicerContext, limited: bool) -> None:
        if isinstance(request, Malformed):
            reason = f"not a valid {request.type_name} message ({request.error})"
            await abort_for(InvalidArgument("request", reason), context)
        if limited:
            who = principal(context)
            wait_s = self._limiter.admit(who)
            if wait_s is not None:
                await abort_for(RateLimited(who, wait_s), context)

    def _wrap(self, handler: Any, method: str, limited: bool) -> grpc.RpcMethodHandler:
        type_name = method.rsplit("/", 1)[-1] + " request"
        deserializer = handler.request_deserializer
        if deserializer is not None:
            descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
            if descriptor is not None:
                type_name = descriptor.full_name
            handler = handler._replace(
                request_deserializer=safe_deserializer(deserializer, type_name)
            )
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._check(request, context, limited)
                return await inner(request, context)

            return handler._replace(unary_unary=unary)  # type: ignore[no-any-return]
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def streaming(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                await self._check(request, context, limited)
                async for item in stream(request, context):
                    yield item

            return handler._replace(unary_stream=streaming)  # type: ignore[no-any-return]
        return handler  # type: ignore[no-any-return]


__all__ = [
    "GUARDED_PREFIX",
    "LIMITED_PREFIX",
    "MAX_PRINCIPALS",
    "ApiGuard",
    "Malformed",
    "RateLimiter",
    "safe_deserializer",
]
