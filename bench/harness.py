"""The cluster under a benchmark: etcd, the nginx receiver, the etcd recorder and N nodes.

:class:`Bench` starts and stops them together, creates, pauses and resumes the HTTP tasks
(``every 1s`` at the receiver, 5 s timeout), keeps every delivery the receiver logged
(:meth:`Bench.poll`), and probes the API once a second (:class:`ApiProber`). The functions
below it turn deliveries, run records and node logs into the figures the reports print.

Node logs are JSON at level ``info`` (``member_registered`` is info; ``peer_confirmed_dead``,
``lease_expired`` and ``keepalive_failed_claims_paused`` are warnings): :func:`scan_logs`
reads every event at warning or above, plus ``member_registered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from receiver import Delivery, NginxReceiver
from recorder import RunRow, current_revision

from peerd.client import SchedulerClient
from peerd.devtools.etcd_server import EmbeddedEtcd, parent_death_preexec
from peerd.devtools.process import PeerdProcess, stop_all
from peerd.v1 import scheduler_pb2 as pb

CLUSTER = "bench"
PREFIX = f"/peerd/{CLUSTER}/"
TASK_TIMEOUT_S = 5
"""Each task's run timeout: a run has ended at most this long after it started."""
PROBE_EVERY_S = 1.0
LOG_EVENTS = ("member_registered",)
"""Info events :func:`scan_logs` counts besides every warning and error."""
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) the process has used, 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def task_spec(task_id: str, base_url: str) -> pb.TaskSpec:
    """An HTTP task ``every 1s`` POSTing to ``base_url/<task_id>``."""
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=f"{base_url}/{task_id}"))
    spec.schedule.every.FromSeconds(1)
    spec.timeout.FromSeconds(TASK_TIMEOUT_S)
    return spec


@dataclass
class Probe:
    """One API call of the prober: when (epoch s), which call, latency (s), success."""

    at_s: float
    call: str
    latency_s: float
    ok: bool


class ApiProber(threading.Thread):
    """Calls GetCluster and ListTasks (one page of up to 1,000) once a second, each time on the
    next address of :attr:`targets` (replace the list to drop a node), and keeps the latencies."""

    def __init__(self, targets: list[str]) -> None:
        super().__init__(daemon=True, name="api-prober")
        self.targets = targets
        self.probes: list[Probe] = []
        self._halt = threading.Event()

    def run(self) -> None:
        clients: dict[str, SchedulerClient] = {}
        turn = 0
        while not self._halt.wait(PROBE_EVERY_S):
            targets = self.targets
            address = targets[turn % len(targets)]
            turn += 1
            client = clients.get(address) or clients.setdefault(
                address, SchedulerClient(address, timeout_s=5)
            )
            for name, call in (
                ("GetCluster", client.get_cluster),
                ("ListTasks", lambda c=client: c.list_tasks(limit=1000)),
            ):
                start = time.monotonic()
                ok = True
                try:
                    call()
                except Exception:
                    ok = False
                self.probes.append(Probe(time.time(), name, time.monotonic() - start, ok))
        for c in clients.values():
            c.close()

    def stop(self) -> None:
        """Stop after the current call and wait for the thread."""
        self._halt.set()
        self.join(10)


@dataclass
class Bench:
    """The running benchmark cluster (see the module docstring).

    Args:
        nodes: how many ``peerd serve`` processes.
        lease_ttl_s: their ``--lease-ttl``.
        peerd_src: if set, the nodes import ``peerd`` from this directory (``PYTHONPATH``), e.g.
            an older checkout; the benchmark itself runs from this tree.
        runs_keep: the nodes' ``--runs-keep`` (``None``: their default).
        keep: keep the workdir (logs, the recorder's file, the access log) afterwards.
        python_path: more directories on the nodes' ``PYTHONPATH`` (after the peerd tree), e.g.
            one holding the entry points of a benchmark's Python tasks.
        with_receiver: start the nginx receiver (the HTTP tasks' target); off for in-process
            tasks.
        with_recorder: start the etcd recorder (every write, every run record).
        with_prober: start the API prober (GetCluster and ListTasks once a second).
        http: give every node an HTTP port (``/metrics``; :attr:`PeerdProcess.http_address`).
        settings: more node settings (flags, see :func:`peerd.devtools.process.setting_args`).
    """

    nodes: int
    lease_ttl_s: int
    peerd_src: Path | None = None
    runs_keep: int | None = None
    keep: bool = False
    python_path: list[Path] = field(default_factory=list)
    with_receiver: bool = True
    with_recorder: bool = True
    with_prober: bool = True
    http: bool = False
    settings: dict[str, str | int] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="peerd-bench-")))
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.etcd = EmbeddedEtcd(self.workdir / "etcd")
        self.receiver = NginxReceiver(self.workdir)
        self.ledger_path = self.workdir / "ledger.tsv"
        self.recorder: subprocess.Popen[str] | None = None
        # No API rate limit: the benchmark creates, pauses and resumes thousands of tasks.
        settings: dict[str, str | int] = {
            "log_format": "json",
            "log_level": "info",
            "api_rate_limit": 0,
        }
        settings.update(self.settings)
        if self.runs_keep is not None:
            settings["runs_keep"] = self.runs_keep
        env = None
        if self.peerd_src or self.python_path:
            tree = self.peerd_src or Path(__file__).resolve().parent.parent
            env = {"PYTHONPATH": os.pathsep.join(map(str, [tree, *self.python_path]))}
        self.procs = {
            f"node{i + 1}": PeerdProcess(
                f"node{i + 1}",
                "",
                CLUSTER,
                self.workdir,
                lease_ttl_s=self.lease_ttl_s,
                settings=settings,
                env=env,
                label="bench",
                http_port=0 if self.http else None,
                # Not the caller's directory: ``python -m peerd`` puts the working directory
                # first on sys.path, so a run from a checkout would import that tree's peerd
                # whatever ``peerd_src`` says.
                cwd=self.workdir,
            )
            for i in range(self.nodes)
        }
        self.created: list[str] = []
        self.active: list[str] = []
        self.prober = ApiProber([])
        self._client: SchedulerClient | None = None

    def start(self) -> None:
        """etcd, the receiver, the recorder (waits until it watches), then every node
        (waits until SERVING) and the API prober (each of the three unless turned off)."""
        self.etcd.start()
        if self.with_receiver:
            self.receiver.start()
        if self.with_recorder:
            self._start_recorder()
        for proc in self.procs.values():
            proc.etcd = self.etcd.endpoint
            proc.start(wait=False)
        for proc in self.procs.values():
            proc.wait_ready(30)
        self.prober.targets = [p.address for p in self.procs.values()]
        if self.with_prober:
            self.prober.start()
        self._client = SchedulerClient(self.prober.targets[0], timeout_s=60)

    def _start_recorder(self) -> None:
        here = Path(__file__).resolve().parent
        self.recorder = subprocess.Popen(
            [sys.executable, str(here / "recorder.py"), "--etcd", self.etcd.endpoint,
             "--prefix", PREFIX, "--out", str(self.ledger_path)],
            stdout=subprocess.PIPE, text=True, preexec_fn=parent_death_preexec(),
        )  # fmt: skip
        assert self.recorder.stdout is not None
        if not self.recorder.stdout.readline().startswith("ready"):
            raise RuntimeError("the recorder did not start")

    def stop(self) -> None:
        """Stop everything started (nodes gracefully, 15 s at most); the files stay until
        :meth:`cleanup`."""
        try:
            if self.prober.is_alive():
                self.prober.stop()
            if self._client is not None:
                self._client.close()
            stop_all(self.procs.values(), 15)
            if self.recorder is not None and self.recorder.poll() is None:
                self.recorder.terminate()
                self.recorder.wait(10)
        finally:
            if self.with_receiver:
                self.receiver.stop()
            self.etcd.stop()

    def cleanup(self) -> None:
        """Remove the workdir, unless ``keep`` (then say where it is)."""
        if self.keep:
            print(f"workdir kept: {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def client(self) -> SchedulerClient:
        """A client of the first node that is still alive."""
        assert self._client is not None, "start() first"
        return self._client

    def use_node(self, address: str) -> None:
        """Send later calls (and the prober's) only to live nodes: ``address`` first."""
        if self._client is not None:
            self._client.close()
        self._client = SchedulerClient(address, timeout_s=60)

    def revision(self) -> int:
        """etcd's store revision now."""
        return asyncio.run(current_revision(self.etcd.endpoint))

    def set_active(
        self, n: int, prefix: str = "bench", spec: Callable[[str], pb.TaskSpec] | None = None
    ) -> None:
        """Make the first ``n`` task ids the active ones: create or resume what is missing,
        pause what is beyond ``n`` (16 calls at a time). ``spec``: ``task id -> TaskSpec`` of
        a new task (default :func:`task_spec` at the receiver). One prefix per run: the ids
        created so far are assumed to be this prefix's."""
        ids = [f"{prefix}-{i:05d}" for i in range(n)]
        new = ids[len(self.created) :]
        url = self.receiver.base_url
        make = spec or (lambda task_id: task_spec(task_id, url))
        for start in range(0, len(new), 100):
            self.client.create_tasks([make(t) for t in new[start : start + 100]])
        was_active = set(self.active)
        resume = [t for t in ids[: len(self.created)] if t not in was_active]
        self.created += new
        pause = self.active[n:]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(self.client.resume_task, resume))
            list(pool.map(self.client.pause_task, pause))
        self.active = ids

    def retire_all(self) -> None:
        """Pause every active task and forget the ids created so far, so that
        :meth:`set_active` can start tasks of another prefix."""
        self.set_active(0)
        self.created, self.active = [], []

    def poll(self) -> list[Delivery]:
        """Read the receiver's new deliveries into :attr:`deliveries`; returns the new ones."""
        new = self.receiver.read_new()
        self.deliveries += new
        return new

    def sleep_until(self, at_s: float) -> None:
        """Sleep until epoch ``at_s``, reading the receiver's log once a second meanwhile."""
        while (left := at_s - time.time()) > 0:
            time.sleep(min(1.0, left))
            self.poll()

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far by role: ``nodes``, ``etcd``, ``receiver``, ``recorder``."""
        rec = self.recorder.pid if self.recorder is not None else None
        return {
            "nodes": sum(cpu_s(p.pid) for p in self.procs.values()),
            "etcd": cpu_s(self.etcd.pid),
            "receiver": cpu_s(self.receiver.pid),
            "recorder": cpu_s(rec),
        }


def slot_rate(deliveries: Iterable[Delivery], t0: float, t1: float) -> float:
    """Goodput: distinct slots due in ``[t0, t1)`` that were delivered (whenever), per second.
    The slot is the idempotency key's ``<slot epoch ms>``; counting by slot rather than by
    receive time keeps a phase's late slots out of the next phase's figure."""
    lo, hi = t0 * 1000, t1 * 1000
    keys = {d.key for d in deliveries if d.key and lo <= int(d.key.rsplit("/", 1)[1]) < hi}
    return len(keys) / (t1 - t0)


def distinct_rate(deliveries: Iterable[Delivery], t0: float, t1: float) -> float:
    """Distinct idempotency keys first received in ``[t0, t1)``, per second (the fires of a
    window of etcd revisions read at ``t0`` and ``t1``)."""
    seen: set[str | None] = set()
    firsts = 0
    for d in deliveries:
        if d.key in seen:
            continue
        seen.add(d.key)
        firsts += t0 <= d.at_s < t1
    return firsts / (t1 - t0)


@dataclass
class Repeats:
    """Keys delivered more than once. ``new_token``: keys delivered under more than one fencing
    token with a repeat received before the cut-off time (a busy node's run retried by another
    claimant although no node died); ``new_token_after``: the same after the cut-off (fenced
    retries of a killed node's runs); ``real``: a key delivered twice under the same token
    (nothing tells the copies apart)."""

    new_token: list[str]
    new_token_after: list[str]
    real: list[str]


def repeats(deliveries: Iterable[Delivery], cutoff_s: float) -> Repeats:
    """Classify repeated keys (see :class:`Repeats`)."""
    by_key: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        if d.key is not None:
            by_key[d.key].append(d)
    out = Repeats([], [], [])
    for key, ds in by_key.items():
        if len(ds) < 2:
            continue
        tokens = Counter(d.token for d in ds)
        if any(n > 1 for n in tokens.values()):
            out.real.append(key)
        if len(tokens) > 1:
            repeat_at = sorted(d.at_s for d in ds)[1]
            (out.new_token if repeat_at < cutoff_s else out.new_token_after).append(key)
    return out


def window_runs(latest: Iterable[RunRow], t0: float, t1: float, tasks: set[str] | None = None
) -> tuple[list[float], int, int]:  # fmt: skip
    """Runs whose fire time is in ``[t0, t1)`` (of ``tasks`` if given): the lateness in seconds
    of those that started, the number SKIPPED, and the number SUCCEEDED."""
    lateness: list[float] = []
    skipped = succeeded = 0
    lo, hi = t0 * 1000, t1 * 1000
    for r in latest:
        if not lo <= r.fire_ms < hi or (tasks is not None and r.task not in tasks):
            continue
        if r.status == pb.SKIPPED:
            skipped += 1
        elif r.lateness_ms >= 0:
            lateness.append(r.lateness_ms / 1000)
        succeeded += r.status == pb.SUCCEEDED
    return lateness, skipped, succeeded


@dataclass
class LogEvent:
    """A node log event: node, event name, level, epoch seconds."""

    node: str
    event: str
    level: str
    at_s: float


def scan_logs(procs: Iterable[PeerdProcess]) -> list[LogEvent]:
    """Every warning/error event and every :data:`LOG_EVENTS` event in the nodes' JSON logs."""
    out: list[LogEvent] = []
    for proc in procs:
        for line in proc.log_text().splitlines():
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError, KeyError):
                ev = json.loads(line)
                level = ev.get("level", "")
                if level in ("warning", "error", "critical") or ev["event"] in LOG_EVENTS:
                    at = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00"))
                    out.append(LogEvent(proc.node_id, ev["event"], level, at.timestamp()))
    return out
