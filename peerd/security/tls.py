"""TLS credentials of a node (server and peer client) and of clients (CLI, health checks).

**Server.** :class:`ServerTls` serves ``--tls-cert``/``--tls-key`` through
``grpc.dynamic_ssl_server_credentials``: gRPC asks :meth:`ServerTls.fetch` for a new certificate
configuration before every handshake, so :meth:`ServerTls.reload` (SIGHUP) rotates the
certificate, key and client CA without a restart; connections already open keep theirs.

With ``--tls-client-ca`` the server *requires* a client certificate signed by that CA (mutual
TLS). gRPC Python offers exactly two modes, "require and verify" or "do not ask"
(``require_client_authentication``); C-core's "ask, verify if given" is not exposed, measured
with grpcio 1.85: with ``False`` no client certificate reaches ``auth_context()``. So on the one
port that serves both the public API and the Peer service, mutual TLS for peers means every
client shows a certificate of the cluster CA. That certificate admits the connection; a bearer
token, when sent, names the principal (as Temporal's JWT authorizer works over mTLS).

**HTTPS.** With ``--http-tls`` the HTTP port serves the same certificate
(:meth:`ServerTls.https_context`, an :class:`ssl.SSLContext` reloaded with the rest). Python's
ssl module, unlike gRPC Python, can *ask* for a client certificate and verify it only when one
is sent (``CERT_OPTIONAL``): scrapers and health checks connect without one, and the REST
gateway refuses ``/v1/`` calls whose connection showed none when the node has
``--tls-client-ca``.

**Peer client.** A node dials its peers with its own certificate (a node certificate is valid
for clientAuth too) and trusts the cluster CA (``--tls-client-ca``).

**Clients.** :class:`ClientTls` is what the CLI and health checks present: ``--ca`` (trust),
``--cert``/``--key`` (client certificate), also from ``PEERD_CA``/``PEERD_CERT``/``PEERD_KEY``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from peerd.errors import InvalidArgument


@dataclass(frozen=True)
class KeyPair:
    """A certificate chain and its private key (PEM), checked to belong together, plus the CA
    bundle that verifies the other side (``None``: none)."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None
    not_after: datetime


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(flag, f"cannot read {path}: {exc.strerror or exc}") from None


def load_pair(cert: Path, key: Path, ca: Path | None, flags: tuple[str, str, str]) -> KeyPair:
    """Read and check a certificate, its key and a CA bundle.

    Args:
        cert, key, ca: the files (``ca`` optional).
        flags: the names errors use for the three files, e.g.
            ``("--tls-cert", "--tls-key", "--tls-client-ca")``.

    Raises:
        InvalidArgument: naming the flag: unreadable, not PEM, or the key is not the
            certificate's.
    """
    cert_pem, key_pem = _read(cert, flags[0]), _read(key, flags[1])
    ca_pem = _read(ca, flags[2]) if ca is not None else None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise InvalidArgument(flags[0], f"{cert}: not a PEM certificate: {exc}") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(flags[1], f"{key}: not an unencrypted PEM key: {exc}") from None
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if private.public_key().public_bytes(enc, raw) != chain[0].public_key().public_bytes(enc, raw):
        raise InvalidArgument(flags[1], f"{key} is not the key of the certificate in {cert}")
    if ca_pem is not None:
        try:
            x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise InvalidArgument(flags[2], f"{ca}: not a PEM certificate: {exc}") from None
    return KeyPair(cert_pem, key_pem, ca_pem, chain[0].not_valid_after_utc)


_SERVER_FLAGS = ("--tls-cert", "--tls-key", "--tls-client-ca")


class ServerTls:
    """A node's certificate files, served to clients and presented to peers.

    Args:
        cert, key: ``--tls-cert``/``--tls-key``.
        client_ca: ``--tls-client-ca``, the cluster CA; ``None``: no client certificates.

    Raises:
        InvalidArgument: a file is unreadable or wrong (see :func:`load_pair`).
    """

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.files = (cert, key, client_ca)
        self.pair = load_pair(cert, key, client_ca, _SERVER_FLAGS)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._https: ssl.SSLContext | None = None

    @property
    def mutual(self) -> bool:
        """Clients must present a certificate of the cluster CA."""
        return self.files[2] is not None

    def _config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.pair.key_pem, self.pair.cert_pem)], root_certificates=self.pair.ca_pem
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``add_secure_port``; they follow :meth:`reload`."""
        return grpc.dynamic_ssl_server_credentials(
            self._config(), self.fetch, require_client_authentication=self.mutual
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's per-handshake question: the configuration loaded since the last call, or
        None (keep the current one)."""
        pending, self._pending = self._pending, None
        return pending

    def reload(self) -> None:
        """Re-read the three files; new handshakes use them (SIGHUP).

        Raises:
            InvalidArgument: a file is unreadable or wrong; the old certificate stays.
        """
        self.pair = load_pair(*self.files, _SERVER_FLAGS)
        self._pending = self._config()
        if self._https is not None:
            self._load_https(self._https)

    def https_context(self) -> ssl.SSLContext:
        """The HTTP port's server context (``--http-tls``): the node's certificate; with
        ``--tls-client-ca``, client certificates asked for and verified when sent
        (``CERT_OPTIONAL``). :meth:`reload` loads the new files into it: new handshakes use
        them (a CA dropped from the bundle stays trusted on HTTPS until a restart: OpenSSL
        adds to a context's trust store, it never removes)."""
        if self._https is None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._load_https(context)
            self._https = context
        return self._https

    def _load_https(self, context: ssl.SSLContext) -> None:
        cert, key, _ = self.files
        context.load_cert_chain(cert, key)
        if self.pair.ca_pem is not None:
            context.load_verify_locations(cadata=self.pair.ca_pem.decode())
            context.verify_mode = ssl.CERT_OPTIONAL

    def peer_credentials(self) -> grpc.ChannelCredentials:
        """What this node presents when it dials a peer: its own certificate, trusting the
        cluster CA (the system roots when there is no ``--tls-client-ca``)."""
        return grpc.ssl_channel_credentials(self.pair.ca_pem, self.pair.key_pem, self.pair.cert_pem)


@dataclass(frozen=True)
class ClientTls:
    """What a client presents: the CA it trusts and, optionally, its certificate.

    Attributes:
        ca: PEM bundle of the CA(s) that signed the server's certificate; ``None``: the
            system's roots.
        cert, key: the client certificate and key (mutual TLS); both or neither.
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def from_options(
        cls, ca: str | None, cert: str | None, key: str | None, env: Mapping[str, str]
    ) -> ClientTls | None:
        """From ``--ca``/``--cert``/``--key`` (when given) or ``PEERD_CA``/``PEERD_CERT``/
        ``PEERD_KEY``; ``None`` when none is set (plaintext).

        Raises:
            InvalidArgument: only one of ``--cert`` and ``--key``.
        """
        ca = ca or env.get("PEERD_CA") or None
        cert = cert or env.get("PEERD_CERT") or None
        key = key or env.get("PEERD_KEY") or None
        if bool(cert) != bool(key):
            raise InvalidArgument("--cert" if key else "--key", "give --cert and --key together")
        if not (ca or cert):
            return None
        return cls(
            Path(ca) if ca else None, Path(cert) if cert else None, Path(key) if key else None
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials from the files.

        Raises:
            InvalidArgument: naming ``--ca``/``--cert``/``--key``: unreadable or wrong files.
        """
        if self.cert is not None and self.key is not None:
            pair = load_pair(self.cert, self.key, self.ca, ("--cert", "--key", "--ca"))
            return grpc.ssl_channel_credentials(pair.ca_pem, pair.key_pem, pair.cert_pem)
        ca = _read(self.ca, "--ca") if self.ca is not None else None
        return grpc.ssl_channel_credentials(ca)


__all__ = ["ClientTls", "KeyPair", "ServerTls", "load_pair"]
