"""``peerd task update``, ``peerd task edit`` and ``peerd task history``.

``task update ID [create flags]`` changes only what the flags give: the task is read, its
document (:mod:`peerd.cli_doc`) is overlaid with the flags, and the result replaces the task with
the revision read as ``expected_revision`` (exit 9 if the task changed meanwhile). Rules of the
overlay: a schedule flag (``--cron``/``--every``/``--at``) replaces the schedule kind; a target
flag replaces the target, and keeps its options (headers, env, ...) only when the kind stays the
same (``--http-post`` also drops ``method``); ``--header`` and ``--env`` replace the whole set
(give every entry); every other flag sets its field. Removing a field takes ``task edit``.

``task edit ID`` opens ``$VISUAL`` / ``$EDITOR`` (default ``vi``) on the task's document, YAML
(default) or JSON (``--format json``). Saving an unchanged file cancels. An invalid document (or
one the server refuses as invalid) is re-opened with the error on top, for YAML; saving it
unchanged again, or any error in JSON, ends the command with the error on one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import yaml

from peerd.cli_auth import api_client
from peerd.cli_doc import DocumentError, doc_to_spec, dump_json, dump_yaml, spec_to_doc
from peerd.cli_output import fmt_ts, task_detail, to_json
from peerd.cli_spec import Parser, add_create, create_flags, print_error
from peerd.client import SchedulerClient, rpc_status
from peerd.errors import InvalidArgument
from peerd.exitcodes import EXIT_INVALID, EXIT_OK
from peerd.v1 import scheduler_pb2 as pb

SCHEDULE_KEYS = ("cron", "every", "at")
TARGET_KEYS = ("http-post", "http", "shell", "python")
TARGET_OPTIONS = {
    "http": ("method", "header", "header-secret", "body"),
    "shell": ("env", "env-secret", "workdir", "run-as"),
    "python": ("args",),
}
"""Document keys that belong to a target kind."""


def _update_flags() -> dict[str, str]:
    """``dest -> document key`` of ``task update``'s flags."""
    p = Parser(prog="peerd task update")
    add_create(p, update=True)
    return create_flags(p)


_UPDATE_FLAGS = _update_flags()


def _kind(key: str) -> str:
    return "http" if key.startswith("http") else key


def _pairs(flag: str, items: list[str], sep: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            raise InvalidArgument(flag, f"expected K{sep}V, got {item!r}")
        out[key.strip() if sep == ":" else key] = value.strip() if sep == ":" else value
    return out


def overlay(doc: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the flags of ``task update`` applied (rules in the module docstring; pure).
    ``given``: document key -> the flag's parsed value (``shell``: the argv list).

    Raises:
        InvalidArgument: a malformed ``--header``/``--env`` entry.
    """
    out = dict(doc)
    if any(k in given for k in SCHEDULE_KEYS):
        for k in SCHEDULE_KEYS:
            out.pop(k, None)
    target = next((k for k in TARGET_KEYS if k in given), None)
    if target is not None:
        old = next((_kind(k) for k in TARGET_KEYS if k in out), None)
        for k in TARGET_KEYS:
            out.pop(k, None)
        if old is not None and old != _kind(target):
            for k in TARGET_OPTIONS[old]:
                out.pop(k, None)
        if target == "http-post":
            out.pop("method", None)
    for key, value in given.items():
        if key == "header":
            out[key] = _pairs("--header", value, ":")
        elif key == "env":
            out[key] = _pairs("--env", value, "=")
        elif key in ("header-secret", "env-secret"):
            out[key] = _pairs(f"--{key}", value, "=")
        elif key == "label":  # --label K=V adds or changes one label; the others stay
            out["labels"] = {**out.get("labels", {}), **_pairs("--label", value, "=")}
        else:
            out[key] = value
    return out


def cmd_update(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``task update ID [flags]``."""
    given = {key: getattr(args, dest) for dest, key in _UPDATE_FLAGS.items() if hasattr(args, dest)}
    if "shell" in given:
        if not args.shell_argv:
            raise InvalidArgument("--shell", "expected -- ARGV..., e.g. --shell -- /bin/echo hi")
        given["shell"] = args.shell_argv
    if not given:
        raise InvalidArgument("task update", "give at least one flag to change (see --help)")
    with api_client(args) as client:
        current = client.get_task(args.id)
        try:
            desired = doc_to_spec(overlay(spec_to_doc(current), given))
        except DocumentError as exc:
            raise InvalidArgument(f"--{exc.key}", exc.reason) from None
        if "paused" not in given:
            desired.paused = current.paused
        task = client.update_task(desired, current.revision)
    _report(args, task, current)
    return EXIT_OK


def _report(args: argparse.Namespace, task: pb.TaskSpec, before: pb.TaskSpec) -> None:
    if args.output == "json":
        print(to_json(task))
    elif task.revision == before.revision:
        print(f"{task.id}: no change (revision {task.revision})")
    else:
        print(f"{task.id}: updated (revision {before.revision} -> {task.revision})")
        print(task_detail(task))


# -- edit --------------------------------------------------------------------------------------


def _editor(env: Mapping[str, str]) -> list[str]:
    return shlex.split(env.get("VISUAL") or env.get("EDITOR") or "vi")


def _edit_text(path: Path, text: str, env: Mapping[str, str]) -> str:
    path.write_text(text, encoding="utf-8")
    try:
        subprocess.run([*_editor(env), str(path)], check=True, env=dict(env))
    except (OSError, subprocess.CalledProcessError) as exc:
        raise InvalidArgument("$EDITOR", f"{' '.join(_editor(env))} failed: {exc}") from None
    return path.read_text(encoding="utf-8")


def _header(task: pb.TaskSpec, error: str) -> str:
    lines = [
        f"# peerd task edit {task.id} (revision {task.revision}): save to update the task,",
        "# save it unchanged to cancel. Keys: the 'peerd task create' flags (docs/tasks.md).",
    ]
    if error:
        lines += ["#", *(f"# error: {line}" for line in error.splitlines())]
    return "\n".join(lines) + "\n"


def _parse_edit(text: str, fmt: str, task_id: str) -> pb.TaskSpec:
    """The edited document as a spec (its id must stay ``task_id``)."""
    try:
        doc = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"edited {fmt.upper()}", " ".join(str(exc).split())) from None
    if isinstance(doc, dict) and doc.get("id") != task_id:
        raise InvalidArgument("id", f"cannot change (it is {task_id!r}); use apply to rename")
    return doc_to_spec(doc)


def cmd_edit(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``task edit ID [--format yaml|json]``."""
    fmt = args.format
    with api_client(args) as client:
        current = client.get_task(args.id)
        doc = spec_to_doc(current)
        body = dump_json(doc) if fmt == "json" else dump_yaml([doc])
        original = body if fmt == "json" else _header(current, "") + body
        with tempfile.TemporaryDirectory(prefix="peerd-edit-") as tmp:
            path = Path(tmp) / f"{current.id}.{fmt}"
            text, shown = _edit_text(path, original, env), original
            while True:
                if text == shown:
                    print(f"{current.id}: edit cancelled, no change")
                    return EXIT_OK
                try:
                    task = _update(client, _parse_edit(text, fmt, current.id), current)
                    break
                except InvalidArgument as exc:
                    if fmt == "json":
                        raise
                    error = str(exc)
                body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
                shown = _header(current, error) + body + "\n"
                text = _edit_text(path, shown, env)
                if text == shown:
                    print_error(error)
                    return EXIT_INVALID
    _report(args, task, current)
    return EXIT_OK


def _update(client: SchedulerClient, desired: pb.TaskSpec, current: pb.TaskSpec) -> pb.TaskSpec:
    """UpdateTask with the revision read; the server's INVALID_ARGUMENT as InvalidArgument."""
    try:
        return client.update_task(desired, current.revision)
    except grpc.RpcError as exc:
        code, details = rpc_status(exc)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            field, _, reason = details.partition(": ")
            raise InvalidArgument(field, reason or details) from None
        raise


# -- history -----------------------------------------------------------------------------------


def history_text(changes: list[pb.TaskChange]) -> str:
    """One block per change, newest first: revision, time, call, node, who; then one line per
    field, ``path: before -> after`` (JSON values, ``(unset)`` for none)."""
    if not changes:
        return "no recorded changes (a task's history starts with its first update)"
    blocks = []
    for c in changes:
        head = (
            f"revision {c.revision}  {fmt_ts(c.changed_at)}  {c.operation} on {c.node_id or '-'}"
            f"  by {c.principal or '-'}"
        )
        fields = [
            f"  {f.field}: {f.before or '(unset)'} -> {f.after or '(unset)'}" for f in c.changes
        ]
        blocks.append("\n".join([head, *fields]))
    return "\n".join(blocks)


def cmd_history(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``task history ID``."""
    with api_client(args) as client:
        changes = client.task_history(args.id)
    if args.output == "json":
        print(to_json(pb.ListTaskHistoryResponse(changes=changes)))
    else:
        print(history_text(changes))
    return EXIT_OK


def register(tsub: Any, add: Any, examples: str) -> None:
    """Add ``update``, ``edit`` and ``history`` under ``peerd task``."""
    up = add(tsub, "update", cmd_update, "change a task: only the flags given change")
    up.formatter_class = argparse.RawDescriptionHelpFormatter
    up.epilog = (
        "Flags as for 'task create'. A schedule or target flag replaces the schedule or target;\n"
        "--header/--env replace the whole set. The cursor and run history are kept; a schedule\n"
        "change takes effect after the update. Exit 9: the task changed meanwhile.\n\n" + examples
    )
    add_create(up, update=True)
    edit = add(tsub, "edit", cmd_edit, "edit a task in $EDITOR (YAML or JSON), then update it")
    edit.add_argument("id", metavar="ID")
    edit.add_argument("--format", choices=("yaml", "json"), default="yaml")
    hist = add(tsub, "history", cmd_history, "list a task's accepted changes, newest first")
    hist.add_argument("id", metavar="ID")


UPDATE_EXAMPLES = """examples:
  peerd task update report --cron '0 7 * * 1-5'
  peerd task update ping --http-post https://example.com/v2/hook --header 'Authorization:Bearer x'
  peerd task update sync --max-attempts 5 --priority 10"""

__all__ = [
    "UPDATE_EXAMPLES",
    "cmd_edit",
    "cmd_history",
    "cmd_update",
    "history_text",
    "overlay",
    "register",
]
