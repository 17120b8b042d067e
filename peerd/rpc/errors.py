"""The one mapping from peerd errors to gRPC status codes (server side).

==========================  ====================
peerd error                 gRPC status
==========================  ====================
InvalidArgument             INVALID_ARGUMENT
NotFound                    NOT_FOUND
AlreadyExists               ALREADY_EXISTS
Aborted                     ABORTED (an expected revision no longer matches)
PermissionDenied            PERMISSION_DENIED (AccessDenied: the auth policy's refusal)
Unauthenticated             UNAUTHENTICATED
ResourceExhausted           RESOURCE_EXHAUSTED (etcd's NOSPACE alarm)
RateLimited                 RESOURCE_EXHAUSTED (the caller's --api-rate-limit)
Unavailable, LeaseLost      UNAVAILABLE
other PeerdError            INTERNAL
==========================  ====================
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog

from peerd.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    LeaseLost,
    NotFound,
    PeerdError,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = structlog.get_logger("peerd.rpc")

_CODES: list[tuple[type[PeerdError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Aborted, grpc.StatusCode.ABORTED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (LeaseLost, grpc.StatusCode.UNAVAILABLE),
]


def status_for(exc: PeerdError) -> grpc.StatusCode:
    """The gRPC status code for a peerd error."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


R = TypeVar("R")


async def abort_for(exc: PeerdError, context: grpc.aio.ServicerContext) -> None:
    """Abort the call with ``exc``'s status code and message (always raises)."""
    await context.abort(status_for(exc), str(exc))


async def _abort(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    """Abort the call for ``exc``: a PeerdError with its status; anything else logged and
    INTERNAL. An AbortError (the call is already aborted) is re-raised."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, PeerdError):
        await abort_for(exc, context)
    log.exception("rpc_internal_error", method=method)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")


def grpc_errors(
    fn: Callable[..., Awaitable[R]],
) -> Callable[..., Awaitable[R]]:
    """Decorate an async servicer method: a raised PeerdError aborts the call with its status
    code and message; any other exception is logged and aborts with INTERNAL."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await fn(self, request, context)
        except Exception as exc:
            await _abort(exc, context, fn.__name__)
        raise AssertionError("unreachable")  # context.abort always raises

    return wrapper


def grpc_stream_errors(
    fn: Callable[..., AsyncGenerator[R, None]],
) -> Callable[..., AsyncIterator[R]]:
    """Like :func:`grpc_errors`, for a server-streaming method written as an async generator.

    An error raised before or between messages aborts the stream with its status code (the
    messages already sent stay sent). A client that cancels (or a server shutting down) raises
    ``asyncio.CancelledError`` into the generator, which is closed (its ``finally`` blocks run)
    and not reported as an error.
    """

    @functools.wraps(fn)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[R]:
        try:
            async with contextlib.aclosing(fn(self, request, context)) as stream:
                async for item in stream:
                    yield item
        except Exception as exc:
            await _abort(exc, context, fn.__name__)

    return wrapper
