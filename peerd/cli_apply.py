"""``peerd apply -f FILE|DIR`` and ``peerd diff -f FILE|DIR``: converge the cluster on a file.

Every document of the file (or of the directory's files: :mod:`peerd.cli_doc`) is read and
validated before anything is sent; errors name the file, the document and the key, and one bad
document stops the whole apply. Each task is stamped with the label ``managed-by=NAME``
(``--managed-by``, default: the file's or directory's name without extension). Then, against
the tasks in the cluster:

* a task of the file that does not exist is **created**;
* one that exists and differs in any field the file sets is **updated** (the whole spec, with
  the revision read as ``expected_revision``; ``paused`` only when the document says it);
* with ``--prune``, a task labelled ``managed-by=NAME`` that the file no longer has is
  **deleted** (with its runs and history). Tasks without that label are never pruned.

A task equal to its document is left alone: applying the same file twice writes nothing and
bumps no revision. The changes go to the server in ApplyTasks calls, each one etcd transaction
(all or nothing) of at most 128 operations (a create costs 1, an update or delete 3:
:func:`peerd.core.taskspec.write_ops`), so up to 128 creates or 42 updates or deletes apply
atomically; a larger apply is sent in several transactions, creates and updates first, deletes
last, and stops at the first refused one (already sent transactions stay applied, as the
output says). A task changed by someone else between the read and the write makes its
transaction fail with ABORTED (exit 9): run apply again.

``peerd diff`` computes the same plan, prints it as a field-level diff and exits 0 when nothing
would change, 1 when something would (like ``kubectl diff``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peerd.cli_auth import api_client
from peerd.cli_doc import DocumentError, doc_to_spec, load_documents, spec_to_doc
from peerd.cli_spec import print_error
from peerd.client import SchedulerClient
from peerd.core.budget import MAX_TXN_OPS
from peerd.core.redact import REDACTED, needs_redaction, restore_redacted
from peerd.core.taskspec import (
    CREATE_OPS,
    DELETE_OPS,
    UPDATE_OPS,
    flatten,
    normalise,
    same_user_fields,
)
from peerd.errors import InvalidArgument
from peerd.exitcodes import EXIT_ERROR, EXIT_INVALID, EXIT_OK
from peerd.v1 import scheduler_pb2 as pb

MANAGED_BY = "managed-by"
"""The label naming the file (set) a task is applied from; ``--prune`` works on it."""
_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Desired:
    """One task of the file: where it is, its spec (normalised, labelled) and whether the
    document sets ``paused``."""

    where: str
    spec: pb.TaskSpec
    paused_given: bool


@dataclass
class ApplyPlan:
    """What an apply does: creates, updates ``(desired spec, live spec)``, deletes (live specs)
    and the ids left alone."""

    creates: list[pb.TaskSpec] = field(default_factory=list)
    updates: list[tuple[pb.TaskSpec, pb.TaskSpec]] = field(default_factory=list)
    deletes: list[pb.TaskSpec] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    hidden: list[tuple[pb.TaskSpec, pb.TaskSpec]] = field(default_factory=list)
    """Tasks equal to the file but for credential values the server shows redacted (this client
    cannot compare them): sent as updates, which the server applies only when a value differs
    (:func:`peerd.core.redact.restore_redacted`); counted as unchanged until it says so."""

    @property
    def changes(self) -> int:
        return len(self.creates) + len(self.updates) + len(self.deletes)


def managed_by_name(path: Path, given: str | None) -> str:
    """The ``managed-by`` label value: ``given``, or the file's stem / the directory's name with
    characters a label value cannot hold replaced by ``-``.

    Raises:
        InvalidArgument: ``--managed-by`` when the value is not a label value (1..63 of
            ``A-Za-z0-9._-``, alphanumeric at both ends).
    """
    name = given
    if name is None:
        base = path.resolve().name if path.is_dir() else path.stem
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("._-")[:63].strip("._-")
    if not _LABEL_VALUE_RE.match(name):
        raise InvalidArgument(
            "--managed-by",
            f"{name!r} is not a label value (1-63 of A-Za-z0-9._-, alphanumeric at both ends)"
            + ("" if given is not None else f"; the name comes from {str(path)!r}: set it"),
        )
    return name


def read_desired(path: Path, managed_by: str) -> list[Desired]:
    """Every task of ``path``, validated and stamped ``managed-by``.

    Raises:
        InvalidArgument: a file that cannot be read or parsed. ExceptionGroup of
            :class:`DocumentError`: the invalid documents, all of them (nothing is applied).
    """
    out: list[Desired] = []
    errors: list[InvalidArgument] = []
    seen: dict[str, str] = {}
    for where, doc in load_documents(path):
        label = f"{where} ({doc['id']})" if isinstance(doc, Mapping) and "id" in doc else where
        try:
            spec = doc_to_spec(doc, label)
            _stamp(spec, managed_by, label)
            normalise(spec)
        except DocumentError as exc:
            errors.append(exc)
            continue
        except InvalidArgument as exc:  # normalise: "task.schedule.cron" is the key "cron"
            key = exc.field.rsplit(".", 1)[-1].replace("_", "-")
            errors.append(DocumentError(label, key, exc.reason))
            continue
        if spec.id in seen:
            errors.append(DocumentError(label, "id", f"{spec.id!r} is also in {seen[spec.id]}"))
            continue
        seen[spec.id] = where
        out.append(Desired(label, spec, "paused" in doc))
    if errors:
        raise ExceptionGroup(f"{len(errors)} invalid task document(s)", errors)
    return out


def _stamp(spec: pb.TaskSpec, managed_by: str, where: str) -> None:
    have = spec.labels.get(MANAGED_BY)
    if have is not None and have != managed_by:
        raise DocumentError(
            where,
            f"labels.{MANAGED_BY}",
            f"is {have!r}, but this apply is --managed-by {managed_by}",
        )
    spec.labels[MANAGED_BY] = managed_by


def plan_apply(
    desired: list[Desired], live: list[pb.TaskSpec], managed_by: str, prune: bool
) -> ApplyPlan:
    """The plan (pure): see the module docstring."""
    by_id = {t.id: t for t in live}
    plan = ApplyPlan()
    for d in desired:
        current = by_id.get(d.spec.id)
        if current is None:
            plan.creates.append(d.spec)
            continue
        want = pb.TaskSpec()
        want.CopyFrom(d.spec)
        if not d.paused_given:
            want.paused = current.paused
        shown, hidden = _fill_redacted(current, want)
        if not same_user_fields(want, shown):
            plan.updates.append((want, current))
        elif hidden:
            plan.hidden.append((want, current))
        else:
            plan.unchanged.append(want.id)
    if prune:
        wanted = {d.spec.id for d in desired}
        plan.deletes = [
            t for t in live if t.labels.get(MANAGED_BY) == managed_by and t.id not in wanted
        ]
    return plan


def _fill_redacted(live: pb.TaskSpec, want: pb.TaskSpec) -> tuple[pb.TaskSpec, bool]:
    """``live`` with each value the server showed as :data:`REDACTED` replaced by ``want``'s
    value of the same name (when it has one), and whether any was replaced."""
    if not needs_redaction(want) or REDACTED not in str(live):
        return live, False
    shown = pb.TaskSpec()
    shown.CopyFrom(live)
    try:
        restore_redacted(shown, want)
    except InvalidArgument:  # a credential the file no longer has: a real difference
        return live, False
    return shown, True


def requests(plan: ApplyPlan) -> list[pb.ApplyTasksRequest]:
    """The plan as ApplyTasks calls, each within one transaction's 128 operations: creates and
    updates first, deletes last."""
    out = [pb.ApplyTasksRequest()]
    used = 0

    def room(cost: int) -> pb.ApplyTasksRequest:
        nonlocal used
        if used + cost > MAX_TXN_OPS:
            out.append(pb.ApplyTasksRequest())
            used = 0
        used += cost
        return out[-1]

    for spec in plan.creates:
        room(CREATE_OPS).create.append(spec)
    for want, current in [*plan.updates, *plan.hidden]:
        room(UPDATE_OPS).update.add(task=want, expected_revision=current.revision)
    for gone in plan.deletes:
        room(DELETE_OPS).delete.add(id=gone.id, expected_revision=gone.revision)
    return [r for r in out if r.create or r.update or r.delete]


def _value(v: Any) -> str:
    return "(unset)" if v is None else json.dumps(v, ensure_ascii=False)


def field_diff(before: pb.TaskSpec | None, after: pb.TaskSpec | None) -> list[str]:
    """``key: old -> new`` lines between two specs, by document key (``header.Authorization``
    for a map entry); a side that is None shows every key of the other."""
    a = flatten(spec_to_doc(before)) if before is not None else {}
    b = flatten(spec_to_doc(after)) if after is not None else {}
    lines = []
    for key in [*a, *(k for k in b if k not in a)]:
        if a.get(key) == b.get(key):
            continue
        if before is None:
            lines.append(f"{key}: {_value(b[key])}")
        elif after is None:
            lines.append(f"{key}: {_value(a[key])}")
        else:
            lines.append(f"{key}: {_value(a.get(key))} -> {_value(b.get(key))}")
    return lines


def diff_text(plan: ApplyPlan, managed_by: str) -> str:
    """The plan for people: ``+ id`` (create), ``~ id`` (update), ``- id`` (delete), each with
    its fields indented, then a summary line."""
    out: list[str] = []
    for spec in plan.creates:
        out.append(f"+ {spec.id}")
        out += [f"    {line}" for line in field_diff(None, spec) if not line.startswith("id: ")]
    for want, current in plan.updates:
        out.append(f"~ {want.id} (revision {current.revision})")
        lines = field_diff(current, want) or ["(fields the task document does not show)"]
        out += [f"    {line}" for line in lines]
    for gone in plan.deletes:
        out.append(f"- {gone.id} (revision {gone.revision}; {MANAGED_BY}={managed_by})")
    if plan.hidden:
        ids = ", ".join(w.id for w, _ in plan.hidden)
        out.append(f"(credential values not compared, shown redacted by the server: {ids})")
    out.append(summary(plan, managed_by, future=True))
    return "\n".join(out)


def summary(
    plan: ApplyPlan, managed_by: str, future: bool = False, updated: int | None = None
) -> str:
    """E.g. ``2 created, 1 updated, 0 deleted, 5 unchanged (managed-by=tasks)``. ``updated``:
    the tasks the server changed (after an apply; default: the planned updates)."""
    verbs = ("to create", "to update", "to delete") if future else ("created", "updated", "deleted")
    n_updated = len(plan.updates) if updated is None else updated
    unchanged = len(plan.unchanged) + len(plan.updates) + len(plan.hidden) - n_updated
    counts = (len(plan.creates), n_updated, len(plan.deletes))
    parts = [f"{n} {v}" for n, v in zip(counts, verbs, strict=True)]
    return f"{', '.join(parts)}, {unchanged} unchanged ({MANAGED_BY}={managed_by})"


def _prepare(args: argparse.Namespace) -> tuple[ApplyPlan, str, SchedulerClient]:
    path = Path(args.file)
    managed_by = managed_by_name(path, args.managed_by)
    desired = read_desired(path, managed_by)
    client = api_client(args)
    try:
        live = client.list_tasks()
    except BaseException:
        client.close()
        raise
    return plan_apply(desired, live, managed_by, args.prune), managed_by, client


def _invalid(group: ExceptionGroup[DocumentError]) -> int:
    for exc in group.exceptions:
        print_error(str(exc))
    return EXIT_INVALID


def cmd_diff(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``peerd diff``: print the plan; 0 = no change, 1 = changes."""
    try:
        plan, managed_by, client = _prepare(args)
    except ExceptionGroup as group:
        return _invalid(group)
    client.close()
    if args.output == "json":
        print(json.dumps(_ids(plan), indent=2))
    else:
        print(diff_text(plan, managed_by))
    return EXIT_ERROR if plan.changes else EXIT_OK


def _ids(plan: ApplyPlan) -> dict[str, list[str]]:
    return {
        "create": [s.id for s in plan.creates],
        "update": [w.id for w, _ in plan.updates],
        "delete": [s.id for s in plan.deletes],
        "unchanged": [*plan.unchanged, *(w.id for w, _ in plan.hidden)],
    }


def cmd_apply(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``peerd apply``: send the plan, print one line per change and a summary."""
    try:
        plan, managed_by, client = _prepare(args)
    except ExceptionGroup as group:
        return _invalid(group)
    lines: list[str] = []
    updated = 0
    with client:
        for n, request in enumerate(requests(plan)):
            try:
                resp = client.apply_tasks(request)
            except Exception:
                if n:
                    print("\n".join([*lines, f"(stopped after {n} transaction(s); see below)"]))
                raise
            lines += [f"created {t.id}" for t in resp.created]
            lines += [f"updated {t.id} (revision {t.revision})" for t in resp.updated]
            updated += len(resp.updated)
            lines += [f"deleted {task_id}" for task_id in resp.deleted]
    if args.output == "json":
        print(json.dumps(_ids(plan), indent=2))
    else:
        print("\n".join([*lines, summary(plan, managed_by, updated=updated)]))
    return EXIT_OK


def register(sub: Any, add: Any) -> None:
    """Add ``apply`` and ``diff`` to the top-level subcommands (``add`` is
    :func:`peerd.cli.build_parser`'s helper)."""
    for name, handler, help_ in (
        ("apply", cmd_apply, "create and update the tasks of a file (YAML, TOML, JSON)"),
        ("diff", cmd_diff, "show what apply would change; exit 0 = nothing, 1 = changes"),
    ):
        p = add(sub, name, handler, help_)
        p.add_argument("-f", "--file", required=True, metavar="FILE|DIR")
        p.add_argument(
            "--managed-by",
            metavar="NAME",
            help=f"value of the {MANAGED_BY} label stamped on every task of the file "
            "(default: the file's or directory's name without extension)",
        )
        p.add_argument(
            "--prune",
            action="store_true",
            help=f"delete tasks labelled {MANAGED_BY}=NAME that the file no longer has",
        )


__all__ = [
    "MANAGED_BY",
    "ApplyPlan",
    "Desired",
    "cmd_apply",
    "cmd_diff",
    "diff_text",
    "field_diff",
    "managed_by_name",
    "plan_apply",
    "read_desired",
    "register",
    "requests",
    "summary",
]
