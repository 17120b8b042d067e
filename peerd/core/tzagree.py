"""The cluster's agreed tzdata version, and who may own zone-dependent tasks (pure).

Every node publishes the version of its time-zone rules in its member key
(``Member.tzdata_version``, :mod:`peerd.core.tzrules`). The cluster agrees on one version, kept
in etcd (``tzdata/agreed``, :mod:`peerd.coord.tzdata`); only members running it own tasks whose
slots depend on tzdata (:func:`peerd.core.tzrules.zone_dependent`), and every claim of such a
slot is fenced on that key (:mod:`peerd.coord.ledger`), so a node whose view is stale cannot
claim either. Tasks in UTC, ``every`` and ``at`` are owned by every node as before.

How the agreed version is chosen (:func:`agreed_version`), in order:

=================================================  ===========================================
situation                                          agreed version
=================================================  ===========================================
pinned by an operator (``peerd tzdata pin V``)     V, whatever the members run
a live member runs the current agreed version      unchanged (sticky)
no live member runs it (or none agreed yet)        the version most live members run; a tie
                                                   goes to the newest (:func:`version_key`)
no live member publishes a version                 unchanged
=================================================  ===========================================

*Live* members are the member keys in etcd that are not draining (a member drains when it is
stopped, e.g. for an upgrade). Why sticky: during a rolling upgrade nodes move from X to Y one
by one; the zone-dependent tasks stay on the X nodes, with one set of rules, until the last X
node stops, and then move to the Y nodes in one switch. A majority rule would switch halfway
and back whenever a node of the majority restarts; "the newest" would pile every zone-dependent
task on the first upgraded node, and let one node with a stray database take them all. With a
pin the operator decides when the switch happens (``docs/scheduling.md``, "Time-zone rules").

A switch is safe at any moment: a node takes a task over from the ledger's newest record, and
when that slot was computed with other rules it skips the slots whose local time was already
run (:meth:`peerd.core.schedule.CompiledSchedule.after_local`), so a day's 09:00 never fires
twice; a slot the new rules place before the switch fires late, under the task's catch-up
policy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from peerd.core.tzrules import version_key, zone_dependent
from peerd.v1 import scheduler_pb2 as pb


def live_versions(members: Mapping[str, pb.Member]) -> list[str]:
    """The tzdata versions of the live members (not draining, version published)."""
    return [m.tzdata_version for m in members.values() if m.tzdata_version and not m.draining]


def agreed_version(current: str | None, pinned: bool, live: Iterable[str]) -> str | None:
    """The version the cluster should agree on now (the table in the module docstring).

    Args:
        current: the agreed version in etcd, None when none was ever agreed.
        pinned: whether an operator pinned ``current``.
        live: the versions of the live members, one per member (:func:`live_versions`).

    Returns:
        The version to agree on; None only when nothing was agreed and nobody publishes one.
    """
    versions = [v for v in live if v]
    if pinned or not versions or (current is not None and current in versions):
        return current
    counts = Counter(versions)
    return max(counts, key=lambda v: (counts[v], version_key(v)))


def may_own(schedule: pb.Schedule, version: str, agreed: str | None) -> bool:
    """Whether a member with tzdata ``version`` may own a task with ``schedule``: always when
    ``version`` is the agreed one, else only when the schedule does not depend on time-zone
    rules (:func:`peerd.core.tzrules.zone_dependent`). While no version is agreed, nobody owns
    a zone-dependent task. Cheap: the version is compared first."""
    return may_own_zone(zone_dependent(schedule), version, agreed)


def may_own_zone(zone_dependent: bool, version: str, agreed: str | None) -> bool:
    """:func:`may_own` for a schedule already known to be ``zone_dependent`` or not (a task's
    :class:`peerd.core.placement.Placement`)."""
    return (agreed is not None and version == agreed) or not zone_dependent


def mismatch(version: str, agreed: str | None, pinned: bool) -> str | None:
    """Why a node with tzdata ``version`` owns no zone-dependent task, or None when it may.

    E.g. ``"tzdata 2025b differs from the cluster's 2026f (pinned): this node claims no slot
    of a task whose schedule depends on time-zone rules"``.
    """
    if agreed == version:
        return None
    if agreed is None:
        return "the cluster has not agreed on a tzdata version yet"
    how = "pinned" if pinned else "agreed"
    return (
        f"tzdata {version or 'unknown'} differs from the cluster's {agreed} ({how}): this node "
        "claims no slot of a task whose schedule depends on time-zone rules"
    )


__all__ = ["agreed_version", "live_versions", "may_own", "may_own_zone", "mismatch"]
