"""What one dashboard page costs: ListTasks with ``include_status`` at N tasks.

Starts its own etcd (in a temp dir) and one node (``--nodes`` for more), creates ``--tasks``
tasks ``bench-list-NNNNN``: the first ``--active`` of them every second (so they have run
records), the rest paused. Then times pages of 50 over gRPC (``--rounds`` each, median and max ms):

- ``first``: the first page with statuses (active tasks, each with a newest run record);
- ``middle``: a page in the middle with statuses (paused tasks, no records);
- ``plain``: the first page without statuses (the cost of the status part is the difference);
- ``filter``: ``id_contains`` matching only the last task (the worst case of a server-side
  filter: every task is read and filtered, 1,000 per etcd range read).

    .venv/bin/python bench/list_tasks.py [--tasks 10000] [--rounds 20] [--nodes 1]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from peerd.client import SchedulerClient, open_channel
from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.devtools.process import PeerdProcess
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc


def _spec(i: int, active: int) -> pb.TaskSpec:
    return pb.TaskSpec(
        id=f"bench-list-{i:05d}",
        schedule=pb.Schedule(every=duration_pb2.Duration(seconds=1 if i < active else 3600)),
        python=pb.PythonTarget(name="peerd.echo"),
        paused=i >= active,
        labels={"bench": "list", "shard": str(i % 10)},
    )


def create(stub: pb_grpc.SchedulerStub, n: int, active: int) -> None:
    """Create the tasks, 100 per CreateTasks call."""
    for start in range(0, n, 100):
        specs = [_spec(i, active) for i in range(start, min(n, start + 100))]
        stub.CreateTasks(pb.CreateTasksRequest(tasks=specs), timeout=30)
    print(f"created {n} tasks ({active} active)")


def timed(stub: pb_grpc.SchedulerStub, request: pb.ListTasksRequest, rounds: int) -> str:
    """``median ms / max ms`` of ``rounds`` calls (and what the last answer held)."""
    ms = []
    resp = pb.ListTasksResponse()
    for _ in range(rounds):
        t0 = time.perf_counter()
        resp = stub.ListTasks(request, timeout=60)
        ms.append((time.perf_counter() - t0) * 1000)
    runs = sum(s.HasField("last_run") for s in resp.statuses)
    return (
        f"median {statistics.median(ms):7.1f} ms  max {max(ms):7.1f} ms  "
        f"({len(resp.tasks)} tasks, {runs} with a run record)"
    )


def measure(server: str, args: argparse.Namespace) -> None:
    channel: grpc.Channel = open_channel(server, None, None)
    stub = pb_grpc.SchedulerStub(channel)
    t0 = time.perf_counter()
    create(stub, args.tasks, args.active)
    print(f"created in {time.perf_counter() - t0:.1f} s")
    time.sleep(3)  # let the active tasks run a few times (a bench, not a test)
    middle = f"bench-list-{args.tasks // 2:05d}"
    cases = {
        "first": pb.ListTasksRequest(page_size=50, include_status=True),
        "middle": pb.ListTasksRequest(page_size=50, include_status=True, page_token=middle),
        "plain": pb.ListTasksRequest(page_size=50),
        "filter": pb.ListTasksRequest(
            page_size=50, include_status=True, id_contains=f"-{args.tasks - 1:05d}"
        ),
    }
    for name, request in cases.items():
        print(f"{name:7} {timed(stub, request, args.rounds)}")
    channel.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--active", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-list-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        etcd = EmbeddedEtcd(work / "etcd")
        etcd.start()
        stack.callback(etcd.stop)
        nodes = [
            PeerdProcess(f"n{i + 1}", etcd.endpoint, "bench", work, label="bench/list_tasks.py")
            for i in range(args.nodes)
        ]
        for node in nodes:
            stack.callback(node.kill)
            node.start()
        with SchedulerClient(nodes[0].address) as client:
            client.wait_ready(20)
        measure(nodes[0].address, args)


if __name__ == "__main__":
    main()
