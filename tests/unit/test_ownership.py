"""peerd.engine.ownership: owning members as one value, one change event, eligibility filters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from peerd.core.placement import Placement, placement_of
from peerd.core.ring import owner
from peerd.engine.ownership import OwnershipView, matches_node_selector
from peerd.v1 import scheduler_pb2 as pb


class Members:
    def __init__(self, *ids: str) -> None:
        self.view = {i: pb.Member(node_id=i) for i in ids}
        self.listeners: list[Callable[[], None]] = []

    def on_change(self, fn: Callable[[], None]) -> None:
        self.listeners.append(fn)

    def set(self, *ids: str) -> None:
        self.view = {i: self.view.get(i, pb.Member(node_id=i)) for i in ids}
        for fn in self.listeners:
            fn()


class Peers:
    def __init__(self) -> None:
        self.out: set[str] = set()
        self.listeners: list[Callable[[], None]] = []

    def excluded(self) -> set[str]:
        return self.out

    def on_change(self, fn: Callable[[], None]) -> None:
        self.listeners.append(fn)

    def exclude(self, *ids: str) -> None:
        self.out = set(ids)
        for fn in self.listeners:
            fn()


def owner_of(ov: OwnershipView, spec: pb.TaskSpec) -> str | None:
    return ov.owner_of(spec.id, placement_of(spec))


def view(*ids: str) -> tuple[OwnershipView, Members, Peers, list[int]]:
    members, peers = Members(*ids), Peers()
    ov = OwnershipView("a", members, peers)
    calls: list[int] = []
    ov.on_change(lambda: calls.append(1))
    ov.refresh()
    return ov, members, peers, calls


def test_one_event_per_real_change() -> None:
    ov, members, peers, calls = view("a", "b", "c")
    assert ov.owners == ("a", "b", "c") and calls == [1]
    peers.exclude("b")
    assert ov.owners == ("a", "c") and calls == [1, 1]
    members.set("a", "b", "c")  # a keepalive-like change: same owners, no event
    assert calls == [1, 1]
    ov.set_draining()
    assert ov.owners == ("c",) and calls == [1, 1, 1]


def test_not_registered_owns_nothing() -> None:
    ov, _, _, _ = view("b", "c")
    assert ov.owners == ()
    assert not ov.owns("t", Placement())


def test_filters_narrow_the_members_a_task_is_hashed_over() -> None:
    ov, members, _, calls = view("a", "b", "c")
    members.view["b"].address = "ssd"  # stands in for a label this test filters on
    before = len(calls)
    ov.add_filter(lambda p, m: not p.node_selector or m.address == p.node_selector)
    assert len(calls) == before + 1  # a new filter is a change: listeners reconcile
    plain, pinned = Placement(), Placement(node_selector="ssd")
    assert ov.owner_of("t1", plain) == owner("t1", ["a", "b", "c"])
    assert ov.eligible(pinned) == ("b",) and ov.owner_of("t2", pinned) == "b"
    assert ov.next_owner("t2", pinned) == "b"  # the others, filtered
    nowhere = Placement(node_selector="gpu")
    assert ov.eligible(nowhere) == () and ov.owner_of("t3", nowhere) is None
    assert not ov.owns("t4", Placement(paused=True))
    members.view["b"].address = "hdd"  # a member changed, the owners did not: asked again
    members.set("a", "b", "c")
    assert ov.eligible(pinned) == ()


T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def zoned(ov: OwnershipView, members: Members, **zones: tuple[str, int]) -> None:
    """Give each member a zone label and a start ``T0 + minutes``."""
    for node_id, (zone, minutes) in zones.items():
        members.view[node_id].labels["zone"] = zone
        members.view[node_id].started_at.FromDatetime(T0 + timedelta(minutes=minutes))
    ov.changed()


def test_node_selector_filter_hashes_over_matching_members_only() -> None:
    ov, members, peers, _ = view("a", "b", "c", "d")
    ov.add_filter(matches_node_selector)
    zoned(ov, members, a=("x", 0), b=("x", 0), c=("y", 0), d=("y", 0))
    specs = [pb.TaskSpec(id=f"t{i}", node_selector="zone=y") for i in range(50)]
    assert {owner_of(ov, s) for s in specs} == {"c", "d"}  # both get some, never a or b
    for s in specs:
        assert owner_of(ov, s) == owner(s.id, ["c", "d"])
        assert ov.next_owner(s.id, placement_of(s)) in (
            "c",
            "d",
        )  # handoff stays within the matching set
    peers.exclude("c")  # c dies: failover within the set
    assert {owner_of(ov, s) for s in specs} == {"d"}
    peers.exclude("c", "d")  # the whole zone is gone: unschedulable, nobody owns it
    assert {owner_of(ov, s) for s in specs} == {None} and not any(
        ov.owns(s.id, placement_of(s)) for s in specs
    )
    everywhere = pb.TaskSpec(id="t", node_selector="")
    assert owner_of(ov, everywhere) == owner("t", ["a", "b"])
    assert ov.eligible(Placement(node_selector="zone in (")) == ()  # unreadable


def test_ineligible_window_spans_live_members_without_a_match() -> None:
    ov, members, peers, _ = view("a", "b", "c")
    ov.add_filter(matches_node_selector)
    # a and b (zone x) have been up since T0; c (zone y) started 10 minutes later
    zoned(ov, members, a=("x", 0), b=("x", 5), c=("y", 10))
    in_y = Placement(node_selector="zone=y")
    assert ov.ineligible_window(in_y) == (T0, T0 + timedelta(minutes=10))
    assert ov.ineligible_window(Placement()) is None  # no selector: all are eligible
    in_x = Placement(node_selector="zone=x")
    assert ov.ineligible_window(in_x) is None  # an eligible member was up all along
    peers.exclude("a")
    assert ov.ineligible_window(in_x) is None  # b was up as early as any live member
    assert ov.ineligible_window(Placement(node_selector="zone=z")) is None  # none
