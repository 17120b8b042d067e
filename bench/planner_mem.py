"""RSS per owned task of a bare :class:`peerd.engine.planner.Planner`, without etcd or a node.

Builds ``--tasks`` specs like ``bench/scale.py``'s (yearly cron, in-process ``peerd.echo``),
decodes each from its bytes (as the task view does) and acquires it with a cursor, then prints
the growth of this process's RSS (``/proc/self/status``) per task, the CPU time per acquisition
and, where the planner keeps specs as bytes, the time of one :meth:`Owned.decode_spec`.

    PYTHONPATH=<tree> .venv/bin/python bench/planner_mem.py [--tasks 20000]

A few seconds of CPU: take the machine's benchmark lock (``flock /tmp/peerd-heavy.lock``).
"""

from __future__ import annotations

import argparse
import gc
import time
from datetime import UTC, datetime, timedelta

from peerd.core.tzrules import TimeZoneRules
from peerd.engine.planner import Planner
from peerd.v1 import scheduler_pb2 as pb

T0 = datetime(2026, 11, 30, tzinfo=UTC)


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--tasks", type=int, default=20_000)
    n = p.parse_args().tasks
    stored = []
    for i in range(n):
        s = pb.TaskSpec(id=f"scale-{i:07d}", python=pb.PythonTarget(name="peerd.echo"))
        s.schedule.cron = "17 3 1 1 *"
        s.created_at.FromDatetime(T0)
        stored.append(s.SerializeToString())
    planner = Planner("n1", timedelta(seconds=5), rules=TimeZoneRules.load("package"))
    planner.acquire(pb.TaskSpec.FromString(stored[0]), cursor=T0)  # first-use caches
    gc.collect()
    before = rss_kib()
    t0 = time.process_time()
    for b in stored[1:]:
        planner.acquire(pb.TaskSpec.FromString(b), cursor=T0)
    took = time.process_time() - t0
    gc.collect()
    per_kib = (rss_kib() - before) / (n - 1)
    print(f"RSS per owned task {per_kib:.3f} KiB; acquire {took / (n - 1) * 1e6:.1f} µs each")
    o = next(iter(planner.owned.values()))
    decode = getattr(o, "decode_spec", None)  # absent where the planner keeps the message
    if decode is not None:
        t0 = time.perf_counter()
        for _ in range(n):
            decode()
        print(f"decode_spec {(time.perf_counter() - t0) / n * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
