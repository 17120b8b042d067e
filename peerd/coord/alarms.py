"""Every node watches etcd's alarms, so that a full etcd (NOSPACE) stops claims at once.

Why peerd must stop claiming itself (checked in etcd's source, v3.4.23 and v3.5.21):

* ``backendQuota.Available`` (``etcdserver/quota.go``) lets every request of cost 0 through,
  and ``costTxn`` counts only the ``request_put`` operations at the top level of a
  transaction: a nested transaction costs 0.
* While NOSPACE is active, ``applierV3Capped.Txn`` (``etcdserver/apply.go``) rejects only
  transactions of cost > 0.

So a claim (an outer transaction of nested ones, :mod:`peerd.coord.ledger`) passes the quota
check and the alarm, and keeps growing a database that is already full: measured on etcd
3.4.23 with a 16 MiB quota, 3,000 nested puts of 4 KiB succeeded after the alarm and the file
grew to 29 MiB. (etcd's main branch fixed it in commit f1f8893b1, "Fix the costTxnReq ignores
nested RequestTxn issue"; no release has it yet. Once it has, the claim itself fails with
RESOURCE_EXHAUSTED and this monitor only makes the pause quicker and quieter.)

The monitor polls ``Maintenance.Status`` of the member this node's client is connected to
every :data:`POLL_S`. Status is answered locally by that member (``Maintenance.Alarm`` GET goes
through raft in etcd 3.4, a consensus round and a WAL write per poll) and lists the cluster's
alarms, which are replicated. When etcd cannot be reached the last state is kept: no claims
can happen then anyway.

While :attr:`AlarmMonitor.nospace` is true, the engine does not claim (``Engine.etcd_space``),
TriggerTask answers RESOURCE_EXHAUSTED, and reads go on. Claims resume by themselves once the
alarm is gone (disarmed by :mod:`peerd.coord.compaction`'s recovery, or by an operator).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from peerd.clock import Clock
from peerd.coord.etcd import NOSPACE, Alarm, Etcd, MemberStatus
from peerd.errors import PeerdError

log = structlog.get_logger("peerd.alarms")

POLL_S = 1.0
"""Seconds between two Status polls: claims stop at most about this long after the alarm."""


class AlarmMonitor:
    """The etcd alarms and database size as last seen by this node.

    Args:
        etcd: the etcd client.
        node_id: for the log.
        clock: time source (the wait between polls).
        poll_s: seconds between polls.
    """

    def __init__(self, etcd: Etcd, node_id: str, clock: Clock, poll_s: float = POLL_S) -> None:
        self.etcd = etcd
        self.clock = clock
        self.poll_s = poll_s
        self.alarms: tuple[Alarm, ...] = ()
        self.status: MemberStatus | None = None
        """The last Status answer (db size, in use, revision), None before the first."""
        self.space_ok = asyncio.Event()
        """Set while no NOSPACE alarm is active (set until the first poll says otherwise)."""
        self.space_ok.set()
        self._listeners: list[Callable[[bool], None]] = []
        self._reachable = True
        self._log = log.bind(node_id=node_id)

    @property
    def nospace(self) -> bool:
        """True while etcd's NOSPACE alarm is active (as of the last poll)."""
        return not self.space_ok.is_set()

    def on_change(self, fn: Callable[[bool], None]) -> None:
        """Call ``fn(nospace)`` whenever :attr:`nospace` changes."""
        self._listeners.append(fn)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll()
            await self.clock.sleep(self.poll_s)

    async def poll(self) -> None:
        """One Status call; updates :attr:`alarms`, :attr:`status` and :attr:`nospace`. etcd
        errors are logged once per outage, never raised (the last state is kept)."""
        try:
            status = await self.etcd.status()
        except PeerdError as exc:
            if self._reachable:
                self._log.warning("etcd_status_failed", error=str(exc))
            self._reachable = False
            return
        self._reachable = True
        self.status = status
        if status.alarms != self.alarms:
            for alarm in set(status.alarms) - set(self.alarms):
                self._log.error(
                    "etcd_alarm_raised",
                    alarm=alarm.kind,
                    member_id=f"{alarm.member_id:x}",
                    db_size=status.db_size,
                    db_size_in_use=status.db_size_in_use,
                )
            for alarm in set(self.alarms) - set(status.alarms):
                member_id = f"{alarm.member_id:x}"
                self._log.info("etcd_alarm_cleared", alarm=alarm.kind, member_id=member_id)
            self.alarms = status.alarms
        nospace = any(a.kind == NOSPACE for a in status.alarms)
        if nospace == self.nospace:
            return
        if nospace:
            self.space_ok.clear()
        else:
            self.space_ok.set()
        for fn in self._listeners:
            try:
                fn(nospace)
            except Exception:  # a listener bug must not stop the monitor
                self._log.exception("alarm_listener_failed")
