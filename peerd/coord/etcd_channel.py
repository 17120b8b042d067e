"""The gRPC channels to etcd: endpoints, TLS and the auth token on every call.

:mod:`peerd.coord.etcd` (the one module that talks to etcd through aetcd) builds its channels
here; nothing in this module speaks etcd's API, so the Authenticate call itself stays in
``etcd.py`` and reaches the interceptor as a function.

- **Endpoints**: with more than one, the target is ``ipv4:A:P1,B:P2,...`` and gRPC's
  ``pick_first`` fails over to the next when the connected one goes away.
- **TLS** (``--etcd-cacert``, ``--etcd-cert``/``--etcd-key``): ``grpc.ssl_channel_credentials``.
  With several endpoints the ``ipv4:`` target has no host name to check certificates against,
  so the first endpoint's host name is used for every member (``grpc.ssl_target_name_override``):
  each member's certificate must carry it (docs/security.md).
- **Auth** (``--etcd-user``, ``--etcd-password-file``): etcd's ``Auth.Authenticate`` returns a
  token that every later call carries as ``token`` metadata. :class:`TokenInterceptor` adds it
  to unary and streaming calls (watches and lease keepalives included), authenticating first
  when there is none; :meth:`TokenInterceptor.invalidate` drops it when etcd answers
  UNAUTHENTICATED (an expired token, or an etcd restart that forgot its simple tokens), so the
  next call authenticates again.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from peerd.errors import InvalidArgument, Unavailable

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
AUTHENTICATE_METHOD = "/etcdserverpb.Auth/Authenticate"
"""The one call that goes without a token."""


@dataclass(frozen=True)
class EtcdSecurity:
    """How a node proves itself to etcd, and how it checks etcd (all optional).

    Attributes:
        cacert: CA that signed etcd's server certificates (TLS when set).
        cert, key: client certificate for etcd's ``--client-cert-auth`` (TLS when set).
        user: etcd user name (etcd auth); the password is in ``password_file``.
        password_file: one line, the password of ``user``.
    """

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    user: str = ""
    password_file: Path | None = None

    @property
    def tls(self) -> bool:
        """Whether the channels use TLS."""
        return self.cacert is not None or self.cert is not None

    @classmethod
    def from_settings(
        cls, cacert: str, cert: str, key: str, user: str, password_file: str
    ) -> EtcdSecurity:
        """From the node settings (empty string = not set)."""
        return cls(
            Path(cacert) if cacert else None,
            Path(cert) if cert else None,
            Path(key) if key else None,
            user,
            Path(password_file) if password_file else None,
        )

    def password(self) -> str:
        """The password of :attr:`user` (its file's first line).

        Raises:
            InvalidArgument: ``--etcd-password-file`` unreadable or empty.
        """
        assert self.password_file is not None
        try:
            text = self.password_file.read_text().splitlines()
        except OSError as exc:
            raise InvalidArgument(
                "--etcd-password-file", f"cannot read {self.password_file}: {exc}"
            ) from None
        if not text or not text[0]:
            raise InvalidArgument("--etcd-password-file", f"{self.password_file} is empty")
        return text[0]

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS channel credentials from the files.

        Raises:
            InvalidArgument: naming ``--etcd-cacert``/``--etcd-cert``/``--etcd-key``.
        """
        files = (
            ("--etcd-cacert", self.cacert),
            ("--etcd-cert", self.cert),
            ("--etcd-key", self.key),
        )
        pem: dict[str, bytes | None] = {}
        for flag, path in files:
            try:
                pem[flag] = path.read_bytes() if path is not None else None
            except OSError as exc:
                raise InvalidArgument(flag, f"cannot read {path}: {exc.strerror or exc}") from None
        return grpc.ssl_channel_credentials(
            pem["--etcd-cacert"], pem["--etcd-key"], pem["--etcd-cert"]
        )


def target(endpoints: Sequence[str]) -> str:
    """The channel target of ``endpoints`` (``HOST:PORT`` each; see the module docstring).

    Raises:
        Unavailable: a host name does not resolve.
    """
    if len(endpoints) == 1:
        return endpoints[0]
    resolved = []
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        host = host.strip("[]")
        try:
            addr = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        except OSError as exc:
            raise Unavailable(f"cannot resolve etcd endpoint {ep}: {exc}") from exc
        resolved.append(f"{addr}:{port}")
    return "ipv4:" + ",".join(resolved)


class TokenInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds etcd's auth token to every call (see the module docstring).

    Args:
        authenticate: ``async () -> token``: the Authenticate call.
    """

    def __init__(self, authenticate: Callable[[], Awaitable[str]]) -> None:
        self._authenticate = authenticate
        self._token: str | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """The current token, authenticating when there is none."""
        async with self._lock:
            if self._token is None:
                self._token = await self._authenticate()
            return self._token

    def invalidate(self) -> None:
        """Forget the token: etcd refused it; the next call authenticates again."""
        self._token = None

    async def _details(self, details: Any) -> Any:
        if details.method in (AUTHENTICATE_METHOD, AUTHENTICATE_METHOD.encode()):
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("token", await self.token())
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._details(details), request)

    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(await self._details(details), request_iterator)


def open_channel(
    target_: str,
    security: EtcdSecurity,
    interceptor: TokenInterceptor | None,
    name_override: str = "",
) -> grpc.aio.Channel:
    """A channel to ``target_`` with TLS when ``security`` asks for it and the token
    interceptor when given; ``name_override``: the host name certificates are checked against
    (``ipv4:`` targets of several endpoints).

    Raises:
        InvalidArgument: a TLS file is unreadable.
    """
    interceptors = [interceptor] if interceptor is not None else None
    if not security.tls:
        return grpc.aio.insecure_channel(
            target_, options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    options: list[tuple[str, str | int]] = list(CHANNEL_OPTIONS)
    if name_override:
        options.append(("grpc.ssl_target_name_override", name_override))
    return grpc.aio.secure_channel(
        target_, security.credentials(), options=options, interceptors=interceptors
    )


def host_of(endpoint: str) -> str:
    """The host part of ``HOST:PORT`` (brackets of an IPv6 literal removed)."""
    return endpoint.rpartition(":")[0].strip("[]")


__all__ = [
    "CHANNEL_OPTIONS",
    "EtcdSecurity",
    "TokenInterceptor",
    "host_of",
    "open_channel",
    "target",
]
