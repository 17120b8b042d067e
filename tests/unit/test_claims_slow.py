"""Claims report a slow claim transaction (``on_slow``) while it is still waiting, so the node
checks its lease before the claim's own deadline (the long chaos profile's node-etcd partition
failover, docs/reliability.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

from peerd.coord.ledger import ClaimResult
from peerd.engine import claims as claims_mod
from peerd.engine.claims import Claim, Claims
from peerd.v1 import scheduler_pb2 as pb


class _Lease:
    member_key = b"/peerd/t/members/n1"
    lease_id = 7


class _Ledger:
    """Answers a claim when ``answer`` is set; counts calls."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.calls = 0
        self.cancelled = False

    async def claim(
        self,
        member_key: bytes,
        lease_id: int,
        records: Sequence[pb.RunRecord],
        modes: Sequence[str | None],
        tz_fence: int | None,
    ) -> list[ClaimResult]:
        self.calls += 1
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return [ClaimResult(r.task_id, 1000, True, 5) for r in records]


def _claims(ledger: _Ledger, slow: list[str]) -> Claims:
    return Claims(
        ledger,  # type: ignore[arg-type]
        _Lease(),
        lambda: 10,
        lambda: datetime.now(UTC),
        lambda: None,
        lambda: 0.0,
        lambda: slow.append("slow"),
    )


def _one() -> list[Claim]:
    record = pb.RunRecord(task_id="t1", status=pb.CLAIMED)
    return [Claim(pb.TaskSpec(id="t1"), record, None)]


def test_a_claim_unanswered_for_slow_claim_s_reports_slow_and_still_settles() -> None:
    async def go() -> tuple[list[str], list[str]]:
        ledger, slow, settled = _Ledger(), [], []
        claims = _claims(ledger, slow)
        job = asyncio.create_task(claims.claim(_one(), lambda c, r: settled.append(c.spec.id)))
        for _ in range(200):  # reported while the transaction is still unanswered
            if slow:
                break
            await asyncio.sleep(claims_mod.SLOW_CLAIM_S / 5)
        assert not job.done()
        assert settled == []
        ledger.answer.set()
        await job
        return slow, settled

    slow, settled = asyncio.run(go())
    assert slow == ["slow"]
    assert settled == ["t1"]


def test_a_prompt_answer_reports_nothing() -> None:
    async def go() -> tuple[list[str], int]:
        ledger, slow = _Ledger(), []
        ledger.answer.set()
        await _claims(ledger, slow).claim(_one(), lambda c, r: None)
        return slow, ledger.calls

    slow, calls = asyncio.run(go())
    assert calls == 1
    assert slow == []


def test_cancelling_a_slow_claim_cancels_its_transaction() -> None:
    async def go() -> bool:
        ledger, slow = _Ledger(), []
        job = asyncio.create_task(_claims(ledger, slow).claim(_one(), lambda c, r: None))
        while ledger.calls == 0:
            await asyncio.sleep(0.01)
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:  # the transaction's task, which must end cancelled (not wait on forever)
            await asyncio.wait(others, timeout=10.0)
        return ledger.cancelled

    assert asyncio.run(go())
