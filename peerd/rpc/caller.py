"""Who is calling: the two questions the API asks about a caller, answered in one place.

* :func:`authenticated_name` is recorded with every task change (:mod:`peerd.rpc.task_writes`).
* :func:`principal` keys the per-caller rate limit (:mod:`peerd.rpc.guard`).
* :func:`sees_credentials` decides whether task answers show credential-named literal values
  (:func:`peerd.core.redact.redact_spec`).

A caller authenticated under an auth policy (:mod:`peerd.rpc.auth`) is its principal's name, and
sees credentials when its grants include ``admin``. Without a policy (every caller is
:data:`peerd.core.policy.UNRESTRICTED`), the principal is the caller's network address (its host,
not its port: a client that reconnects is the same caller; a REST call's is its HTTP client's,
:func:`peerd.rpc.auth.peer_of`) and nobody sees credentials.
"""

from __future__ import annotations

import grpc

from peerd.core.policy import Permission
from peerd.rpc.auth import current_principal, peer_of


def authenticated_name() -> str:
    """The name of the principal authenticated for the call in progress; ``""`` without an auth
    policy (an unrestricted caller) or outside a call."""
    who = current_principal()
    return who.name if who is not None and not who.unrestricted else ""


def principal(context: grpc.aio.ServicerContext) -> str:
    """The caller, as the rate limit counts it: ``principal:<name>`` when authenticated, else
    ``ipv4:127.0.0.1``, ``ipv6:[::1]``, ``unix:/path``, or ``unknown`` (from
    :func:`peerd.rpc.auth.peer_of`, its port dropped)."""
    name = authenticated_name()
    if name:
        return f"principal:{name}"
    peer = peer_of(context)
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            return f"{kind}:{host}"
    return peer


def sees_credentials(context: grpc.aio.ServicerContext) -> bool:
    """Whether task answers to this caller carry credential-named literal values unredacted:
    only an authenticated caller granted ``admin`` on every task (never without a policy)."""
    who = current_principal()
    return who is not None and not who.unrestricted and who.may(Permission.ADMIN)


__all__ = ["authenticated_name", "principal", "sees_credentials"]
