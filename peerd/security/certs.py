"""A small certificate authority for development, tests and the Compose TLS variant.

``peerd dev --tls``, ``peerd auth certs`` and the test suite make their throw-away CA and
certificates here, with the ``cryptography`` package (pyca/cryptography's X.509 builder; the
recipe follows its tutorial "Creating a certificate authority"), never by scraping ``openssl``.
For production, issue certificates from your own PKI (step-ca, Vault, cert-manager, ...) with
the same shape; docs/security.md lists what a node certificate must hold.

Shapes (all keys ECDSA P-256, the curve every TLS stack here speaks: BoringSSL in gRPC, Go's
crypto/tls in etcd):

* the CA: ``CN=<name>``, ``basicConstraints CA:TRUE, pathlen 0``, keyCertSign + cRLSign;
* a node: ``CN=<node_id>``, SANs ``DNS``/``IP`` for every address it is dialled at, plus the URI
  ``spiffe://peerd/node/<node_id>`` (:func:`node_uri`) that marks it as a node of the cluster;
  extended key usage serverAuth **and** clientAuth, since a node is the server of its own port
  and the client of its peers' (mutual TLS);
* a user (or etcd client): ``CN=<name>``, clientAuth only; its CN is the principal's name.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NODE_URI_PREFIX = "spiffe://peerd/node/"
"""URI SAN prefix of a node certificate; the rest is the node id (a SPIFFE-style identity, as
Dapr's Sentry issues them)."""
DEV_VALIDITY = timedelta(days=30)
"""Validity of the throw-away certificates of ``peerd dev --tls``."""
CLOCK_SKEW = timedelta(minutes=5)
"""``not_valid_before`` is this far in the past, so a peer whose clock runs a little behind
accepts a certificate issued a moment ago."""


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)


def node_uri(node_id: str) -> str:
    """The URI SAN that marks a certificate as node ``node_id``'s."""
    return NODE_URI_PREFIX + node_id


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "peerd"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def new_ca(common_name: str, now: datetime, valid_for: timedelta = DEV_VALIDITY) -> Issued:
    """A self-signed CA valid from ``now - CLOCK_SKEW`` for ``valid_for``.

    Args:
        common_name: the CA's CN, e.g. ``"peerd dev CA"``.
        now: the current time (aware).
        valid_for: how long it is valid.
    """
    key = _key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _san(hosts: Sequence[str], uris: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    names.extend(x509.UniformResourceIdentifier(u) for u in uris)
    return names


def issue(
    ca: Issued,
    common_name: str,
    now: datetime,
    *,
    hosts: Sequence[str] = (),
    uris: Sequence[str] = (),
    server: bool = False,
    valid_for: timedelta = DEV_VALIDITY,
) -> Issued:
    """A leaf certificate signed by ``ca``: clientAuth always, serverAuth too when ``server``.

    Args:
        ca: the issuing CA (from :func:`new_ca`).
        common_name: the subject CN (a node id, a user's name, an etcd user name).
        now: the current time (aware).
        hosts: DNS names and IP addresses for the SAN (a server is checked against them).
        uris: URI SANs, e.g. :func:`node_uri`.
        server: also usable as a TLS server certificate.
        valid_for: how long it is valid (never past the CA's end).
    """
    ca_cert = ca.cert
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + valid_for, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    names = _san(hosts, uris)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def write_pair(issued: Issued, directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.pem`` and ``<name>-key.pem`` (mode 0600) into ``directory`` (created).

    Returns:
        ``(cert_path, key_path)``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(issued.cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(issued.key_pem)
    return cert_path, key_path


def load_ca(directory: Path, name: str = "ca") -> Issued:
    """The CA written by :func:`write_pair` as ``<name>.pem`` / ``<name>-key.pem``.

    Raises:
        OSError: a file cannot be read.
    """
    return Issued(
        (directory / f"{name}.pem").read_bytes(), (directory / f"{name}-key.pem").read_bytes()
    )


LOCAL_HOSTS = ("localhost", "127.0.0.1")
"""Names every certificate of :func:`write_set` is valid for: health checks and the CLI on the
same machine dial these."""


@dataclass(frozen=True)
class Written:
    """A certificate and key written to files."""

    cert: Path
    key: Path


def write_set(
    directory: Path,
    now: datetime,
    *,
    nodes: Mapping[str, Sequence[str]] = {},
    servers: Mapping[str, Sequence[str]] = {},
    clients: Sequence[str] = (),
    valid_for: timedelta = DEV_VALIDITY,
    ca_name: str = "peerd CA",
) -> tuple[bool, dict[str, Written]]:
    """Write a CA (unless ``directory`` holds ``ca.pem`` already: then it signs) and, signed by
    it, node certificates (``nodes``: node id -> extra host names; valid for the id and
    :data:`LOCAL_HOSTS` too, URI SAN :func:`node_uri`), server-only-by-name certificates
    (``servers``: name -> host names, e.g. etcd's) and client certificates (``clients``).

    Returns:
        ``(made_ca, {name: files})``; the CA is ``"ca"``.

    Raises:
        OSError: a file cannot be read or written.
    """
    try:
        ca, made = load_ca(directory), False
    except FileNotFoundError:
        ca, made = new_ca(ca_name, now, valid_for), True
        write_pair(ca, directory, "ca")
    out = {"ca": Written(directory / "ca.pem", directory / "ca-key.pem")}
    for node, hosts in nodes.items():
        names, uri = [node, *LOCAL_HOSTS, *hosts], [node_uri(node)]
        leaf = issue(ca, node, now, hosts=names, uris=uri, server=True, valid_for=valid_for)
        out[node] = Written(*write_pair(leaf, directory, node))
    for name, hosts in servers.items():
        leaf = issue(ca, name, now, hosts=[*hosts, *LOCAL_HOSTS], server=True, valid_for=valid_for)
        out[name] = Written(*write_pair(leaf, directory, name))
    for name in clients:
        out[name] = Written(*write_pair(issue(ca, name, now, valid_for=valid_for), directory, name))
    return made, out


__all__ = [
    "CLOCK_SKEW",
    "DEV_VALIDITY",
    "LOCAL_HOSTS",
    "NODE_URI_PREFIX",
    "Issued",
    "Written",
    "issue",
    "load_ca",
    "new_ca",
    "node_uri",
    "write_pair",
    "write_set",
]
