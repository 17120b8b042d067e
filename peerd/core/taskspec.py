"""Changing a stored task (pure): normalisation, what an update keeps, what changed.

A ``TaskSpec`` holds two kinds of fields:

* **user fields**, set by whoever creates or updates the task (schedule, target, policies,
  description, labels, ``paused``, ...);
* **server fields** (:data:`SERVER_FIELDS`), which only the server sets: ``created_at``,
  ``updated_at``, ``resumed_at``, ``paused_at``, ``pause_note`` (PauseTask's note),
  ``revision`` (read from etcd, never stored), ``schedule_since`` and ``previous_schedule``.

:func:`prepare_update` turns a stored spec and the spec a caller wants into the spec to store:

=====================  ==========================================================================
field                  after the update
=====================  ==========================================================================
user fields            the caller's (normalised: :func:`normalise`)
``id``, ``created_at`` kept (the id cannot change)
``paused``             the caller's; a change pauses (``paused_at`` = now, no note) or resumes
                       (``resumed_at`` = now, note cleared) exactly as PauseTask / ResumeTask
``schedule``           when it changed: ``previous_schedule`` = the old one with its ``since``,
                       ``schedule_since`` = now (:mod:`peerd.core.task_schedule`)
``updated_at``         now, if anything changed; otherwise nothing is written at all
=====================  ==========================================================================

:func:`field_changes` lists what changed as field paths with JSON values, for the task's history.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.protobuf import json_format

from peerd.core.crontab import normalise_cron
from peerd.v1 import scheduler_pb2 as pb

SERVER_FIELDS = (
    "created_at",
    "updated_at",
    "resumed_at",
    "paused_at",
    "pause_note",
    "revision",
    "schedule_since",
    "previous_schedule",
)
"""TaskSpec fields only the server sets; a create or update request's values are ignored."""
_SERVER_MESSAGES = tuple(f for f in SERVER_FIELDS if f not in ("pause_note", "revision"))
MAX_VALUE_CHARS = 200
"""A history value longer than this is cut (with ``…``)."""
CREATE_OPS, UPDATE_OPS, DELETE_OPS = 1, 3, 3
"""etcd operations of one change in a task write (:meth:`peerd.coord.store.TaskStore.write`): a
create puts the task; an update puts it and its change record and deletes the oldest records; a
delete removes the task, its run records and its history."""


def write_ops(creates: int, updates: int, deletes: int) -> int:
    """etcd operations of a task write with that many changes (it fits one transaction when at
    most :data:`peerd.core.budget.MAX_TXN_OPS`, 128)."""
    return creates * CREATE_OPS + updates * UPDATE_OPS + deletes * DELETE_OPS


def normalise(spec: pb.TaskSpec, field: str = "task") -> None:
    """Normalise ``spec`` in place as the server stores it: a cron expression single-spaced
    (``@every D`` becomes ``every``), the HTTP method upper-case (default POST).

    Raises:
        InvalidArgument: ``<field>.schedule.cron`` when the expression is malformed.
    """
    if spec.schedule.WhichOneof("kind") == "cron":
        cron, every = normalise_cron(spec.schedule.cron, f"{field}.schedule.cron")
        if every is not None:
            spec.schedule.every.FromTimedelta(every)
        elif cron is not None:
            spec.schedule.cron = cron
    if spec.WhichOneof("target") == "http":
        spec.http.method = spec.http.method.upper() or "POST"


def user_view(spec: pb.TaskSpec, keep: tuple[str, ...] = ()) -> pb.TaskSpec:
    """A copy of ``spec`` without the server fields (but those in ``keep``), for comparing two
    specs by what their users set: a Python target's ``args_json`` is re-serialised, so JSON
    that differs only in spacing compares equal. ``spec`` should be normalised."""
    out = pb.TaskSpec()
    out.CopyFrom(spec)
    for name in SERVER_FIELDS:
        if name not in keep:
            out.ClearField(name)
    if out.WhichOneof("target") == "python" and out.python.args_json:
        with contextlib.suppress(ValueError):  # invalid JSON is the validator's to reject
            out.python.args_json = json.dumps(json.loads(out.python.args_json))
    return out


def same_user_fields(a: pb.TaskSpec, b: pb.TaskSpec) -> bool:
    """Whether two (normalised) specs agree on every user field."""
    return user_view(a) == user_view(b)


def schedule_changed(before: pb.TaskSpec, after: pb.TaskSpec) -> bool:
    """Whether the slots of the task may differ: its ``schedule`` message differs."""
    return before.schedule != after.schedule


def set_paused(spec: pb.TaskSpec, paused: bool, note: str, now: datetime) -> bool:
    """Pause or resume ``spec`` in place, as PauseTask / ResumeTask do; returns whether it
    changed.

    * pause an active task: ``paused``, ``paused_at`` = now, ``pause_note`` = ``note``;
    * pause a paused task with a different non-empty note: only the note changes;
    * resume a paused task: ``resumed_at`` = now, ``pause_note`` cleared (``paused_at`` stays:
      when it was last paused);
    * anything else changes nothing.

    ``updated_at`` is the caller's to set.
    """
    if paused and not spec.paused:
        spec.paused = True
        spec.pause_note = note
        spec.paused_at.FromDatetime(now)
    elif paused and note and note != spec.pause_note:
        spec.pause_note = note
    elif not paused and spec.paused:
        spec.paused = False
        spec.pause_note = ""
        spec.resumed_at.FromDatetime(now)
    else:
        return False
    return True


def prepare_update(
    current: pb.TaskSpec, desired: pb.TaskSpec, now: datetime, field: str = "task"
) -> pb.TaskSpec:
    """The spec to store when ``desired`` replaces ``current`` at ``now`` (rules in the module
    docstring). ``desired.id`` must equal ``current.id`` (the caller checks). When nothing
    changed, the result equals ``current`` (compare with :func:`field_changes`).

    Raises:
        InvalidArgument: ``<field>.schedule.cron`` when the expression is malformed.
    """
    new = pb.TaskSpec()
    new.CopyFrom(desired)
    normalise(new, field)
    for name in SERVER_FIELDS:
        new.ClearField(name)
    for name in _SERVER_MESSAGES:
        if current.HasField(name):
            getattr(new, name).CopyFrom(getattr(current, name))
    new.pause_note = current.pause_note
    new.paused = current.paused
    set_paused(new, desired.paused, "", now)
    if schedule_changed(current, new):
        prev = new.previous_schedule
        prev.Clear()
        prev.schedule.CopyFrom(current.schedule)
        prev.since.CopyFrom(
            current.schedule_since if current.HasField("schedule_since") else current.created_at
        )
        new.schedule_since.FromDatetime(now)
    if not field_changes(current, new):
        new.CopyFrom(current)  # nothing to write (JSON spacing, say, is not a change)
        return new
    new.updated_at.FromDatetime(now)
    return new


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(inner, f"{path}.{key}" if path else str(key), out)
    else:
        out[path] = value


def flatten(doc: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1]}`` -> ``{"a.b": 1, "c": [1]}`` (lists and empty mappings are
    values)."""
    out: dict[str, Any] = {}
    _flatten(doc, "", out)
    return out


def _json(value: Any) -> str:
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def field_changes(
    before: pb.TaskSpec,
    after: pb.TaskSpec,
    shown: Callable[[pb.TaskSpec], pb.TaskSpec] = lambda spec: spec,
) -> list[pb.FieldChange]:
    """The user fields (and ``pause_note``) that differ, as paths in proto field names with JSON
    values (:data:`MAX_VALUE_CHARS` at most; "" = unset), sorted by path. ``[]``: no change.
    The values recorded are those of ``shown(spec)`` (e.g. :func:`peerd.core.redact.redact_spec`:
    a changed credential is listed, its values are not)."""
    keep = ("pause_note",)
    a = flatten(_to_dict(user_view(before, keep)))
    b = flatten(_to_dict(user_view(after, keep)))
    sa = flatten(_to_dict(user_view(shown(before), keep)))
    sb = flatten(_to_dict(user_view(shown(after), keep)))
    return [
        pb.FieldChange(field=path, before=_json(sa.get(path)), after=_json(sb.get(path)))
        for path in sorted(set(a) | set(b))
        if a.get(path) != b.get(path)
    ]


def _to_dict(spec: pb.TaskSpec) -> dict[str, Any]:
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)


__all__ = [
    "CREATE_OPS",
    "DELETE_OPS",
    "SERVER_FIELDS",
    "UPDATE_OPS",
    "field_changes",
    "flatten",
    "normalise",
    "prepare_update",
    "same_user_fields",
    "schedule_changed",
    "set_paused",
    "user_view",
    "write_ops",
]
