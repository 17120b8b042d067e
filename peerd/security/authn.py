"""Authentication: from a call's credentials to a :class:`peerd.core.policy.Principal`.

Order, first match wins:

1. ``authorization: Bearer <token>`` metadata. A token shaped like a JWT (three dot-separated
   parts) is verified against the policy's JWKS when the policy has a ``[jwt]`` table; any
   other token is looked up by its SHA-256 digest. A token that verifies to nothing is
   UNAUTHENTICATED: it never falls back to the certificate.
2. The verified client certificate (mutual TLS): its CN, then its SANs, looked up in the
   policy's ``certificate`` lists. A certificate the policy does not list is still
   authenticated (the cluster CA signed it) but holds no grant.
3. Nothing: UNAUTHENTICATED.

Without a policy (no ``--auth-policy``) every caller is :data:`peerd.core.policy.UNRESTRICTED`.

The policy file is TOML (:func:`load_policy`); :meth:`Authenticator.reload` re-reads it on
SIGHUP, all or nothing. JWTs are verified by PyJWT (signature, ``exp``, ``nbf``, ``iss``,
``aud``; 30 s leeway for clock skew); a JWKS URL is fetched by ``PyJWKClient`` in a worker
thread and cached for 5 minutes.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jwt

from peerd.core.policy import UNRESTRICTED, JwtSettings, Policy, Principal, parse_policy
from peerd.errors import InvalidArgument, Unauthenticated

TOKEN_PREFIX = "peerd_"
"""Prefix of the tokens :func:`new_token` makes: a secret scanner (and a person) can tell a
peerd token from other secrets, as GitHub's ``ghp_`` and Stripe's ``sk_live_`` tokens do."""
TOKEN_BYTES = 32
"""Random bytes in a new token: 256 bits."""
MIN_TOKEN_CHARS = 32
"""Shortest token ``peerd auth hash-token --stdin`` accepts: a token is hashed with plain
SHA-256, which is only safe for high-entropy secrets."""
JWT_LEEWAY_S = 30
"""Clock skew (seconds) tolerated on ``exp``/``nbf``/``iat``."""
JWKS_CACHE_S = 300
"""How long a JWKS fetched from ``jwks_url`` is kept (seconds)."""


def new_token(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A new bearer token: :data:`TOKEN_PREFIX` and :data:`TOKEN_BYTES` random bytes in
    unpadded base64url (49 characters in all)."""
    raw = base64.urlsafe_b64encode(random_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
    return TOKEN_PREFIX + raw


def load_policy(path: Path) -> Policy:
    """Read and parse the policy file.

    Raises:
        InvalidArgument: ``--auth-policy`` unreadable or not TOML, or the entry that is wrong
            (see :func:`peerd.core.policy.parse_policy`).
    """
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument("--auth-policy", f"cannot read {path}: {exc}") from None
    try:
        return parse_policy(doc)
    except InvalidArgument as exc:
        raise InvalidArgument(f"--auth-policy {path}: {exc.field}", exc.reason) from None


class _JwtVerifier:
    """Verifies bearer JWTs with the keys of one JWKS (a file, read once, or a URL)."""

    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if settings.jwks_url:
            self._client = jwt.PyJWKClient(settings.jwks_url, lifespan=JWKS_CACHE_S)
        else:
            try:
                self._keys = jwt.PyJWKSet.from_json(Path(settings.jwks_file).read_text())
            except (OSError, jwt.PyJWTError, ValueError) as exc:
                raise InvalidArgument(
                    "jwt.jwks_file", f"cannot load {settings.jwks_file}: {exc}"
                ) from None

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        keys = self._keys.keys
        for k in keys:
            if kid is None or k.key_id == kid:
                return k.key
        raise jwt.InvalidTokenError(f"no key with kid {kid!r} in the JWKS")

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims (blocking when the JWKS is fetched).

        Raises:
            jwt.PyJWTError: the token does not verify.
        """
        s = self.settings
        decoded: dict[str, Any] = jwt.decode(
            token,
            self._key(token),
            algorithms=list(s.algorithms),
            audience=s.audience,
            issuer=s.issuer,
            leeway=JWT_LEEWAY_S,
            options={"require": ["exp", "iss", "aud"]},
        )
        return decoded


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry; None when there is none.

    Raises:
        Unauthenticated: an ``authorization`` entry that is not ``Bearer <token>``.
    """
    for key, value in metadata:
        if key.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        return token.strip()
    return None


class Authenticator:
    """Maps credentials to principals under the policy in force.

    Args:
        policy_file: ``--auth-policy``; ``None``: no policy, every caller is unrestricted.

    Raises:
        InvalidArgument: the policy file is unreadable or wrong.
    """

    def __init__(self, policy_file: Path | None) -> None:
        self.policy_file = policy_file
        self.policy: Policy | None = None
        self._jwt: _JwtVerifier | None = None
        if policy_file is not None:
            self.reload()

    def reload(self) -> None:
        """Re-read the policy file (SIGHUP): all of it is in force afterwards, or none of it.

        Raises:
            InvalidArgument: the file is unreadable or wrong; the old policy stays in force.
        """
        if self.policy_file is None:
            return
        policy = load_policy(self.policy_file)
        verifier = _JwtVerifier(policy.jwt) if policy.jwt is not None else None
        self.policy, self._jwt = policy, verifier

    async def authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]], cert_names: list[str]
    ) -> Principal:
        """The principal of a call.

        Args:
            metadata: the call's invocation metadata.
            cert_names: the verified client certificate's CN then SANs ([] without one).

        Raises:
            Unauthenticated: no credentials, or a token that verifies to nobody.
        """
        policy = self.policy
        if policy is None:
            return UNRESTRICTED
        token = bearer_token(metadata)
        if token is not None:
            return await self._from_token(policy, token)
        if cert_names:
            found = policy.by_certificate(cert_names)
            return found or Principal(cert_names[0], "certificate")
        raise Unauthenticated(
            "no credentials: send a bearer token (authorization metadata; the CLI's --token) "
            "or a client certificate the policy lists"
        )

    async def _from_token(self, policy: Policy, token: str) -> Principal:
        verifier = self._jwt
        if verifier is not None and token.count(".") == 2:
            try:
                claims = await asyncio.to_thread(verifier.claims, token)
            except (jwt.PyJWTError, jwt.PyJWKClientError, ValueError) as exc:
                raise Unauthenticated(f"invalid JWT: {exc}") from None
            found = policy.by_claims(claims)
            if found is None:
                raise Unauthenticated("the JWT's claims match no principal of the auth policy")
            return found
        found = policy.by_token(token)
        if found is None:
            raise Unauthenticated("unknown bearer token")
        return found


__all__ = [
    "MIN_TOKEN_CHARS",
    "TOKEN_PREFIX",
    "Authenticator",
    "bearer_token",
    "load_policy",
    "new_token",
]
