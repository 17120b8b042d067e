"""The pure work of one fire, per stage, without etcd, gRPC or an event loop (µs per fire).

1,000 tasks ``every 1s`` with 999 ms of jitter are planned by a real
:class:`peerd.engine.planner.Planner` in ticks of 75 ms (the fire loop's claim-ahead tick), each
planned slot becomes a claim record, the claims a nested transaction
(:meth:`peerd.coord.ledger.Ledger` builds it; nothing is sent), the record goes through the
execution's changes (RUNNING, SUCCEEDED, copies for the writer) and into a record-update
transaction, and the planner commits. Stages:

* ``plan``: collect the due tasks and plan them (:func:`peerd.core.plan.plan_due`);
* ``claims``: decode the spec (:meth:`Owned.decode_spec`) and build the claim records
  (:func:`peerd.core.records.claim_record`);
* ``ops``: build the claim transaction (serializing each record);
* ``exec``: the record changes of one run (lateness, start, finish, two copies);
* ``update``: build the record-update transaction (serializing each final record);
* ``commit``: move the cursors (:meth:`Planner.commit`).

    .venv/bin/python bench/fire_micro.py [--seconds 3] [--tasks 1000]

A short CPU-bound run: take the machine's benchmark lock (``flock /tmp/peerd-heavy.lock``) when
the figures matter. The ``--peerd-src`` of the other benchmarks is ``PYTHONPATH`` here.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from peerd.coord.etcd_messages import TxnBuilder
from peerd.coord.keys import Keys
from peerd.coord.ledger import Ledger
from peerd.core.ratelimit import TokenBucket
from peerd.core.records import claim_record, copy, run_key, set_duration, set_time, time_of
from peerd.core.tzrules import TimeZoneRules
from peerd.engine.planner import Planner
from peerd.v1 import scheduler_pb2 as pb

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TICK = timedelta(milliseconds=75)
STAGES = ("plan", "claims", "ops", "exec", "update", "commit")


def spec(i: int) -> pb.TaskSpec:
    """Task ``i``: ``peerd.noop`` every second, 999 ms of jitter (as bench/throughput.py)."""
    s = pb.TaskSpec(id=f"noop-{i:05d}")
    s.schedule.every.FromSeconds(1)
    s.schedule.jitter.FromMilliseconds(999)
    s.created_at.FromDatetime(T0)
    s.python.name = "peerd.noop"
    return s


def run(seconds: float, tasks: int) -> tuple[int, dict[str, float]]:
    """Simulate ``seconds`` of schedule; returns (fires, seconds of CPU per stage)."""
    planner = Planner(
        "node1",
        timedelta(seconds=5),
        rules=TimeZoneRules.load("package"),
        claim_ahead=timedelta(milliseconds=300),
    )
    for i in range(tasks):
        planner.acquire(spec(i), cursor=T0)
    keys = Keys("/peerd/bench/")
    ledger = Ledger(None, keys)  # type: ignore[arg-type]  # builds transactions, sends none
    bucket = TokenBucket(1e9, 1e9, 0.0)
    spent = dict.fromkeys(STAGES, 0.0)
    fires = 0
    now, end = T0 + timedelta(seconds=1), T0 + timedelta(seconds=1 + seconds)
    while now < end:
        t0 = time.process_time()
        planner.collect_due(now)
        plans = planner.plan(now, {"python": 10**6}, bucket, 0.0, 100)
        t1 = time.process_time()
        records = []
        for tp in plans:
            o = tp.owned
            o.decode_spec()  # the fire loop decodes the spec once per planned task, for the runs
            for i, slot in enumerate(tp.plan.fire):
                fire_at = tp.plan.fire_instants[i] if tp.plan.fire_instants else o.fire_at(slot)
                records.append(claim_record(o.id, slot, "node1", 7, now, fire_at=fire_at))
                tp.settled.add(run_key(records[-1])[1])
        t2 = time.process_time()
        claim = TxnBuilder()
        claim.compare_lease(keys.member("node1"), 7)
        for r in records:
            ledger._add_claim(claim.nested(), r, None, 7, None)
        t3 = time.process_time()
        finals = [_execute(r, now) for r in records]
        t4 = time.process_time()
        update = TxnBuilder()
        for r in finals:
            ledger._add_fenced_put(update.nested(), keys.run(*run_key(r)), r)
        t5 = time.process_time()
        for tp in plans:
            planner.commit(tp, now, lambda: 0.0)
        t6 = time.process_time()
        stages = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)
        for stage, took in zip(STAGES, stages, strict=True):
            spent[stage] += took
        fires += len(records)
        now += TICK
    return fires, spent


def _execute(rec: pb.RunRecord, now: datetime) -> pb.RunRecord:
    """The record changes of one successful run (:mod:`peerd.engine.execution`)."""
    rec.fencing_token = 5
    started = now + timedelta(milliseconds=1)
    set_duration(rec.lateness, started - time_of(rec.fire_at))
    rec.status = pb.RUNNING
    set_time(rec.started_at, started)
    copy(rec)  # the writer's progress copy
    rec.status = pb.SUCCEEDED
    set_time(rec.finished_at, started)
    return copy(rec)  # the writer's final copy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of schedule simulated")
    p.add_argument("--tasks", type=int, default=1000)
    args = p.parse_args()
    fires, spent = run(args.seconds, args.tasks)
    per = {k: v / fires * 1e6 for k, v in spent.items()}
    print(f"{fires} fires; CPU µs per fire: " + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
    print(f"total {sum(per.values()):.1f} µs per fire")


if __name__ == "__main__":
    main()
