"""Prometheus metrics of one node, in a registry of its own (several nodes in one process do not
clash), served as ``/metrics`` by :mod:`peerd.http.server`.

Two ways in, chosen by cost:

* **Read at scrape time** (:class:`_Snapshot`, a custom collector): everything the engine and
  the node already count or hold (:class:`peerd.engine.stats.EngineStats`, pools, owned tasks,
  loops, etcd's size and alarms). Nothing is counted twice and the fire path pays nothing.
* **Observed when it happens**: histograms and the per-run counters (:meth:`NodeMetrics.
  run_finished`, :meth:`claim_done`, :meth:`request`, :meth:`watch_restarted`,
  :meth:`verdict`). Label children are resolved once, in the constructor, for every executor
  kind and final status, so a finished run costs two dict lookups, one counter add and two
  histogram observations, no allocation of label children.

Every name, type and label is listed in ``docs/observability.md`` (a test scrapes a node and
checks that the table and the Grafana dashboard name only metrics that exist).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from peerd import __version__
from peerd.engine.registry import Run
from peerd.engine.stats import EngineStats
from peerd.runner.executors import KINDS
from peerd.v1 import scheduler_pb2 as pb

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format, version 0.0.4."""

LATENESS_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
"""Lateness (start minus fire time): a healthy node starts within tens of ms; 5 s is the default
misfire threshold, beyond which slots are skipped or replayed."""
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
"""Run duration: webhooks take ms, shell jobs minutes; the default per-attempt timeout is 60 s."""
ETCD_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
"""etcd requests and claim transactions: ms on a healthy cluster; 0.5 s is the claim deadline,
5 s the client's."""
DETECTION_BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
"""Suspicion to confirmation: indirect probes take one probe deadline (250 ms) when healthy."""

FINAL_STATUSES = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)
"""Statuses a run of this node ends in (LOST and SKIPPED are written by others' claims)."""
SKIP_REASONS = {
    pb.SKIP_MISFIRE: "misfire",
    pb.SKIP_CATCH_UP_WINDOW: "catch_up_window",
    pb.SKIP_OVERLAP: "overlap",
    pb.SKIP_PAUSED: "paused",
}
"""``pb.SkipReason`` -> the ``reason`` label value."""


def status_label(status: int) -> str:
    """``pb.RunStatus`` -> its label value, e.g. ``succeeded``."""
    return pb.RunStatus.Name(status).lower()  # type: ignore[arg-type]


@dataclass(frozen=True)
class EtcdView:
    """etcd as the compaction leader last saw it (database bytes, active alarm kinds)."""

    db_size_bytes: int
    db_size_in_use_bytes: int
    alarms: tuple[str, ...]


@dataclass(frozen=True)
class MetricSources:
    """What the scrape-time collector reads (wired by node.py, the composition root).

    Attributes:
        engine: the engine's counters and gauges.
        degraded_loops: how many supervised loops are degraded now.
        ready: whether ``/readyz`` would answer 200 now.
        members: registered members in this node's view.
        etcd: etcd's size and alarms when this node is the compaction leader, else None.
        leader: whether this node holds the compaction leadership.
    """

    engine: Callable[[], EngineStats]
    degraded_loops: Callable[[], int]
    ready: Callable[[], bool]
    members: Callable[[], int]
    etcd: Callable[[], EtcdView | None]
    leader: Callable[[], bool]


class NodeMetrics:
    """The metrics of one node (see the module docstring).

    Args:
        sources: what is read at scrape time.
        per_task: also keep per-task series (``task_id`` label; opt-in, see the docs).

    Attributes:
        registry: the node's own :class:`CollectorRegistry`.
    """

    def __init__(self, sources: MetricSources, per_task: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        runs = Counter(
            "peerd_runs_total", "Runs of this node by final status.", ["executor", "status"],
            registry=r,
        )  # fmt: skip
        lateness = Histogram(
            "peerd_run_lateness_seconds", "Start of a run's first attempt minus its fire time.",
            ["executor"], buckets=LATENESS_BUCKETS_S, registry=r,
        )  # fmt: skip
        duration = Histogram(
            "peerd_run_duration_seconds", "Duration of a run's final attempt.",
            ["executor"], buckets=DURATION_BUCKETS_S, registry=r,
        )  # fmt: skip
        self._runs = {
            (k, s): runs.labels(k, status_label(s)) for k in KINDS for s in FINAL_STATUSES
        }
        self._lateness = {k: lateness.labels(k) for k in KINDS}
        self._duration = {k: duration.labels(k) for k in KINDS}
        self._claim = Histogram(
            "peerd_claim_duration_seconds", "Duration of one claim transaction (a batch).",
            buckets=ETCD_BUCKETS_S, registry=r,
        )  # fmt: skip
        self._claim_batch = Counter(
            "peerd_claim_transactions_total", "Claim transactions etcd answered.", registry=r
        )
        self._etcd = Histogram(
            "peerd_etcd_request_duration_seconds", "Duration of one etcd request.", ["method"],
            buckets=ETCD_BUCKETS_S, registry=r,
        )  # fmt: skip
        self._etcd_failed = Counter(
            "peerd_etcd_request_failures_total", "etcd requests that got no answer or an error.",
            ["method"], registry=r,
        )  # fmt: skip
        self._watch = Counter(
            "peerd_watch_restarts_total", "Re-lists of a list-then-watch loop.",
            ["watch", "reason"], registry=r,
        )  # fmt: skip
        self._dead = Counter(
            "peerd_failover_detections_total", "Peers this node's probes confirmed dead.",
            registry=r,
        )  # fmt: skip
        self._alive = Counter(
            "peerd_peer_recoveries_total", "Dead peers that answered again.", registry=r
        )
        self._detection = Histogram(
            "peerd_failure_detection_seconds",
            "From this node's first suspicion of a peer to its confirmation as dead.",
            buckets=DETECTION_BUCKETS_S, registry=r,
        )  # fmt: skip
        Info("peerd_build", "The running peerd.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        self._per_task = _PerTask(r) if per_task else None
        r.register(_Snapshot(sources))

    def scrape(self) -> bytes:
        """The registry in the text exposition format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def run_finished(self, run: Run) -> None:
        """A run reached its final status (``RunRegistry.on_finish``; on the fire path)."""
        rec = run.record
        counter = self._runs.get((run.kind, rec.status))
        if counter is None:  # a kind this node has no executor for
            return
        counter.inc()
        if rec.HasField("started_at"):
            late = rec.lateness.seconds + rec.lateness.nanos / 1e9
            self._lateness[run.kind].observe(late)
            start, end = rec.started_at, rec.finished_at
            took = (end.seconds - start.seconds) + (end.nanos - start.nanos) / 1e9
            self._duration[run.kind].observe(max(0.0, took))
        if self._per_task is not None:
            self._per_task.observe(rec)

    def claim_done(self, duration_s: float, claims: Sequence[object], results: object) -> None:
        """One claim transaction took ``duration_s`` (``Claims.on_transaction``)."""
        self._claim.observe(duration_s)
        self._claim_batch.inc()

    def request(self, method: str, duration_s: float, ok: bool) -> None:
        """An etcd request (:class:`peerd.coord.etcd.EtcdObserver`)."""
        self._etcd.labels(method).observe(duration_s)
        if not ok:
            self._etcd_failed.labels(method).inc()

    def watch_restarted(self, watch: str, reason: str) -> None:
        """A watch re-listed (:class:`peerd.coord.etcd.EtcdObserver`)."""
        self._watch.labels(watch, reason).inc()

    def verdict(self, dead: bool, suspicion_s: float) -> None:
        """A verdict of this node's probes (:meth:`peerd.peer.detection.PeerLayer.on_verdict`)."""
        if dead:
            self._dead.inc()
            self._detection.observe(suspicion_s)
        else:
            self._alive.inc()


class _PerTask:
    """Per-task series (opt-in): ``peerd_task_runs_total{task_id,status}`` and the task's last
    lateness and finish time. Series of deleted tasks stay until the node restarts."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.runs = Counter(
            "peerd_task_runs_total", "Runs of one task on this node by final status.",
            ["task_id", "status"], registry=r,
        )  # fmt: skip
        self.lateness = Gauge(
            "peerd_task_last_lateness_seconds", "Lateness of the task's last run on this node.",
            ["task_id"], registry=r,
        )  # fmt: skip
        self.finished = Gauge(
            "peerd_task_last_run_timestamp_seconds",
            "When the task's last run on this node finished (Unix time).", ["task_id"],
            registry=r,
        )  # fmt: skip

    def observe(self, rec: pb.RunRecord) -> None:
        self.runs.labels(rec.task_id, status_label(rec.status)).inc()
        self.lateness.labels(rec.task_id).set(rec.lateness.seconds + rec.lateness.nanos / 1e9)
        end = rec.finished_at
        self.finished.labels(rec.task_id).set(end.seconds + end.nanos / 1e9)


class _Snapshot(Collector):
    """Everything read at scrape time from :class:`MetricSources`."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        s = self.sources
        stats = s.engine()
        fires = {kind: stats.started.get(kind, 0) for kind in KINDS} | dict(stats.started)
        yield _counter("peerd_fires_total", "Runs this node started.", "executor", fires)
        yield _one(CounterMetricFamily, "peerd_claims_total", "Slots claimed.", stats.claimed)
        yield _one(
            CounterMetricFamily,
            "peerd_claim_races_lost_total",
            "Claims of slots another node had claimed first.",
            stats.lost_races,
        )
        skipped = {name: stats.skipped.get(value, 0) for value, name in SKIP_REASONS.items()}
        yield _counter("peerd_slots_skipped_total", "Slots recorded SKIPPED.", "reason", skipped)
        yield from _engine_gauges(stats)
        yield _one(
            CounterMetricFamily,
            "peerd_ring_changes_total",
            "Changes of the set of owning members.",
            stats.ring_changes,
        )
        handoffs = {
            "acked": stats.handed_off,
            "timed_out": stats.handoff_timeouts,
            "accepted": stats.handoffs_accepted,
        }
        yield _counter("peerd_handoffs_total", "Tasks handed over, by result.", "result", handoffs)
        yield _one(
            GaugeMetricFamily,
            "peerd_supervised_loops_degraded",
            "Supervised loops crashed and not yet healthy again.",
            s.degraded_loops(),
        )
        yield _one(GaugeMetricFamily, "peerd_ready", "1 while /readyz answers 200.", s.ready())
        yield _one(GaugeMetricFamily, "peerd_members", "Members in this node's view.", s.members())
        yield from _etcd(s)


def _engine_gauges(stats: EngineStats) -> Iterator[Metric]:
    yield _one(GaugeMetricFamily, "peerd_owned_tasks", "Tasks this node owns.", stats.owned)
    yield _one(
        GaugeMetricFamily,
        "peerd_backlog_tasks",
        "Due tasks waiting for room, unclaimed (> 0: saturated).",
        stats.backlog,
    )
    yield _one(
        GaugeMetricFamily, "peerd_saturated", "1 while the backlog is not empty.", stats.backlog > 0
    )
    yield _one(GaugeMetricFamily, "peerd_runs_active", "Runs in the node now.", stats.active)
    yield _one(
        GaugeMetricFamily, "peerd_runs_capacity", "Runs the node admits now.", stats.capacity
    )
    pools = stats.pools
    limit = {n: p.limit for n, p in pools.items()}
    in_use = {n: p.in_use for n, p in pools.items()}
    waiting = {n: p.waiting for n, p in pools.items()}
    yield _gauge("peerd_pool_limit", "Concurrency limit of a pool.", "pool", limit)
    yield _gauge("peerd_pool_in_use", "Slots of a pool held by running attempts.", "pool", in_use)
    yield _gauge("peerd_pool_waiting", "Attempts queued for a pool slot.", "pool", waiting)


def _etcd(s: MetricSources) -> Iterator[Metric]:
    yield _one(
        GaugeMetricFamily,
        "peerd_etcd_compaction_leader",
        "1 on the node that compacts etcd (and reports its size and alarms).",
        s.leader(),
    )
    view = s.etcd()
    if view is None:
        return
    yield _one(
        GaugeMetricFamily,
        "peerd_etcd_db_size_bytes",
        "etcd's database file as its quota counts it.",
        view.db_size_bytes,
    )
    yield _one(
        GaugeMetricFamily,
        "peerd_etcd_db_size_in_use_bytes",
        "etcd's database without free pages.",
        view.db_size_in_use_bytes,
    )
    alarms = {kind: view.alarms.count(kind) for kind in ("NOSPACE", "CORRUPT")}
    yield _gauge("peerd_etcd_alarms", "Active etcd alarms by kind.", "alarm", alarms)


def _one(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str, value: float
) -> Metric:
    return family(name, doc, value=float(value))


def _counter(name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
    return _labelled(CounterMetricFamily(name, doc, labels=[label]), values)


def _gauge(name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
    return _labelled(GaugeMetricFamily(name, doc, labels=[label]), values)


def _labelled(metric: CounterMetricFamily | GaugeMetricFamily, values: Mapping[str, int]) -> Metric:
    for key, value in sorted(values.items()):
        metric.add_metric([key], value)
    return metric
