"""The etcd side of a benchmark: every write under the cluster prefix; the run ledger as written.

A child process (``python bench/recorder.py --etcd HOST:PORT --prefix /peerd/bench/ --out FILE``)
watches the prefix from the revision after the one it prints (``ready <revision>`` on stdout)
and appends one tab-separated line per event to ``FILE`` (flushed every 0.5 s) until SIGTERM:

    <mod revision> <P|D> <key bytes> <value bytes> <key without the prefix>
        [for a put of runs/<task>/<slot>: status node fencing_token fire_ms started_ms
         lateness_ms attempt]

A watch sees every write exactly once, in revision order, so the file is the ledger as it was
written: each run's records from the claim to the final status, SKIPPED records, trims, and
every other key the nodes write (members, locks, tasks). Since all events of one transaction
share its revision, distinct revisions count write transactions. The benchmark reads the file
afterwards with :func:`load`: :func:`tally` gives writes, bytes and transactions between two
revisions (the revisions the benchmark read at the start and end of a window, so a recorder
that lags behind costs nothing), and :func:`latest_runs` the newest record of every run.

Bytes are key + value bytes per event (a delete: the key), the payload etcd appends to its
history; etcd's own per-revision overhead comes on top.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from peerd.coord.etcd import Etcd, prefix_end
from peerd.v1 import scheduler_pb2 as pb

FLUSH_S = 0.5
_NO_TIME = -1


@dataclass(frozen=True, slots=True)
class Write:
    """One watch event: ``rev`` its mod revision, ``put`` or a delete, ``kind`` the first key
    segment after the prefix (``runs``, ``members``, ``tasks``, ``active``, ...), and its key and
    value sizes in bytes."""

    rev: int
    put: bool
    kind: str
    key_bytes: int
    value_bytes: int


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run record as written (a put under ``runs/``). Times are epoch milliseconds, -1 when
    unset; ``lateness_ms`` is -1 for a run that has not started."""

    rev: int
    task: str
    slot_ms: int
    status: int
    node: str
    token: int
    fire_ms: int
    started_ms: int
    lateness_ms: int
    attempt: int


@dataclass
class WriteTally:
    """Writes between two revisions: events, puts, deletes, key + value bytes, transactions
    (distinct revisions), and events and bytes by key kind and event type (``"runs put"``)."""

    events: int = 0
    puts: int = 0
    deletes: int = 0
    bytes: int = 0
    txns: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    bytes_by_kind: Counter[str] = field(default_factory=Counter)


def _ms(ts: object) -> int:
    seconds, nanos = getattr(ts, "seconds", 0), getattr(ts, "nanos", 0)
    return seconds * 1000 + nanos // 1_000_000 if seconds or nanos else _NO_TIME


def event_line(rev: int, put: bool, rel_key: str, key_len: int, value: bytes) -> str:
    """The file's line for one event (see the module docstring), with a newline."""
    cols = [str(rev), "P" if put else "D", str(key_len), str(len(value)), rel_key]
    if put and rel_key.startswith("runs/"):
        rec = pb.RunRecord.FromString(value)
        lateness = rec.lateness.ToMilliseconds() if rec.HasField("lateness") else _NO_TIME
        cols += [
            str(rec.status),
            rec.node_id,
            str(rec.fencing_token),
            str(_ms(rec.fire_at)),
            str(_ms(rec.started_at)),
            str(lateness),
            str(rec.attempt),
        ]
    return "\t".join(cols) + "\n"


async def current_revision(endpoint: str) -> int:
    """etcd's store revision now."""
    etcd = Etcd([endpoint])
    await etcd.connect()
    try:
        _, _, revision = await etcd.range(b"\0", count_only=True)
        return revision
    finally:
        await etcd.close()


async def record(endpoint: str, prefix: str, out: Path, stop: asyncio.Event) -> None:
    """Watch ``prefix`` and append every event to ``out`` until ``stop`` is set."""
    etcd = Etcd([endpoint])
    await etcd.connect()
    _, _, revision = await etcd.range(b"\0", count_only=True)
    print(f"ready {revision}", flush=True)
    raw = prefix.encode()
    with out.open("a", buffering=1 << 20) as f:

        async def flusher() -> None:
            while True:
                await asyncio.sleep(FLUSH_S)
                f.flush()

        async def watch() -> None:
            async for ev in etcd.watch_prefix(raw, revision + 1):
                rel = ev.kv.key[len(raw) :].decode(errors="replace")
                f.write(event_line(ev.revision, ev.kind == "put", rel, len(ev.kv.key), ev.kv.value))

        tasks = [asyncio.create_task(flusher()), asyncio.create_task(watch())]
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                print(f"recorder: {t.exception()!r}", file=sys.stderr, flush=True)
        f.flush()
    with contextlib.suppress(Exception):
        await etcd.close()


def load(path: Path) -> tuple[list[Write], list[RunRow]]:
    """Every event in the recorder's file, and the run records among them, in revision order."""
    writes: list[Write] = []
    runs: list[RunRow] = []
    with path.open() as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            if len(c) < 5:
                continue  # a line cut by the recorder's end
            rev, put, key = int(c[0]), c[1] == "P", c[4]
            writes.append(Write(rev, put, key.split("/", 1)[0], int(c[2]), int(c[3])))
            if put and len(c) == 12 and key.startswith("runs/"):
                task, slot = key[5:].rsplit("/", 1)
                runs.append(
                    RunRow(
                        rev,
                        task,
                        int(slot),
                        int(c[5]),
                        c[6],
                        int(c[7]),
                        int(c[8]),
                        int(c[9]),
                        int(c[10]),
                        int(c[11]),
                    )
                )
    return writes, runs


def tally(writes: list[Write], rev_from: int, rev_to: int) -> WriteTally:
    """The writes with ``rev_from < rev <= rev_to``."""
    t = WriteTally()
    revs: set[int] = set()
    for w in writes:
        if rev_from < w.rev <= rev_to:
            t.events += 1
            t.puts += w.put
            t.deletes += not w.put
            size = w.key_bytes + w.value_bytes
            t.bytes += size
            name = f"{w.kind} {'put' if w.put else 'delete'}"
            t.by_kind[name] += 1
            t.bytes_by_kind[name] += size
            revs.add(w.rev)
    t.txns = len(revs)
    return t


async def unfinished(endpoint: str, prefix: str, page: int = 1000) -> list[tuple[str, str, str]]:
    """Run records under ``prefix`` that are CLAIMED or RUNNING now, read from etcd page by page:
    ``(key without the prefix, status name, node id)``."""
    etcd = Etcd([endpoint], timeout_s=30)
    await etcd.connect()
    start, end = f"{prefix}runs/".encode(), prefix_end(f"{prefix}runs/".encode())
    out: list[tuple[str, str, str]] = []
    try:
        while True:
            kvs, _, _ = await etcd.range(start, end, limit=page)
            for kv in kvs:
                rec = pb.RunRecord.FromString(kv.value)
                if rec.status in (pb.CLAIMED, pb.RUNNING):
                    key = kv.key[len(prefix) :].decode()
                    out.append((key, pb.RunStatus.Name(rec.status), rec.node_id))
            if len(kvs) < page:
                return out
            start = kvs[-1].key + b"\0"
    finally:
        await etcd.close()


def latest_runs(runs: list[RunRow]) -> dict[tuple[str, int], RunRow]:
    """The newest record (highest revision) of every run, keyed by (task id, slot ms)."""
    out: dict[tuple[str, int], RunRow] = {}
    for r in runs:
        out[(r.task, r.slot_ms)] = r
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etcd", required=True, help="HOST:PORT")
    parser.add_argument("--prefix", required=True, help="e.g. /peerd/bench/")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await record(args.etcd, args.prefix, args.out, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
