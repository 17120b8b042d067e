"""Chaos profiles (``short`` for CI, ``long`` for soak runs) and the resolved run settings.

A profile fixes the cluster shape, the workload, one *round* of faults and how often the round is
repeated; :class:`RunConfig` is a profile with the command-line overrides applied. Fault
durations scale with the lease TTL (see :class:`FaultTimings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ALL_FAULTS: tuple[str, ...] = (
    "kill9",
    "sigstop",
    "rolling_restart",
    "etcd_restart",
    "etcd_leader_kill",
    "partition_node_etcd",
    "partition_node_node",
)
PARTITION_FAULTS: tuple[str, ...] = ("partition_node_etcd", "partition_node_node")
MULTI_ETCD_FAULTS: tuple[str, ...] = ("etcd_leader_kill",)


@dataclass(frozen=True)
class Profile:
    """One named chaos profile.

    Attributes:
        name: ``short`` or ``long``.
        nodes: peerd nodes.
        etcd_members: 1 or 3.
        tasks: HTTP tasks firing every second.
        lease_ttl_s: the nodes' ``--lease-ttl``.
        round_faults: the faults of one round, in order (``shuffle`` reorders them per round).
        shuffle: shuffle each round with the seeded RNG.
        min_rounds: rounds always run.
        max_rounds: rounds never exceeded.
        min_fault_phase_s: keep starting rounds (up to ``max_rounds``) until the fault phase has
            lasted this long.
        warmup_s: steady running after every task has fired once, before the first fault.
        final_quiet_s: fault-free running at the end (longer than the lost-task window).
        partitions: use network namespaces (and so allow partition faults).
        max_failover_p99_s: default failover p99 limit (``None`` = report only).
        fail_on_stuck_runs: runs left CLAIMED/RUNNING and never delivered fail the run (else
            they are reported as a warning).
        budget_s: no new fault starts once the run is this old (a safety net for slow machines).
    """

    name: str
    nodes: int
    etcd_members: int
    tasks: int
    lease_ttl_s: int
    round_faults: tuple[str, ...]
    shuffle: bool
    min_rounds: int
    max_rounds: int
    min_fault_phase_s: float
    warmup_s: float
    final_quiet_s: float
    partitions: bool
    max_failover_p99_s: float | None
    fail_on_stuck_runs: bool
    budget_s: float


PROFILES: dict[str, Profile] = {
    "short": Profile(
        name="short",
        nodes=3,
        etcd_members=1,
        tasks=50,
        lease_ttl_s=4,
        round_faults=("kill9", "sigstop", "rolling_restart", "etcd_restart"),
        shuffle=False,
        min_rounds=1,
        max_rounds=1,
        min_fault_phase_s=0.0,
        warmup_s=5.0,
        final_quiet_s=20.0,
        partitions=False,
        max_failover_p99_s=None,
        fail_on_stuck_runs=False,
        budget_s=140.0,
    ),
    "long": Profile(
        name="long",
        nodes=3,
        etcd_members=3,
        tasks=50,
        lease_ttl_s=10,
        round_faults=ALL_FAULTS,
        shuffle=True,
        min_rounds=2,
        max_rounds=8,
        min_fault_phase_s=560.0,
        warmup_s=15.0,
        final_quiet_s=30.0,
        partitions=True,
        max_failover_p99_s=2.0,
        fail_on_stuck_runs=True,
        budget_s=1800.0,
    ),
}


@dataclass(frozen=True)
class FaultTimings:
    """How long each fault lasts and how long the cluster settles afterwards (seconds)."""

    kill_down_s: float
    stop_s: float
    partition_s: float
    etcd_down_s: float
    leader_down_s: float
    settle_s: float
    rolling_settle_s: float
    terminate_timeout_s: float = 45.0

    @classmethod
    def for_ttl(cls, lease_ttl_s: int) -> FaultTimings:
        """Timings for a lease TTL: every outage outlasts the TTL, so the lease expires."""
        ttl = float(lease_ttl_s)
        return cls(
            kill_down_s=ttl + 3.0,
            stop_s=1.5 * ttl + 1.0,
            partition_s=1.5 * ttl + 2.0,
            etcd_down_s=3.0 if ttl <= 5 else 5.0,
            leader_down_s=ttl,
            settle_s=max(8.0, 2.0 * ttl),
            rolling_settle_s=max(2.0, ttl / 2),
        )


@dataclass(frozen=True)
class RunConfig:
    """A profile with the command-line overrides applied: everything one run needs."""

    profile: Profile
    nodes: int
    etcd_members: int
    tasks: int
    lease_ttl_s: int
    seed: int
    workdir: Path
    partitions: bool
    max_failover_p99_s: float | None
    runs_keep: int
    cluster: str = "chaos"
    timings: FaultTimings = field(default_factory=lambda: FaultTimings.for_ttl(4))

    def faults_enabled(self, netns: bool, etcd_members: int) -> tuple[str, ...]:
        """The fault kinds of the profile's round that can run: partitions need network
        namespaces (``netns``), the leader kill needs several etcd members. Pass what the run
        actually got, not what was asked for."""
        out = []
        for kind in self.profile.round_faults:
            if kind in PARTITION_FAULTS and not netns:
                continue
            if kind in MULTI_ETCD_FAULTS and etcd_members < 2:
                continue
            out.append(kind)
        return tuple(out)


def runs_keep_for(profile: Profile) -> int:
    """A ``--runs-keep`` that holds the whole run: at least 2000 slots, else the budget + 10%."""
    return max(2000, int(profile.budget_s * 1.1) + 120)
