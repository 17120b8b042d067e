"""peerd.cluster: the GetCluster answer lists members with their labels and the unschedulable
tasks with the reason (pure: fake views)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from peerd.cluster import MAX_UNSCHEDULABLE, ClusterView, unschedulable_reason
from peerd.core.placement import placement_of
from peerd.engine import Load
from peerd.engine.ownership import OwnershipView, matches_node_selector
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import scheduler_pb2 as pb


class Members:
    def __init__(self, **zones: str) -> None:
        self.view = {n: pb.Member(node_id=n, labels={"zone": z}) for n, z in zones.items()}
        self.view_revision = 7
        self.view_ready = asyncio.Event()
        self.view_ready.set()

    def on_change(self, fn: Any) -> None:
        pass


@dataclass
class Peers:
    out: set[str] = field(default_factory=set)
    draining: set[str] = field(default_factory=set)
    not_claiming: set[str] = field(default_factory=set)
    loads: Mapping[str, ppb.Load] = field(default_factory=dict)

    def dead(self) -> set[str]:
        return self.out

    def excluded(self) -> set[str]:
        return self.out

    def on_change(self, fn: Any) -> None:
        pass


@dataclass
class Alarms:
    alarms: list[Any] = field(default_factory=list)
    status: Any = None


def cluster(tasks: dict[str, pb.TaskSpec], dead: set[str]) -> pb.GetClusterResponse:
    members, peers = Members(n1="a", n2="a", n3="b"), Peers(out=dead)
    ownership = OwnershipView("n1", members, peers)
    ownership.add_filter(matches_node_selector)
    ownership.refresh()
    placements = {t: placement_of(s) for t, s in tasks.items()}
    owners = {t: None if p.paused else ownership.owner_of(t, p) for t, p in placements.items()}
    view = ClusterView(
        "c", "n1", members, ownership, peers, lambda: placements, lambda: owners,
        lambda: Load(0, 8, 0), Alarms(), lambda: None, lambda: (None, False),  # type: ignore[arg-type]
    )  # fmt: skip
    return view()


def test_unschedulable_tasks_are_listed_with_the_reason() -> None:
    tasks = {
        "in-b": pb.TaskSpec(id="in-b", node_selector="zone=b"),
        "in-a": pb.TaskSpec(id="in-a", node_selector="zone=a"),
        "paused-b": pb.TaskSpec(id="paused-b", node_selector="zone=b", paused=True),
        "bad": pb.TaskSpec(id="bad", node_selector="zone in ("),
        "any": pb.TaskSpec(id="any"),
    }
    alive = cluster(tasks, dead=set())
    assert [(u.task_id, u.reason) for u in alive.unschedulable_tasks] == [
        ("bad", "its node selector cannot be read by this node: expected a label value at "
         "position 10, found the end"),
    ]  # fmt: skip
    assert {m.node_id: dict(m.labels) for m in alive.members}["n3"] == {"zone": "b"}
    b_dead = cluster(tasks, dead={"n3"})
    assert [(u.task_id, u.reason) for u in b_dead.unschedulable_tasks] == [
        ("bad", unschedulable_reason(tasks["bad"])),
        ("in-b", "no live node matches zone=b"),
    ]
    assert b_dead.unschedulable_count == 2
    assert {m.node_id: m.owned_tasks for m in b_dead.members}["n3"] == 0


def test_the_list_is_capped_and_the_count_exact() -> None:
    tasks = {f"t{i:05d}": pb.TaskSpec(id=f"t{i:05d}", node_selector="zone=c") for i in range(1003)}
    view = cluster(tasks, dead=set())
    assert (len(view.unschedulable_tasks), view.unschedulable_count) == (MAX_UNSCHEDULABLE, 1003)
    assert view.unschedulable_tasks[0].task_id == "t00000"


def test_no_owning_member_means_no_verdict() -> None:
    tasks = {"in-b": pb.TaskSpec(id="in-b", node_selector="zone=b")}
    view = cluster(tasks, dead={"n1", "n2", "n3"})
    assert (list(view.unschedulable_tasks), view.unschedulable_count) == ([], 0)
