"""The HTTP executor's transport: one aiohttp session per node, whose connector vets every
address it connects to against the node's target policy (:mod:`peerd.core.targets`).

Where the policy is enforced on a request (the executor checks the URL first)::

    URL ──check_target──▶ name layer, deny rules, IP-literal host (aiohttp skips DNS for those)
     │
     ▼ host name
    PolicyResolver.resolve ──▶ base resolver (getaddrinfo) ──▶ check_address(each address)
     │                                                          any denied: TargetDenied
     ▼ the vetted addresses, and only those
    TCPConnector connects ──▶ DNS cache (10 s) and keep-alive pool hold vetted addresses only

A name that rebinds to 169.254.169.254 between the create-time check and the run is refused
here, at connect time, because the address the connector dials is the one the resolver
returned. The address decision depends on the address alone (never on the URL's path), so a
cached resolution or a pooled connection vetted for one request is valid for any other.

On a policy change (SIGHUP) the session is *retired*: requests in flight finish on it, new
ones get a new session (new DNS cache, new pool), and the retired one is closed once idle.

Proxies come from the node's environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``,
either case; :class:`EnvProxies`), like aiohttp's ``trust_env``, which is *not* used because it
also sends ``~/.netrc`` credentials to any host they name. The proxy is operator
configuration: its address is not checked against the policy; the target's URL and IP
literals are, but a proxied host *name* is resolved by the proxy, so DNS-rebinding protection
for proxied requests is the proxy's job (deny 169.254.0.0/16 in its ACL). docs/security.md.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from peerd.core.targets import Decision, Target, TargetPolicy, parse_address

PER_ORIGIN = 32
"""Connections per origin (scheme, host, port)."""
KEEPALIVE_S = 15.0
"""An idle pooled connection is closed after this long (aiohttp's default)."""


class TargetDenied(OSError):
    """The policy refused an address a host name resolved to (raised by the resolver, so
    aiohttp reports it as the ``os_error`` of a ``ClientConnectorError``).

    Attributes:
        decision: the refusal, naming the address and the rule.
    """

    def __init__(self, host: str, decision: Decision) -> None:
        super().__init__(f"{host}: {decision.reason}")
        self.decision = decision


class PolicyResolver(AbstractResolver):
    """Resolves with ``base``, then refuses the whole answer when any address fails the policy
    (a name that resolves to a public address *and* to 169.254.169.254 is refused, not
    filtered: the answer is suspect, and the error names the address and the rule).

    Args:
        base: the resolver doing the lookups (closed with this one).
        policy: the policy every address must pass.
        exempt: host names not checked (the configured proxies).
    """

    def __init__(
        self, base: AbstractResolver, policy: TargetPolicy, exempt: frozenset[str] = frozenset()
    ) -> None:
        self._base = base
        self._policy = policy
        self._exempt = exempt

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The base resolver's answer for ``host``, every address vetted.

        Raises:
            TargetDenied: an address the policy refuses (or one that is not an address).
            OSError: the lookup failed (from the base resolver).
        """
        results = await self._base.resolve(host, port, family)
        if host.lower().rstrip(".") in self._exempt:
            return results
        for result in results:
            address = parse_address(result["host"])
            if address is None:
                raise TargetDenied(host, Decision(False, f"{result['host']!r} is not an address"))
            decision = self._policy.check_address(address)
            if not decision.allowed:
                raise TargetDenied(host, decision)
        return results

    async def close(self) -> None:
        """Close the base resolver."""
        await self._base.close()


class EnvProxies:
    """The proxies of an environment: ``http_proxy``/``https_proxy``/``no_proxy`` (lower case
    first, then upper case), as :mod:`urllib.request` reads them.

    Args:
        env: the process environment.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        def get(name: str) -> str:
            return env.get(name) or env.get(name.upper()) or ""

        self._by_scheme = {s: p for s in ("http", "https") if (p := get(f"{s}_proxy"))}
        self._no_proxy = get("no_proxy")
        self.hosts = frozenset(
            host.lower().rstrip(".")
            for proxy in self._by_scheme.values()
            if (host := yarl.URL(proxy).host)
        )
        """Host names of the configured proxies (exempt from the address check)."""

    def proxy_for(self, target: Target) -> str | None:
        """The proxy URL for ``target``, or ``None`` (no proxy for its scheme, or ``no_proxy``
        names its host)."""
        proxy = self._by_scheme.get(target.scheme)
        if proxy is None:
            return None
        if self._no_proxy and urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
            target.host, {"no": self._no_proxy}
        ):
            return None
        return proxy


@dataclass(eq=False)
class Lease:
    """One session and the requests using it."""

    session: aiohttp.ClientSession
    in_flight: int = 0
    retired: bool = field(default=False)


class Sessions:
    """The executor's sessions: the current one, and retired ones still serving requests.

    Args:
        per_origin: connections per origin.
        limit: connections in all.
        exempt: host names the resolver does not check (proxies).
        resolver_factory: makes the base resolver of each session (default aiohttp's
            ``DefaultResolver``; tests pass a fixed answer).
    """

    def __init__(
        self,
        per_origin: int,
        limit: int,
        exempt: frozenset[str] = frozenset(),
        resolver_factory: Callable[[], AbstractResolver] | None = None,
    ) -> None:
        self._per_origin = per_origin
        self._limit = limit
        self._exempt = exempt
        self._resolver_factory = resolver_factory or aiohttp.DefaultResolver
        self._current: Lease | None = None
        self._retired: list[Lease] = []

    def _new(self, policy: TargetPolicy) -> Lease:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=self._per_origin,
            keepalive_timeout=KEEPALIVE_S,
            resolver=PolicyResolver(self._resolver_factory(), policy, self._exempt),
            ssl=True,  # verify certificates and host names
        )
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookie of one target reaches another
            timeout=aiohttp.ClientTimeout(total=None),  # per request
            trust_env=False,  # proxies: EnvProxies (trust_env would also send ~/.netrc)
        )
        return Lease(session)

    def acquire(self, policy: TargetPolicy) -> Lease:
        """The current session (made on first use, on a running loop), counted in use until
        :meth:`release`; ``policy`` is the one a new session's resolver enforces."""
        if self._current is None:
            self._current = self._new(policy)
        lease = self._current
        lease.in_flight += 1
        return lease

    async def release(self, lease: Lease) -> None:
        """End one request on ``lease``; closes it when it is retired and idle."""
        lease.in_flight -= 1
        if lease.retired and lease.in_flight == 0 and lease in self._retired:
            self._retired.remove(lease)
            await lease.session.close()

    def retire(self) -> None:
        """Stop giving out the current session (the policy changed): requests in flight finish
        on it; it closes when the last one ends, or at :meth:`close` when it is idle now."""
        if self._current is not None:
            self._current.retired = True
            self._retired.append(self._current)
            self._current = None

    async def close_idle(self) -> None:
        """Close retired sessions that serve no request."""
        for lease in [r for r in self._retired if r.in_flight == 0]:
            self._retired.remove(lease)
            await lease.session.close()

    async def close(self) -> None:
        """Close every session (node shutdown). Idempotent."""
        self.retire()
        leases, self._retired = self._retired, []
        for lease in leases:
            await lease.session.close()


__all__ = [
    "KEEPALIVE_S",
    "PER_ORIGIN",
    "EnvProxies",
    "Lease",
    "PolicyResolver",
    "Sessions",
    "TargetDenied",
]
