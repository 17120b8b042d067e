"""Soak: does etcd stay bounded under a busy peerd cluster? (Not part of the test suite.)

Starts an etcd with a small ``--quota-backend-bytes``, a counting HTTP sink, ``--nodes`` ``peerd
serve`` processes with short compaction settings, and ``--tasks`` HTTP tasks firing every second
at the sink. Every ``--sample-s`` it prints one line: elapsed time, etcd's database size and
size in use (``Maintenance.Status``), the store revision, writes/s (revisions per second: one
per etcd write transaction), fires/s (requests the sink answered), the machine's 1-minute load
average and any alarm. At the end it says whether both sizes stayed flat: after a warm-up (the
tasks' run records filling up, two compaction cycles), the largest value of the second half of
the run may exceed that of the first half by at most 5 % (or 1 MiB). Exits 1 if a size grew or
etcd raised an alarm. ``--keep`` keeps the node logs (``etcd_compacted`` events) and etcd data.

    .venv/bin/python bench/soak.py [--nodes 3] [--tasks 200] [--minutes 20] [--quota-mib 128]
                                   [--compaction-interval 30s] [--compaction-retention 30s]

Without compaction (``--compaction-interval 0``) the database grows until NOSPACE.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from peerd.client import SchedulerClient
from peerd.coord.etcd import Etcd, MemberStatus
from peerd.core.durations import parse_duration
from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.devtools.process import PeerdProcess, stop_all
from peerd.errors import PeerdError
from peerd.v1 import scheduler_pb2 as pb

T = TypeVar("T")
MIB = 1024 * 1024
RUNS_KEEP = 100
"""The nodes' --runs-keep (the default): records kept per task."""


class CountingSink(ThreadingHTTPServer):
    """Answers every request 204 and counts them. Unlike :class:`peerd.sink.WebhookSink` it
    keeps no deliveries: a 20-minute soak sends a quarter of a million."""

    daemon_threads = True
    request_queue_size = 1024  # every task may connect in the same instant

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # nodes stopping mid-request
            super().handle_error(request, client_address)

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as peerd's HTTP client expects
            disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms per response

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with sink.lock:
                    sink.count += 1

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@dataclass
class Row:
    t_s: float
    status: MemberStatus
    fires: int


def soak_node(i: int, etcd: str, args: argparse.Namespace, workdir: Path) -> PeerdProcess:
    """Node ``i`` of cluster ``soak`` on a free loopback port, logging JSON at info level (the
    ``etcd_compacted`` events) to ``workdir/node<i>.log``."""
    return PeerdProcess(
        f"node{i}",
        etcd,
        "soak",
        workdir,
        lease_ttl_s=10,
        settings={
            "etcd_compaction_interval": args.compaction_interval,
            "etcd_compaction_retention": args.compaction_retention,
            "log_format": "json",
        },
        label="soak",
    )


def create_tasks(address: str, count: int, url: str) -> None:
    with SchedulerClient(address, timeout_s=30) as client:
        for start in range(0, count, 100):
            specs = []
            for i in range(start, min(count, start + 100)):
                spec = pb.TaskSpec(id=f"soak-{i:05d}", http=pb.HttpTarget(url=f"{url}/{i}"))
                spec.schedule.every.FromSeconds(1)
                spec.timeout.FromSeconds(5)
                specs.append(spec)
            client.create_tasks(specs)


def flat(values: list[int], warmup: int) -> tuple[bool, int, int]:
    """``(flat, max of the first half, max of the second half)`` after ``warmup`` samples."""
    kept = values[warmup:]
    if len(kept) < 4:
        return False, 0, 0
    half = len(kept) // 2
    first, second = max(kept[:half]), max(kept[half:])
    return second - first <= max(first // 20, MIB), first, second


async def sample_loop(etcd: Etcd, sink: CountingSink, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    start = time.monotonic()
    end = start + args.minutes * 60
    print(
        f"{'t':>6} {'db MiB':>8} {'in use':>8} {'revision':>10} {'writes/s':>9} {'fires/s':>8} "
        f"{'load':>5}"
    )
    while True:
        now = time.monotonic()
        try:
            status = await etcd.status()
        except PeerdError as exc:
            print(f"{now - start:6.0f} status failed: {exc}", flush=True)
        else:
            row = Row(now - start, status, sink.count)
            writes = fires = 0.0
            if rows:
                dt = row.t_s - rows[-1].t_s
                writes = (status.revision - rows[-1].status.revision) / dt
                fires = (row.fires - rows[-1].fires) / dt
            rows.append(row)
            alarms = " ".join(a.kind for a in status.alarms)
            print(
                f"{row.t_s:6.0f} {status.db_size / MIB:8.2f} {status.db_size_in_use / MIB:8.2f} "
                f"{status.revision:>10} {writes:9.0f} {fires:8.0f} {os.getloadavg()[0]:5.1f} "
                f"{alarms}",
                flush=True,
            )
        if now >= end:
            return rows
        await asyncio.sleep(max(0.0, min(args.sample_s, end - now)))


def report(rows: list[Row], args: argparse.Namespace, workdir: Path) -> int:
    cycle_s = (
        parse_duration(args.compaction_interval, "--compaction-interval")
        + parse_duration(args.compaction_retention, "--compaction-retention")
    ).total_seconds()
    # Until then the keyspace itself grows: each task fills its --runs-keep (100) records at one
    # per second, and the first compaction comes one cycle (interval + retention) after start.
    warmup_s = RUNS_KEEP + 2 * cycle_s
    warmup = sum(1 for r in rows if r.t_s < warmup_s)
    size_flat, size_a, size_b = flat([r.status.db_size for r in rows], warmup)
    use_flat, use_a, use_b = flat([r.status.db_size_in_use for r in rows], warmup)
    span = rows[-1].t_s - rows[0].t_s if len(rows) > 1 else 1.0
    writes = (rows[-1].status.revision - rows[0].status.revision) / span
    fires = (rows[-1].fires - rows[0].fires) / span
    compactions = sum(
        (workdir / f"node{i}.log").read_text().count('"etcd_compacted"') for i in range(args.nodes)
    )
    alarmed = any(r.status.alarms for r in rows)
    # History per fire: how fast the size in use grows between compactions (median of the
    # sample intervals in which it grew), per request the sink answered.
    growth = [
        (b.status.db_size_in_use - a.status.db_size_in_use) / (b.fires - a.fires)
        for a, b in itertools.pairwise(rows[warmup:])
        if b.status.db_size_in_use > a.status.db_size_in_use and b.fires > a.fires
    ]
    print(
        f"\nnodes {args.nodes}, tasks {args.tasks} every 1s, {span / 60:.1f} min, quota "
        f"{args.quota_mib} MiB, compaction every {args.compaction_interval} keeping "
        f"{args.compaction_retention}: {compactions} compactions"
    )
    per_fire = f"{statistics.median(growth) / 1024:.2f} KiB" if growth else "n/a"
    print(f"writes/s {writes:.0f}, fires/s {fires:.0f}, history {per_fire} per fire")
    print(f"alarm raised: {alarmed}")
    for name, ok, a, b in (
        ("db size", size_flat, size_a, size_b),
        ("db size in use", use_flat, use_a, use_b),
    ):
        verdict = "flat" if ok else "GREW"
        print(
            f"{name}: max {a / MIB:.2f} MiB -> {b / MIB:.2f} MiB (first -> second half after a "
            f"{warmup_s:.0f} s warm-up): {verdict}"
        )
    return 0 if size_flat and use_flat and not alarmed else 1


async def with_etcd(endpoint: str, fn: Callable[[Etcd], Awaitable[T]]) -> T:
    etcd = Etcd([endpoint])
    try:
        return await fn(etcd)
    finally:
        await etcd.close()


async def live_keyspace(etcd: Etcd) -> int:
    """Bytes in use once all history is compacted and the file defragmented (nodes stopped)."""
    status = await etcd.status()
    await etcd.compact(status.revision)
    await etcd.defragment(etcd.endpoints[0])
    return (await etcd.status()).db_size_in_use


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--quota-mib", type=int, default=128)
    parser.add_argument("--compaction-interval", default="30s")
    parser.add_argument("--compaction-retention", default="30s")
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the logs and etcd data")
    args = parser.parse_args()
    if parse_duration(args.compaction_interval, "--compaction-interval") <= timedelta(0):
        print("compaction off: expect the database to grow until NOSPACE")
    workdir = Path(tempfile.mkdtemp(prefix="peerd-soak-"))
    etcd_server = EmbeddedEtcd(workdir / "etcd", quota_backend_bytes=args.quota_mib * MIB)
    etcd_server.start()
    sink = CountingSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    nodes = [soak_node(i, etcd_server.endpoint, args, workdir) for i in range(args.nodes)]
    try:
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready(60)
        create_tasks(nodes[0].address, args.tasks, f"http://127.0.0.1:{sink.server_address[1]}")

        rows = asyncio.run(with_etcd(etcd_server.endpoint, lambda e: sample_loop(e, sink, args)))
        stop_all(nodes, 30)
        live = asyncio.run(with_etcd(etcd_server.endpoint, live_keyspace))
        print(
            f"\nlive keyspace (all history compacted, defragmented): {live / MIB:.2f} MiB = "
            f"{live / args.tasks / 1024:.1f} KiB per task at --runs-keep {RUNS_KEEP}"
        )
        return report(rows, args, workdir)
    finally:
        stop_all(nodes, 30)
        sink.shutdown()
        etcd_server.stop()
        if args.keep:
            print(f"logs and etcd data in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
