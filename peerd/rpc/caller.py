"""Who is calling: the two questions the API asks about a caller, answered in one place.

* :func:`principal` keys the per-caller rate limit (:mod:`peerd.rpc.guard`).
* :func:`sees_credentials` decides whether task answers show credential-named literal values
  (:func:`peerd.core.redact.redact_spec`).

A caller authenticated under an auth policy (:mod:`peerd.rpc.auth`) is its principal's name, and
sees credentials when its grants include ``admin``. Without a policy (every caller is
:data:`peerd.core.policy.UNRESTRICTED`), the principal is the caller's network address (its host,
not its port: a client that reconnects is the same caller) and nobody sees credentials. A call
of the node's HTTP/JSON gateway (:mod:`peerd.http.rest`) arrives on the node's unix socket and
carries its HTTP client's address as :data:`FORWARDED_FOR` metadata; only there is it believed
(the socket is the only unix one the server listens on, in a directory only the node's user can
enter).
"""

from __future__ import annotations

import grpc

from peerd.core.policy import Permission
from peerd.rpc.auth import current_principal

FORWARDED_FOR = "peerd-forwarded-for"
"""Metadata key: the HTTP client of a call made by the node's REST gateway
(``ipv4:10.0.0.7:51234``)."""


def principal(context: grpc.aio.ServicerContext) -> str:
    """The caller, as the rate limit counts it: ``ipv4:127.0.0.1``, ``ipv6:[::1]``,
    ``unix:/path``, or ``unknown`` (from ``context.peer()``, its port dropped; for a call of
    the REST gateway, from its :data:`FORWARDED_FOR` metadata)."""
    who = current_principal()
    if who is not None and not who.unrestricted:
        return f"principal:{who.name}"
    peer = context.peer() or "unknown"
    if peer.startswith("unix:"):
        forwarded = dict(context.invocation_metadata() or ()).get(FORWARDED_FOR)
        peer = str(forwarded) if forwarded else peer
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


__all__ = ["FORWARDED_FOR", "principal", "sees_credentials"]
