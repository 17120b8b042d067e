"""What ownership needs to know of a task: its *placement*, a few fields shared by many tasks.

A node holds every task of the cluster in its task view, but owns only about 1/N of them. To
decide which, it needs only the fields the eligibility filters and the owner computation read
(:mod:`peerd.engine.ownership`): whether the task is paused, its node selector, and whether its
slots depend on time-zone rules (:func:`peerd.core.tzrules.zone_dependent`). Those make a
:class:`Placement`. Most tasks of a cluster share one (not paused, no selector, UTC), so the
view keeps one object per distinct placement (:class:`Placements`), and the filters are
evaluated once per placement and member, not once per task.

Measured with 100,000 tasks on 3 nodes (``bench/scale.py``, docs/performance.md (Part 2)): a
decoded ``TaskSpec`` costs about 1.3 KiB of memory, its serialized bytes about 0.2 KiB; a
shared placement costs a reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from peerd.core.tzrules import zone_dependent
from peerd.v1 import scheduler_pb2 as pb


@dataclass(frozen=True, slots=True, eq=False)
class Placement:
    """The ownership facts of a task (see the module docstring). Compared and hashed by
    identity (C speed: the ownership view looks one up per task of a reconcile pass; the
    generated ``__hash__``/``__eq__`` took 16 % of a pass), so share them (:class:`Placements`).

    Attributes:
        paused: a paused task is owned by nobody.
        node_selector: the task's label selector over member labels ("" = any member).
        zone_dependent: its slots depend on tzdata (only members of the agreed version own it).
    """

    paused: bool = False
    node_selector: str = ""
    zone_dependent: bool = False


COMMON = Placement()
"""The placement of most tasks (not paused, no selector, not zone-dependent): :class:`Placements`
hands out this object for it, so a view can store only the tasks whose placement differs."""


def placement_of(spec: pb.TaskSpec) -> Placement:
    """The placement of ``spec`` (a new object; :class:`Placements` shares equal ones)."""
    return Placement(spec.paused, spec.node_selector, zone_dependent(spec.schedule))


class Placements:
    """Interns placements: equal placements are returned as one shared object.

    Bounded by the number of distinct (paused, selector, zone-dependence) triples in the
    cluster, typically a handful; :meth:`clear` empties it (e.g. after a full re-list).
    """

    def __init__(self) -> None:
        self._known: dict[tuple[bool, str, bool], Placement] = {}
        self.clear()

    def of(self, spec: pb.TaskSpec) -> Placement:
        """The shared placement of ``spec``."""
        key = (spec.paused, spec.node_selector, zone_dependent(spec.schedule))
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = Placement(*key)
        return found

    def clear(self) -> None:
        """Forget every placement but :data:`COMMON` (objects handed out stay valid)."""
        self._known.clear()
        self._known[(COMMON.paused, COMMON.node_selector, COMMON.zone_dependent)] = COMMON

    def __len__(self) -> int:
        return len(self._known)


__all__ = ["COMMON", "Placement", "Placements", "placement_of"]
