"""The auth policy: who may do what to which tasks (pure: no I/O, no clock).

Permissions and the roles that hold them (the roles are fixed; a grant gives one role on a set
of tasks):

===========  ====  =====  =======  =====  =====
role         read  write  trigger  shell  admin
===========  ====  =====  =======  =====  =====
viewer       yes
operator     yes   yes    yes
admin        yes   yes    yes      yes    yes
===========  ====  =====  =======  =====  =====

``read``: tasks, runs, audit, preview, the cluster. ``write``: create, update, pause, resume,
delete. ``trigger``: run a task now. ``shell``: create or update a task with a shell target, or
trigger one (it runs a command on a node). ``admin``: reserved for policy administration.

A grant is scoped to tasks by id prefix (``tasks = ["payments-"]``; ``["*"]`` is every task).
A task is covered when its id starts with one of the prefixes. Label selectors plug in through
:class:`Scope`'s ``selector`` (see :func:`parse_scope`): the hook is there, the parser comes
with task labels.

The policy document (a TOML file, ``--auth-policy``; the caller parses the TOML and hands the
mapping to :func:`parse_policy`)::

    [access]
    health = "open"                 # open | authenticated (default open)
    reflection = "authenticated"    # open | authenticated (default authenticated)

    [jwt]                           # optional: bearer JWTs verified against a JWKS
    jwks_file = "/etc/peerd/jwks.json"    # or jwks_url = "https://idp/.well-known/jwks.json"
    issuer = "https://idp.example.com/"
    audience = "peerd"
    algorithms = ["RS256", "ES256"]       # default
    name_claim = "sub"                    # default

    [[principals]]
    name = "ci"
    token_sha256 = ["9f86d081..."]  # from `peerd auth hash-token`; never the token itself
    grants = [{ role = "operator", tasks = ["payments-"] }]

    [[principals]]
    name = "alice"
    certificate = ["alice"]         # CN or a SAN of her client certificate
    grants = [{ role = "admin", tasks = ["*"] }]

    [[principals]]
    name = "payments-team"          # every JWT whose claims match gets these grants
    jwt_claims = { groups = "payments" }
    grants = [{ role = "viewer", tasks = ["payments-"] }]

Tokens are stored as the hex SHA-256 of the token (:func:`token_sha256`). A fast hash is the
right tool for a random secret of 256 bits: guessing is hopeless whatever the hash costs, while
slow password hashes (bcrypt, scrypt, Argon2) exist for low-entropy passwords (OWASP Password
Storage Cheat Sheet). GitHub and Stripe store their API tokens the same way: random tokens with
a recognisable prefix, kept only as a digest.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from peerd.errors import AccessDenied, InvalidArgument


class Permission(enum.StrEnum):
    """What a call needs; see the table in the module docstring."""

    READ = "read"
    WRITE = "write"
    TRIGGER = "trigger"
    SHELL = "shell"
    ADMIN = "admin"


ROLES: Mapping[str, frozenset[Permission]] = {
    "viewer": frozenset({Permission.READ}),
    "operator": frozenset({Permission.READ, Permission.WRITE, Permission.TRIGGER}),
    "admin": frozenset(Permission),
}
"""Role -> the permissions it holds (the table in the module docstring)."""

ALL_TASKS = "*"
"""The ``tasks`` entry of a grant that covers every task."""
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_SOURCES = ("open", "authenticated")


class LabelSelector(Protocol):
    """A label selector (``team=payments,tier!=batch``), once tasks have labels."""

    def matches(self, labels: Mapping[str, str]) -> bool: ...


@dataclass(frozen=True)
class Scope:
    """The tasks a grant covers: ids starting with one of ``prefixes`` ("" = every id) and,
    when ``selector`` is set, whose labels it matches (unknown labels never match)."""

    prefixes: tuple[str, ...]
    selector: LabelSelector | None = None

    def matches(self, task_id: str, labels: Mapping[str, str] | None = None) -> bool:
        """Whether task ``task_id`` (with ``labels``, when known) is in scope."""
        if not any(task_id.startswith(p) for p in self.prefixes):
            return False
        if self.selector is None:
            return True
        return labels is not None and self.selector.matches(labels)

    def describe(self) -> list[str]:
        """The prefixes as the policy file writes them (``*`` for every task)."""
        return [p or ALL_TASKS for p in self.prefixes]


@dataclass(frozen=True)
class Grant:
    """One role on one scope."""

    role: str
    scope: Scope

    @property
    def permissions(self) -> frozenset[Permission]:
        """What the role holds."""
        return ROLES[self.role]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        name: the policy's name for them (a JWT's ``name_claim``), used in logs and errors.
        source: ``"token"``, ``"jwt"``, ``"certificate"``, or ``"none"`` (no policy in force).
        grants: what the policy grants them.
        unrestricted: no policy is in force: every permission on every task.
    """

    name: str
    source: str
    grants: tuple[Grant, ...] = ()
    unrestricted: bool = False

    def may(
        self,
        permission: Permission,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        """Whether the principal holds ``permission`` on task ``task_id`` (``None``: on at
        least one task)."""
        if self.unrestricted:
            return True
        return any(
            permission in g.permissions and (task_id is None or g.scope.matches(task_id, labels))
            for g in self.grants
        )

    def require(
        self,
        permission: Permission,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Raise unless :meth:`may`.

        Raises:
            AccessDenied: naming the principal, the permission and the task.
        """
        if not self.may(permission, task_id, labels):
            raise AccessDenied(self.name, permission.value, task_id)

    def permissions(self) -> list[Permission]:
        """Permissions held on at least one task, in the table's order."""
        return [p for p in Permission if self.may(p)]


UNRESTRICTED = Principal("", "none", unrestricted=True)
"""The caller of a node that runs without an auth policy."""


@dataclass(frozen=True)
class Rule:
    """One ``[[principals]]`` entry: how a caller is recognised and what it is granted."""

    name: str
    grants: tuple[Grant, ...]
    token_sha256: tuple[str, ...] = ()
    certificate: tuple[str, ...] = ()
    jwt_claims: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JwtSettings:
    """The ``[jwt]`` table: where the keys are and what a valid token must say."""

    issuer: str
    audience: str
    jwks_file: str = ""
    jwks_url: str = ""
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    name_claim: str = "sub"


@dataclass(frozen=True)
class Policy:
    """A parsed auth policy (:func:`parse_policy`).

    Attributes:
        rules: the principals, in file order.
        jwt: JWT verification settings; ``None``: bearer tokens are only looked up by hash.
        health_open: grpc.health.v1 answers callers without credentials.
        reflection_open: server reflection answers callers without credentials.
    """

    rules: tuple[Rule, ...]
    jwt: JwtSettings | None = None
    health_open: bool = True
    reflection_open: bool = False

    def by_token(self, token: str) -> Principal | None:
        """The principal whose ``token_sha256`` lists the digest of ``token``; None if none."""
        digest = token_sha256(token)
        for rule in self.rules:
            if digest in rule.token_sha256:
                return Principal(rule.name, "token", rule.grants)
        return None

    def by_certificate(self, names: Iterable[str]) -> Principal | None:
        """The principal whose ``certificate`` lists one of ``names`` (the CN first, then the
        SANs of a verified client certificate); None if none."""
        for name in names:
            for rule in self.rules:
                if name in rule.certificate:
                    return Principal(rule.name, "certificate", rule.grants)
        return None

    def by_claims(self, claims: Mapping[str, Any]) -> Principal | None:
        """The principal for the verified claims of a JWT: named by ``name_claim``, holding the
        grants of every rule whose ``jwt_claims`` all match (a claim matches a value when it
        equals it or, for a list claim, contains it). None when no rule matches."""
        assert self.jwt is not None
        grants: list[Grant] = []
        for rule in self.rules:
            if rule.jwt_claims and all(
                _claim_matches(claims.get(k), v) for k, v in rule.jwt_claims.items()
            ):
                grants.extend(rule.grants)
        name = claims.get(self.jwt.name_claim)
        if not grants or not isinstance(name, str) or not name:
            return None
        return Principal(name, "jwt", tuple(grants))


def _claim_matches(claim: Any, value: str) -> bool:
    if isinstance(claim, list):
        return value in claim
    return claim == value


def token_sha256(token: str) -> str:
    """The hex SHA-256 of ``token`` (UTF-8): the form a policy stores tokens in."""
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Parsing


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidArgument(where, "must be a list of non-empty strings")
    return tuple(value)


def _table(value: Any, where: str, known: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(where, "must be a table")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise InvalidArgument(where, f"unknown keys {unknown} (known: {', '.join(known)})")
    return value


def parse_selector(text: str, where: str) -> LabelSelector:
    """The hook for label-scoped grants (``labels = "team=payments"``).

    Raises:
        InvalidArgument: always, until tasks carry labels: then this parses with the label
            selector parser of ``peerd.core.labels``.
    """
    raise InvalidArgument(where, "label selectors need task labels; scope by task id prefix")


def parse_scope(grant: Mapping[str, Any], where: str) -> Scope:
    """The scope of one grant: ``tasks`` (required: prefixes, or ``["*"]``) and ``labels``
    (a label selector, see :func:`parse_selector`).

    Raises:
        InvalidArgument: naming ``<where>.tasks`` or ``<where>.labels``.
    """
    if "tasks" not in grant:
        raise InvalidArgument(
            f"{where}.tasks", 'required: task id prefixes, or ["*"] for every task'
        )
    prefixes = _strings(grant["tasks"], f"{where}.tasks")
    if ALL_TASKS in prefixes and len(prefixes) > 1:
        raise InvalidArgument(f"{where}.tasks", '"*" covers every task; list nothing else')
    selector = None
    if "labels" in grant:
        labels = grant["labels"]
        if not isinstance(labels, str):
            raise InvalidArgument(f"{where}.labels", "must be a label selector string")
        selector = parse_selector(labels, f"{where}.labels")
    return Scope(tuple("" if p == ALL_TASKS else p for p in prefixes), selector)


def _grants(value: Any, where: str) -> tuple[Grant, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidArgument(where, "must be a non-empty list of {role, tasks} tables")
    out = []
    for i, raw in enumerate(value):
        g = _table(raw, f"{where}[{i}]", ("role", "tasks", "labels"))
        role = g.get("role")
        if role not in ROLES:
            raise InvalidArgument(f"{where}[{i}].role", f"{role!r} is not one of {list(ROLES)}")
        out.append(Grant(str(role), parse_scope(g, f"{where}[{i}]")))
    return tuple(out)


def _rule(raw: Any, where: str) -> Rule:
    keys = ("name", "grants", "token_sha256", "certificate", "jwt_claims")
    r = _table(raw, where, keys)
    name = r.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{where}.name", "required: a non-empty string")
    hashes = _strings(r.get("token_sha256", []), f"{where}.token_sha256")
    for h in hashes:
        if not _SHA256_HEX.match(h):
            raise InvalidArgument(
                f"{where}.token_sha256",
                "each entry is 64 lowercase hex digits (`peerd auth hash-token`), "
                "never the token itself",
            )
    claims = r.get("jwt_claims", {})
    if not isinstance(claims, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in claims.items()
    ):
        raise InvalidArgument(f"{where}.jwt_claims", "must be a table of claim = string value")
    certs = _strings(r.get("certificate", []), f"{where}.certificate")
    if not (hashes or certs or claims):
        raise InvalidArgument(where, "needs token_sha256, certificate or jwt_claims")
    return Rule(name, _grants(r.get("grants"), f"{where}.grants"), hashes, certs, dict(claims))


def _jwt(raw: Any) -> JwtSettings:
    keys = ("jwks_file", "jwks_url", "issuer", "audience", "algorithms", "name_claim")
    t = _table(raw, "jwt", keys)
    for key in ("issuer", "audience"):
        if not isinstance(t.get(key), str) or not t[key]:
            raise InvalidArgument(f"jwt.{key}", "required: a non-empty string")
    if bool(t.get("jwks_file")) == bool(t.get("jwks_url")):
        raise InvalidArgument("jwt", "give exactly one of jwks_file and jwks_url")
    algorithms = _strings(t.get("algorithms", ["RS256", "ES256"]), "jwt.algorithms")
    if any(a.lower() == "none" or a.startswith("HS") for a in algorithms):
        raise InvalidArgument("jwt.algorithms", "only public-key algorithms (RS*, ES*, PS*, EdDSA)")
    return JwtSettings(
        issuer=t["issuer"],
        audience=t["audience"],
        jwks_file=str(t.get("jwks_file", "")),
        jwks_url=str(t.get("jwks_url", "")),
        algorithms=algorithms,
        name_claim=str(t.get("name_claim", "sub")),
    )


def _access(raw: Any) -> tuple[bool, bool]:
    t = _table(raw, "access", ("health", "reflection"))
    values = []
    for key, default in (("health", "open"), ("reflection", "authenticated")):
        value = t.get(key, default)
        if value not in _SOURCES:
            raise InvalidArgument(f"access.{key}", f"{value!r} is not one of {list(_SOURCES)}")
        values.append(value == "open")
    return values[0], values[1]


def parse_policy(doc: Mapping[str, Any]) -> Policy:
    """A :class:`Policy` from a parsed policy document (module docstring).

    Raises:
        InvalidArgument: naming the offending entry (``principals[2].grants[0].role``) and
            the reason; nothing of a rejected document is used.
    """
    _table(doc, "policy", ("access", "jwt", "principals"))
    raw_rules = doc.get("principals", [])
    if not isinstance(raw_rules, list):
        raise InvalidArgument("principals", "must be an array of tables ([[principals]])")
    rules = tuple(_rule(r, f"principals[{i}]") for i, r in enumerate(raw_rules))
    jwt = _jwt(doc["jwt"]) if "jwt" in doc else None
    if jwt is None:
        for i, rule in enumerate(rules):
            if rule.jwt_claims:
                raise InvalidArgument(f"principals[{i}].jwt_claims", "needs a [jwt] table")
    seen: dict[str, str] = {}
    for i, rule in enumerate(rules):
        for key in (*rule.token_sha256, *(f"cert:{c}" for c in rule.certificate)):
            if key in seen and seen[key] != rule.name:
                raise InvalidArgument(
                    f"principals[{i}]", f"a credential also names principal {seen[key]!r}"
                )
            seen[key] = rule.name
    health_open, reflection_open = _access(doc.get("access", {}))
    return Policy(rules, jwt, health_open, reflection_open)


__all__ = [
    "ALL_TASKS",
    "ROLES",
    "UNRESTRICTED",
    "Grant",
    "JwtSettings",
    "LabelSelector",
    "Permission",
    "Policy",
    "Principal",
    "Rule",
    "Scope",
    "parse_policy",
    "parse_scope",
    "parse_selector",
    "token_sha256",
]
