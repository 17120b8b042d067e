"""What OpenTelemetry export costs a node per run (docs/observability.md, "Trace context").

Calls the node's three export listeners (``peerd.observe.otel.OtelExport``) as the engine does
for ``--runs`` runs claimed in transactions of ``--batch``: one claim span per transaction, one
execute span and one record span per run, exported by the real ``BatchSpanProcessor`` and OTLP
exporter to a real receiver (``peerd.devtools.sink`` in a child process, answering 200).

Prints the event loop's CPU per run (building the spans and queueing them: what the fire path
pays) and the process's CPU per run including the processor's thread (encoding and sending).
With export off no listener is registered, so the fire path pays nothing; there is no number
to measure for it.

    flock /tmp/peerd-heavy.lock python bench/otel_cost.py --runs 20000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from peerd.clock import SystemClock
from peerd.coord.ledger import ClaimResult
from peerd.devtools.etcd_server import free_port
from peerd.engine.claims import Claim
from peerd.engine.registry import Run
from peerd.v1 import scheduler_pb2 as pb

SINK = (
    "import sys, time; from peerd.devtools.sink import WebhookSink\n"
    "s = WebhookSink(port=int(sys.argv[1])); s.start(); print('ready', flush=True)\n"
    "time.sleep(3600)\n"
)


def record(i: int, start: datetime) -> pb.RunRecord:
    rec = pb.RunRecord(task_id=f"task-{i % 1000}", node_id="n1", attempt=1, fencing_token=i)
    rec.scheduled_at.FromDatetime(start + timedelta(seconds=i))
    rec.status = pb.SUCCEEDED
    rec.http_status = 200
    rec.started_at.FromDatetime(start + timedelta(seconds=i, milliseconds=2))
    rec.finished_at.FromDatetime(start + timedelta(seconds=i, milliseconds=30))
    rec.lateness.FromMilliseconds(2)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    n, batches = args.runs, len(range(0, args.runs, args.batch))
    os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", str(4 * args.runs))  # measure, not drop
    from peerd.observe.otel import OtelExport  # after the environment is set

    port = free_port("127.0.0.1")
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        export = OtelExport("n1", f"http://127.0.0.1:{port}", SystemClock(), os.environ)
        start = datetime(2026, 11, 30, tzinfo=UTC)
        runs = [
            Run(pb.TaskSpec(id=f"t{i}"), record(i, start), kind="http") for i in range(args.runs)
        ]
        cpu0, loop_cpu = time.process_time(), 0.0
        for b in range(0, args.runs, args.batch):
            part = runs[b : b + args.batch]
            claims = [Claim(r.spec, r.record, None) for r in part]
            results = [ClaimResult(r.key[0], r.key[1], True, 1) for r in part]
            t0 = time.thread_time()
            export.claim_transaction(0.004, claims, results)
            for run in part:
                export.run_finished(run)
                export.run_recorded(run, True)
            loop_cpu += time.thread_time() - t0
        export.provider.force_flush()
        total = time.process_time() - cpu0
        print(f"runs {n}, claim batch {args.batch}, spans {2 * n + batches}")
        print(f"event loop CPU per run: {loop_cpu / args.runs * 1e6:.1f} us")
        print(f"process CPU per run (with encoding and export): {total / args.runs * 1e6:.1f} us")
    finally:
        sink.terminate()
        sink.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
