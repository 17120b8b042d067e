"""Which HTTP targets a node may call: the address policy of ``--http-allow`` / ``--http-deny``
(pure: no I/O, no DNS; the HTTP executor feeds it the URL before a request and every address a
name resolves to before it connects).

Rules (each flag repeatable; :func:`parse_rule`)::

    kind   example                       matched against
    -----  ----------------------------  ----------------------------------------------------
    cidr   169.254.0.0/16, ::1, 10.1.2.3 the address: an IP-literal host, else every address
                                         the host name resolves to (at run time)
    url    https://*.example.com/hooks/* the whole URL, normalised: lower-case scheme and host,
                                         no default port, no user info (fnmatch, case-sensitive)
    host   *.example.com, api.internal   the host (lower-case, IDNA, no trailing dot; fnmatch)
    set    loopback, private, link-local a named group of CIDRs (:data:`NAMED_SETS`)

Decision (first match wins, top to bottom)::

    1. a deny rule matches the URL, the host or an address  -> denied (names the rule)
    2. no allow rule of that layer exists                   -> allowed (for that layer)
    3. an allow rule of that layer matches                  -> allowed
    4. otherwise                                            -> denied ("no --http-allow matches")

There are two layers, and a target must pass both: the *name layer* (url and host rules,
decided from the URL alone, before anything is sent) and the *address layer* (cidr and set
rules, decided for each address connected to). An allow list of one layer leaves the other
layer open: ``--http-allow https://*.example.com/*`` alone restricts URLs and not addresses,
``--http-allow 10.0.0.0/8`` alone restricts addresses and not URLs; both together require
both. Keeping the layers apart makes the address decision depend on the address only, never
on the URL's path, so a DNS cache entry or a pooled keep-alive connection vetted for one
request is valid for every other request to the same host.

Built-in denies (:data:`BUILTIN_DENY`, always on, no allow lifts them): IPv4 link-local
169.254.0.0/16 (the metadata service of AWS, GCP, Azure, OpenStack, ... at 169.254.169.254),
IPv6 link-local fe80::/10, AWS's IPv6 metadata address fd00:ec2::254 and the host name
``metadata.google.internal``. Loopback and private ranges are allowed by default: peerd's demo
and tests call 127.0.0.1, and in-cluster webhooks usually live on private addresses. A node that
only calls the internet adds ``--http-deny loopback --http-deny private``.

IPv4-mapped IPv6 addresses (``::ffff:169.254.169.254``) are matched as the IPv4 address they
carry, so the mapped form does not slip past an IPv4 rule.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import yarl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_FLAG = "--http-allow"
DENY_FLAG = "--http-deny"

NAMED_SETS: dict[str, tuple[str, ...]] = {
    "loopback": ("127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128"),
    "private": (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    ),
    "link-local": ("169.254.0.0/16", "fe80::/10"),
}
"""Named groups of CIDRs a rule may use. ``loopback`` includes the unspecified addresses
(0.0.0.0/8, ::), which reach the local host on Linux; ``private`` is RFC 1918, the shared
address space of RFC 6598 (carrier-grade NAT) and IPv6 unique-local (RFC 4193)."""

BUILTIN_DENY: tuple[tuple[str, str], ...] = (
    ("169.254.0.0/16", "built-in: link-local, cloud metadata"),
    ("fe80::/10", "built-in: IPv6 link-local"),
    ("fd00:ec2::254", "built-in: AWS IPv6 metadata"),
    ("metadata.google.internal", "built-in: GCP metadata"),
)
"""``(rule, note)`` denied on every node whatever its flags."""

_HOST_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_-]{1,63})*$")
_NUMERIC_HOST_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetError(ValueError):
    """A URL or a rule that cannot be parsed; the message says why (no field name)."""


@dataclass(frozen=True)
class Target:
    """An HTTP target URL, parsed and normalised for matching.

    Attributes:
        url: the URL as given.
        scheme: ``http`` or ``https``.
        host: lower-case, IDNA-encoded, without a trailing dot or IPv6 brackets.
        port: explicit port, or the scheme's default.
        address: the host as an address when it is an IP literal (IPv4-mapped IPv6 unwrapped),
            else ``None``.
        normalised: ``scheme://host[:port]/path[?query]`` without user info or a default port,
            as url rules see it.
    """

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress | None
    normalised: str


def _unmap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an IP address (IPv6 zone ids dropped, IPv4-mapped IPv6 unwrapped), or None."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return _unmap(address)


def parse_target(url: str) -> Target:
    """Parse an HTTP target URL.

    Raises:
        TargetError: not an absolute http/https URL, no host, a host that is not a valid name or
            IP literal, or a host in a legacy numeric IPv4 form (``2130706433``, ``0x7f.1``,
            ``127.1``) that resolvers map onto an address the rules would not see.
    """
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError) as exc:
        raise TargetError(f"{url!r} is not a URL: {exc}") from None
    scheme = (parsed.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS:
        raise TargetError(f"{url!r}: scheme must be http or https")
    raw = parsed.raw_host
    if not raw:
        raise TargetError(f"{url!r} has no host")
    host = raw.lower().rstrip(".")
    address = parse_address(host) if ":" in host else None
    if address is None and _NUMERIC_HOST_RE.match(host):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise TargetError(
                f"{url!r}: host {host!r} is not a canonical IPv4 address (a.b.c.d)"
            ) from None
    if address is None and (":" in host or not _HOST_RE.match(host)):
        raise TargetError(f"{url!r}: {host!r} is not a valid host name or IP address")
    port = parsed.explicit_port or _DEFAULT_PORTS[scheme]
    shown_host = f"[{host}]" if ":" in host else host
    netloc = shown_host if port == _DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    rest = parsed.raw_path_qs or "/"
    return Target(url, scheme, host, port, address, f"{scheme}://{netloc}{rest}")


@dataclass(frozen=True)
class Rule:
    """One allow or deny rule.

    Attributes:
        text: the rule as given (shown in errors).
        flag: ``--http-allow`` or ``--http-deny`` (shown in errors).
        kind: ``cidr``, ``url`` or ``host`` (a named set is a cidr rule with several networks).
        networks: cidr rules: the networks matched.
        pattern: url and host rules: the fnmatch pattern (host patterns lower-case).
        note: why the rule exists (built-in rules), "" otherwise.
    """

    text: str
    flag: str
    kind: Literal["cidr", "url", "host"]
    networks: tuple[IPNetwork, ...] = ()
    pattern: str = ""
    note: str = ""

    def __str__(self) -> str:
        return f"{self.flag} {self.text}" + (f" ({self.note})" if self.note else "")

    def matches_address(self, address: IPAddress) -> bool:
        """Whether a cidr rule contains ``address`` (False for other kinds)."""
        return any(address in network for network in self.networks)

    def matches_target(self, target: Target) -> bool:
        """Whether a url or host rule matches ``target``; a cidr rule matches an IP-literal
        host it contains."""
        if self.kind == "url":
            return fnmatch.fnmatchcase(target.normalised, self.pattern)
        if self.kind == "host":
            return fnmatch.fnmatchcase(target.host, self.pattern)
        return target.address is not None and self.matches_address(target.address)


def parse_rule(text: str, flag: str, note: str = "") -> Rule:
    """One ``--http-allow`` / ``--http-deny`` value (see the module docstring for the kinds).

    Raises:
        TargetError: an empty rule, a malformed CIDR (``10.0.0.0/33``), or a url pattern whose
            scheme is not http/https.
    """
    value = text.strip()
    if not value:
        raise TargetError("empty rule")
    if value.lower() in NAMED_SETS:
        nets = tuple(ipaddress.ip_network(n) for n in NAMED_SETS[value.lower()])
        return Rule(value, flag, "cidr", networks=nets, note=note)
    if "://" in value:
        scheme, _, rest = value.partition("://")
        if scheme.lower() not in _DEFAULT_PORTS:
            raise TargetError(f"{value!r}: a URL pattern must start with http:// or https://")
        host, slash, path = rest.partition("/")
        return Rule(value, flag, "url", pattern=f"{scheme.lower()}://{host.lower()}{slash}{path}")
    if "/" in value or parse_address(value) is not None or ":" in value:
        try:
            net = ipaddress.ip_network(value.split("%", 1)[0], strict=False)
        except ValueError as exc:
            raise TargetError(f"{value!r} is not a CIDR or an IP address: {exc}") from None
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
            mapped = net.network_address.ipv4_mapped
            net = ipaddress.ip_network(f"{mapped}/{max(0, net.prefixlen - 96)}", strict=False)
        return Rule(value, flag, "cidr", networks=(net,), note=note)
    return Rule(value, flag, "host", pattern=value.lower().rstrip("."), note=note)


def validate_rules(values: Iterable[str], flag: str) -> tuple[str, ...]:
    """The rules of one flag, each checked by :func:`parse_rule`, stripped.

    Raises:
        TargetError: the first bad rule, with the reason.
    """
    return tuple(parse_rule(v, flag).text for v in values)


@dataclass(frozen=True)
class Decision:
    """The policy's answer. ``allowed`` false comes with ``rule`` (the deny rule that matched;
    ``None`` when no allow rule matched) and ``reason``, one line naming the rule."""

    allowed: bool
    reason: str = ""
    rule: Rule | None = None


ALLOWED = Decision(True)
DECISIONS_KEPT = 4096
"""Targets whose decision a policy remembers (then it starts over)."""


class TargetPolicy:
    """The node's HTTP target policy (module docstring: rules, layers, built-ins).

    Args:
        allow: ``--http-allow`` values.
        deny: ``--http-deny`` values (the built-ins are added).

    Raises:
        TargetError: a rule that :func:`parse_rule` refuses.
    """

    def __init__(self, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> None:
        builtins = [parse_rule(text, DENY_FLAG, note) for text, note in BUILTIN_DENY]
        self.deny: tuple[Rule, ...] = (*builtins, *(parse_rule(t, DENY_FLAG) for t in deny))
        allows = [parse_rule(t, ALLOW_FLAG) for t in allow]
        self.allow_names = tuple(r for r in allows if r.kind != "cidr")
        self.allow_addresses = tuple(r for r in allows if r.kind == "cidr")
        self.key = (tuple(allow), tuple(deny))
        """The flags it was built from (equal keys: equal policies)."""
        self._decided: dict[Target, Decision] = {}

    def check_target(self, target: Target) -> Decision:
        """The decision for a URL before anything is sent: deny rules on the URL, the host and
        an IP-literal host, then the name layer's allow list, then (IP literal only) the address
        layer's. A host name still needs :meth:`check_address` for each resolved address.

        Decisions are remembered (up to :data:`DECISIONS_KEPT` targets; a task's URL is
        checked at every fire)."""
        decision = self._decided.get(target)
        if decision is None:
            if len(self._decided) >= DECISIONS_KEPT:
                self._decided.clear()
            decision = self._decided[target] = self._decide(target)
        return decision

    def _decide(self, target: Target) -> Decision:
        for rule in self.deny:
            if rule.matches_target(target):
                what = f"address {target.address} " if rule.kind == "cidr" else ""
                return Decision(False, f"{what}denied by {rule}", rule)
        if self.allow_names and not any(r.matches_target(target) for r in self.allow_names):
            return Decision(False, f"matches no {ALLOW_FLAG} URL or host rule")
        if target.address is not None:
            return self.check_address(target.address)
        return ALLOWED

    def check_address(self, address: IPAddress) -> Decision:
        """The decision for one address a connection would go to (IPv4-mapped unwrapped)."""
        address = _unmap(address)
        for rule in self.deny:
            if rule.matches_address(address):
                return Decision(False, f"address {address} denied by {rule}", rule)
        if self.allow_addresses and not any(
            r.matches_address(address) for r in self.allow_addresses
        ):
            return Decision(False, f"address {address} matches no {ALLOW_FLAG} CIDR rule")
        return ALLOWED

    def check_url(self, url: str) -> Decision:
        """:meth:`check_target` of ``url``.

        Raises:
            TargetError: ``url`` cannot be parsed (:func:`parse_target`).
        """
        return self.check_target(parse_target(url))


__all__ = [
    "ALLOWED",
    "ALLOW_FLAG",
    "BUILTIN_DENY",
    "DECISIONS_KEPT",
    "DENY_FLAG",
    "NAMED_SETS",
    "Decision",
    "Rule",
    "Target",
    "TargetError",
    "TargetPolicy",
    "parse_address",
    "parse_rule",
    "parse_target",
    "validate_rules",
]
