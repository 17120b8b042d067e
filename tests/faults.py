"""A run ledger that injects faults on cue, for tests of the engine on a real etcd.

:class:`FaultyLedger` wraps a real :class:`peerd.coord.ledger.Ledger` (on a real etcd) and passes
every call through unchanged until a fault is armed. Faults are deterministic: each one says
which call it hits (by number, or by the records in the call), how many times it fires, and it
keeps what it hit, so a test can check that the fault really happened.

=================================  ===========================================================
fault                              effect
=================================  ===========================================================
``fail_claim(call=k | match=f)``   claim call k (or each call whose records match ``f``) raises
                                   :class:`peerd.errors.Unavailable`; ``after_commit=True``:
                                   the inner claim commits first (a timeout after commit)
``hold_updates()``                 every ``update`` call waits until ``release_updates()``
                                   (records stay as last written: CLAIMED, RUNNING)
``fence_updates(match)``           matching records are written with a lease their node does
                                   not hold, so etcd's fence rejects them and ``update``'s
                                   count says so, as for a claimant whose lease expired
``crash_update(exc)``              the next ``update`` call raises ``exc`` (e.g. RuntimeError)
=================================  ===========================================================

Everything else (trim, recent, get, locks, take-over) is the real ledger's code on the same etcd.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from peerd.coord.ledger import ClaimResult, Ledger, UpdateResult
from peerd.errors import Unavailable
from peerd.v1 import scheduler_pb2 as pb

ClaimMatch = Callable[[Sequence[pb.RunRecord]], bool]
"""``match(records) -> True`` when a claim call with these records is to fail."""
RecordMatch = Callable[[pb.RunRecord], bool]
"""``match(record) -> True`` when an update of this record is to be fenced off."""

NO_SUCH_LEASE = 0x7EEDFACE0000001
"""A lease id etcd never granted: a record written under it fails the ledger's lease fence."""


@dataclass
class _Fault:
    """An armed fault: fires ``times`` more times on calls that ``hits``; ``hit`` keeps what it
    fired on."""

    times: int
    hit: list[list[pb.RunRecord]] = field(default_factory=list)

    def take(self, records: Sequence[pb.RunRecord]) -> bool:
        if self.times <= 0:
            return False
        self.times -= 1
        self.hit.append([_copy(r) for r in records])
        return True


class FaultyLedger(Ledger):
    """A :class:`Ledger` whose ``claim`` and ``update`` can fail on cue (see the module table).

    Args:
        inner: the real ledger; its ``claim`` and ``update`` do the work when no fault fires.
    """

    def __init__(self, inner: Ledger) -> None:
        super().__init__(inner.etcd, inner.keys)
        self.inner = inner
        self.claim_calls = 0
        """Claim calls so far (the k of ``fail_claim(call=k)`` counts from 1)."""
        self.update_calls = 0
        """Update calls so far (held ones included)."""
        self.claim_failures: list[list[pb.RunRecord]] = []
        """The records of each claim call a ``fail_claim`` fault failed."""
        self.update_crashes: list[list[pb.RunRecord]] = []
        """The records of each update call a ``crash_update`` fault failed."""
        self.fenced: list[pb.RunRecord] = []
        """The records a ``fence_updates`` fault fenced off (as given to ``update``)."""
        self._claim_faults: list[tuple[int | None, ClaimMatch | None, bool, _Fault]] = []
        self._crashing: tuple[BaseException, _Fault] | None = None
        self._fencing: tuple[RecordMatch, _Fault] | None = None
        self._updates_open = asyncio.Event()
        self._updates_open.set()

    # -- arming ----------------------------------------------------------------------------

    def fail_claim(
        self,
        *,
        call: int | None = None,
        match: ClaimMatch | None = None,
        after_commit: bool = False,
        times: int = 1,
    ) -> None:
        """Make claim call number ``call`` (from 1), or the next ``times`` calls whose records
        ``match``, raise :class:`Unavailable`; with ``after_commit`` the inner claim commits
        first.

        Raises:
            ValueError: neither or both of ``call`` and ``match`` given.
        """
        if (call is None) == (match is None):
            raise ValueError("give exactly one of call= and match=")
        self._claim_faults.append((call, match, after_commit, _Fault(times)))

    def hold_updates(self) -> None:
        """Make every ``update`` call wait until :meth:`release_updates`."""
        self._updates_open.clear()

    def release_updates(self) -> None:
        """Let held and future ``update`` calls through."""
        self._updates_open.set()

    def fence_updates(self, match: RecordMatch, times: int = 1) -> None:
        """Fence off the next ``times`` records that ``match`` (rewritten under
        :data:`NO_SUCH_LEASE`, so etcd's compare fails and the returned count excludes them)."""
        self._fencing = (match, _Fault(times))

    def crash_update(self, exc: BaseException, times: int = 1) -> None:
        """Make the next ``times`` ``update`` calls raise ``exc`` before writing anything."""
        self._crashing = (exc, _Fault(times))

    # -- the wrapped calls -----------------------------------------------------------------

    async def claim(
        self,
        member_key: bytes,
        lease_id: int,
        records: Sequence[pb.RunRecord],
        modes: Sequence[str | None] | None = None,
        tz_fence: int | None = None,
    ) -> list[ClaimResult]:
        """:meth:`Ledger.claim`, unless an armed ``fail_claim`` fault hits this call."""
        self.claim_calls += 1
        fault = None
        for call, match, after_commit, armed in self._claim_faults:
            if call is not None:
                wanted = self.claim_calls == call
            else:
                wanted = match is not None and match(records)
            if wanted and armed.take(records):
                fault = (after_commit, armed)
                break
        if fault is None:
            return await self.inner.claim(member_key, lease_id, records, modes, tz_fence)
        if fault[0]:
            await self.inner.claim(member_key, lease_id, records, modes, tz_fence)
        self.claim_failures.append(fault[1].hit[-1])
        committed = "after" if fault[0] else "before"
        raise Unavailable(f"injected: claim call {self.claim_calls} timed out ({committed} commit)")

    async def update(self, records: Sequence[pb.RunRecord]) -> UpdateResult:
        """:meth:`Ledger.update`, after any hold; an armed crash raises, an armed fence rewrites
        the matching records so that etcd rejects them."""
        self.update_calls += 1
        await self._updates_open.wait()
        if self._crashing is not None and self._crashing[1].take(records):
            self.update_crashes.append(self._crashing[1].hit[-1])
            raise self._crashing[0]
        if self._fencing is not None:
            records = [self._fenced(r) for r in records]
        return await self.inner.update(records)

    def _fenced(self, rec: pb.RunRecord) -> pb.RunRecord:
        assert self._fencing is not None
        match, armed = self._fencing
        if not match(rec) or not armed.take([rec]):
            return rec
        self.fenced.append(_copy(rec))
        out = _copy(rec)
        if out.claim_lease_id:
            out.claim_lease_id = NO_SUCH_LEASE
        else:
            out.fencing_token = 0  # the create-revision fence: never 0 for an existing key
        return out


def _copy(rec: pb.RunRecord) -> pb.RunRecord:
    out = pb.RunRecord()
    out.CopyFrom(rec)
    return out
