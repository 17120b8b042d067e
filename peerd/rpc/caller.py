"""Who is calling: the two questions the API asks about a caller, answered in one place.

* :func:`principal` keys the per-caller rate limit (:mod:`peerd.rpc.guard`).
* :func:`sees_credentials` decides whether task answers show credential-named literal values
  (:func:`peerd.core.redact.redact_spec`).

Until the API authenticates callers, the principal is the caller's network address (its host,
not its port: a client that reconnects is the same caller) and nobody sees credentials. When
authentication lands, these two functions are re-pointed at the authenticated identity and its
role (an admin sees credentials); nothing else changes.
"""

from __future__ import annotations

import grpc


def principal(context: grpc.aio.ServicerContext) -> str:
    """The caller, as the rate limit counts it: ``ipv4:127.0.0.1``, ``ipv6:[::1]``,
    ``unix:/path``, or ``unknown`` (from ``context.peer()``, its port dropped)."""
    peer = context.peer() or "unknown"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            return f"{kind}:{host}"
    return peer


def sees_credentials(context: grpc.aio.ServicerContext) -> bool:
    """Whether task answers to this caller carry credential-named literal values unredacted
    (no caller does, until callers are authenticated and an admin role exists)."""
    return False


__all__ = ["principal", "sees_credentials"]
