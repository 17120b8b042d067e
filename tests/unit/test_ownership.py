"""peerd.engine.ownership: owning members as one value, one change event, eligibility filters."""

from __future__ import annotations

from collections.abc import Callable

from peerd.core.ring import owner
from peerd.engine.ownership import OwnershipView
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
    assert not ov.owns(pb.TaskSpec(id="t"))


def test_filters_narrow_the_members_a_task_is_hashed_over() -> None:
    ov, members, _, calls = view("a", "b", "c")
    members.view["b"].address = "ssd"  # stands in for a label this test filters on
    before = len(calls)
    ov.add_filter(lambda spec, m: not spec.description or m.address == spec.description)
    assert len(calls) == before + 1  # a new filter is a change: listeners reconcile
    plain, pinned = pb.TaskSpec(id="t1"), pb.TaskSpec(id="t2", description="ssd")
    assert ov.owner_of(plain) == owner("t1", ["a", "b", "c"])
    assert ov.eligible(pinned) == ("b",) and ov.owner_of(pinned) == "b"
    assert ov.next_owner(pinned) == "b"  # the others, filtered
    nowhere = pb.TaskSpec(id="t3", description="gpu")
    assert ov.eligible(nowhere) == () and ov.owner_of(nowhere) is None
    assert not ov.owns(pb.TaskSpec(id="t4", paused=True))
