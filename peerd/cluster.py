"""The cluster as one node sees it: the GetCluster answer (``peerd cluster``).

Members come from this node's member view; for each, the answer says how many tasks it owns in
this node's ownership view, whether the failure detector here believes it dead, whether it is
draining or not claiming (its own word), and its load: for this node, the engine's; for a peer,
what it reported in its last Ping answer. The etcd part (alarms, database size, the compactor)
is this node's last Status poll (:mod:`peerd.coord.alarms`). Each member's tzdata version is
its own (its member key); the agreed one, and whether it is pinned, this node's view of
``tzdata/`` (:mod:`peerd.coord.tzdata`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

from peerd.coord.alarms import AlarmMonitor
from peerd.coord.membership import MemberView
from peerd.engine import Load
from peerd.errors import Unavailable
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import scheduler_pb2 as pb


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
        owner_of: ``(spec) -> its owner or None`` (the ownership view, filters applied).
        peers: the peer layer's states.
        tasks: ``() -> {task_id: spec}`` (the task view).
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
        owner_of: Callable[[pb.TaskSpec], str | None],
        peers: PeerStates,
        tasks: Callable[[], Mapping[str, pb.TaskSpec]],
        load: Callable[[], Load],
        alarms: AlarmMonitor,
        compactor: Callable[[], str | None],
        tzdata: Callable[[], tuple[str | None, bool]],
    ) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.members = members
        self.owner_of = owner_of
        self.peers = peers
        self.tasks = tasks
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
        counts = Counter(self.owner_of(s) for s in tasks.values() if not s.paused)
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
