"""etcd stays bounded under real ``peerd serve`` nodes: compaction, the NOSPACE alarm, recovery.

Each test runs its own etcd with a small ``--quota-backend-bytes`` (it overrides the session
etcd of conftest, so filling it up cannot disturb other tests).

* Compaction: one node holds ``<prefix>compactor`` and is the only one compacting; etcd's
  compacted revision advances; the key moves to another node when its holder dies or drains.
* NOSPACE with peerd's compaction off (the operator's job): writes answer RESOURCE_EXHAUSTED with
  the cause and the fix, the CLI exits 8, ``peerd cluster`` shows the alarm, reads keep working,
  no slot is claimed while the alarm is on, and claims resume once the operator cleared it.
* NOSPACE with compaction on: the compactor compacts, defragments and disarms by itself.
* SIGHUP with a new ``etcd_compaction_interval``: 0 gives the compactor key up, a new value
  takes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from peerd.client import SchedulerClient
from peerd.coord.etcd import Compacted, Etcd, prefix_end
from peerd.coord.etcd_messages import op_delete, txn_request
from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.devtools.sink import WebhookSink
from peerd.errors import ResourceExhausted
from peerd.exitcodes import EXIT_NO_SPACE
from peerd.v1 import scheduler_pb2 as pb
from tests.conftest import NodesFactory, running_etcd
from tests.helpers import PeerdNode, assert_eventually, cli
from tests.integration.test_reload import hup

T = TypeVar("T")
QUOTA_BYTES = 8 * 1024 * 1024
FILLER = b"/filler/"
FAST_COMPACTION = ["--etcd-compaction-interval", "1s", "--etcd-compaction-retention", "1s"]


@pytest.fixture
def space_etcd(tmp_path: Path) -> Iterator[EmbeddedEtcd]:
    """A fresh etcd of this test only, with a :data:`QUOTA_BYTES` quota."""
    with running_etcd(tmp_path / "etcd", quota_backend_bytes=QUOTA_BYTES) as server:
        yield server


@pytest.fixture
def etcd_endpoint(space_etcd: EmbeddedEtcd) -> str:
    """Overrides conftest's: the ``nodes`` factory starts nodes on this test's etcd."""
    return space_etcd.endpoint


def etcd_call(endpoint: str, fn: Callable[[Etcd], Awaitable[T]]) -> T:
    """Run ``await fn(etcd)`` with a fresh client on ``endpoint``."""

    async def main() -> T:
        etcd = Etcd([endpoint])
        await etcd.connect()
        try:
            return await fn(etcd)
        finally:
            await etcd.close()

    return asyncio.run(main())


def compacted_revision(endpoint: str) -> int:
    """etcd's compacted revision (0 = never compacted): a watch from revision 1 is refused
    with it."""

    async def probe(etcd: Etcd) -> int:
        try:
            events = cast(AsyncGenerator[Any, None], etcd.watch_prefix(b"/", 1))
            async with contextlib.aclosing(events):
                async for _ in events:
                    return 0
        except Compacted as exc:
            return exc.compact_revision
        raise AssertionError("watch ended without an event")

    return etcd_call(endpoint, probe)


def holder(endpoint: str, cluster: str) -> str | None:
    """The node id in the cluster's compactor key, or None."""

    async def get(etcd: Etcd) -> str | None:
        kv = await etcd.get(f"/peerd/{cluster}/compactor".encode())
        return kv.value.decode() if kv is not None else None

    return etcd_call(endpoint, get)


def fill_until_nospace(endpoint: str, history_only: bool = False) -> int:
    """Put 64 KiB values under :data:`FILLER` until etcd refuses with NOSPACE; returns how many
    went in. With ``history_only`` each value is deleted once the next one is in, so the file
    fills with history alone: whenever a compactor acts on the alarm, compacting frees it."""

    async def fill(etcd: Etcd) -> int:
        value = os.urandom(64 * 1024)
        for i in range(10 * QUOTA_BYTES // len(value)):
            try:
                await etcd.put(FILLER + b"%06d" % i, value)
            except ResourceExhausted:
                return i
            if history_only and i:
                await etcd.txn(txn_request([], [op_delete(FILLER + b"%06d" % (i - 1))]))
        raise AssertionError("etcd never refused a write")

    return etcd_call(endpoint, fill)


async def delete_filler(etcd: Etcd) -> Any:
    """Delete the filler (allowed under NOSPACE: a delete costs no quota)."""
    return await etcd.txn(txn_request([], [op_delete(FILLER, prefix_end(FILLER))]))


def every_second(task_id: str, url: str) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=url))
    spec.schedule.every.FromSeconds(1)
    spec.timeout.FromSeconds(5)
    return spec


def logged(node: PeerdNode, event: str) -> bool:
    return f'"{event}"' in node.log_text()


def delivered_after(sink: WebhookSink, after: float) -> bool:
    """True once the sink got a slot scheduled after ``after`` (epoch seconds)."""
    keys = [d.idempotency_key for d in sink.deliveries() if d.idempotency_key]
    return any(int(k.rsplit("/", 1)[1]) / 1000 > after for k in keys)


def test_one_node_compacts_and_the_key_moves_on(
    nodes: NodesFactory, sink: WebhookSink, space_etcd: EmbeddedEtcd, cluster_name: str
) -> None:
    ep = space_etcd.endpoint
    started = nodes(3, lease_ttl_s=2, extra_args=FAST_COMPACTION)
    with SchedulerClient(started[0].address) as client:
        client.create_task(every_second("tick", sink.url + "/tick"))
    first = assert_eventually(lambda: holder(ep, cluster_name), timeout=20)
    by_id = {n.node_id: n for n in started}
    assert first in by_id
    rev1 = assert_eventually(lambda: compacted_revision(ep), timeout=30)
    assert_eventually(lambda: compacted_revision(ep) > rev1, timeout=30)
    compacting = [n.node_id for n in started if logged(n, "etcd_compacted")]
    assert compacting == [first]
    assert holder(ep, cluster_name) == first
    shown = json.loads(cli(started[0], "-o", "json", "cluster").stdout)
    assert shown["etcd_compactor"] == first and int(shown["etcd_db_size_bytes"]) > 0

    # The holder dies: its lease expires with the key, another node takes over and compacts.
    by_id[first].kill()
    second = assert_eventually(
        lambda: (h := holder(ep, cluster_name)) not in (None, first) and h, timeout=30
    )
    before = compacted_revision(ep)
    assert_eventually(lambda: compacted_revision(ep) > before, timeout=30)
    assert_eventually(lambda: logged(by_id[second], "etcd_compacted"), timeout=30)

    # The new holder drains: it gives the key up, and the last node takes it.
    assert by_id[second].terminate(timeout_s=30) == 0
    assert logged(by_id[second], "etcd_compactor_released")
    (last,) = set(by_id) - {first, second}
    assert_eventually(lambda: holder(ep, cluster_name) == last, timeout=30)


def test_nospace_surfaces_pauses_claims_and_resumes_when_cleared(
    nodes: NodesFactory, sink: WebhookSink, space_etcd: EmbeddedEtcd
) -> None:
    ep = space_etcd.endpoint
    started = nodes(2, extra_args=["--etcd-compaction-interval", "0"])
    node = started[0]
    with SchedulerClient(node.address) as client:
        client.create_task(every_second("tick", sink.url + "/tick"))
    assert_eventually(lambda: delivered_after(sink, 0), timeout=20)

    assert fill_until_nospace(ep) > 0
    assert_eventually(lambda: all(logged(n, "claims_paused_etcd_nospace") for n in started))
    paused_at = time.time()

    new = ["task", "create", "new", "--every", "1m", "--http-post", sink.url]
    created = cli(node, *new)
    assert created.returncode == EXIT_NO_SPACE, created.stderr
    message = created.stderr.strip()
    assert len(message.splitlines()) == 1
    for part in ("NOSPACE", "--quota-backend-bytes", "docs/operations.md", "alarm disarm"):
        assert part in message, message
    assert cli(node, "task", "trigger", "tick").returncode == EXIT_NO_SPACE
    listed = cli(node, "task", "list")
    assert listed.returncode == 0 and "tick" in listed.stdout  # reads go on
    shown = cli(node, "cluster")
    assert shown.returncode == 0 and "ALARM NOSPACE" in shown.stdout, shown.stdout
    alarms = json.loads(cli(node, "-o", "json", "cluster").stdout)["etcd_alarms"]
    assert [a["alarm"] for a in alarms] == ["NOSPACE"]

    # Let slots fall due while the alarm is on (the check below is about them).
    assert_eventually(lambda: time.time() > paused_at + 3.5, timeout=10)
    cleared_at = time.time()

    async def operator_recovers(etcd: Etcd) -> None:
        await delete_filler(etcd)
        status = await etcd.status()
        assert await etcd.compact(status.revision)
        await etcd.defragment(ep)
        for alarm in await etcd.alarms():
            await etcd.disarm(alarm)

    etcd_call(ep, operator_recovers)
    assert_eventually(lambda: all(logged(n, "claims_resumed_etcd_space") for n in started))
    assert_eventually(lambda: delivered_after(sink, cleared_at + 1), timeout=20)

    with SchedulerClient(node.address) as client:
        runs = client.list_runs("tick", 100)
    during = [r for r in runs if paused_at + 1 <= r.scheduled_at.seconds < cleared_at]
    assert len(during) >= 2, [r.scheduled_at.ToJsonString() for r in runs]
    claimed_during = [
        r.scheduled_at.ToJsonString()
        for r in during
        if r.claimed_at.ToMilliseconds() / 1000 < cleared_at
    ]
    assert not claimed_during, f"slots claimed while the NOSPACE alarm was on: {claimed_during}"
    assert cli(node, *new).returncode == 0


def test_compactor_recovers_from_nospace_by_itself(
    nodes: NodesFactory, sink: WebhookSink, space_etcd: EmbeddedEtcd
) -> None:
    ep = space_etcd.endpoint
    started = nodes(2)
    with SchedulerClient(started[0].address) as client:
        client.create_task(every_second("tick", sink.url + "/tick"))
    assert_eventually(lambda: delivered_after(sink, 0), timeout=20)

    # History only (the filler deleted as it goes), the file full and the alarm on. Filling
    # first and deleting after raced the compactor: on a busy machine it could recover from the
    # alarm before the delete, while the filler was still live, and leave the file full.
    fill_until_nospace(ep, history_only=True)
    etcd_call(ep, delete_filler)  # the last value
    full = etcd_call(ep, lambda etcd: etcd.status())
    assert full.alarms and full.db_size >= QUOTA_BYTES * 0.9

    def recovered() -> bool:
        status = etcd_call(ep, lambda etcd: etcd.status())
        return not status.alarms and any(logged(n, "etcd_nospace_recovered") for n in started)

    assert_eventually(recovered, timeout=60)
    recovered_at = time.time()
    assert [n.node_id for n in started if logged(n, "etcd_nospace_recovered")] == [
        n.node_id for n in started if logged(n, "etcd_compactor_acquired")
    ]
    after = etcd_call(ep, lambda etcd: etcd.status())
    assert after.db_size < QUOTA_BYTES / 2, after
    assert_eventually(lambda: delivered_after(sink, recovered_at + 1), timeout=20)
    created = cli(started[1], "task", "create", "new", "--every", "1m", "--http-post", sink.url)
    assert created.returncode == 0, created.stderr


def test_sighup_turns_compaction_off_and_on(
    nodes: NodesFactory, space_etcd: EmbeddedEtcd, cluster_name: str, tmp_path: Path
) -> None:
    ep = space_etcd.endpoint
    config = tmp_path / "peerd.toml"
    config.write_text('etcd_compaction_interval = "1s"\netcd_compaction_retention = "1s"\n')
    (node,) = nodes(1, extra_args=["--config", str(config)])
    assert_eventually(lambda: holder(ep, cluster_name) == node.node_id, timeout=20)
    assert_eventually(lambda: logged(node, "etcd_compacted"), timeout=30)

    config.write_text('etcd_compaction_interval = "0"\netcd_compaction_retention = "1s"\n')
    hup(node)
    assert_eventually(lambda: logged(node, "etcd_compactor_released"), timeout=20)
    assert holder(ep, cluster_name) is None

    config.write_text('etcd_compaction_interval = "2s"\netcd_compaction_retention = "1s"\n')
    hup(node)
    assert_eventually(lambda: holder(ep, cluster_name) == node.node_id, timeout=20)
