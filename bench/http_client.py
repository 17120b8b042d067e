"""CPU per request of the HTTP executor: one asyncio process firing webhooks at a local receiver.

Runs ``--requests`` attempts through :meth:`peerd.runner.http.HttpExecutor.run_target` (the
executor a node uses, default JSON body and peerd headers included), ``--concurrency`` at a
time, against ``--url``, and prints the process CPU time (user + system, ``time.process_time``)
and wall time per request, best of ``--rounds`` rounds after one warm-up round (connections
opened, caches filled). Only this process's CPU is counted: the receiver runs in another
process. Every request must succeed (2xx), or the run fails.

The receiver: ``--url`` of one already running, e.g. nginx answering 200 (the cheapest
receiver; ``bench/receiver.py`` starts one), or, without ``--url``, peerd's webhook sink
(:mod:`peerd.devtools.sink`) started in a child process. The sink spends more CPU per request
than nginx, but in its own process; on a 2-core machine it competes with the client for cores,
so use nginx for figures that are compared.

    .venv/bin/python bench/http_client.py [--url http://127.0.0.1:PORT/] [--requests 5000]

Run it the same way before and after a change of the client (e.g. ``PYTHONPATH=<old checkout>``)
and compare the ``cpu_us_per_request`` lines. ``--bare`` measures plain aiohttp instead (one
session, the same POST and headers, nothing else): the ceiling the executor is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import aiohttp

from peerd.devtools.etcd_server import free_port, parent_death_preexec
from peerd.runner.base import Execution
from peerd.runner.http import HttpExecutor
from peerd.v1 import scheduler_pb2 as pb


@contextlib.contextmanager
def sink_process() -> Iterator[str]:
    """peerd's webhook sink in a child process; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerd.devtools.sink", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        preexec_fn=parent_death_preexec(),
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the sink did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/bench"
    finally:
        proc.terminate()
        proc.wait(10)


async def one_round(executor: HttpExecutor, url: str, requests: int, concurrency: int) -> float:
    """Send ``requests`` attempts, ``concurrency`` at a time; returns the wall time in s."""
    target = pb.HttpTarget(url=url)
    queue = iter(range(requests))
    started = time.perf_counter()

    async def worker() -> None:
        for i in queue:
            execution = Execution(
                task_id=f"bench-{i % 100}",
                scheduled_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
                attempt=1,
                node_id="bench",
                fencing_token=i + 1,
                timeout=timedelta(seconds=10),
            )
            outcome = await executor.run_target(target, execution)
            if not outcome.succeeded:
                raise RuntimeError(f"request {i} failed: {outcome.error}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def bare_round(
    session: aiohttp.ClientSession, url: str, requests: int, concurrency: int
) -> float:
    """Like :func:`one_round` with plain aiohttp: the same POST (a JSON body, the idempotency
    key and fencing token headers) from one session; returns the wall time in s."""
    queue = iter(range(requests))
    started = time.perf_counter()

    async def worker() -> None:
        for i in queue:
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": f"bare-{i % 100}/{i}",
                "Peerd-Fencing-Token": str(i + 1),
            }
            async with session.post(url, data=b'{"task_id":"bare"}', headers=headers) as resp:
                await resp.read()
                if resp.status // 100 != 2:
                    raise RuntimeError(f"request {i} failed: HTTP {resp.status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(
    url: str, requests: int, concurrency: int, rounds: int, bare: bool = False
) -> tuple[float, float]:
    """Best of ``rounds`` rounds after a warm-up, printed; returns (requests/s, CPU µs per
    request) of the best round. ``bare``: plain aiohttp (:func:`bare_round`), else the
    executor (:func:`one_round`)."""
    executor = HttpExecutor()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=32))

    async def round_of(n: int) -> float:
        if bare:
            return await bare_round(session, url, n, concurrency)
        return await one_round(executor, url, n, concurrency)

    try:
        await round_of(min(requests, 500))  # warm-up
        best_cpu = best_wall = float("inf")
        for _ in range(rounds):
            cpu0 = time.process_time()
            wall = await round_of(requests)
            cpu = time.process_time() - cpu0
            best_cpu, best_wall = min(best_cpu, cpu), min(best_wall, wall)
            print(
                f"round: {requests} requests, cpu {cpu * 1e6 / requests:.0f} us/request, "
                f"wall {wall * 1e6 / requests:.0f} us/request, {requests / wall:.0f} requests/s"
            )
        print(f"cpu_us_per_request {best_cpu * 1e6 / requests:.0f}")
        print(f"wall_us_per_request {best_wall * 1e6 / requests:.0f}")
        return requests / best_wall, best_cpu * 1e6 / requests
    finally:
        await executor.close()
        await session.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="receiver URL (default: peerd's sink in a child process)")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare", action="store_true", help="plain aiohttp, not the executor")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(sink_process())
        print(f"receiver {url}, concurrency {args.concurrency}")
        asyncio.run(measure(url, args.requests, args.concurrency, args.rounds, args.bare))
    return 0


if __name__ == "__main__":
    sys.exit(main())
