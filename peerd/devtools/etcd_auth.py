"""``python -m peerd.devtools.etcd_auth``: give peerd its etcd user, and turn etcd's auth on.

What ``etcdctl`` would do (docs/security.md, "etcd"), with peerd's own client, so that a
container image without a shell (etcd's own images are distroless) or a machine without
``etcdctl`` can do it; the Compose TLS variant runs it once before the nodes start:

1. role ``<user>``: readwrite on ``/peerd/<cluster>/`` and nothing else;
2. user ``<user>`` with that role (a password from ``--password-file``, or none: it logs in with
   a client certificate whose CN is ``<user>``, etcd >= 3.5);
3. user ``root`` with role ``root`` (certificate only unless ``--root-password-file``);
4. ``auth enable``.

It connects as the client certificate given (CN ``root`` once auth is on). Running it again
changes nothing. Exit 0 when done, 1 when etcd refused or could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from peerd.coord.etcd import Etcd
from peerd.coord.etcd_channel import EtcdSecurity
from peerd.core.backoff import Backoff
from peerd.errors import PeerdError, Unavailable

ATTEMPTS = 30
"""Tries while etcd is unreachable (about a minute with the 2 s backoff cap)."""


def _password(path: str | None) -> str:
    return Path(path).read_text().splitlines()[0] if path else ""


async def setup(etcd: Etcd, user: str, password: str, cluster: str, root_password: str) -> None:
    """Steps 1-4 of the module docstring on a connected client.

    Raises:
        PeerdError: etcd refused a step.
    """
    await etcd.add_prefix_user(user, password, f"/peerd/{cluster}/".encode())
    await etcd.enable_auth(root_password)


async def _run(args: argparse.Namespace) -> int:
    security = EtcdSecurity(
        Path(args.cacert) if args.cacert else None,
        Path(args.cert) if args.cert else None,
        Path(args.key) if args.key else None,
    )
    etcd = Etcd(args.endpoints.split(","), security=security)
    backoff = Backoff(0.2, 2.0)
    try:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await setup(etcd, args.user, _password(args.password_file), args.cluster,
                            _password(args.root_password_file))  # fmt: skip
            except Unavailable as exc:
                if attempt == ATTEMPTS:
                    raise
                print(f"etcd_auth: waiting for etcd: {exc}", file=sys.stderr)
                await asyncio.sleep(backoff.next_delay_s())
            else:
                break
    finally:
        await etcd.close()
    print(f"etcd_auth: user {args.user!r} may read and write /peerd/{args.cluster}/; auth is on")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the setup, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m peerd.devtools.etcd_auth", description=__doc__)
    parser.add_argument("--endpoints", required=True, metavar="HOST:PORT[,...]")
    parser.add_argument("--cacert", metavar="FILE")
    parser.add_argument("--cert", metavar="FILE", help="client certificate (CN root)")
    parser.add_argument("--key", metavar="FILE")
    parser.add_argument("--user", default="peerd")
    parser.add_argument("--password-file", metavar="FILE", help="none: certificate login only")
    parser.add_argument("--cluster", default="default", help="peerd's --cluster")
    parser.add_argument("--root-password-file", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except (PeerdError, OSError) as exc:
        print(f"etcd_auth: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
