"""``python -m chaos``: run a chaos profile against a real peerd cluster.

    python -m chaos --profile short|long [--nodes 3] [--etcd-members 1|3] [--tasks 50]
                    [--lease-ttl S] [--seed N] [--workdir DIR] [--max-failover-p99 S]
                    [--partitions | --no-partitions]
    python -m chaos --measure-capacity [--profile long] [--ramp-start 50] [--ramp-step 25]
                    [--step-seconds 15] [--max-lag-p99-ms 500] [--nodes ...] [--workdir ...]

Exit code 0: every check passed; 1: a check failed; 2: the harness could not finish the run.
With ``--measure-capacity`` (the profile's cluster, no faults, a ramp of the task count; see
:mod:`chaos.capacity`; the profile defaults to ``long``): 0 a capacity was measured, 1 not even
the first step was sustained, 2 the harness could not finish.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

from chaos.capacity import RampParams, measure
from chaos.profiles import PROFILES, FaultTimings, RunConfig, runs_keep_for
from chaos.runner import default_workdir, run


def parse_args(argv: Sequence[str] | None = None) -> RunConfig:
    """The command line as a :class:`RunConfig` (profile defaults, then overrides)."""
    return _parse(argv)[0]


def _parse(argv: Sequence[str] | None) -> tuple[RunConfig, RampParams | None]:
    """The run settings, and the ramp's when ``--measure-capacity`` was given."""
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description="Chaos harness for a real peerd cluster."
    )
    parser.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--nodes", type=int, metavar="N")
    parser.add_argument("--etcd-members", type=int, choices=(1, 3))
    parser.add_argument("--tasks", type=int, metavar="N")
    parser.add_argument("--lease-ttl", type=int, metavar="S", help="node lease TTL, seconds")
    parser.add_argument("--seed", type=int, metavar="N", help="victim RNG seed (default: random)")
    parser.add_argument("--workdir", type=Path, metavar="DIR", help="default: a new temp dir")
    parser.add_argument(
        "--max-failover-p99",
        type=float,
        metavar="S",
        help="fail when the kill-type failover p99 exceeds S seconds "
        "(default: none for short, 2.0 for long; 0 = no limit)",
    )
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument(
        "--partitions",
        dest="partitions",
        action="store_true",
        default=None,
        help="run nodes in network namespaces and add the partition faults (root only)",
    )
    parts.add_argument("--no-partitions", dest="partitions", action="store_false")
    _add_ramp_args(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    default_profile = "long" if args.measure_capacity else "short"
    prof = PROFILES[args.profile or default_profile]
    nodes = args.nodes if args.nodes is not None else prof.nodes
    tasks = args.tasks if args.tasks is not None else prof.tasks
    ttl = args.lease_ttl if args.lease_ttl is not None else prof.lease_ttl_s
    if nodes < 2:
        parser.error("--nodes must be at least 2 (failover needs a survivor)")
    if tasks < 1:
        parser.error("--tasks must be at least 1")
    if ttl < 2:
        parser.error("--lease-ttl must be at least 2")
    partitions = args.partitions
    if partitions is None:
        partitions = prof.partitions
    max_p99 = (
        args.max_failover_p99 if args.max_failover_p99 is not None else prof.max_failover_p99_s
    )
    if max_p99 is not None and max_p99 <= 0:
        max_p99 = None
    round_faults = prof.round_faults
    if partitions:
        round_faults += tuple(
            k for k in ("partition_node_etcd", "partition_node_node") if k not in round_faults
        )
    prof = dataclasses.replace(prof, round_faults=round_faults)
    ramp = None
    if args.measure_capacity:
        try:
            ramp = RampParams(
                start=args.ramp_start,
                step=args.ramp_step,
                step_s=args.step_seconds,
                max_lag_p99_s=args.max_lag_p99_ms / 1000,
            )
        except ValueError as exc:
            parser.error(str(exc))
    cfg = RunConfig(
        profile=prof,
        nodes=nodes,
        etcd_members=args.etcd_members if args.etcd_members is not None else prof.etcd_members,
        tasks=tasks,
        lease_ttl_s=ttl,
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6),
        workdir=(args.workdir or default_workdir()).resolve(),
        partitions=partitions,
        max_failover_p99_s=max_p99,
        runs_keep=runs_keep_for(prof),
        timings=FaultTimings.for_ttl(ttl),
    )
    return cfg, ramp


def _add_ramp_args(parser: argparse.ArgumentParser) -> None:
    ramp = RampParams()
    group = parser.add_argument_group("capacity ramp (--measure-capacity)")
    group.add_argument(
        "--measure-capacity",
        action="store_true",
        help="no faults: ramp the task count on the profile's cluster and report the highest "
        "rate sustained (profile default: long)",
    )
    group.add_argument("--ramp-start", type=int, default=ramp.start, metavar="N")
    group.add_argument("--ramp-step", type=int, default=ramp.step, metavar="N")
    group.add_argument("--step-seconds", type=float, default=ramp.step_s, metavar="S")
    group.add_argument(
        "--max-lag-p99-ms",
        type=float,
        default=ramp.max_lag_p99_s * 1000,
        metavar="MS",
        help="delivery lag p99 bound of a sustained step",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    cfg, ramp = _parse(argv)
    return measure(cfg, ramp) if ramp is not None else run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
