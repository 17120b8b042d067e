"""How a cluster holds many tasks: memory per task, task creation, restart and ring changes.

Starts an etcd and N ``peerd serve`` nodes (``bench/harness.py``, no receiver, no recorder,
each node with an HTTP port for ``/metrics`` and no API rate limit), then, in order:

1. **Idle RSS** of every node (no tasks), read from ``/proc/<pid>/status`` (``VmRSS``).
2. **CreateTasks**: ``--tasks`` tasks in batches of ``--batch``, ``--clients`` calls in flight
   (round-robin over the nodes); tasks/s from the first call to the last answer. The tasks fire
   rarely (cron ``17 3 1 1 *``, once a year, in-process ``peerd.echo``) so the figures are
   about holding them; ``--firing F`` makes that fraction fire every 10 s instead.
3. **Settled**: until the nodes' ``peerd_owned_tasks`` add up to the tasks (every task owned,
   its cursor read); then the **loaded RSS**, and KiB per task = (loaded - idle) / tasks.
4. **Single CreateTask** open-loop: ``--rate`` calls/s for ``--rate-seconds``, each sent at its
   scheduled instant whatever the earlier ones did (asyncio, one channel per node,
   round-robin); latency from the scheduled instant to the answer (so a queue in the client
   counts, as it would for a real caller): p50, p99, max.
5. **kill -9** of the last node: time until the survivors own every task, and how many moved
   (the survivors' owned counts before and after; the ring's own answer for the same task ids
   is printed next to it).
6. **Restart** of that node (once its old lease is gone): time from the start of the process
   to owning its share again (95 % of what it owned before the kill), and how many tasks moved
   back. During 5 and 6 a probe thread per surviving node calls ``grpc.health.v1/Check`` every
   10 ms: the node answers it on its event loop, so the slowest answer, minus the slowest one
   while idle, is the longest **event-loop stall** of a membership change.

Prints the table with each figure's ratio to its target (issue 13), then the CPU each node,
etcd and the benchmark itself used during phases 2-3 and 4 (% of one core over the phase's wall
time, from ``/proc/<pid>/stat``), and exits 0. ``--stop-after create|single`` ends the run
after phase 3 or 4; ``--profile DIR`` runs py-spy (50 Hz, raw collapsed stacks) on every node
during phases 2 and 4, and from the kill to the end.

    .venv/bin/python bench/scale.py [--tasks 100000] [--nodes 3] [--batch 100] [--clients 4]
        [--firing 0.0] [--rate 500] [--rate-seconds 10] [--lease-ttl 10]
        [--stop-after create|single|restart] [--profile DIR]
    .venv/bin/python bench/scale.py --tasks 20000           # quick run
    .venv/bin/python bench/scale.py ... --peerd-src /tmp/peerd-old   # nodes from another tree
    .venv/bin/python bench/scale.py ... --profile /tmp/prof   # py-spy on every node
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import Bench, cpu_s, pct

from peerd.coord.etcd import Etcd, prefix_end
from peerd.devtools.process import PeerdProcess
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc

MiB = 1024 * 1024
YEARLY = "17 3 1 1 *"
"""The holding tasks' schedule: once a year, so no run interferes with the figures."""
PROBE_EVERY_S = 0.01
"""How often the stall probe asks each surviving node for its health (seconds)."""
SETTLE_TIMEOUT_S = 300.0
PHASES = ("create", "single", "restart")
"""What ``--stop-after`` may name: the bulk create, the open loop, the kill and restart."""
_OWNED = re.compile(rb"^peerd_owned_tasks(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--batch", type=int, default=100, help="tasks per CreateTasks call")
    p.add_argument("--clients", type=int, default=4, help="CreateTasks calls in flight")
    p.add_argument("--firing", type=float, default=0.0, help="fraction firing every 10 s")
    p.add_argument("--rate", type=float, default=500.0, help="single CreateTask calls/s")
    p.add_argument("--rate-seconds", type=float, default=10.0)
    p.add_argument("--lease-ttl", type=int, default=10)
    p.add_argument("--peerd-src", type=Path, default=None, help="run the nodes from this tree")
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    p.add_argument(
        "--profile", type=Path, default=None, metavar="DIR",
        help="py-spy (raw, 50 Hz) every node during phases 2 and 4 (DIR/<phase>-<node>-<pid>.txt)"
        " and from the kill to the end (DIR/<node>-<pid>.txt)",
    )  # fmt: skip
    p.add_argument(
        "--node-path", type=Path, action="append", default=[],
        help="more directories on the nodes' PYTHONPATH (e.g. a diagnostic sitecustomize)",
    )  # fmt: skip
    p.add_argument(
        "--stop-after",
        choices=PHASES,
        default="restart",
        help="the last phase to run: create (2-3), single (4) or restart (5-6, every phase)",
    )
    return p.parse_args(argv)


def scale_spec(task_id: str, firing: bool) -> pb.TaskSpec:
    """An in-process ``peerd.echo`` task: yearly, or every 10 s when ``firing``."""
    spec = pb.TaskSpec(id=task_id, python=pb.PythonTarget(name="peerd.echo"))
    if firing:
        spec.schedule.every.FromSeconds(10)
    else:
        spec.schedule.cron = YEARLY
    return spec


def rss_mib(pid: int | None) -> float:
    """Resident set size of ``pid`` in MiB (0 when it is gone)."""
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def owned(proc: PeerdProcess) -> int | None:
    """The node's ``peerd_owned_tasks`` (None when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://{proc.http_address}/metrics", timeout=5) as r:
            m = _OWNED.search(r.read())
    except OSError:
        return None
    return int(float(m.group(1))) if m else None


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.05) -> float:
    """Poll ``cond`` until true; returns the seconds it took. Raises TimeoutError."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)
    return time.monotonic() - start


class StallProbe(threading.Thread):
    """Asks the node at ``address`` for its health every :data:`PROBE_EVERY_S`; keeps
    :attr:`samples`, (epoch s, latency s)."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True, name=f"stall-{address}")
        self.address = address
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self._halt.wait(PROBE_EVERY_S):
                start = time.monotonic()
                with contextlib.suppress(grpc.RpcError):
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                self.samples.append((time.time(), time.monotonic() - start))

    def worst(self, t0: float, t1: float) -> float:
        """The slowest answer sent in ``[t0, t1)`` (seconds; 0 without samples)."""
        return max((lat for at, lat in self.samples if t0 <= at < t1), default=0.0)

    def stop(self) -> None:
        """Stop after the current call."""
        self._halt.set()
        self.join(10)


PY_SPY = Path(sys.executable).with_name("py-spy")


class Profiler:
    """py-spy sampling of node processes into ``directory`` (``<name>-<pid>.txt``, collapsed
    stacks), started per process and stopped together (SIGINT: py-spy writes its file)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._procs: list[subprocess.Popen[bytes]] = []

    def sample(self, name: str, pid: int | None) -> None:
        """Start sampling ``pid`` (nothing without a directory)."""
        if self.directory is None or pid is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.directory / f"{name}-{pid}.txt"
        cmd = [str(PY_SPY), "record", "--nonblocking", "-r", "50", "-f", "raw", "-o", str(out)]
        self._procs.append(subprocess.Popen([*cmd, "--pid", str(pid)], stdout=subprocess.DEVNULL))
        print(f"profiling {name} (pid {pid}) into {out}", flush=True)

    def stop(self) -> None:
        """Stop every sampler and wait for its file."""
        for proc in self._procs:
            proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs = []


def create_all(bench: Bench, ids: list[str], batch: int, clients: int, firing: float) -> float:
    """Create ``ids`` with CreateTasks (``batch`` per call, ``clients`` in flight, round-robin
    over the nodes); returns tasks/s."""
    every = round(1 / firing) if firing > 0 else 0
    batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    stubs = [pb_grpc.SchedulerStub(grpc.insecure_channel(p.address)) for p in bench.procs.values()]

    def send(n: int) -> None:
        specs = [scale_spec(t, bool(every) and int(t[-6:]) % every == 0) for t in batches[n]]
        stubs[n % len(stubs)].CreateTasks(pb.CreateTasksRequest(tasks=specs), timeout=60)

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, range(len(batches))))
    return len(ids) / (time.monotonic() - start)


async def _open_loop(
    addresses: list[str], rate: float, seconds: float
) -> tuple[list[float], list[str]]:
    """Send CreateTask at ``rate``/s for ``seconds``, each at its instant; the latencies (s) of
    the calls that succeeded, and the status of each that failed."""
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [pb_grpc.SchedulerStub(c) for c in channels]
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failed: list[str] = []

    async def one(i: int, at: float) -> None:
        spec = scale_spec(f"single-{i:06d}", False)
        try:
            await stubs[i % len(stubs)].CreateTask(pb.CreateTaskRequest(task=spec), timeout=30)
        except grpc.aio.AioRpcError as exc:
            failed.append(exc.code().name)
            return
        latencies.append(loop.time() - at)

    t0 = loop.time() + 0.2
    calls = []
    for i in range(int(rate * seconds)):
        at = t0 + i / rate
        await asyncio.sleep(max(0.0, at - loop.time()))
        calls.append(asyncio.ensure_future(one(i, at)))
    await asyncio.gather(*calls)
    for c in channels:
        await c.close()
    return latencies, failed


@dataclass
class Figures:
    """What one run measured (see the module docstring); times in seconds, memory in MiB."""

    tasks: int = 0
    nodes: int = 0
    rss_idle: dict[str, float] = field(default_factory=dict)
    rss_loaded: dict[str, float] = field(default_factory=dict)
    create_per_s: float = 0.0
    settle_s: float = 0.0
    single: list[float] = field(default_factory=list)
    single_failed: list[str] = field(default_factory=list)
    failover_s: float = 0.0
    moved_kill: int = 0
    restart_s: float = 0.0
    moved_join: int = 0
    stall_idle_s: float = 0.0
    stall_s: float = 0.0
    etcd_in_use: tuple[int, int] = (0, 0)
    """etcd's database size in use (bytes), before the creates and once every task is in."""
    stored_bytes: int = 0
    """Key + value of one task as etcd holds it (bytes)."""
    list_s: float = 0.0
    """One range read of every task (what a node lists at start), as a node does it."""
    list_mib: float = 0.0
    cpu: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)
    """Phase -> (wall seconds, CPU seconds by process: each node, ``etcd``, ``bench``)."""

    def kib_per_task(self) -> float:
        """The largest (loaded - idle) RSS of a node, per task held, in KiB (0: not measured)."""
        if not self.rss_loaded:
            return 0.0
        return max(
            (self.rss_loaded[n] - self.rss_idle[n]) * 1024 / self.tasks for n in self.rss_idle
        )


async def _list_tasks(endpoint: str) -> tuple[float, float]:
    """Range-read the whole ``tasks/`` prefix once: (seconds, MiB of keys and values)."""
    etcd = Etcd([endpoint])
    await etcd.connect()
    try:
        prefix = b"/peerd/bench/tasks/"
        start = time.monotonic()
        kvs, _, _ = await etcd.range(prefix, prefix_end(prefix))
        took = time.monotonic() - start
        return took, sum(len(kv.key) + len(kv.value) for kv in kvs) / MiB
    finally:
        await etcd.close()


@contextlib.contextmanager
def phase(bench: Bench, fig: Figures, name: str, profile: Path | None) -> Iterator[None]:
    """Measure one phase: the CPU seconds of every node, etcd and this process, and the wall
    time, into ``fig.cpu[name]``; with ``profile``, py-spy samples every node meanwhile
    (``profile/<name>-<node>-<pid>.txt``, raw collapsed stacks)."""
    spies = Profiler(profile)
    if profile is not None:
        for node, proc in bench.procs.items():
            spies.sample(f"{name}-{node}", proc.pid)
        time.sleep(1)  # py-spy attaches
    pids = {n: p.pid for n, p in bench.procs.items()} | {"etcd": bench.etcd.pid}
    before = {n: cpu_s(pid) for n, pid in pids.items()}
    self_before, start = time.process_time(), time.monotonic()
    try:
        yield
    finally:
        wall = time.monotonic() - start
        used = {n: cpu_s(pid) - before[n] for n, pid in pids.items()}
        used["bench"] = time.process_time() - self_before
        fig.cpu[name] = (wall, used)
        spies.stop()


def owned_counts(bench: Bench, names: list[str]) -> dict[str, int]:
    """``peerd_owned_tasks`` of each named node (0 when it does not answer)."""
    return {n: owned(bench.procs[n]) or 0 for n in names}


def settle(bench: Bench, total: int) -> float:
    """Wait until the nodes own ``total`` tasks together; returns the seconds it took."""
    names = list(bench.procs)
    return wait_for(
        lambda: sum(owned_counts(bench, names).values()) >= total, SETTLE_TIMEOUT_S, "settle", 0.2
    )


def kill_and_restart(
    bench: Bench, fig: Figures, total: int, ttl_s: int, profiler: Profiler
) -> None:
    """Phases 5 and 6 (module docstring): kill -9 the last node, restart it, with a stall
    probe on every survivor (and py-spy on every node when ``profiler`` has a directory)."""
    names = list(bench.procs)
    victim, survivors = names[-1], names[:-1]
    probes = [StallProbe(bench.procs[n].address) for n in survivors]
    for probe in probes:
        probe.start()
    t_idle = time.time()
    time.sleep(3)
    before = owned_counts(bench, names)
    for name in survivors:
        profiler.sample(name, bench.procs[name].pid)
    t_kill = time.time()
    fig.stall_idle_s = max(p.worst(t_idle, t_kill) for p in probes)
    bench.procs[victim].kill()
    fig.failover_s = wait_for(
        lambda: sum(owned_counts(bench, survivors).values()) >= total, SETTLE_TIMEOUT_S, "failover"
    )
    after = owned_counts(bench, survivors)
    fig.moved_kill = sum(abs(after[n] - before[n]) for n in survivors)
    time.sleep(max(0.0, t_kill + ttl_s + 1 - time.time()))  # its old lease has expired
    bench.procs[victim].start(wait=False)
    profiler.sample(victim, bench.procs[victim].pid)
    share = before[victim]
    fig.restart_s = wait_for(
        lambda: (owned(bench.procs[victim]) or 0) >= 0.95 * share, SETTLE_TIMEOUT_S, "restart"
    )
    wait_for(
        lambda: sum(owned_counts(bench, survivors).values()) <= total - 0.95 * share,
        SETTLE_TIMEOUT_S,
        "handoff back",
    )
    time.sleep(2)
    back = owned_counts(bench, survivors)
    fig.moved_join = sum(abs(after[n] - back[n]) for n in survivors)
    fig.stall_s = max(p.worst(t_kill, time.time()) for p in probes)
    restarted = t_kill + ttl_s + 1
    for name, probe in zip(survivors, probes, strict=True):
        slow = sorted((lat, at) for at, lat in probe.samples if at >= t_kill and lat > 0.1)
        print(
            f"{name}: {len(slow)} probe answers over 100 ms after the kill; slowest (ms @ s "
            "after the kill / the restart): "
            + ", ".join(
                f"{lat * 1000:.0f} @ {at - t_kill:.1f}/{at - restarted:.1f}"
                for lat, at in slow[-5:]
            ),
            flush=True,
        )
    for probe in probes:
        probe.stop()


def run(args: argparse.Namespace) -> Figures:
    """Every phase on one cluster (module docstring)."""
    bench = Bench(
        args.nodes, args.lease_ttl, args.peerd_src, keep=args.keep, with_receiver=False,
        with_recorder=False, with_prober=False, http=True, settings={"api_rate_limit": 0},
        python_path=args.node_path,
    )  # fmt: skip
    profiler = Profiler(args.profile)
    fig = Figures(tasks=args.tasks, nodes=args.nodes)
    try:
        bench.start()
        time.sleep(3)
        fig.rss_idle = {n: rss_mib(p.pid) for n, p in bench.procs.items()}
        in_use = bench.client.get_cluster().etcd_db_size_in_use_bytes
        ids = [f"scale-{i:06d}" for i in range(args.tasks)]
        with phase(bench, fig, "create", args.profile):
            fig.create_per_s = create_all(bench, ids, args.batch, args.clients, args.firing)
            print(f"created {len(ids)} tasks: {fig.create_per_s:,.0f}/s", flush=True)
            fig.settle_s = settle(bench, args.tasks)
        if args.stop_after == "create":
            return fig
        time.sleep(2)
        fig.rss_loaded = {n: rss_mib(p.pid) for n, p in bench.procs.items()}
        time.sleep(1.5)  # the nodes poll etcd's status once a second
        fig.etcd_in_use = (in_use, bench.client.get_cluster().etcd_db_size_in_use_bytes)
        stored = bench.client.get_task(ids[-1])
        stored.ClearField("revision")
        fig.stored_bytes = len(stored.SerializeToString()) + len(f"/peerd/bench/tasks/{ids[-1]}")
        fig.list_s, fig.list_mib = asyncio.run(_list_tasks(bench.etcd.endpoint))
        addresses = [p.address for p in bench.procs.values()]
        print(f"open loop: {args.rate:.0f} CreateTask/s for {args.rate_seconds:.0f} s", flush=True)
        with phase(bench, fig, "single", args.profile):
            fig.single, fig.single_failed = asyncio.run(
                _open_loop(addresses, args.rate, args.rate_seconds)
            )
        total = args.tasks + len(fig.single)
        settle(bench, total)
        if args.stop_after == "single":
            return fig
        kill_and_restart(bench, fig, total, args.lease_ttl, profiler)
    except Exception:  # report what was measured before the failure
        traceback.print_exc()
    finally:
        profiler.stop()
        bench.stop()
        bench.cleanup()
    return fig


def report(fig: Figures, args: argparse.Namespace) -> None:
    """Print the table: figure, value, target, ratio to the target (< 1 is better for limits,
    > 1 for rates)."""
    n = fig.nodes
    total = fig.tasks + len(fig.single)
    rows = [
        ("RSS per node idle / loaded (MiB)",
         f"{_mean(fig.rss_idle):.0f} / {_mean(fig.rss_loaded):.0f}", "", ""),
        ("RSS per task per node (KiB, worst node)", f"{fig.kib_per_task():.2f}", "<= 1.0",
         f"{fig.kib_per_task() / 1.0:.2f}"),
        (f"CreateTasks (tasks/s, batch {args.batch}, {args.clients} in flight)",
         f"{fig.create_per_s:,.0f}", ">= 5,000", f"{fig.create_per_s / 5000:.2f}"),
        ("every task owned after the last create (s)", f"{fig.settle_s:.1f}", "", ""),
        (f"CreateTask at {args.rate:.0f}/s: p50 / p99 / max (ms)",
         "{:.1f} / {:.1f} / {:.1f}".format(*(1000 * pct(fig.single, q) for q in (0.5, 0.99, 1))),
         "p99 <= 20", f"{1000 * pct(fig.single, 0.99) / 20:.2f}"),
        ("CreateTask calls failed", f"{len(fig.single_failed)} {sorted(set(fig.single_failed))}",
         "0", ""),
        ("kill -9: survivors own all its tasks (s)", f"{fig.failover_s:.2f}", "", ""),
        ("restart: owns its share again (s)", f"{fig.restart_s:.2f}", "<= 5",
         f"{fig.restart_s / 5:.2f}"),
        ("tasks moved by the kill (x 1/N)", f"{fig.moved_kill / total * n:.3f}", "<= 1.1",
         f"{fig.moved_kill / total * n / 1.1:.2f}"),
        ("tasks moved by the rejoin (x 1/N)", f"{fig.moved_join / total * n:.3f}", "<= 1.1",
         f"{fig.moved_join / total * n / 1.1:.2f}"),
        ("etcd: task key + value / db in use per task (bytes)",
         f"{fig.stored_bytes} / {(fig.etcd_in_use[1] - fig.etcd_in_use[0]) / fig.tasks:.0f}",
         "", ""),
        ("list every task from etcd once (s / MiB)", f"{fig.list_s:.2f} / {fig.list_mib:.1f}",
         "", ""),
        ("event-loop stall, survivors: idle / change (ms)",
         f"{fig.stall_idle_s * 1000:.0f} / {fig.stall_s * 1000:.0f}", "<= 100",
         f"{fig.stall_s * 10:.2f}"),
    ]  # fmt: skip
    print(f"\n{n} nodes, {total:,} tasks ({fig.tasks:,} + {len(fig.single):,} single creates)")
    print(f"{'figure':<56} {'value':>22} {'target':>9} {'ratio':>6}")
    for name, value, target, ratio in rows:
        print(f"{name:<56} {value:>22} {target:>9} {ratio:>6}")
    for name, (wall, used) in fig.cpu.items():
        shares = ", ".join(f"{who} {100 * s / wall:.0f} %" for who, s in used.items())
        print(f"CPU during {name} ({wall:.1f} s, % of one core): {shares}")


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    """Run and print (module docstring); returns the exit code."""
    args = parse_args(argv)
    report(run(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
