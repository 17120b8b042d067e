"""The etcd keyspace of one cluster (see docs/architecture.md):

=================================  ==========================  ==============================
key                                value                       lifetime
=================================  ==========================  ==============================
``<prefix>members/<node_id>``      ``pb.Member``               on the node's lease
``<prefix>tasks/<task_id>``        ``pb.TaskSpec``             durable
``<prefix>runs/<task_id>/<ms>``    ``pb.RunRecord``            durable, last K kept per task
``<prefix>active/<task_id>``       run key of the running run  on the claimant's lease
``<prefix>queued/<task_id>``       run key of the waiting run  on the claimant's lease
``<prefix>compactor``              node id of the compactor    on that node's lease
``<prefix>tzdata/agreed``          agreed tzdata version       durable
``<prefix>tzdata/pin``             pinned tzdata version       durable, while pinned
``<prefix>history/<task_id>/<r>``  ``pb.TaskChange``           with the task, newest 50 kept
=================================  ==========================  ==============================

``active/`` and ``queued/`` exist only for tasks whose overlap policy is not ALLOW: the first is
the cluster-wide lock a run holds while it is claimed or running, the second marks the one slot
an OVERLAP_BUFFER_ONE task may have waiting. Both vanish with the claimant's lease.

``tzdata/agreed`` is the version of the time-zone rules the cluster computes zone-dependent slots
with (plain text, e.g. ``2026f``); claims of such slots are fenced on it. ``tzdata/pin`` exists
while an operator pins that version (:mod:`peerd.coord.tzdata`).

``<ms>`` is the slot's epoch milliseconds zero-padded to 13 digits, so keys sort by time and the
last claimed slot is one descending range read with limit 1. ``<r>`` (history) is the task's
revision before the change, zero-padded to 19 digits, so a task's changes sort oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass

SLOT_DIGITS = 13
REVISION_DIGITS = 19


@dataclass(frozen=True)
class Keys:
    """Key builders under ``prefix`` (e.g. ``/peerd/default/``)."""

    prefix: str

    @property
    def members(self) -> bytes:
        return f"{self.prefix}members/".encode()

    @property
    def tasks(self) -> bytes:
        return f"{self.prefix}tasks/".encode()

    @property
    def runs_root(self) -> bytes:
        return f"{self.prefix}runs/".encode()

    def active(self, task_id: str) -> bytes:
        """Overlap lock of ``task_id``: held by the run in progress (value: its run key)."""
        return f"{self.prefix}active/{task_id}".encode()

    def queued(self, task_id: str) -> bytes:
        """The waiting slot of an OVERLAP_BUFFER_ONE task (value: its run key)."""
        return f"{self.prefix}queued/{task_id}".encode()

    @property
    def compactor(self) -> bytes:
        """Held by the one node that compacts etcd's history (:mod:`peerd.coord.compaction`)."""
        return f"{self.prefix}compactor".encode()

    @property
    def tzdata(self) -> bytes:
        """Prefix of the time-zone rules keys (watched as one)."""
        return f"{self.prefix}tzdata/".encode()

    @property
    def tzdata_agreed(self) -> bytes:
        """The cluster's agreed tzdata version (:mod:`peerd.coord.tzdata`)."""
        return self.tzdata + b"agreed"

    @property
    def tzdata_pin(self) -> bytes:
        """Present while an operator pins the agreed version."""
        return self.tzdata + b"pin"

    def member(self, node_id: str) -> bytes:
        return self.members + node_id.encode()

    def task(self, task_id: str) -> bytes:
        return self.tasks + task_id.encode()

    def runs(self, task_id: str) -> bytes:
        """Prefix of one task's run records (ends with ``/``)."""
        return self.runs_root + task_id.encode() + b"/"

    def run(self, task_id: str, slot_ms: int) -> bytes:
        return self.runs(task_id) + f"{slot_ms:0{SLOT_DIGITS}d}".encode()

    def history(self, task_id: str) -> bytes:
        """Prefix of one task's change records (ends with ``/``)."""
        return f"{self.prefix}history/{task_id}/".encode()

    def change(self, task_id: str, previous_revision: int) -> bytes:
        """The change record of the write that replaced revision ``previous_revision``."""
        return self.history(task_id) + f"{previous_revision:0{REVISION_DIGITS}d}".encode()

    def slot_of(self, run_key: bytes) -> int:
        """Epoch ms of a run key."""
        return int(run_key.rsplit(b"/", 1)[1])

    def id_of(self, key: bytes, collection: bytes) -> str:
        """The last path segment of ``key`` under ``collection`` (a member or task id)."""
        return key[len(collection) :].decode()
