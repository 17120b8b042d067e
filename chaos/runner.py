"""One chaos run from start to finish: set up, load, inject faults, stop, check, report.

Exit codes: 0 every check passed, 1 a check failed (a finding about peerd), 2 the harness could
not complete the run (e.g. a node never came up). The workdir keeps the node logs, etcd's data
and log, ``chaos.log``, ``sink.jsonl``, ``ledger.jsonl``, ``faults.jsonl``, ``tasks.json``,
``report.txt`` and ``summary.json`` (``python -m chaos.recheck DIR`` re-runs the checks on them).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import random
import signal
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import IO, Any

import peerd.devtools.sink
from chaos import workload
from chaos.checks import CheckParams, Delivery, LedgerRecord, evaluate, parse_delivery
from chaos.cluster import HARNESS_ERRORS, EtcdHandle, NodeProc
from chaos.faults import FaultInjector
from chaos.netns import BRIDGE_IP, ETCD_IP, NetnsError, NetnsLab, availability, node_ip
from chaos.profiles import RunConfig
from chaos.report import format_table, scan_log, write_outputs
from peerd.devtools.sink import WebhookSink
from peerd.devtools.spawn import free_port

EXIT_PASS = 0
EXIT_VIOLATION = 1
EXIT_HARNESS = 2
NETNS_PORT = 7070
FIRST_FIRE_TIMEOUT_S = 40.0
DRAIN_TIMEOUT_S = 15.0
SINK_BACKLOG = 1024


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived: stop early, but still clean up."""


class Runner:
    """Holds the moving parts of one run so that :meth:`cleanup` can always undo them."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.rng = random.Random(cfg.seed)
        self.notes: list[str] = []
        self.lab: NetnsLab | None = None
        self.etcd: EtcdHandle | None = None
        self.sink: WebhookSink | None = None
        self.nodes: list[NodeProc] = []
        self.injector: FaultInjector | None = None
        self.rounds = 0
        self.workload_end_s: float | None = None
        self._log: IO[str] | None = None

    # -- output ----------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """Print a progress line (also to ``chaos.log``)."""
        line = f"[chaos +{time.monotonic() - self.t0:6.1f}s] {message}"
        print(line, flush=True)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()

    # -- phases ----------------------------------------------------------------------------------

    def setup(self) -> None:
        """Namespaces (if asked and possible), etcd, the sink and the nodes, all SERVING."""
        cfg = self.cfg
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self._log = (cfg.workdir / "chaos.log").open("a", encoding="utf-8")
        self.say(f"workdir {cfg.workdir}")
        if cfg.partitions:
            ok, reason = availability()
            if ok:
                lab = NetnsLab(cfg.nodes)
                atexit.register(lab.teardown)
                try:
                    lab.setup()
                    self.lab = lab
                except NetnsError as exc:
                    reason = str(exc)
            if self.lab is None:
                self.note(f"network namespaces unavailable ({reason}): partition faults skipped")
            else:
                self.say(f"netns: bridge {BRIDGE_IP}, etcd {ETCD_IP}, nodes 10.213.0.11..")
        host = "127.0.0.1" if self.lab is None else ETCD_IP
        self.etcd = EtcdHandle(cfg.etcd_members, host, cfg.workdir)
        self.etcd.start()
        if self.etcd.fallback_reason:
            self.note(f"{self.etcd.fallback_reason}: running 1 etcd member instead")
        self.say(f"etcd {self.etcd.endpoint_csv} ({self.etcd.members} member(s))")
        sink_host = "127.0.0.1" if self.lab is None else BRIDGE_IP
        _deepen_sink_backlog()
        self.sink = WebhookSink(sink_host, 0, jsonl_path=cfg.workdir / "sink.jsonl")
        self.sink.start()
        for i in range(1, cfg.nodes + 1):
            namespaced = self.lab is not None
            self.nodes.append(
                NodeProc(
                    f"n{i}",
                    node_ip(i) if namespaced else "127.0.0.1",
                    NETNS_PORT if namespaced else free_port(),
                    self.etcd.endpoint_csv,
                    cfg.cluster,
                    cfg.lease_ttl_s,
                    cfg.workdir,
                    cfg.runs_keep,
                    NetnsLab.namespace(i) if namespaced else None,
                )
            )
        for n in self.nodes:
            n.start(wait=False)
        for n in self.nodes:
            n.wait_ready(60.0)
        self.say("nodes SERVING: " + ", ".join(f"{n.node_id}@{n.address}" for n in self.nodes))

    def note(self, message: str) -> None:
        """Print a note and keep it for the report."""
        self.notes.append(message)
        self.say(f"NOTE: {message}")

    def load(self, ids: list[str]) -> None:
        """Create the workload and wait until it runs steadily."""
        assert self.sink is not None
        workload.create_tasks(self.addresses(), ids, self.sink.url)
        waited = workload.wait_all_fired(self.sink, ids, FIRST_FIRE_TIMEOUT_S)
        self.say(f"{len(ids)} tasks created; all fired within {waited:.1f}s")
        time.sleep(self.cfg.profile.warmup_s)

    def inject(self) -> None:
        """Run the profile's rounds of faults."""
        cfg = self.cfg
        assert self.etcd is not None
        kinds = cfg.faults_enabled(self.lab is not None, self.etcd.members)
        skipped = [k for k in cfg.profile.round_faults if k not in kinds]
        if skipped:
            self.note(f"faults skipped in this configuration: {', '.join(skipped)}")
        self.injector = FaultInjector(
            self.nodes, self.etcd, self.lab, self.rng, cfg.timings, self.say
        )
        prof = cfg.profile
        phase_start = time.monotonic()
        while self.rounds < prof.max_rounds and (
            self.rounds < prof.min_rounds or time.monotonic() - phase_start < prof.min_fault_phase_s
        ):
            order = list(kinds)
            if prof.shuffle:
                self.rng.shuffle(order)
            self.say(f"round {self.rounds + 1}: {', '.join(order)}")
            for kind in order:
                if time.monotonic() - self.t0 > prof.budget_s:
                    self.note(f"time budget {prof.budget_s:.0f}s used up: no more faults")
                    return
                self.injector.run(kind)
            self.rounds += 1
        self.injector.ensure_healthy()

    def finish(self, ids: list[str]) -> tuple[float, list[str], list[LedgerRecord]]:
        """Quiet period, stop the workload, let runs drain, read tasks and ledger back."""
        self.say(f"final quiet period {self.cfg.profile.final_quiet_s:.0f}s")
        time.sleep(self.cfg.profile.final_quiet_s)
        if self.injector is not None:
            self.injector.ensure_healthy()
        workload_end_s = self.workload_end_s = time.time()
        workload.pause_all(self.addresses(), ids)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        time.sleep(1.0)
        while workload.unfinished_runs(self.addresses(), ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        listed = workload.list_task_ids(self.addresses())
        (self.cfg.workdir / "tasks.json").write_text(
            json.dumps({"created": ids, "listed": listed, "workload_end_s": workload_end_s}) + "\n",
            encoding="utf-8",
        )
        ledger = workload.read_ledger(self.addresses(), ids, self.cfg.runs_keep)
        with (self.cfg.workdir / "ledger.jsonl").open("w", encoding="utf-8") as out:
            for rec in ledger:
                out.write(json.dumps(dataclasses.asdict(rec)) + "\n")
        self.say(f"workload stopped; {len(ledger)} ledger records read")
        return workload_end_s, listed, ledger

    def addresses(self) -> list[str]:
        """Addresses of the nodes, live ones first."""
        live = [n.address for n in self.nodes if n.is_running() and not n.paused]
        return live + [n.address for n in self.nodes if n.address not in live]

    def deliveries(self) -> list[Delivery]:
        """The sink's deliveries, decoded."""
        assert self.sink is not None
        out = []
        for d in self.sink.deliveries():
            parsed = parse_delivery(d.received_at, d.idempotency_key, d.fencing_token, d.body)
            if parsed is not None:
                out.append(parsed)
        return out

    def cleanup(self) -> None:
        """Stop everything this run started; never raises."""
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.stop(timeout_s=20.0)
        if self.sink is not None:
            with contextlib.suppress(Exception):
                self.sink.stop()
        if self.etcd is not None:
            self.etcd.stop()
        if self.lab is not None:
            self.lab.teardown()
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def meta(self) -> dict[str, Any]:
        """Run parameters for the report."""
        cfg = self.cfg
        return {
            "profile": cfg.profile.name,
            "seed": cfg.seed,
            "nodes": cfg.nodes,
            "etcd_members": self.etcd.members if self.etcd is not None else cfg.etcd_members,
            "tasks": cfg.tasks,
            "lease_ttl_s": cfg.lease_ttl_s,
            "netns": self.lab is not None,
            "rounds": self.rounds,
            "runs_keep": cfg.runs_keep,
            "max_failover_p99_s": cfg.max_failover_p99_s,
            "fail_on_stuck_runs": cfg.profile.fail_on_stuck_runs,
            "workload_end_s": self.workload_end_s,
            "workdir": str(cfg.workdir),
            "wall_s": time.monotonic() - self.t0,
            "notes": self.notes,
        }


def run(cfg: RunConfig) -> int:
    """Run one chaos session; returns the process exit code."""
    runner = Runner(cfg)
    previous = install_signal_handlers()
    ids = workload.task_ids(cfg.tasks)
    try:
        try:
            runner.setup()
            runner.load(ids)
            runner.inject()
            workload_end_s, listed, ledger = runner.finish(ids)
            deliveries = runner.deliveries()
        except Exception as exc:
            if not isinstance(exc, (*HARNESS_ERRORS, Interrupted)):
                traceback.print_exc()
            runner.say(f"run aborted: {type(exc).__name__}: {exc}")
            runner.say(f"node logs and etcd log are in {cfg.workdir}")
            return EXIT_HARNESS
        finally:
            runner.cleanup()
        faults = runner.injector.log if runner.injector is not None else []
        params = CheckParams(
            max_failover_p99_s=cfg.max_failover_p99_s,
            fail_on_stuck_runs=cfg.profile.fail_on_stuck_runs,
        )
        rep = evaluate(ids, listed, deliveries, ledger, faults, workload_end_s, params)
        logs = {n.node_id: scan_log(n.log_path) for n in runner.nodes}
        meta = runner.meta()
        table = format_table(rep, meta, faults, logs)
        write_outputs(cfg.workdir, table, rep, meta, faults, logs)
        print(table, flush=True)
        if not rep.ok:
            print(f"chaos: FAILED; logs, report.txt and summary.json in {cfg.workdir}", flush=True)
            return EXIT_VIOLATION
        print(f"chaos: passed; report in {cfg.workdir / 'report.txt'}", flush=True)
        return EXIT_PASS
    finally:
        restore_signal_handlers(previous)


def _deepen_sink_backlog() -> None:
    """Give the sink a listen backlog that survives a burst of new connections.

    ``peerd.devtools.sink`` binds with socketserver's default backlog of 5; the first slot (and
    every catch-up after an etcd outage) opens up to 32 connections per node at once, and the
    overflow comes back to the nodes as ``ReadError`` (runs FAILED, nothing recorded). That is a
    flaw of the test sink, not of the scheduler, so the harness raises the backlog for its own sink.
    """
    server_cls: Any = getattr(peerd.devtools.sink, "_Server", None)
    if server_cls is not None and getattr(server_cls, "request_queue_size", 0) < SINK_BACKLOG:
        server_cls.request_queue_size = SINK_BACKLOG


def install_signal_handlers() -> dict[int, Any]:
    """Make SIGTERM and SIGINT raise :class:`Interrupted` (so clean-up runs); returns the
    previous handlers for :func:`restore_signal_handlers`."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signum}")

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, _raise)
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`install_signal_handlers` replaced."""

    for sig, handler in previous.items():
        signal.signal(sig, handler)


def default_workdir() -> Path:
    """A fresh directory under the system temp dir."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="peerd-chaos-"))


__all__ = ["EXIT_HARNESS", "EXIT_PASS", "EXIT_VIOLATION", "default_workdir", "run"]
