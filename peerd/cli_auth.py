"""The CLI's credentials and the ``peerd auth`` commands.

Every API command takes ``--ca FILE`` (trust: the CA that signed the nodes' certificates),
``--cert FILE``/``--key FILE`` (a client certificate, for mutual TLS) and ``--token TOKEN`` (a
bearer token), or ``PEERD_CA``, ``PEERD_CERT``, ``PEERD_KEY``, ``PEERD_TOKEN``; flags win.

``peerd auth``:

- ``hash-token``: a new random token and the SHA-256 the policy file stores (``--stdin``: hash
  a token of your own instead, at least 32 characters);
- ``whoami``: who the server takes you for, and your grants;
- ``certs DIR``: a CA (made once, then reused) and node and client certificates for
  development, tests and the Compose TLS variant (:mod:`peerd.security.certs`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from peerd.client import SchedulerClient
from peerd.core.policy import token_sha256
from peerd.errors import InvalidArgument
from peerd.exitcodes import EXIT_OK
from peerd.security import certs
from peerd.security.authn import MIN_TOKEN_CHARS, new_token
from peerd.security.tls import ClientTls


def add_client_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """``--ca``, ``--cert``, ``--key``, ``--token`` on ``parser`` (``suppress``: leave them
    unset when not given, for the copy after the subcommand)."""
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--ca", metavar="FILE", default=default, help="CA of the nodes (TLS)")
    parser.add_argument("--cert", metavar="FILE", default=default, help="client certificate")
    parser.add_argument("--key", metavar="FILE", default=default, help="its private key")
    parser.add_argument("--token", metavar="TOKEN", default=default, help="bearer token")


def resolve_client_options(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Set ``args.client_tls`` and ``args.token`` from the flags or ``PEERD_*``.

    Raises:
        InvalidArgument: ``--cert`` without ``--key`` (or the reverse).
    """
    args.client_tls = ClientTls.from_options(args.ca, args.cert, args.key, env)
    args.token = args.token or env.get("PEERD_TOKEN") or None


def api_client(args: argparse.Namespace) -> SchedulerClient:
    """The client of an API command (server, deadline, TLS, token)."""
    tls, token = getattr(args, "client_tls", None), getattr(args, "token", None)
    return SchedulerClient(args.server, args.rpc_timeout, tls, token)


def add_auth_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``auth`` command group on the subparsers ``sub``."""
    auth = sub.add_parser("auth", parents=[common], help="tokens, certificates, whoami")
    asub = auth.add_subparsers(dest="auth_command", required=True, metavar="COMMAND")
    hash_token = asub.add_parser(
        "hash-token",
        parents=[common],
        help="print a new bearer token and the SHA-256 the auth policy stores",
    )
    hash_token.add_argument(
        "--stdin", action="store_true", help="hash the token read from standard input instead"
    )
    hash_token.set_defaults(handler=cmd_hash_token)
    whoami = asub.add_parser("whoami", parents=[common], help="who the server takes you for")
    whoami.set_defaults(handler=cmd_whoami)
    gen = asub.add_parser(
        "certs",
        parents=[common],
        help="make a CA (once) and node/client certificates (development, tests, Compose)",
    )
    gen.add_argument("dir", type=Path, metavar="DIR")
    gen.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="ID[=HOST,...]",
        help="a node certificate (serverAuth+clientAuth, URI SAN spiffe://peerd/node/ID) valid "
        "for ID, localhost, 127.0.0.1 and the HOSTs",
    )
    gen.add_argument(
        "--client", action="append", default=[], metavar="NAME", help="a client certificate"
    )
    gen.add_argument(
        "--server-cert",
        dest="servers",
        action="append",
        default=[],
        metavar="NAME=HOST,...",
        help="a plain server certificate (e.g. etcd's), valid for the HOSTs, localhost and "
        "127.0.0.1",
    )
    gen.add_argument("--days", type=int, default=30, metavar="N", help="validity (default 30)")
    gen.set_defaults(handler=cmd_certs)


def cmd_hash_token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``peerd auth hash-token``."""
    if args.stdin:
        token = sys.stdin.readline().strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise InvalidArgument(
                "--stdin",
                f"a token of {len(token)} characters is too short: at least {MIN_TOKEN_CHARS} "
                "random characters (a token is stored as plain SHA-256)",
            )
    else:
        token = new_token()
    digest = token_sha256(token)
    if args.output == "json":
        import json

        print(json.dumps({"token": token, "token_sha256": digest}))
        return EXIT_OK
    if not args.stdin:
        print(f"token:        {token}")
        print("              (give it to its user once, e.g. as PEERD_TOKEN; it is kept nowhere)")
    print(f'token_sha256: "{digest}"')
    print("              (put this in the principal's token_sha256 list of the auth policy)")
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``peerd auth whoami``."""
    with api_client(args) as client:
        resp = client.who_am_i()
    if args.output == "json":
        from peerd.cli_output import to_json

        print(to_json(resp))
        return EXIT_OK
    if resp.source == "none":
        print("the server runs without an auth policy: every caller may do everything")
        return EXIT_OK
    print(f"principal: {resp.principal} (by {resp.source})")
    print(f"permissions: {', '.join(resp.permissions) or 'none'}")
    for g in resp.grants:
        print(f"  {g.role:<8} on tasks {', '.join(g.task_prefixes)}")
    return EXIT_OK


def _hosts(spec: str, flag: str) -> tuple[str, list[str]]:
    name, _, hosts = spec.partition("=")
    if not name or "/" in name or name.startswith("."):
        raise InvalidArgument(flag, f"expected NAME[=HOST,...] (NAME a file name), got {spec!r}")
    return name, [h for h in hosts.split(",") if h]


def cmd_certs(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``peerd auth certs DIR``: writes ``ca.pem``/``ca-key.pem`` unless present, then
    ``<name>.pem``/``<name>-key.pem`` per certificate; prints the paths."""
    if args.days < 1:
        raise InvalidArgument("--days", f"must be >= 1, got {args.days}")
    for name in args.client:
        _hosts(name, "--client")
    made_ca, written = certs.write_set(
        args.dir,
        datetime.now(UTC),
        nodes=dict(_hosts(spec, "--node") for spec in args.node),
        servers=dict(_hosts(spec, "--server-cert") for spec in args.servers),
        clients=args.client,
        valid_for=timedelta(days=args.days),
    )
    ca = written.pop("ca")
    print(f"{'new CA' if made_ca else 'using the CA'}: {ca.cert} (keep {ca.key.name} secret)")
    for name, files in written.items():
        print(f"{name}: {files.cert} {files.key}")
    return EXIT_OK


__all__ = [
    "add_auth_commands",
    "add_client_options",
    "api_client",
    "cmd_certs",
    "cmd_hash_token",
    "cmd_whoami",
    "resolve_client_options",
]
