"""Claim throughput of the ledger from one Python process, by batch size.

Starts its own etcd (Debian's etcd-server) in a temp dir, registers one member, then claims
distinct slots with :meth:`peerd.coord.ledger.Ledger.claim` (one outer transaction per batch,
one nested transaction per slot) for a fixed time per batch size, and prints claims/s.

    .venv/bin/python bench/claims.py [--seconds 3] [--batches 1,16,64,127] [--concurrency 4]
        [--overlap allow|lock|replace] [--security plain|tls|mtls-auth]

``--security``: ``tls`` serves etcd's client port over TLS; ``mtls-auth`` also requires client
certificates (``--client-cert-auth``) and turns etcd's auth on, the bench claiming as a user
limited to its prefix (the setup docs/security.md describes).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from peerd.clock import SystemClock
from peerd.coord.etcd import Etcd
from peerd.coord.etcd_channel import EtcdSecurity
from peerd.coord.keys import Keys
from peerd.coord.ledger import Ledger
from peerd.coord.membership import Membership
from peerd.devtools.etcd_server import EmbeddedEtcd, EtcdServerTls
from peerd.security.certs import write_set
from peerd.v1 import scheduler_pb2 as pb


async def no_probe(address: str) -> bool:
    return False


async def run(
    endpoint: str,
    seconds: float,
    batches: list[int],
    concurrency: int,
    mode: str | None,
    security: EtcdSecurity,
) -> None:
    if security.user:  # as root (CN=root), make the bench's user, then turn auth on
        assert security.cacert is not None and security.cert is not None
        root_cert = security.cert.with_name("root.pem")
        root = EtcdSecurity(security.cacert, root_cert, root_cert.with_name("root-key.pem"))
        admin = Etcd([endpoint], security=root)
        await admin.add_prefix_user(security.user, "bench-password", b"/peerd/bench/")
        await admin.enable_auth("root-password")
        await admin.close()
    etcd = Etcd([endpoint], security=security)
    await etcd.connect()
    bench = ClaimBench(etcd, Keys("/peerd/bench/"))
    await bench.start()
    print(f"{'batch':>6} {'concurrency':>11} {'claims/s':>10} {'txn p50 ms':>10}")
    for batch in batches:
        rate, p50 = await bench.rate(seconds, batch, concurrency, mode)
        print(f"{batch:>6} {concurrency:>11} {rate:>10.0f} {p50:>10.2f}")
    await bench.stop()
    await etcd.close()


class ClaimBench:
    """One registered member claiming distinct slots through the ledger.

    Args:
        etcd: a connected client.
        keys: the cluster prefix claimed under (keep it apart from a running cluster's).
    """

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.ledger = Ledger(etcd, keys)
        self.membership = Membership(
            etcd, keys, pb.Member(node_id="bench"), 10, no_probe, SystemClock()
        )
        self.slot = 0
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register the member and keep its lease alive."""
        await self.membership.register(first=True)
        self._keepalive = asyncio.create_task(self.membership.keepalive_loop())

    async def stop(self) -> None:
        """Stop the keepalive and revoke the lease (its claims' keys stay)."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self.membership.revoke()

    async def rate(
        self, seconds: float, batch: int, concurrency: int, mode: str | None = None
    ) -> tuple[float, float]:
        """Claim for ``seconds`` with ``concurrency`` workers, ``batch`` slots per transaction;
        returns (claims/s, median transaction latency in ms)."""
        claimed = 0
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal claimed
            while time.perf_counter() < deadline:
                records = []
                for i in range(batch):
                    self.slot += 1
                    # With an overlap mode every claim names its own task, so none finds the lock
                    # taken: this measures the cost of taking it.
                    task_id = f"task-{i}" if mode is None else f"task-{self.slot}"
                    rec = pb.RunRecord(
                        task_id=task_id, node_id="bench", attempt=1, status=pb.CLAIMED
                    )
                    rec.scheduled_at.FromMilliseconds(self.slot)
                    records.append(rec)
                t0 = time.perf_counter()
                m = self.membership
                results = await self.ledger.claim(
                    m.member_key, m.lease_id, records, [mode] * len(records)
                )
                latencies.append((time.perf_counter() - t0) * 1000)
                claimed += sum(r.claimed for r in results)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        latencies.sort()
        return claimed / elapsed, latencies[len(latencies) // 2] if latencies else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batches", default="1,16,64,127")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--overlap",
        choices=["allow", "lock", "replace"],
        default="allow",
        help="claim mode: allow (plain claim), lock (FORBID/BUFFER_ONE), replace (REPLACE)",
    )
    parser.add_argument("--security", choices=["plain", "tls", "mtls-auth"], default="plain")
    args = parser.parse_args()
    pki = Path(tempfile.mkdtemp(prefix="peerd-bench-pki-"))
    _, f = write_set(pki, datetime.now(UTC), servers={"etcd": []}, clients=["root", "bench"])
    (pki / "password").write_text("bench-password\n")
    server_tls, security = None, EtcdSecurity()
    if args.security != "plain":
        mutual = args.security == "mtls-auth"
        server_tls = EtcdServerTls(
            f["ca"].cert, f["etcd"].cert, f["etcd"].key, mutual, f["root"].cert, f["root"].key
        )
        security = EtcdSecurity(f["ca"].cert)
        if mutual:
            security = EtcdSecurity(
                f["ca"].cert, f["bench"].cert, f["bench"].key, "bench", pki / "password"
            )
    with EmbeddedEtcd(tls=server_tls) as etcd:
        asyncio.run(
            run(
                etcd.endpoint,
                args.seconds,
                [int(b) for b in args.batches.split(",")],
                args.concurrency,
                None if args.overlap == "allow" else args.overlap,
                security,
            )
        )


if __name__ == "__main__":
    main()
