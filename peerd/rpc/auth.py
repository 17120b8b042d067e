"""Authentication and authorisation of every call a node serves, in one place.

:class:`AuthInterceptor` wraps every method handler of the server. Before the handler runs it:

===================================  =====================================================
service                              who may call
===================================  =====================================================
``peerd.v1.Scheduler``               a principal holding the method's permission (the table
                                     :data:`SCHEDULER` below) on every task the request
                                     names; List/Watch calls are filtered to the tasks the
                                     principal may read (:func:`visible`)
``peerd.v1.Peer``                    with mutual TLS: only a node certificate (URI SAN
                                     ``spiffe://peerd/node/<id>``) whose node id is the
                                     request's ``from_node``
``grpc.health.v1.Health``            anyone when the policy's ``access.health`` is "open"
                                     (the default), else any authenticated principal
``grpc.reflection.*``                likewise with ``access.reflection`` (default
                                     "authenticated")
anything else                        nobody while a policy is in force
===================================  =====================================================

Missing or invalid credentials answer UNAUTHENTICATED; a missing permission PERMISSION_DENIED
naming it (``principal 'ci' lacks permission 'write' on task 'billing-x'``). Without an
``--auth-policy`` every caller is unrestricted (Peer calls still need a node certificate when
the server asks for client certificates).

The principal of the call in progress is :func:`current_principal` (a contextvar set for the
handler and every interceptor after this one): the audit log, the List/Watch filters and the
per-principal rate limit read it there. Every successful write is logged as ``api_write`` with
the principal, the method and the task ids (never the request's contents): the API's audit
trail. Refusals are logged as ``api_denied`` with the caller's address (:func:`peer_of`).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import structlog
from google.protobuf.message import Message

from peerd.core.policy import Permission, Principal
from peerd.errors import NotFound, PeerdError, PermissionDenied, Unauthenticated
from peerd.rpc.errors import status_for
from peerd.security.authn import Authenticator
from peerd.security.certs import NODE_URI_PREFIX
from peerd.v1 import scheduler_pb2 as pb

log = structlog.get_logger("peerd.rpc.auth")

_CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "peerd_principal", default=None
)

SCHEDULER_SERVICE = "peerd.v1.Scheduler"
PEER_SERVICE = "peerd.v1.Peer"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


FORWARDED_FOR = "peerd-forwarded-for"
"""Metadata key: the HTTP client of a call made by the node's REST gateway
(``ipv4:10.0.0.7:51234``, :mod:`peerd.http.rest`)."""


def peer_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's address: ``context.peer()`` (``ipv4:127.0.0.1:5123``), or for a call of the
    node's REST gateway its HTTP client's, from :data:`FORWARDED_FOR`. That metadata is believed
    only on a unix socket: the gateway's is the only one the server listens on, in a directory
    only the node's user can enter (``--listen`` is always ``HOST:PORT``)."""
    peer = context.peer() or "unknown"
    if peer.startswith("unix:"):
        forwarded = dict(context.invocation_metadata() or ()).get(FORWARDED_FOR)
        if forwarded:
            return str(forwarded)
    return peer


def current_principal() -> Principal | None:
    """The principal of the call being served (set by :class:`AuthInterceptor` before the
    handler and the interceptors after it run); ``None`` outside a call or for a caller that
    needed no authentication (an open health check)."""
    return _CURRENT.get()


def visible(task_id: str) -> bool:
    """Whether the current caller may read task ``task_id`` (List/Watch filters). True outside
    an authenticated call (no interceptor: a node without one serves everything)."""
    principal = _CURRENT.get()
    return principal is None or principal.may(Permission.READ, task_id)


Target = tuple[str, pb.TaskSpec | None]
"""A task a request names: its id and, for creates, the spec it would write."""


@dataclass(frozen=True)
class MethodRule:
    """How one Scheduler method is authorised.

    Attributes:
        permission: what the caller needs on every task :attr:`targets` names (on at least
            one task when it names none); ``None``: authentication only.
        targets: the tasks the request names.
        write: a write, logged as ``api_write``.
        stored: also check the stored task (triggering a shell task needs ``shell``).
    """

    permission: Permission | None
    targets: Callable[[Any], list[Target]] = lambda request: []
    write: bool = False
    stored: bool = False


def _by_id(request: Any) -> list[Target]:
    return [(request.id, None)]


def _by_task_id(request: Any) -> list[Target]:
    return [(request.task_id, None)] if request.task_id else []


def _apply(request: pb.ApplyTasksRequest) -> list[Target]:
    creates: list[Target] = [(t.id, t) for t in request.create]
    updates: list[Target] = [(u.task.id, u.task) for u in request.update]
    return creates + updates + [(d.id, None) for d in request.delete]


def _preview(request: pb.PreviewScheduleRequest) -> list[Target]:
    return [(request.task_id, None)] if request.WhichOneof("source") == "task_id" else []


R, W, T = Permission.READ, Permission.WRITE, Permission.TRIGGER
SCHEDULER: Mapping[str, MethodRule] = {
    "CreateTask": MethodRule(W, lambda r: [(r.task.id, r.task)], write=True),
    "CreateTasks": MethodRule(W, lambda r: [(t.id, t) for t in r.tasks], write=True),
    "GetTask": MethodRule(R, _by_id),
    "ListTasks": MethodRule(R),
    "UpdateTask": MethodRule(W, lambda r: [(r.task.id, r.task)], write=True),
    "ApplyTasks": MethodRule(W, _apply, write=True),
    "ListTaskHistory": MethodRule(R, _by_task_id),
    "DeleteTask": MethodRule(W, _by_id, write=True),
    "PauseTask": MethodRule(W, _by_id, write=True),
    "ResumeTask": MethodRule(W, _by_id, write=True),
    "TriggerTask": MethodRule(T, _by_id, write=True, stored=True),
    "ListRuns": MethodRule(R, _by_task_id),
    "GetCluster": MethodRule(R),
    "PreviewSchedule": MethodRule(R, _preview),
    "AuditTask": MethodRule(R, _by_task_id),
    "WatchRuns": MethodRule(R, _by_task_id),
    "WhoAmI": MethodRule(None),
    "PinTzdata": MethodRule(Permission.ADMIN, write=True),
}
"""Every method of ``peerd.v1.Scheduler`` -> its rule (a unit test keeps it complete: a method
missing here is refused to everyone while a policy is in force)."""


class TaskLookup(Protocol):
    """Reads a stored task (:meth:`peerd.coord.store.TaskStore.get`)."""

    async def get(self, task_id: str) -> tuple[pb.TaskSpec, int]: ...


def _cert_names(context: grpc.aio.ServicerContext) -> list[str]:
    """The verified client certificate's CN, then its SANs ([] without one)."""
    ctx = context.auth_context()
    names = [v.decode() for v in ctx.get("x509_common_name", [])]
    names += [v.decode() for v in ctx.get("x509_subject_alternative_name", [])]
    return names


def node_of(context: grpc.aio.ServicerContext) -> str | None:
    """The node id in the verified client certificate's URI SAN, or None."""
    for uri in context.auth_context().get("peer_uri", []):
        text = uri.decode()
        if text.startswith(NODE_URI_PREFIX):
            return text[len(NODE_URI_PREFIX) :]
    return None


def _is_shell(spec: pb.TaskSpec | None) -> bool:
    return spec is not None and spec.WhichOneof("target") == "shell"


Check = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Principal | None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """The server interceptor (see the module docstring).

    Args:
        authn: credentials -> principal, under the policy in force.
        tasks: reads stored tasks (for :attr:`MethodRule.stored`).
        node_certs: the server requires client certificates (mutual TLS), so Peer calls must
            come from node certificates.
    """

    def __init__(self, authn: Authenticator, tasks: TaskLookup, node_certs: bool) -> None:
        self.authn = authn
        self.tasks = tasks
        self.node_certs = node_certs

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        service, _, method = details.method.lstrip("/").partition("/")
        return _wrap(handler, details.method, self._check_for(service, method))

    def _check_for(self, service: str, method: str) -> Check:
        if service == SCHEDULER_SERVICE:
            rule = SCHEDULER.get(method)
            return lambda request, context: self._scheduler(rule, method, request, context)
        if service == PEER_SERVICE:
            return self._peer
        if service == HEALTH_SERVICE:
            return lambda r, c: self._open_or_authenticated(c, "health")
        if service in REFLECTION_SERVICES:
            return lambda r, c: self._open_or_authenticated(c, "reflection")
        return lambda r, c: self._unknown(service, c)

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        return await self.authn.authenticate(
            context.invocation_metadata() or (), _cert_names(context)
        )

    async def _scheduler(
        self, rule: MethodRule | None, method: str, request: Any, context: grpc.aio.ServicerContext
    ) -> Principal:
        principal = await self._principal(context)
        if rule is None:
            if principal.unrestricted:
                return principal
            raise PermissionDenied(f"method {method} has no authorisation rule; refused")
        if rule.permission is None:
            return principal
        if not isinstance(request, Message):
            # Did not parse (peerd.rpc.guard.Malformed): the guard answers INVALID_ARGUMENT,
            # after the caller's permission on at least one task is checked.
            principal.require(rule.permission)
            return principal
        targets = rule.targets(request)
        for task_id, spec in targets:
            principal.require(rule.permission, task_id)
            if _is_shell(spec):
                principal.require(Permission.SHELL, task_id)
        if not targets:
            principal.require(rule.permission)
        if rule.stored and not principal.may(Permission.SHELL, targets[0][0]):
            try:
                stored, _ = await self.tasks.get(targets[0][0])
            except NotFound:
                return principal  # the handler answers NOT_FOUND
            if _is_shell(stored):
                principal.require(Permission.SHELL, stored.id)
        return principal

    async def _peer(self, request: Any, context: grpc.aio.ServicerContext) -> Principal | None:
        if not self.node_certs:
            return None
        node = node_of(context)
        if node is None:
            raise Unauthenticated(
                "Peer calls need a node certificate of the cluster CA "
                f"(URI SAN {NODE_URI_PREFIX}<node id>)"
            )
        claimed = getattr(request, "from_node", "") if request is not None else ""
        if claimed and claimed != node:
            raise PermissionDenied(f"the certificate of node {node!r} cannot speak for {claimed!r}")
        return Principal(node, "certificate")

    async def _open_or_authenticated(
        self, context: grpc.aio.ServicerContext, what: str
    ) -> Principal | None:
        policy = self.authn.policy
        if policy is None or (policy.health_open if what == "health" else policy.reflection_open):
            return None
        return await self._principal(context)

    async def _unknown(self, service: str, context: grpc.aio.ServicerContext) -> Principal:
        principal = await self._principal(context)
        if not principal.unrestricted:
            raise PermissionDenied(f"service {service} is not open to API callers")
        return principal


def _audit(
    method: str, principal: Principal | None, request: Any, response: Any, outcome: str
) -> None:
    if principal is None:
        return
    name = method.rpartition("/")[2]
    rule = SCHEDULER.get(name) if method.startswith(f"/{SCHEDULER_SERVICE}/") else None
    if rule is None or not rule.write:
        return
    if isinstance(response, pb.TaskSpec):
        ids = [response.id]
    elif isinstance(response, pb.CreateTasksResponse):
        ids = [t.id for t in response.tasks]
    else:
        ids = [task_id for task_id, _ in rule.targets(request)]
    log.info(
        "api_write",
        principal=principal.name,
        source=principal.source,
        method=name,
        task_ids=ids,
        outcome=outcome,
    )


async def _authorise(
    check: Check, method: str, request: Any, context: grpc.aio.ServicerContext
) -> Principal | None:
    try:
        return await check(request, context)
    except PeerdError as exc:
        log.warning("api_denied", method=method, peer=peer_of(context), reason=str(exc))
        await context.abort(status_for(exc), str(exc))
        raise AssertionError("unreachable") from exc  # abort raises


def _wrap(handler: grpc.RpcMethodHandler, method: str, check: Check) -> grpc.RpcMethodHandler:
    """``handler`` with ``check`` run (and the principal set) before its behaviour."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        principal = await _authorise(check, method, request, context)
        token = _CURRENT.set(principal)
        try:
            response = handler.unary_unary(request, context)
            if inspect.isawaitable(response):
                response = await response
        except BaseException:
            _audit(method, principal, request, None, "failed")
            raise
        finally:
            _CURRENT.reset(token)
        _audit(method, principal, request, response, "ok")
        return response

    # Streams set the principal without resetting it: gRPC serves each call in a context of
    # its own, and a stream may be closed from another one (reset would raise there).
    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        _CURRENT.set(await _authorise(check, method, request, context))
        behaviour = handler.unary_stream if handler.unary_stream else handler.stream_stream
        async for item in behaviour(request, context):
            yield item

    async def client_streaming(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        _CURRENT.set(await _authorise(check, method, None, context))
        return await handler.stream_unary(requests, context)

    ser, de = handler.response_serializer, handler.request_deserializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, de, ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, de, ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(client_streaming, de, ser)
    return grpc.stream_stream_rpc_method_handler(streaming, de, ser)


__all__ = [
    "FORWARDED_FOR",
    "SCHEDULER",
    "AuthInterceptor",
    "MethodRule",
    "TaskLookup",
    "current_principal",
    "node_of",
    "peer_of",
    "visible",
]
