"""The claim protocol and the run ledger on a real etcd."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from peerd.clock import SystemClock
from peerd.coord import trim
from peerd.coord.etcd import Etcd
from peerd.coord.keys import Keys
from peerd.coord.ledger import Ledger
from peerd.coord.membership import Membership
from peerd.errors import DuplicateNode, LeaseLost
from peerd.v1 import scheduler_pb2 as pb


def record(task_id: str, slot_ms: int, node: str = "a", status: int = pb.CLAIMED) -> pb.RunRecord:
    rec = pb.RunRecord(task_id=task_id, node_id=node, attempt=1, status=status)  # type: ignore[arg-type]
    rec.scheduled_at.FromMilliseconds(slot_ms)
    return rec


async def never_alive(address: str) -> bool:
    return False


async def always_alive(address: str) -> bool:
    return True


def run(etcd_endpoint: str, cluster: str, body: Callable[[Etcd, Keys], Awaitable[None]]) -> None:
    async def main() -> None:
        etcd = Etcd([etcd_endpoint])
        await etcd.connect()
        try:
            await body(etcd, Keys(f"/peerd/{cluster}/"))
        finally:
            await etcd.close()

    asyncio.run(main())


async def member(etcd: Etcd, keys: Keys, node_id: str, probe=never_alive) -> Membership:  # type: ignore[no-untyped-def]
    m = Membership(
        etcd, keys, pb.Member(node_id=node_id, address="127.0.0.1:1"), 3, probe, SystemClock()
    )
    await m.register(first=True)
    return m


def test_each_slot_is_claimed_once_across_members(etcd_endpoint: str, cluster_name: str) -> None:
    async def body(etcd: Etcd, keys: Keys) -> None:
        a, b = await member(etcd, keys, "a"), await member(etcd, keys, "b")
        ledger = Ledger(etcd, keys)
        slots = [record("t", 1000 * i) for i in range(1, 101)]
        first = await ledger.claim(a.member_key, a.lease_id, slots[:60])
        second = await ledger.claim(b.member_key, b.lease_id, slots[40:])
        assert all(r.claimed for r in first)
        assert [r.claimed for r in second] == [False] * 20 + [True] * 40
        assert first[0].token < second[-1].token  # fencing tokens grow
        stored = await ledger.get("t", 50_000)
        assert stored is not None and stored.node_id == "a"
        assert stored.fencing_token == first[0].token
        ((newest, _),) = await ledger.recent("t", 1)
        assert newest.scheduled_at.ToMilliseconds() == 100_000

    run(etcd_endpoint, cluster_name, body)


def test_claim_without_live_lease_writes_nothing(etcd_endpoint: str, cluster_name: str) -> None:
    async def body(etcd: Etcd, keys: Keys) -> None:
        a = await member(etcd, keys, "a")
        ledger = Ledger(etcd, keys)
        await etcd.lease_revoke(a.lease_id)
        with pytest.raises(LeaseLost):
            await ledger.claim(a.member_key, a.lease_id, [record("t", 5000)])
        assert await ledger.recent("t", 1) == []
        await a.register(first=False)  # a new lease: claims work again
        (res,) = await ledger.claim(a.member_key, a.lease_id, [record("t", 5000)])
        assert res.claimed

    run(etcd_endpoint, cluster_name, body)


def test_updates_coalesce_and_are_fenced(etcd_endpoint: str, cluster_name: str) -> None:
    async def body(etcd: Etcd, keys: Keys) -> None:
        a = await member(etcd, keys, "a")
        ledger = Ledger(etcd, keys)
        (res,) = await ledger.claim(a.member_key, a.lease_id, [record("t", 7000)])
        running = record("t", 7000, status=pb.RUNNING)
        running.fencing_token = res.token
        done = record("t", 7000, status=pb.SUCCEEDED)
        done.fencing_token = res.token
        stale = record("t", 7000, status=pb.FAILED)
        stale.fencing_token = res.token - 1  # an older claimant's token
        # RUNNING and SUCCEEDED of one run in one batch (the bug that wedged the writer)
        result = await ledger.update([running, done])
        assert result.written == [done] and result.rejected == []
        result = await ledger.update([stale])
        assert result.written == [] and result.rejected == [stale]
        stored = await ledger.get("t", 7000)
        assert stored is not None and stored.status == pb.SUCCEEDED

    run(etcd_endpoint, cluster_name, body)


def test_trim_and_paging(etcd_endpoint: str, cluster_name: str) -> None:
    async def body(etcd: Etcd, keys: Keys) -> None:
        a = await member(etcd, keys, "a")
        ledger = Ledger(etcd, keys)
        recs = [record("t", 1000 * i) for i in range(1, 31)]
        for rec in recs:
            rec.claim_lease_id = a.lease_id
        await ledger.claim(a.member_key, a.lease_id, recs)
        # Unfinished records are never trimmed, however old; finished ones are.
        assert await ledger.trim(["t"], 10) == 0
        for rec in recs:
            rec.status = pb.SUCCEEDED if rec.scheduled_at.ToMilliseconds() != 3000 else pb.RUNNING
        assert len((await ledger.update(recs)).written) == 30
        assert await ledger.trim(["t"], 10) == 19  # 1..20 s minus the RUNNING one at 3 s
        assert await ledger.trim(["t"], 10) == 0
        assert await ledger.get("t", 3000) is not None
        # By age: slots before the cutoff go, whatever the count.
        assert await ledger.trim(["t"], 100, before_ms=22_000) == 1  # 21 s (3 s is RUNNING)
        await ledger.trim(["t"], 10)
        page1, token = await ledger.list("t", 4, "")
        assert [r.scheduled_at.ToMilliseconds() for r in page1] == [30_000, 29_000, 28_000, 27_000]
        seen = [r.scheduled_at.ToMilliseconds() for r in page1]
        while token:
            page, token = await ledger.list("t", 4, token)
            seen += [r.scheduled_at.ToMilliseconds() for r in page]
        assert seen == [1000 * i for i in range(30, 21, -1)] + [3000]

    run(etcd_endpoint, cluster_name, body)


def test_trim_of_many_tasks_in_one_pass(etcd_endpoint: str, cluster_name: str) -> None:
    """One trim call covers more tasks than one counting transaction holds (64), each trimmed
    as it would be alone: by count, by age, unfinished records kept, untouched tasks left."""

    async def body(etcd: Etcd, keys: Keys) -> None:
        a = await member(etcd, keys, "a")
        ledger = Ledger(etcd, keys)
        tasks = [f"t{i:03d}" for i in range(70)]
        for i, task in enumerate(tasks):
            recs = [record(task, 1000 * s, status=pb.SUCCEEDED) for s in range(1, 1 + i % 7 + 3)]
            recs[0].status = pb.RUNNING if i % 5 == 0 else pb.SUCCEEDED
            for rec in recs:
                rec.claim_lease_id = a.lease_id
            await ledger.claim(a.member_key, a.lease_id, recs)
        # keep 4, and nothing of slots before 2 s: task i has i % 7 + 3 records (3..9)
        deleted = await ledger.trim(tasks, 4, before_ms=2000)
        expected = 0
        for i, task in enumerate(tasks):
            n = i % 7 + 3
            gone = set(range(1, n - 4 + 1)) | {1}  # beyond the newest 4, and the 1 s slot
            if i % 5 == 0:
                gone.discard(1)  # RUNNING: never trimmed
            expected += len(gone)
            left = sorted(r.scheduled_at.ToMilliseconds() // 1000 for r, _ in
                          await ledger.recent(task, 20))  # fmt: skip
            assert left == sorted(set(range(1, n + 1)) - gone), task
        assert deleted == expected
        assert await ledger.trim(tasks, 4, before_ms=2000) == 0

    run(etcd_endpoint, cluster_name, body)


def test_trim_with_a_large_keep_counts_fewer_tasks_per_read(
    etcd_endpoint: str, cluster_name: str
) -> None:
    """With ``runs_keep`` of 5,000 a counting read holds one task (it reads keep + 1 keys each,
    :data:`peerd.coord.trim.COUNT_KEYS_PER_READ`); every task is still trimmed by age."""

    async def body(etcd: Etcd, keys: Keys) -> None:
        a = await member(etcd, keys, "a")
        ledger = Ledger(etcd, keys)
        tasks = ["x1", "x2", "x3"]
        for task in tasks:
            recs = [record(task, 1000 * s, status=pb.SUCCEEDED) for s in (1, 2, 3)]
            for rec in recs:
                rec.claim_lease_id = a.lease_id
            await ledger.claim(a.member_key, a.lease_id, recs)
        assert trim.COUNT_KEYS_PER_READ // (5000 + 1) == 1
        assert await ledger.trim(tasks, 5000, before_ms=2500) == 6  # slots 1 s and 2 s
        for task in tasks:
            left = [r.scheduled_at.ToMilliseconds() for r, _ in await ledger.recent(task, 10)]
            assert left == [3000], task

    run(etcd_endpoint, cluster_name, body)


def test_duplicate_live_node_id_is_refused(etcd_endpoint: str, cluster_name: str) -> None:
    async def body(etcd: Etcd, keys: Keys) -> None:
        await member(etcd, keys, "a")
        with pytest.raises(DuplicateNode, match="already registered by a live node"):
            await member(etcd, keys, "a", probe=always_alive)

    run(etcd_endpoint, cluster_name, body)


def test_lease_fenced_updates_and_take_over(etcd_endpoint: str, cluster_name: str) -> None:
    async def body(etcd: Etcd, keys: Keys) -> None:
        a, b = await member(etcd, keys, "a"), await member(etcd, keys, "b")
        ledger = Ledger(etcd, keys)
        rec = record("t", 9000)
        rec.claim_lease_id = a.lease_id
        (res,) = await ledger.claim(a.member_key, a.lease_id, [rec])
        ((stored, mod),) = await ledger.recent("t", 5)
        new = record("t", 9000, node="b")
        new.attempt, new.claim_lease_id = 2, b.lease_id
        # a still holds its lease: nobody may take its run over
        assert await ledger.take_over(stored, mod, b.member_key, b.lease_id, new) is None
        await etcd.lease_revoke(a.lease_id)  # a dies
        running = record("t", 9000, status=pb.RUNNING)
        running.claim_lease_id = a.lease_id
        assert (await ledger.update([running])).rejected == [running]  # a can no longer write it
        token = await ledger.take_over(stored, mod, b.member_key, b.lease_id, new)
        assert token is not None and token > res.token
        # a second take-over of the same version fails (someone already did it)
        assert await ledger.take_over(stored, mod, b.member_key, b.lease_id, new) is None
        done = record("t", 9000, node="b", status=pb.SUCCEEDED)
        done.attempt, done.claim_lease_id, done.fencing_token = 2, b.lease_id, token
        assert (await ledger.update([done])).written == [done]
        final = await ledger.get("t", 9000)
        assert final is not None and final.attempt == 2 and final.fencing_token == token

    run(etcd_endpoint, cluster_name, body)


def test_a_claim_whose_answer_was_lost_is_recognised_as_ours(
    etcd_endpoint: str, cluster_name: str
) -> None:
    async def body(etcd: Etcd, keys: Keys) -> None:
        a, b = await member(etcd, keys, "a"), await member(etcd, keys, "b")
        ledger = Ledger(etcd, keys)
        rec = record("t", 4000)
        rec.claim_lease_id = a.lease_id
        (first,) = await ledger.claim(a.member_key, a.lease_id, [rec])
        # the same incarnation retries the claim (its first answer was lost): ours, same token
        (again,) = await ledger.claim(a.member_key, a.lease_id, [rec])
        assert again.claimed and again.token == first.token
        # another node claiming the slot loses the race
        other = record("t", 4000, node="b")
        other.claim_lease_id = b.lease_id
        (lost,) = await ledger.claim(b.member_key, b.lease_id, [other])
        assert not lost.claimed
        # once the run moved on (RUNNING), a re-claim is not mistaken for an ambiguous one
        running = record("t", 4000, status=pb.RUNNING)
        running.claim_lease_id = a.lease_id
        assert (await ledger.update([running])).written == [running]
        (late,) = await ledger.claim(a.member_key, a.lease_id, [rec])
        assert not late.claimed

    run(etcd_endpoint, cluster_name, body)


def test_large_batches_fit_etcds_operation_budget(etcd_endpoint: str, cluster_name: str) -> None:
    """127 claims in one transaction, and 300 lease-fenced updates (etcd gives a nested
    transaction only the operations its parent leaves)."""

    async def body(etcd: Etcd, keys: Keys) -> None:
        a = await member(etcd, keys, "a")
        ledger = Ledger(etcd, keys)
        claims = []
        for i in range(1, 301):
            rec = record(f"t{i % 7}", 1000 * i)
            rec.claim_lease_id = a.lease_id
            claims.append(rec)
        results = []
        for start in range(0, 300, 127):
            results += await ledger.claim(a.member_key, a.lease_id, claims[start : start + 127])
        assert all(r.claimed for r in results)
        for rec in claims:
            rec.status = pb.SUCCEEDED
        assert len((await ledger.update(claims)).written) == 300
        # A batch that does not fit one transaction is refused before anything is sent:
        # 127 claims that take a lock need 127 + 2 operations.
        with pytest.raises(ValueError, match="do not fit"):
            await ledger.claim(a.member_key, a.lease_id, claims[:127], ["lock"] * 127)

    run(etcd_endpoint, cluster_name, body)


def test_recent_of_reads_many_tasks_in_one_transaction(
    etcd_endpoint: str, cluster_name: str
) -> None:
    """The rescan's batched read gives, per task, what :meth:`Ledger.recent` gives for it."""

    async def body(etcd: Etcd, keys: Keys) -> None:
        a = await member(etcd, keys, "a")
        ledger = Ledger(etcd, keys)
        claims = [record(f"t{i}", s) for i in range(3) for s in range(1000, 1000 * (i + 2), 1000)]
        await ledger.claim(a.member_key, a.lease_id, claims)
        ids = ["t0", "t1", "t2", "none", "t1"]  # a task without records, one named twice
        found = await ledger.recent_of(ids, 2)
        assert sorted(found) == ["t0", "t1", "t2"]
        for task_id in ("t0", "t1", "t2"):
            assert found[task_id] == await ledger.recent(task_id, 2)
        assert [r.scheduled_at.ToMilliseconds() for r, _ in found["t2"]] == [3000, 2000]
        with pytest.raises(ValueError, match="at most 128 tasks"):
            await ledger.recent_of([f"x{i}" for i in range(129)], 1)

    run(etcd_endpoint, cluster_name, body)
