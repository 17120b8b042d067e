"""The lease check a slow claim asks for (Membership.etcd_slow / etcd_suspect) is not held back
by a regular keepalive already waiting on an unreachable etcd.

Found in the long chaos profile (docs/reliability.md): when a node was cut off etcd just as its
regular keepalive (2 s deadline) went out, the short check (0.5 s) waited for that keepalive, and
the node told its peers it was not claiming 1.3 s late (partition failover p99 2.13 s).
A check asked while a short check is already waiting is served by that one: no second keepalive
follows at once. Fake etcd and fake clock: no I/O, the clock only moves when the test advances it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from peerd.clock import FakeClock
from peerd.coord.keys import Keys
from peerd.coord.membership import CHECK_TIMEOUT_S, KEEPALIVE_TIMEOUT_S, Membership
from peerd.errors import Unavailable
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually_async, run_async

TTL_S = 9  # keepalive every 3 s


class UnreachableEtcd:
    """Every keepalive goes unanswered until its deadline (on the fake clock)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, float]] = []
        """(monotonic start, deadline) of every keepalive."""

    @property
    def deadline_s(self) -> float:
        """Monotonic time at which the latest keepalive gives up."""
        start, timeout_s = self.calls[-1]
        return start + timeout_s

    async def lease_keepalive(self, lease_id: int, timeout_s: float | None = None) -> int:
        assert timeout_s is not None
        self.calls.append((self.clock.monotonic(), timeout_s))
        await self.clock.sleep(timeout_s)
        raise Unavailable("etcd unavailable: DEADLINE_EXCEEDED")


async def _probe(address: str) -> bool:
    return False


@contextlib.asynccontextmanager
async def claiming_member() -> AsyncIterator[tuple[FakeClock, UnreachableEtcd, Membership]]:
    """A registered, claiming member whose keepalive loop runs (cancelled on exit)."""
    clock = FakeClock(datetime(2026, 11, 30, tzinfo=UTC))
    etcd = UnreachableEtcd(clock)
    m = Membership(etcd, Keys("/peerd/t/"), pb.Member(node_id="n1"), TTL_S, _probe, clock)  # type: ignore[arg-type]
    m.lease_id = 7
    m.claim_ready.set()
    m.claiming = True
    loop = asyncio.create_task(m.keepalive_loop())
    try:
        yield clock, etcd, m
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def _check_asked_during_a_regular_keepalive(ask: str) -> None:
    async with claiming_member() as (clock, etcd, m):
        await clock.wait_for_sleepers()
        clock.advance(TTL_S / 3)  # the regular keepalive goes out: etcd is already unreachable
        await assert_eventually_async(lambda: len(etcd.calls) == 1, timeout=5)
        assert etcd.calls[0][1] == KEEPALIVE_TIMEOUT_S
        clock.advance(0.1)
        getattr(m, ask)()  # a claim went unanswered
        # Besides the keepalive waiting out its 2 s, a wait of CHECK_TIMEOUT_S must start.
        await assert_eventually_async(
            lambda: (
                clock.deadlines()
                == pytest.approx([clock.monotonic() + CHECK_TIMEOUT_S, etcd.deadline_s])
            ),
            timeout=5,
            message=f"no {CHECK_TIMEOUT_S}s deadline for the check",
        )
        clock.advance(CHECK_TIMEOUT_S)
        await assert_eventually_async(
            lambda: not m.claiming,
            timeout=5,
            message=f"peers not told within {CHECK_TIMEOUT_S}s of the check",
        )
        assert clock.monotonic() < TTL_S / 3 + KEEPALIVE_TIMEOUT_S


def test_slow_claim_check_cuts_a_regular_keepalive_short() -> None:
    run_async(lambda: _check_asked_during_a_regular_keepalive("etcd_slow"), timeout_s=20)


def test_failed_claim_check_cuts_a_regular_keepalive_short() -> None:
    run_async(lambda: _check_asked_during_a_regular_keepalive("etcd_suspect"), timeout_s=20)


async def _check_asked_during_a_check() -> None:
    async with claiming_member() as (clock, etcd, m):
        await clock.wait_for_sleepers()
        m.etcd_slow()  # a claim is slow: a short check goes out at once
        await assert_eventually_async(lambda: len(etcd.calls) == 1, timeout=5)
        assert etcd.calls[0][1] == CHECK_TIMEOUT_S
        clock.advance(0.1)
        m.etcd_suspect()  # that claim timed out meanwhile: asks for a check again
        clock.advance(CHECK_TIMEOUT_S)  # past the short check's deadline: unanswered
        await assert_eventually_async(
            lambda: not m.claiming and clock.sleepers == 1,
            timeout=5,
            message="the failed check did not stop claiming, or the loop did not wait again",
        )
        assert len(etcd.calls) == 1, f"a second keepalive went out at once: {etcd.calls}"
        assert clock.deadlines()[0] > clock.monotonic() + CHECK_TIMEOUT_S


def test_check_asked_during_a_check_is_served_by_it() -> None:
    run_async(_check_asked_during_a_check, timeout_s=20)
