"""One set of time-zone rules per cluster, on a real etcd and real nodes.

* The agreed version in etcd (``peerd.coord.tzdata``): chosen by the rule, sticky, pinned and
  unpinned, written only from a current member view; claims of zone-dependent slots fenced on
  it (``peerd.coord.ledger``).
* Two real ``peerd serve`` nodes with different tzdata (``--tzdata PATH``, databases written by
  the test, :mod:`tests.tzfiles`): a ``0 9 * * *`` America/Vancouver task whose owner is killed
  across its 09:00, and a rolling upgrade of the rules. Real time cannot be faked in a real
  process, so the test writes the zone files: "today" in America/Vancouver is chosen so that
  09:00 local falls a few seconds ahead, and the two releases place it 14 or 20 s apart (as 2025b
  and 2026f place it an hour apart in winter 2027).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from peerd.client import SchedulerClient
from peerd.clock import SystemClock
from peerd.coord.etcd import Etcd
from peerd.coord.keys import Keys
from peerd.coord.ledger import ClaimResult, Ledger
from peerd.coord.membership import Membership
from peerd.coord.tzdata import TzdataAgreement
from peerd.core.records import claim_record, rfc3339
from peerd.devtools.sink import WebhookSink
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import PeerdNode, assert_eventually, assert_eventually_async
from tests.tzfiles import write_database, write_zone

LEASE_TTL_S = 3
ZONE = "America/Vancouver"


async def never_alive(address: str) -> bool:
    return False


class Node:
    """One in-process member with its tzdata agreement (watch and rule loops running)."""

    def __init__(self, etcd: Etcd, keys: Keys, node_id: str, version: str) -> None:
        me = pb.Member(node_id=node_id, address="127.0.0.1:1", tzdata_version=version)
        clock = SystemClock()
        self.membership = Membership(etcd, keys, me, LEASE_TTL_S, never_alive, clock)
        self.tz = TzdataAgreement(etcd, keys, node_id, version, self.membership, clock)
        self.loops: list[asyncio.Task[None]] = []

    async def start(self) -> Node:
        await self.membership.register(first=True)
        self.loops = [
            asyncio.create_task(loop())
            for loop in (
                self.membership.keepalive_loop,
                self.membership.watch_loop,
                self.tz.watch_loop,
                self.tz.agree_loop,
            )
        ]
        return self

    async def stop(self) -> None:
        for t in self.loops:
            t.cancel()
        await asyncio.gather(*self.loops, return_exceptions=True)
        await self.membership.revoke()


def run(etcd_endpoint: str, cluster: str, body: Callable[[Etcd, Keys], Awaitable[None]]) -> None:
    async def main() -> None:
        etcd = Etcd([etcd_endpoint])
        await etcd.connect()
        try:
            async with asyncio.timeout(60):
                await body(etcd, Keys(f"/peerd/{cluster}/"))
        finally:
            await etcd.close()

    asyncio.run(main())


async def claim(ledger: Ledger, node: Node, slot_s: int, fence: int | None) -> ClaimResult:
    """Claim slot ``slot_s`` of a zone-dependent task for ``node``, computed with its rules."""
    m = node.membership
    slot = datetime.fromtimestamp(slot_s, UTC)
    rec = claim_record(
        "daily",
        slot,
        m.me.node_id,
        m.lease_id,
        slot,
        tzdata_version=node.tz.version,
        local_time="-",
    )
    (result,) = await ledger.claim(m.member_key, m.lease_id, [rec], None, fence)
    return result


def test_agreement_sticks_pins_and_fences_claims(etcd_endpoint: str, cluster_name: str) -> None:
    async def body(etcd: Etcd, keys: Keys) -> None:
        a = await Node(etcd, keys, "a", "2030a").start()
        await assert_eventually_async(lambda: a.tz.agreed == "2030a", timeout=10)
        b = await Node(etcd, keys, "b", "2030b").start()
        await assert_eventually_async(lambda: "b" in a.membership.view, timeout=10)
        await assert_eventually_async(lambda: b.tz.agreed == "2030a", timeout=10)
        assert not await a.tz.advance()  # sticky: a node still runs 2030a
        fence_a = a.tz.fence()
        assert fence_a and b.tz.fence() is None

        ledger = Ledger(etcd, keys)
        ok = await claim(ledger, a, 1, fence_a)
        assert ok.claimed and not ok.fenced
        refused = await claim(ledger, b, 2, b.tz.fence())
        assert refused.fenced and not refused.claimed  # no fence: not even sent
        assert await ledger.get("daily", 2000) is None

        with pytest.raises(InvalidArgument, match="no live member runs tzdata 2031a"):
            await b.tz.pin("2031a")
        assert await b.tz.pin("2030b") == "2030b"
        await assert_eventually_async(lambda: a.tz.agreed == "2030b" and a.tz.pinned, timeout=10)
        # A claim with the rules agreed before the pin is refused by etcd, whatever the view.
        stale = await claim(ledger, a, 3, fence_a)
        assert stale.fenced and not stale.claimed
        assert await ledger.get("daily", 3000) is None
        fence_b = b.tz.fence()
        assert fence_b and a.tz.fence() is None
        won = await claim(ledger, b, 3, fence_b)
        assert won.claimed and won.token

        assert await a.tz.unpin() == "2030b"
        await assert_eventually_async(lambda: not a.tz.pinned and not b.tz.pinned, timeout=10)
        assert b.tz.agreed == "2030b"  # sticky again: b runs it
        await b.stop()  # the last 2030b node leaves: the rule moves to what the live ones run
        await assert_eventually_async(lambda: a.tz.agreed == "2030a", timeout=10)
        await a.stop()

    run(etcd_endpoint, cluster_name, body)


# Slow: under CPU contention this in-process test (two members on one shared Etcd client and
# event loop) has twice stalled until its 60 s timeout, its members' keepalives included; not
# yet understood (the same rule is also covered by test_tzagree and the tests below).
@pytest.mark.slow
def test_the_rule_is_written_only_from_a_current_member_view(
    etcd_endpoint: str, cluster_name: str
) -> None:
    async def body(etcd: Etcd, keys: Keys) -> None:
        a = await Node(etcd, keys, "a", "2030a").start()
        await assert_eventually_async(lambda: a.tz.agreed == "2030a", timeout=10)
        stale_revision = a.membership.view_revision

        class Stale:
            """a's view from before b registered, with a already gone from it."""

            view: dict[str, pb.Member] = {}
            view_revision = stale_revision
            view_ready = a.membership.view_ready

            def on_change(self, fn: Callable[[], None]) -> None: ...

        Stale.view = {"c": pb.Member(node_id="c", tzdata_version="2030c")}
        b = await Node(etcd, keys, "b", "2030b").start()
        lagging = TzdataAgreement(etcd, keys, "lagging", "2030c", Stale(), SystemClock())
        lagging.agreed, lagging.revision = a.tz.agreed, a.tz.revision
        lagging.ready.set()
        assert not await lagging.advance()  # members/b is newer than its view: refused
        kv = await etcd.get(keys.tzdata_agreed)
        assert kv is not None and kv.value == b"2030a"
        await b.stop()
        await a.stop()

    run(etcd_endpoint, cluster_name, body)


# --- two real nodes ---------------------------------------------------------------------------

OFFSET_APART_S = 20
"""How far apart the two releases of the rolling upgrade place 09:00 local."""
KILL_APART_S = 14
"""How far apart the two releases place 09:00 local when the owner is killed (the new rules
later): the owner is killed about 1 s after the old 09:00 and its lease expires 3 s later, so n2
owns the task well before the new 09:00."""
LATER_S = 10
"""The second task fires at 09:00:10: n1 (killed about 1 s after its 09:00) never reaches it,
and by the new rules it falls well after the new 09:00."""


def rules_for(nine_am_s: int) -> int:
    """The UTC offset (s) that makes 09:00 local fall at the instant ``nine_am_s`` (epoch s):
    offset = 09:00 of the local day minus that instant, kept within (-24 h, 24 h)."""
    day_s = 86_400
    offset = (9 * 3600 - nine_am_s) % day_s
    return offset - day_s if offset > 12 * 3600 else offset


def deliveries(sink: WebhookSink, task_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(d.body)
        for d in sink.deliveries()
        if d.idempotency_key and d.idempotency_key.startswith(task_id + "/")
    ]


def records(client: SchedulerClient, task_id: str) -> list[pb.RunRecord]:
    return sorted(client.list_runs(task_id, 100), key=lambda r: r.scheduled_at.ToMilliseconds())


def http_task(task_id: str, cron: str, url: str) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=url, method="POST"))
    spec.schedule.cron = cron
    spec.schedule.time_zone = ZONE
    spec.timeout.FromSeconds(5)
    return spec


def test_owner_killed_across_9am_no_double_no_gap(
    nodes: Callable[..., list[PeerdNode]], sink: WebhookSink, tmp_path: Path
) -> None:
    """n1 runs release "2040a" (09:00 at T), n2 runs "2040b" (09:00 at T + 14 s). The cluster
    agrees on 2040a (n1 came first), so n1 owns the Vancouver tasks and fires the day's 09:00
    at T. n1 is killed right after; once its lease is gone the cluster agrees on 2040b and n2
    takes over from the ledger. The new rules put 09:00 at T + 14 s, after n1's slot: n2 must
    not run it again (the record's local time says 09:00 ran), yet it must run the next slot,
    09:00:10 by the new rules (a second task, ``10 0 9 * * *``), which n1 never reached."""
    old_db = write_database(tmp_path / "old", "2040a", {})
    new_db = write_database(tmp_path / "new", "2040b", {})
    (n1,) = nodes(1, lease_ttl_s=LEASE_TTL_S, extra_args=["--tzdata", str(old_db)])
    with SchedulerClient(n1.address) as client:
        assert_eventually(lambda: client.get_cluster().tzdata_version == "2040a", timeout=10)
    (n2,) = nodes(1, lease_ttl_s=LEASE_TTL_S, extra_args=["--tzdata", str(new_db)])
    # Zones are read when a task is compiled: write them now, 09:00 a few seconds ahead.
    t_old = int(time.time()) + 12  # time to create the tasks and see them owned first
    t_new = t_old + KILL_APART_S
    write_zone(old_db, ZONE, (rules_for(t_old), []))
    write_zone(new_db, ZONE, (rules_for(t_new), []))
    with SchedulerClient(n2.address) as client:
        view = client.get_cluster()
        assert (view.tzdata_version, view.tzdata_pinned) == ("2040a", False)
        assert {m.node_id: m.tzdata_version for m in view.members} == {
            "n1": "2040a",
            "n2": "2040b",
        }
        client.create_tasks(
            [
                http_task("daily", "0 9 * * *", f"{sink.url}/daily"),
                http_task("later", f"{LATER_S} 0 9 * * *", f"{sink.url}/later"),
            ]
        )

        def owners() -> None:
            owned = {m.node_id: m.owned_tasks for m in client.get_cluster().members}
            assert owned == {"n1": 2, "n2": 0}, f"only 2040a may own them: {owned}"

        assert_eventually(owners, timeout=10)
        preview = client.preview(task_id="daily", count=1)
        assert preview.tzdata_version == "2040b"  # n2 answered, with its own rules
        assert preview.slots[0].scheduled_at.ToSeconds() == t_new

        fired = assert_eventually(lambda: deliveries(sink, "daily"), timeout=30)
        assert [(d["node_id"], d["scheduled_at"]) for d in fired] == [("n1", at(t_old))]

        def recorded() -> None:
            assert [r.status for r in records(client, "daily")] == [pb.SUCCEEDED]

        # Killed once the run is recorded: a run cut short would be retried, by design.
        assert_eventually(recorded, timeout=10)
        n1.kill()

        assert_eventually(
            lambda: client.get_cluster().tzdata_version == "2040b", timeout=LEASE_TTL_S + 10
        )
        later = assert_eventually(lambda: deliveries(sink, "later"), timeout=60)
        assert [(d["node_id"], d["scheduled_at"]) for d in later] == [("n2", at(t_new + LATER_S))]
        assert time.time() > t_new + 5  # n2's 09:00 (T + 14 s) is well past ...
        assert [(d["node_id"], d["scheduled_at"]) for d in deliveries(sink, "daily")] == [
            ("n1", at(t_old))
        ]  # ... and was not run again

        daily = records(client, "daily")
        assert [(r.scheduled_at.ToSeconds(), r.node_id, r.tzdata_version) for r in daily] == [
            (t_old, "n1", "2040a")
        ]
        assert daily[0].local_time.startswith(_local_day(t_old) + "T09:00:00")
        (run_later,) = records(client, "later")
        assert (run_later.tzdata_version, run_later.local_time[11:19]) == (
            "2040b",
            f"09:00:{LATER_S:02d}",
        )
        audit = client.audit_task("daily")
        assert (audit.gap_count, list(audit.multi_claims)) == (0, [])
        nxt = client.preview(task_id="daily", count=1).slots[0].scheduled_at.ToSeconds()
        assert nxt == t_new + 86_400  # tomorrow, by the agreed rules


def _local_day(nine_am_s: int) -> str:
    offset = rules_for(nine_am_s)
    return (datetime.fromtimestamp(nine_am_s, UTC) + timedelta(seconds=offset)).date().isoformat()


def at(epoch_s: int) -> str:
    """A slot as the webhook body names it."""
    return rfc3339(datetime.fromtimestamp(epoch_s, UTC))


@pytest.mark.slow
def test_rolling_upgrade_of_the_rules_runs_the_day_once(
    nodes: Callable[..., list[PeerdNode]], sink: WebhookSink, tmp_path: Path
) -> None:
    """Both nodes run "2050a"; the rules are upgraded to "2050b" one node at a time (SIGTERM,
    restart with the new database). As 2026f does for Vancouver in winter, the new release
    places 09:00 earlier: at T, where the old one says T + 20 s. The last old node restarts
    between the two: the cluster switches to 2050b then, and the day's 09:00 runs once, late
    (its catch-up policy runs the missed slot), never again at T + 20 s by the old rules."""
    old_db = write_database(tmp_path / "old", "2050a", {})
    new_db = write_database(tmp_path / "new", "2050b", {})
    (n1,) = nodes(1, lease_ttl_s=LEASE_TTL_S, extra_args=["--tzdata", str(old_db)])
    (n2,) = nodes(1, lease_ttl_s=LEASE_TTL_S, extra_args=["--tzdata", str(old_db)])
    n2.terminate()  # upgrade n2 first
    n2.extra_args = ["--tzdata", str(new_db)]
    n2.start()
    with SchedulerClient(n2.address) as client:

        def mismatch() -> None:
            view = client.get_cluster()
            versions = {m.node_id: m.tzdata_version for m in view.members}
            assert (view.tzdata_version, versions) == ("2050a", {"n1": "2050a", "n2": "2050b"})

        assert_eventually(mismatch, timeout=10)
        t_new = int(time.time()) + 8
        t_old = t_new + OFFSET_APART_S
        write_zone(old_db, ZONE, (rules_for(t_old), []))
        write_zone(new_db, ZONE, (rules_for(t_new), []))
        client.create_task(http_task("daily", "0 9 * * *", f"{sink.url}/daily"))
        assert_eventually(lambda: time.time() > t_new + 2, timeout=30, interval=0.2)
        assert deliveries(sink, "daily") == []  # 2050b's 09:00 passed; 2050a's is ahead
        n1.terminate()  # the last 2050a node: the cluster switches as it drains
        assert_eventually(lambda: client.get_cluster().tzdata_version == "2050b", timeout=10)
        n1.extra_args = ["--tzdata", str(new_db)]
        n1.start()
        fired = assert_eventually(lambda: deliveries(sink, "daily"), timeout=20)
        assert [d["scheduled_at"] for d in fired] == [at(t_new)]
        assert_eventually(lambda: time.time() > t_old + 5, timeout=40, interval=0.2)
        assert [d["scheduled_at"] for d in deliveries(sink, "daily")] == [at(t_new)]
        (rec,) = records(client, "daily")
        assert (rec.scheduled_at.ToSeconds(), rec.tzdata_version) == (t_new, "2050b")
        view = client.get_cluster()
        assert {m.tzdata_version for m in view.members} == {"2050b"} == {view.tzdata_version}
