"""peerd compacts etcd's history itself, one node at a time, and recovers from NOSPACE.

etcd keeps every old revision until it is compacted; without compaction its database grows
with every write until it reaches its quota (measured: 3 nodes, 200 tasks every second, 124 KiB/s,
so the default 2 GiB quota was full after about 4.7 h). kube-apiserver compacts every 5 minutes
for the same reason; peerd does the same by default (``etcd_compaction_interval``; 0 turns it
off for operators who run etcd's own ``--auto-compaction-*``).

Holder protocol (the ``<prefix>compactor`` key, :attr:`peerd.coord.keys.Keys.compactor`):

    every node, every min(interval, HOLDER_CHECK_S):
        get compactor
        absent -> txn  compare create_revision(compactor) == 0
                       success put compactor = <node_id>  (on this node's membership lease)
                       failure get compactor
        mine   -> sample (now, revision), compact to the plan's target (CompactionPlan)
    drain:  txn  compare value(compactor) == <node_id> and lease(compactor) == my lease
                 success delete compactor

The key lives on the holder's membership lease: it vanishes when that node dies (lease expiry),
stops (lease revoke) or drains (deleted), and another node takes it at its next check. The key
coordinates, it does not protect anything: two nodes compacting at once (a holder that lost its
lease a moment ago) is harmless, as etcd answers "already compacted" to the later request.

Watches: a watch from a revision older than the last compaction is cancelled by etcd with the
compact revision (:class:`peerd.coord.etcd.Compacted`). Every peerd watcher then re-lists and
watches again from the fresh revision: Membership and TaskCache (their views are rebuilt from
the list), and WatchRuns (:meth:`peerd.coord.runs_view.RunsView.watch`, which re-lists
``runs/`` and yields the records written since the last one delivered, so a ``peerd runs
--follow`` client misses nothing). The retention is the window a watcher has to catch up in.
No peerd read names an old revision, so compaction never fails a read.

NOSPACE recovery (automatic; by the holder, or the smallest live member id when nobody holds
the key, :func:`peerd.core.compaction.recovery_node`), paced by ``RecoveryBackoff``:

    1. compact to the current revision (all history: every watcher re-lists once)
    2. defragment each member, followers first, the leader last (its file shrinks to what is
       in use; etcd's quota counts the file)
    3. disarm every NOSPACE alarm (never CORRUPT, which needs an operator)

Why automatically: while NOSPACE is on, etcd refuses every write that costs quota and peerd
claims nothing, so the cluster is already down; compaction and defragmentation are what etcd's
documentation prescribes, and the only cost (a member blocked while it is defragmented, a
second or less after a compaction) is smaller than staying down. If the live keyspace itself
is over the quota, etcd raises the alarm again on the next write and the backoff keeps peerd
from defragmenting in a loop. With ``etcd_compaction_interval = 0`` peerd leaves all of etcd's
maintenance, this recovery included, to the operator (docs/operations.md).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Protocol

import structlog

from peerd.clock import Clock, wait_event
from peerd.coord.alarms import POLL_S, AlarmMonitor
from peerd.coord.etcd import NOSPACE, Etcd, MemberStatus
from peerd.coord.etcd_messages import (
    cmp_create_revision,
    cmp_lease,
    cmp_value,
    op_delete,
    op_get,
    op_put,
    range_kvs,
    txn_request,
)
from peerd.coord.keys import Keys
from peerd.core.compaction import (
    CompactionPlan,
    RecoveryBackoff,
    defragment_order,
    recovery_node,
)
from peerd.core.durations import format_duration
from peerd.errors import PeerdError, ResourceExhausted

log = structlog.get_logger("peerd.compaction")

HOLDER_CHECK_S = 10.0
"""Longest time between two checks of the compactor key (seconds): a new node takes the key
over at most this long after its holder's lease is gone."""


def space_hint(interval: timedelta, retention: timedelta) -> str:
    """What a node with these settings does about a full etcd, for the message of
    :class:`peerd.errors.ResourceExhausted` (``interval`` 0 = compaction off)."""
    if interval <= timedelta(0):
        return (
            "peerd's own compaction and NOSPACE recovery are off (etcd_compaction_interval 0): "
            "etcd's maintenance is the operator's."
        )
    return (
        f"peerd compacts etcd's history every {format_duration(interval)} (keeping "
        f"{format_duration(retention)}) and recovers from NOSPACE by itself (compact, "
        "defragment, disarm); if the alarm stays, the live data exceeds the quota: raise "
        "--quota-backend-bytes or delete tasks."
    )


class MemberView(Protocol):
    """What the compactor needs from membership: this node's lease and the live members."""

    lease_id: int

    def members(self) -> list[str]:
        """Node ids of the live members."""
        ...


class Compactor:
    """Holds (or waits for) the compactor key, compacts on the plan, recovers from NOSPACE.

    Args:
        etcd: the etcd client.
        keys: the cluster keyspace.
        node_id: this node.
        member: this node's membership (lease id, member view).
        alarms: the alarm monitor (NOSPACE state; polled again after a recovery).
        clock: time source (monotonic seconds for the plan, and the waits).
        interval: time between compactions; 0 = off (see :meth:`set_interval`).
        retention: history kept for watchers (>= 0).
    """

    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        node_id: str,
        member: MemberView,
        alarms: AlarmMonitor,
        clock: Clock,
        interval: timedelta,
        retention: timedelta,
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.node_id = node_id
        self.member = member
        self.alarms = alarms
        self.clock = clock
        self.retention = retention
        self.plan: CompactionPlan | None = None
        """The schedule while compaction is on; None while it is off (interval 0)."""
        self.backoff = RecoveryBackoff()
        self.holder: str | None = None
        """The compactor key's holder as last read ("" or None: nobody)."""
        self._wake = asyncio.Event()
        self._closing = False
        self._log = log.bind(node_id=node_id)
        alarms.on_change(lambda nospace: self._wake.set())
        self.set_interval(interval)

    @property
    def holding(self) -> bool:
        """True while this node holds the compactor key (as of the last check)."""
        return self.holder == self.node_id

    def set_interval(self, interval: timedelta) -> None:
        """Compact every ``interval`` from now on (SIGHUP may change it); 0 turns compaction and
        the NOSPACE recovery off, and the key is given up at the next round."""
        if interval <= timedelta(0):
            self.plan = None
        elif self.plan is None:
            self.plan = CompactionPlan(interval, self.retention)
        else:
            self.plan.interval_s = interval.total_seconds()
        self._wake.set()

    async def run(self) -> None:
        """Check, compact and recover until cancelled or :meth:`release` d. etcd errors are
        logged (once per streak) and retried at the next check."""
        failing = False
        while not self._closing:
            self._wake.clear()
            try:
                if self.plan is None:
                    await self._give_up()
                else:
                    await self._round(self.plan)
                failing = False
            except PeerdError as exc:
                if not failing:
                    self._log.warning("etcd_compaction_round_failed", error=str(exc))
                failing = True
            await wait_event(self.clock, self._wake, self._delay_s())

    async def release(self) -> None:
        """Stop, and delete the compactor key if this node holds it (drain), so another node
        takes it over at its next check. Best effort: etcd errors are logged."""
        self._closing = True
        self._wake.set()
        await self._give_up()

    async def _give_up(self) -> None:
        """Delete the compactor key if this node holds it; etcd errors are logged."""
        if not self.holding or not self.member.lease_id:
            return
        key = self.keys.compactor
        compare = [cmp_value(key, self.node_id.encode()), cmp_lease(key, self.member.lease_id)]
        try:
            await self.etcd.txn(txn_request(compare, [op_delete(key)]))
        except PeerdError as exc:
            self._log.warning("etcd_compactor_release_failed", error=str(exc))
            return
        self.holder = None
        self._log.info("etcd_compactor_released")

    def _delay_s(self) -> float:
        if self.plan is None:
            return HOLDER_CHECK_S
        now_s = self.clock.monotonic()
        delay = min(HOLDER_CHECK_S, self.plan.interval_s)
        if self.holding:
            delay = min(delay, self.plan.seconds_until_due(now_s))
        if self.alarms.nospace:
            delay = min(delay, max(POLL_S, self.backoff.seconds_until_ready(now_s)))
        return delay

    async def _round(self, plan: CompactionPlan) -> None:
        revision = await self._check_holder()
        now_s = self.clock.monotonic()
        if self.holding and plan.seconds_until_due(now_s) == 0:
            target = plan.sample(now_s, revision)
            if target is not None:
                fresh = await self.etcd.compact(target)
                plan.compacted_to(target)
                took_ms = round((self.clock.monotonic() - now_s) * 1000)
                self._log.info(
                    "etcd_compacted", revision=target, already_compacted=not fresh, took_ms=took_ms
                )
        if (
            self.alarms.nospace
            and recovery_node(self.holder, self.member.members()) == self.node_id
            and self.backoff.ready(now_s)
        ):
            await self._recover()

    async def _check_holder(self) -> int:
        """Read the compactor key, take it when nobody holds it; returns the store revision."""
        key = self.keys.compactor
        kvs, _, revision = await self.etcd.range(key)
        lease_id = self.member.lease_id
        if not kvs and not self._closing and lease_id:
            try:
                resp = await self.etcd.txn(
                    txn_request(
                        [cmp_create_revision(key, 0)],
                        [op_put(key, self.node_id.encode(), lease_id)],
                        [op_get(key)],
                    )
                )
            except ResourceExhausted:  # no put gets through while NOSPACE is on
                self._set_holder(None)
                return revision
            revision = int(resp.header.revision)
            if resp.succeeded:
                self._set_holder(self.node_id)
                return revision
            kvs = range_kvs(resp.responses[0])  # someone else took it meanwhile
        holder = kvs[0].value.decode() if kvs else None
        if holder == self.node_id and kvs[0].lease != lease_id:
            holder = None  # ours from a lease that is going away: wait for it to expire
        self._set_holder(holder)
        return revision

    def _set_holder(self, holder: str | None) -> None:
        if holder == self.holder:
            return
        if holder == self.node_id:
            self._log.info("etcd_compactor_acquired")
        elif self.holding:
            self._log.warning("etcd_compactor_lost", holder=holder)
            if self.plan is not None:
                self.plan.reset()
        self.holder = holder

    async def _recover(self) -> None:
        """Compact everything, defragment each member, disarm NOSPACE (module docstring)."""
        self.backoff.started(self.clock.monotonic())
        before = self.alarms.status
        self._log.warning(
            "etcd_nospace_recovery_started",
            streak=self.backoff.streak,
            db_size=before.db_size if before else None,
            db_size_in_use=before.db_size_in_use if before else None,
        )
        try:
            status = await self.etcd.status()
            await self.etcd.compact(status.revision)
            if self.plan is not None:
                self.plan.compacted_to(status.revision)
            for member in await self._members_to_defragment():
                try:
                    await self.etcd.defragment(member.endpoint)
                except PeerdError as exc:
                    self._log.error(
                        "etcd_defragment_failed", endpoint=member.endpoint, error=str(exc)
                    )
            for alarm in await self.etcd.alarms():
                if alarm.kind == NOSPACE:
                    await self.etcd.disarm(alarm)
        finally:
            self.backoff.finished(self.clock.monotonic())
        after = await self.etcd.status()
        self._log.warning(
            "etcd_nospace_recovered",
            compacted_to=status.revision,
            db_size=after.db_size,
            db_size_in_use=after.db_size_in_use,
        )
        await self.alarms.poll()  # claims resume now, not at the next poll

    async def _members_to_defragment(self) -> list[MemberStatus]:
        """One status per etcd member, reached through the configured endpoints and the members'
        advertised client URLs, in :func:`defragment_order`."""
        endpoints = list(self.etcd.endpoints)
        members: dict[int, list[str]] = {}
        try:
            members = await self.etcd.member_endpoints()
        except PeerdError as exc:
            self._log.warning("etcd_member_list_failed", error=str(exc))
        endpoints += [url for urls in members.values() for url in urls]
        found: dict[int, MemberStatus] = {}
        for endpoint in dict.fromkeys(endpoints):
            try:
                status = await self.etcd.status(endpoint)
            except PeerdError:
                continue
            found.setdefault(status.member_id, status)
        missing = sorted(set(members) - set(found))
        if missing:
            self._log.error(
                "etcd_members_unreachable_not_defragmented",
                member_ids=[f"{m:x}" for m in missing],
            )
        order = defragment_order([(s.member_id, s.leader_id) for s in found.values()])
        return [found[m] for m in order]
