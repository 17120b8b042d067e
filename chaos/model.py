"""The data of a chaos run as the checks see it: deliveries, ledger records, fault events, and
the report (all plain dataclasses; nothing here does I/O)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One webhook request the sink recorded, decoded.

    Attributes:
        task_id: from the ``Idempotency-Key``.
        slot_ms: the scheduled slot, epoch milliseconds (from the key).
        received_at_s: epoch seconds when the sink read the request.
        node_id: the sending node (body ``node_id``; "" if absent).
        attempt: body ``attempt`` (1 if absent).
        fencing_token: body ``fencing_token``, else the ``Peerd-Fencing-Token`` header, else 0.
    """

    task_id: str
    slot_ms: int
    received_at_s: float
    node_id: str
    attempt: int
    fencing_token: int

    @property
    def key(self) -> str:
        """The idempotency key ``<task_id>/<slot_ms>``."""
        return f"{self.task_id}/{self.slot_ms}"


@dataclass(frozen=True)
class LedgerRecord:
    """One run record read back with ListRuns.

    Attributes:
        task_id: the task.
        slot_ms: the scheduled slot, epoch milliseconds.
        node_id: the claimant.
        attempt: the claim's attempt number.
        fencing_token: the claim's etcd revision.
        status: the RunStatus name, e.g. ``"SUCCEEDED"``, ``"SKIPPED"``.
        lateness_s: start minus slot, seconds; ``None`` when the run never started.
        manual: started by TriggerTask rather than by the schedule.
    """

    task_id: str
    slot_ms: int
    node_id: str
    attempt: int
    fencing_token: int
    status: str
    lateness_s: float | None = None
    manual: bool = False


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault, as the injector logged it.

    Attributes:
        kind: ``kill9``, ``sigstop``, ``rolling_restart``, ``etcd_restart``, ``etcd_leader_kill``,
            ``partition_node_etcd``, ``partition_node_node``, or ``node_crash`` (a node found dead
            that nobody killed).
        target: the victim (a node id, or ``etcd``/``etcd[i]``).
        at_s: epoch seconds when the fault was injected.
        healed_at_s: epoch seconds when it was undone (restart, SIGCONT, route removed), if it was.
        members: node ids live at fault time (the victim included), for ownership.
        ok: False when something went wrong that the run must report (e.g. a SIGTERMed node
            exiting non-zero, a restart that failed).
        note: free text (exit code, leader index, ...).
    """

    kind: str
    target: str
    at_s: float
    healed_at_s: float | None = None
    members: tuple[str, ...] = ()
    ok: bool = True
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        out = asdict(self)
        out["members"] = list(self.members)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultEvent:
        """The inverse of :meth:`to_json`."""
        return cls(**{**data, "members": tuple(data.get("members", ()))})


@dataclass(frozen=True)
class CheckParams:
    """Thresholds of the checks.

    Attributes:
        interval_ms: the tasks' schedule period (every task fires every ``interval_ms``).
        lost_window_s: a task with no delivery in this many seconds before the end is lost.
        early_tolerance_s: a delivery this much before its slot is an early fire.
        max_failover_p99_s: overall failover p99 above this is a violation; ``None`` = no limit.
        stuck_grace_s: runs of slots this close to the end of the workload are not counted as
            stuck (pausing every task races with the last claims).
        fail_on_stuck_runs: stuck runs are a violation (else they are only reported).
    """

    interval_ms: int = 1000
    lost_window_s: float = 15.0
    early_tolerance_s: float = 0.05
    max_failover_p99_s: float | None = None
    stuck_grace_s: float = 2.0
    fail_on_stuck_runs: bool = False


@dataclass
class Stats:
    """Summary of a sample: count, nearest-rank p50/p99, max (``None`` when empty; ``inf``
    counts as a value, e.g. a task that never failed over)."""

    n: int = 0
    p50: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        """The stats of ``values``."""
        if not values:
            return cls()
        return cls(len(values), percentile(values, 0.5), percentile(values, 0.99), max(values))


@dataclass
class FailoverStats:
    """Failover times of one fault kind (or of all kill-type faults together)."""

    faults: int = 0
    tasks: int = 0
    not_observed: int = 0
    seconds: Stats = field(default_factory=Stats)
    retried_lateness_s: Stats = field(default_factory=Stats)
    """Lateness (ledger) of the victim's slots, due from one second before the fault on, that
    another node ran as a retry (attempt > 1): slots the victim had claimed (claim-ahead, or in
    flight) when the fault came. :attr:`seconds` does not show them: it counts the first
    delivery by another node of any slot of the task."""


@dataclass
class Report:
    """Everything :func:`evaluate` found; :attr:`violations` lists what makes the run fail."""

    tasks: int = 0
    deliveries: int = 0
    ledger_records: int = 0
    faults: int = 0
    lost_tasks: list[str] = field(default_factory=list)
    lost_reasons: dict[str, str] = field(default_factory=dict)
    duplicate_claims: int = 0
    duplicate_claim_examples: list[str] = field(default_factory=list)
    duplicate_keys: int = 0
    fenced_retries: int = 0
    real_duplicates: int = 0
    stale_after_retry: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    early_fires: int = 0
    early_examples: list[str] = field(default_factory=list)
    missed_slots: int = 0
    tasks_with_gaps: int = 0
    gap_examples: list[str] = field(default_factory=list)
    failover: dict[str, FailoverStats] = field(default_factory=dict)
    failover_overall: FailoverStats = field(default_factory=FailoverStats)
    lateness_s: Stats = field(default_factory=Stats)
    delivery_lag_s: Stats = field(default_factory=Stats)
    ledger_status: dict[str, int] = field(default_factory=dict)
    runs_without_delivery: dict[str, int] = field(default_factory=dict)
    stuck_runs: int = 0
    stuck_examples: list[str] = field(default_factory=list)
    deliveries_without_run: int = 0
    fault_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no violation."""
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``inf`` becomes the string ``"inf"``)."""
        data = asdict(self)
        data["ok"] = self.ok
        return _finite(data)


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q``-quantile (0 < q <= 1) of a non-empty sample."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sample")
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def parse_delivery(
    received_at_s: float, idempotency_key: str | None, header_token: int | None, body: str
) -> Delivery | None:
    """Decode one sink delivery; ``None`` when it has no usable ``Idempotency-Key``."""
    if not idempotency_key or "/" not in idempotency_key:
        return None
    task_id, _, slot = idempotency_key.rpartition("/")
    if not slot.isdigit():
        return None
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    token = doc.get("fencing_token", header_token)
    return Delivery(
        task_id=task_id,
        slot_ms=int(slot),
        received_at_s=received_at_s,
        node_id=str(doc.get("node_id", "")),
        attempt=int(doc.get("attempt", 1) or 1),
        fencing_token=int(token or 0),
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _finite(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_finite(x) for x in value]
    return value
