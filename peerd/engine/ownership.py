"""Which members own tasks in this node's view, as one value with one change event.

Ownership (:func:`peerd.core.ring.owner`, rendezvous hashing) is computed over the *owning
members*: the members registered in etcd (this node's watched view), minus those that own
nothing: confirmed dead by the failure detector, draining (their member key says so, or they
told us), not claiming (they told us they are cut off from etcd), and this node itself while it
drains. A node that is not registered in its own view owns nothing.

These facts come from two sources (membership and the peer layer) and change independently;
:class:`OwnershipView` folds them into one sorted tuple and calls its listeners once per change
of that tuple, so the engine reconciles once per real change and never on noise (a keepalive, a
rumour that changes nothing). Views of different nodes may differ for a moment; ownership is an
optimisation, the fenced claim is what keeps a slot exactly-once.

Not every owning member may own every task: *eligibility filters* (:meth:`OwnershipView.
add_filter`) narrow the members a task is hashed over, e.g. to the nodes whose labels match its
node selector, or whose time-zone rules are the cluster's. A task's owner is the rendezvous
winner among the owning members that every filter accepts for it; with none, the task is
*unschedulable* and nobody owns it. A filter whose answers change without a member-key change
(an agreed setting read from etcd) calls :meth:`OwnershipView.changed`. The node-selector filter
(:func:`matches_node_selector`: the member's labels match the task's ``node_selector``) is
registered by the composition root. Failover and handoff use the same filtered owner, so they
stay within the matching members.

**Slots missed while unschedulable.** Nobody owns an unschedulable task, so nobody records its
slots as they pass. The node that acquires it later plans them from the ledger's cursor under
the task's catch-up policy; :meth:`OwnershipView.ineligible_window` tells it which of them were
missed while no live member was eligible, judging by the members live now: from the earliest
start (``Member.started_at``) of an owning member to the earliest start of an eligible one. A
slot in that window would have been run by nobody: the members that were up then are not
eligible, the eligible ones were not up yet. Its skip reason is ``unschedulable``; slots missed
before any live member started (a whole-cluster outage), or while an eligible member was up
but could not run them, keep the ordinary reasons. Members that have left since are not known,
so the window is the part of the outage that the live members vouch for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from peerd.core.labels import selector_matches
from peerd.core.placement import Placement
from peerd.core.ring import owner
from peerd.v1 import scheduler_pb2 as pb


class MemberView(Protocol):
    """This node's watched view of the member keys (a narrow view of Membership)."""

    @property
    def view(self) -> Mapping[str, pb.Member]: ...

    def on_change(self, fn: Callable[[], None]) -> None: ...


class Exclusions(Protocol):
    """Members the peer layer says own nothing: dead, draining, or not claiming."""

    def excluded(self) -> set[str]: ...

    def on_change(self, fn: Callable[[], None]) -> None: ...


Eligible = Callable[[Placement, pb.Member], bool]
"""``(placement, member) -> whether the member may own tasks of that placement`` (pure; called
once per distinct placement and member after each change, the answers are cached)."""


def matches_node_selector(placement: Placement, member: pb.Member) -> bool:
    """The node-selector filter: ``member``'s labels match ``placement.node_selector`` (always,
    for an empty selector; never, for one this node cannot parse: see
    :func:`peerd.core.labels.selector_matches`)."""
    return not placement.node_selector or selector_matches(placement.node_selector, member.labels)


class OwnershipView:
    """The owning members of this node's view (see the module docstring).

    Args:
        node_id: this node.
        members: the member view.
        exclusions: the peer layer's verdicts.
    """

    def __init__(self, node_id: str, members: MemberView, exclusions: Exclusions) -> None:
        self.node_id = node_id
        self._members = members
        self._exclusions = exclusions
        self._draining = False
        self.changes = 0
        """Times the set of owning members changed (ring changes, since start)."""
        self._owners: tuple[str, ...] = ()
        self._listeners: list[Callable[[], None]] = []
        self._filters: list[Eligible] = []
        self._eligible: dict[Placement, tuple[str, ...]] = {}
        self._facts: tuple[bytes, ...] = ()
        members.on_change(self.refresh)
        exclusions.on_change(self.refresh)

    @property
    def owners(self) -> tuple[str, ...]:
        """Owning members, sorted; empty while this node is not registered in its own view."""
        return self._owners

    @property
    def draining(self) -> bool:
        """Whether this node drains (then it owns nothing)."""
        return self._draining

    def set_draining(self) -> None:
        """This node drains: it owns nothing from now on."""
        self._draining = True
        self.refresh()

    def on_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change of :attr:`owners`."""
        self._listeners.append(fn)

    def add_filter(self, eligible: Eligible) -> None:
        """Narrow the members each task may be owned by (see the module docstring)."""
        self._filters.append(eligible)
        self.changed()

    def changed(self) -> None:
        """The answers of a filter changed: notify listeners (they reconcile)."""
        self._eligible.clear()
        for fn in self._listeners:
            fn()

    def eligible(self, placement: Placement) -> tuple[str, ...]:
        """The owning members that may own tasks of ``placement`` (every filter accepts them);
        computed once per placement until the members or a filter's answers change."""
        found = self._eligible.get(placement)
        if found is not None:
            return found
        view = self._members.view
        found = tuple(
            m
            for m in self._owners
            if (member := view.get(m)) is not None
            and all(f(placement, member) for f in self._filters)
        )
        self._eligible[placement] = found
        return found

    def ineligible_window(self, placement: Placement) -> tuple[datetime, datetime] | None:
        """When live members were up but none was eligible for tasks of ``placement``,
        judging by the members owning now: ``[earliest start of an owning member, earliest
        start of an eligible one)`` (module docstring). None when that is empty, no member is
        eligible, or no filter narrows the owning members for ``placement``."""
        eligible = self.eligible(placement)
        if not eligible or len(eligible) == len(self._owners):
            return None
        view = self._members.view

        def started(ids: tuple[str, ...]) -> datetime | None:
            return min((view[m].started_at.ToDatetime(UTC) for m in ids if m in view), default=None)

        start, end = started(self._owners), started(eligible)
        return (start, end) if start is not None and end is not None and start < end else None

    def owner_of(
        self, task_id: str, placement: Placement, exclude_self: bool = False
    ) -> str | None:
        """The owner of task ``task_id`` among the members eligible for its ``placement``
        (None: unschedulable, or no members); ``exclude_self``: the owner once this node gives
        it up. Cost: one rendezvous weight per eligible member (about 2-5 µs each here)."""
        among = self.eligible(placement)
        if exclude_self:
            among = tuple(m for m in among if m != self.node_id)
        return owner(task_id, among)

    def owns(self, task_id: str, placement: Placement) -> bool:
        """Whether this node plans the task (owned here and not paused)."""
        return not placement.paused and self.owner_of(task_id, placement) == self.node_id

    def next_owner(self, task_id: str, placement: Placement) -> str | None:
        """Who owns the task once this node gives it up (the owner among the others)."""
        return self.owner_of(task_id, placement, exclude_self=True)

    def refresh(self) -> None:
        """Recompute :attr:`owners` from both sources; notify listeners if it changed, or if
        an owning member's key changed (the filters read its labels and tzdata version)."""
        registered = self._members.view
        if self.node_id not in registered:
            owners: tuple[str, ...] = ()
        else:
            excluded = self._exclusions.excluded()
            if self._draining:
                excluded = excluded | {self.node_id}
            owners = tuple(sorted(m for m in registered if m not in excluded))
        facts = tuple(registered[m].SerializeToString(deterministic=True) for m in owners)
        if owners == self._owners and facts == self._facts:
            return
        self._eligible.clear()
        self._facts = facts
        if owners != self._owners:
            self._owners = owners
            self.changes += 1
        for fn in self._listeners:
            fn()
