"""The cluster as one node sees it: the GetCluster answer (``peerd cluster``).

Members come from this node's member view; for each, the answer says how many tasks it owns in
this node's ownership view, whether the failure detector here believes it dead, whether it is
draining or not claiming (its own word), and its load: for this node, the engine's; for a peer,
what it reported in its last Ping answer. The etcd part (alarms, database size, the compactor)
is this node's last Status poll (:mod:`peerd.coord.alarms`). Each member's tzdata version is
its own (its member key); the agreed one, and whether it is pinned, this node's view of
``tzdata/`` (:mod:`peerd.coord.tzdata`).

A task that is not paused and that no owning member may own (its node selector matches none of
them) is listed as unschedulable with the reason, e.g. ``no live node matches zone=b``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

from peerd.coord.alarms import AlarmMonitor
from peerd.coord.membership import MemberView
from peerd.core.labels import LabelError, parse_selector
from peerd.core.placement import Placement
from peerd.engine import Load
from peerd.errors import Unavailable
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import scheduler_pb2 as pb

MAX_UNSCHEDULABLE = 1000
"""Unschedulable tasks listed in one answer (all are counted)."""


class Ownership(Protocol):
    """Who owns what in this node's view (a narrow view of the engine's OwnershipView)."""

    @property
    def owners(self) -> tuple[str, ...]: ...

    def eligible(self, placement: Placement) -> tuple[str, ...]: ...


def unschedulable_reason(spec: Placement | pb.TaskSpec) -> str:
    """Why no live member may own a task (when its eligible members are none), e.g.
    ``"no live node matches zone=b"``."""
    if not spec.node_selector:
        return "no live node is eligible"
    try:
        parse_selector(spec.node_selector)
    except LabelError as exc:
        return f"its node selector cannot be read by this node: {exc}"
    return f"no live node matches {spec.node_selector}"


class PeerStates(Protocol):
    """What the peer layer knows about the others."""

    @property
    def draining(self) -> set[str]: ...

    @property
    def not_claiming(self) -> set[str]: ...

    @property
    def loads(self) -> Mapping[str, ppb.Load]: ...

    def dead(self) -> set[str]: ...


class ClusterView:
    """Builds the GetCluster answer of one node.

    Args:
        cluster: the cluster name.
        node_id: this node.
        members: the member view.
        ownership: the ownership view (owners, filters applied).
        peers: the peer layer's states.
        tasks: ``() -> {task_id: placement}`` (the task view).
        owners: ``() -> {task_id: owner or None}``, each task's owner as the engine last
            computed it (:attr:`peerd.engine.reconcile.Reconciler.owners`): counted here
            rather than hashing every task on each call.
        load: ``() -> this node's engine load``.
        alarms: the etcd alarm monitor (alarms, database size).
        compactor: ``() -> the node holding the compactor key`` (None: nobody).
        tzdata: ``() -> (agreed tzdata version or None, pinned)``.
    """

    def __init__(
        self,
        cluster: str,
        node_id: str,
        members: MemberView,
        ownership: Ownership,
        peers: PeerStates,
        tasks: Callable[[], Mapping[str, Placement]],
        owners: Callable[[], Mapping[str, str | None]],
        load: Callable[[], Load],
        alarms: AlarmMonitor,
        compactor: Callable[[], str | None],
        tzdata: Callable[[], tuple[str | None, bool]],
    ) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.members = members
        self.ownership = ownership
        self.peers = peers
        self.tasks = tasks
        self.owners = owners
        self.load = load
        self.alarms = alarms
        self.compactor = compactor
        self.tzdata = tzdata

    def __call__(self) -> pb.GetClusterResponse:
        """The answer now.

        Raises:
            Unavailable: the member view is not loaded yet.
        """
        if not self.members.view_ready.is_set():
            raise Unavailable("membership view not loaded yet")
        view = self.members.view
        tasks = self.tasks()
        owners = self.owners()
        counts = Counter(owners.values())
        ownerless = [t for t, o in owners.items() if o is None] if None in counts else []
        dead = self.peers.dead()
        agreed, pinned = self.tzdata()
        out = pb.GetClusterResponse(
            cluster=self.cluster,
            node_id=self.node_id,
            task_count=len(tasks),
            revision=self.members.view_revision,
            etcd_compactor=self.compactor() or "",
            tzdata_version=agreed or "",
            tzdata_pinned=pinned,
        )
        for alarm in self.alarms.alarms:
            out.etcd_alarms.add(member_id=alarm.member_id, alarm=alarm.kind)
        if self.alarms.status is not None:
            out.etcd_db_size_bytes = self.alarms.status.db_size
            out.etcd_db_size_in_use_bytes = self.alarms.status.db_size_in_use
        self._unschedulable(out, tasks, ownerless)
        for node_id in sorted(view):
            m = out.members.add()
            m.CopyFrom(view[node_id])
            m.owned_tasks = counts.get(node_id, 0)
            m.suspected_dead = node_id in dead
            m.draining = m.draining or node_id in self.peers.draining
            m.not_claiming = node_id in self.peers.not_claiming
            if node_id == self.node_id:
                load = self.load()
                m.active_runs, m.run_capacity, m.backlog = load.active, load.capacity, load.backlog
            elif (peer := self.peers.loads.get(node_id)) is not None:
                m.active_runs, m.run_capacity, m.backlog = (
                    peer.active_runs,
                    peer.capacity,
                    peer.backlog,
                )
        return out

    def _unschedulable(
        self, out: pb.GetClusterResponse, tasks: Mapping[str, Placement], ownerless: list[str]
    ) -> None:
        """Fill the unschedulable tasks: not paused, owning members exist, none eligible."""
        if not ownerless or not self.ownership.owners:
            return
        for task_id in sorted(ownerless):
            spec = tasks.get(task_id)
            if spec is None or spec.paused or self.ownership.eligible(spec):
                continue
            out.unschedulable_count += 1
            if len(out.unschedulable_tasks) < MAX_UNSCHEDULABLE:
                out.unschedulable_tasks.add(task_id=task_id, reason=unschedulable_reason(spec))
