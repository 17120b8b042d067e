"""Rendering of the cluster view (``GetCluster``) for the CLI (pure): ``peerd cluster``, the
time-zone rules of ``peerd tzdata status`` and ``peerd version``, and where a task with a node
selector may run (``peerd task get``).
"""

from __future__ import annotations

from peerd.cli_output import NONE, fmt_ts, format_table
from peerd.core.labels import format_labels, selector_matches
from peerd.v1 import scheduler_pb2 as pb


def _member_state(m: pb.Member) -> str:
    return "dead" if m.suspected_dead else "draining" if m.draining else "alive"


def cluster_text(c: pb.GetClusterResponse) -> str:
    """Summary line, etcd's database size and alarms, the time-zone rules (:func:`tzdata_lines`),
    then one row per member: node, address, state (alive, draining, or dead as confirmed by the
    answering node's failure detector while the lease still holds), started, version, tzdata,
    owned tasks, and its labels when any member has some; then the unschedulable tasks, one line
    each."""
    head = (
        f"cluster {c.cluster}: {len(c.members)} members, {c.task_count} tasks "
        f"(answered by {c.node_id}, revision {c.revision})"
    )
    labelled = any(m.labels for m in c.members)
    rows = [
        [
            m.node_id,
            m.address,
            _member_state(m),
            fmt_ts(m.started_at),
            m.version or NONE,
            m.tzdata_version or NONE,
            str(m.owned_tasks),
            *([format_labels(m.labels) or NONE] if labelled else []),
        ]
        for m in sorted(c.members, key=lambda m: m.node_id)
    ]
    headers = ["NODE", "ADDRESS", "STATE", "STARTED", "VERSION", "TZDATA", "OWNED TASKS"]
    table = format_table(headers + (["LABELS"] if labelled else []), rows)
    return "\n".join([head, *_etcd_lines(c), *tzdata_lines(c), table, *_unschedulable_lines(c)])


def tzdata_lines(c: pb.GetClusterResponse) -> list[str]:
    """The agreed tzdata version (pinned or agreed) and, when members run another one, the
    mismatch: those members claim no slot of a task whose schedule depends on time-zone rules."""
    how = "pinned" if c.tzdata_pinned else "agreed"
    agreed = c.tzdata_version
    lines = [f"tzdata: {agreed} ({how})" if agreed else "tzdata: no version agreed yet"]
    other: dict[str, list[str]] = {}
    for m in sorted(c.members, key=lambda m: m.node_id):
        if m.tzdata_version != agreed:
            other.setdefault(m.tzdata_version or "unknown", []).append(m.node_id)
    for version, nodes in sorted(other.items()):
        lines.append(
            f"tzdata MISMATCH: {', '.join(nodes)} run{'s' if len(nodes) == 1 else ''} {version}, "
            f"not {agreed or 'an agreed version'}: no slot of a task whose schedule depends on "
            "time-zone rules is claimed there (docs/scheduling.md, 'Time-zone rules')"
        )
    return lines


def _unschedulable_lines(c: pb.GetClusterResponse) -> list[str]:
    """``task ID: unschedulable: REASON`` per unschedulable task (and how many more)."""
    lines = [f"task {u.task_id}: unschedulable: {u.reason}" for u in c.unschedulable_tasks]
    more = c.unschedulable_count - len(c.unschedulable_tasks)
    if more > 0:
        lines.append(f"... and {more} more unschedulable tasks")
    return lines


def scheduling_text(t: pb.TaskSpec, c: pb.GetClusterResponse) -> str:
    """Where task ``t`` (with a node selector) may run in the cluster view ``c``: the
    ``unschedulable: REASON`` of the answering node, else the live members its selector
    matches."""
    for u in c.unschedulable_tasks:
        if u.task_id == t.id:
            return f"unschedulable: {u.reason}"
    matching = [
        m.node_id
        for m in c.members
        if _member_state(m) == "alive"
        and not m.not_claiming
        and selector_matches(t.node_selector, m.labels)
    ]
    if matching:
        return f"{len(matching)} live node(s) match: {', '.join(sorted(matching))}"
    if c.unschedulable_count > len(c.unschedulable_tasks):
        return "unknown (more unschedulable tasks than one cluster view lists)"
    return "no live node in the answering node's member list matches"


def _etcd_lines(c: pb.GetClusterResponse) -> list[str]:
    """The etcd line (database size, compactor) and one line per alarm in force."""
    lines = []
    if c.etcd_db_size_bytes:
        mib = 1024 * 1024
        lines.append(
            f"etcd: database {c.etcd_db_size_bytes / mib:.1f} MiB "
            f"({c.etcd_db_size_in_use_bytes / mib:.1f} MiB in use), "
            f"compactor {c.etcd_compactor or NONE}"
        )
    for a in c.etcd_alarms:
        what = (
            "etcd is out of space: writes are refused and no node claims; see docs/operations.md"
            if a.alarm == "NOSPACE"
            else "see etcd's documentation"
        )
        lines.append(f"ALARM {a.alarm} on etcd member {a.member_id:x}: {what}")
    return lines


__all__ = ["cluster_text", "scheduling_text", "tzdata_lines"]
