"""Task documents: a task as YAML, TOML or JSON, with the ``task create`` flags as keys.

A document is a mapping whose keys are the flag names without ``--`` (``every``, ``http``,
``max-attempts``, ``catch-up-window``, ...), plus ``id`` (required) and three keys no flag has:
``labels`` (a mapping), ``run-as`` (shell tasks: the user to run as) and ``source``. Values are
what the flag takes, with the natural structure where a flag repeats or takes a list::

    id: report
    cron: "0 6 * * 1-5"
    tz: Europe/Paris
    http: https://example.internal/hooks/report
    method: GET
    header: {Authorization: "Bearer token"}
    retry-on: [5xx, timeout]
    max-attempts: 3
    labels: {team: billing}

``header``, ``env``, ``header-secret`` and ``env-secret`` are mappings, ``shell`` is the argv
list, ``args`` (Python tasks) a mapping (or its JSON text), ``retry-on`` a list (or a
comma-separated string), ``paused`` a boolean. A document is read by turning it into a ``task
create`` command line and parsing that with :mod:`peerd.cli_spec`, so it means exactly what the
same flags mean; errors name the key.
``paused`` left out means "whatever it is now" for ``peerd apply`` (an operator's pause survives
a re-apply); ``true``/``false`` pause or resume.

:func:`spec_to_doc` is the inverse (``task get -o yaml``): ``doc_to_spec(spec_to_doc(s))``
gives back the user fields of ``s`` (:func:`peerd.core.taskspec.user_view`), so an exported task
re-applied changes nothing.

Files (:func:`load_documents`): YAML (``.yaml``, ``.yml``; several documents separated by
``---``), TOML (``.toml``) and JSON (``.json``); each document is one task or a mapping with a
single key ``tasks`` holding a list of them. A directory means its files with those extensions,
in name order.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from peerd.cli_output import (
    CATCH_UP_NAMES,
    DST_AMBIGUOUS_NAMES,
    DST_NONEXISTENT_NAMES,
    OVERLAP_NAMES,
    RETRY_ON_NAMES,
    to_json,
)
from peerd.cli_spec import (
    TASK_ID_RE,
    Parser,
    UsageError,
    add_create,
    build_task_spec,
    create_flags,
)
from peerd.core.durations import format_duration
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

EXTENSIONS = (".yaml", ".yml", ".toml", ".json")
"""Files a directory contributes to ``peerd apply -f DIR``."""
EXTRA_KEYS = ("labels", "run-as", "source")
"""Document keys without a create flag (set after the flags are parsed)."""
_ARGUMENT_RE = re.compile(r"^argument (?:--)?([\w-]+)(?:/[\w-]+)?: ")


class DocumentError(InvalidArgument):
    """A document that is not a valid task: ``where`` (file and document), ``key``, reason."""

    def __init__(self, where: str, key: str, reason: str) -> None:
        super().__init__(f"{where}: {key}" if where else key, reason)
        self.where = where
        self.key = key


class _DocParser(Parser):
    """The create parser for documents: a usage error is the bare message."""

    def error(self, message: str) -> Any:
        raise UsageError(message)


def _create_parser() -> _DocParser:
    p = _DocParser(prog="peerd task create", add_help=False)
    add_create(p)
    return p


DOC_KEYS: tuple[str, ...] = (
    "id",
    *(k for k in create_flags(_create_parser()).values() if k != "label"),
    *EXTRA_KEYS,
)
"""Every key a document may have (``labels``, a mapping, stands for the ``--label`` flag)."""


# -- document -> spec -----------------------------------------------------------------------------


def _text(key: str, value: Any) -> str:
    """A scalar as the flag's text; YAML booleans and dates where text is expected refused."""
    if isinstance(value, bool):
        raise InvalidArgument(key, f"expected text, got {str(value).lower()} (quote the value)")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidArgument(key, f"{value.isoformat()} has no UTC offset; add Z or +HH:MM")
        return value.isoformat()
    if isinstance(value, str | int | float):
        return str(value)
    raise InvalidArgument(key, f"expected a single value, got {type(value).__name__}")


def _mapping(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(key, f"expected a mapping of names to values, got {value!r}")
    return {str(k): _text(f"{key}.{k}", v) for k, v in value.items()}


def _flag_args(key: str, value: Any) -> list[str]:
    """The command-line arguments for one document key (``--key=value`` forms, so a value
    starting with ``-`` stays a value)."""
    if key == "paused":
        if not isinstance(value, bool):
            raise InvalidArgument(key, f"expected true or false, got {value!r}")
        return ["--paused"] if value else []
    if key == "header":
        return [f"--header={k}:{v}" for k, v in _mapping(key, value).items()]
    if key in ("env", "header-secret", "env-secret"):
        return [f"--{key}={k}={v}" for k, v in _mapping(key, value).items()]
    if key == "args" and isinstance(value, Mapping):
        return [f"--args={json.dumps(dict(value))}"]
    if key == "retry-on" and isinstance(value, list):
        return [f"--retry-on={','.join(_text(key, v) for v in value)}"]
    return [f"--{key}={_text(key, value)}"]


def _check_keys(doc: Mapping[str, Any]) -> None:
    for key in doc:
        if key not in DOC_KEYS:
            dashed = str(key).replace("_", "-")
            hint = f"; did you mean {dashed!r}?" if dashed in DOC_KEYS else ""
            raise InvalidArgument(str(key), f"unknown key{hint} (keys: {', '.join(DOC_KEYS)})")
    if "id" not in doc:
        raise InvalidArgument("id", "required: every task in a file names its id")


def doc_to_spec(doc: Mapping[str, Any], where: str = "") -> pb.TaskSpec:
    """The TaskSpec a document describes (pure). ``paused`` absent gives ``paused = false``;
    whether it was given is ``"paused" in doc``.

    Raises:
        DocumentError: naming ``where``, the key and the reason (unknown key, wrong type, or
            anything ``task create`` would refuse for the same flag).
    """
    try:
        return _doc_to_spec(doc)
    except InvalidArgument as exc:
        raise DocumentError(where, exc.field.removeprefix("--"), exc.reason) from None


def _doc_to_spec(doc: Mapping[str, Any]) -> pb.TaskSpec:
    if not isinstance(doc, Mapping):
        raise InvalidArgument("task", f"expected a mapping of keys, got {type(doc).__name__}")
    _check_keys(doc)
    task_id = _text("id", doc["id"])
    if not TASK_ID_RE.match(task_id):
        raise InvalidArgument("id", f"{task_id!r} must match [a-z0-9][a-z0-9._-]{{0,127}}")
    argv = [task_id]
    shell: list[str] | None = None
    for key, value in doc.items():
        if key in ("id", *EXTRA_KEYS) or value is None:
            continue
        if key == "shell":
            if not isinstance(value, list) or not value:
                raise InvalidArgument(key, "expected the command as a list: [/bin/sh, -c, ...]")
            shell = [_text(key, v) for v in value]
            argv.append("--shell")
        else:
            argv += _flag_args(key, value)
    try:
        args = _create_parser().parse_args(argv)
    except UsageError as exc:
        m = _ARGUMENT_RE.match(str(exc))
        key, reason = (m.group(1), str(exc)[m.end() :]) if m else ("task", str(exc))
        reason = re.sub(r"--([\w-]+)", r"\1", reason.replace("the arguments", "the keys"))
        raise InvalidArgument(key, reason) from None
    args.shell_argv = shell
    spec = build_task_spec(args)
    _extra(spec, doc)
    return spec


def _extra(spec: pb.TaskSpec, doc: Mapping[str, Any]) -> None:
    if doc.get("labels") is not None:
        spec.labels.update(_mapping("labels", doc["labels"]))
    if doc.get("source") is not None:
        spec.source = _text("source", doc["source"])
    if doc.get("run-as") is not None:
        if spec.WhichOneof("target") != "shell":
            raise InvalidArgument("run-as", "only applies to shell tasks")
        spec.shell.run_as = _text("run-as", doc["run-as"])


# -- spec -> document -----------------------------------------------------------------------------


def _ts(ts: Any) -> str:
    return str(ts.ToJsonString())


def _td(d: Any) -> str:
    return format_duration(d.ToTimedelta())


def _schedule_doc(s: pb.Schedule) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    kind = s.WhichOneof("kind")
    if kind == "cron":
        doc["cron"] = s.cron
    elif kind == "every":
        doc["every"] = _td(s.every)
    elif kind == "at":
        doc["at"] = _ts(s.at)
    if s.time_zone:
        doc["tz"] = s.time_zone
    if s.HasField("jitter"):
        doc["jitter"] = _td(s.jitter)
    if s.dst_nonexistent:
        doc["dst-nonexistent"] = DST_NONEXISTENT_NAMES[s.dst_nonexistent]
    if s.dst_ambiguous:
        doc["dst-ambiguous"] = DST_AMBIGUOUS_NAMES[s.dst_ambiguous]
    if s.HasField("start_at"):
        doc["start"] = _ts(s.start_at)
    if s.HasField("end_at"):
        doc["end"] = _ts(s.end_at)
    if s.max_runs:
        doc["max-runs"] = s.max_runs
    return doc


def _target_doc(t: pb.TaskSpec) -> dict[str, Any]:
    kind = t.WhichOneof("target")
    doc: dict[str, Any] = {}
    if kind == "http":
        doc["http"] = t.http.url
        if t.http.method.upper() not in ("", "POST"):
            doc["method"] = t.http.method
        if t.http.headers:
            doc["header"] = dict(sorted(t.http.headers.items()))
        if t.http.header_secrets:
            doc["header-secret"] = dict(sorted(t.http.header_secrets.items()))
        if t.http.HasField("body"):
            doc["body"] = t.http.body
    elif kind == "shell":
        doc["shell"] = list(t.shell.argv)
        if t.shell.env:
            doc["env"] = dict(sorted(t.shell.env.items()))
        if t.shell.env_secrets:
            doc["env-secret"] = dict(sorted(t.shell.env_secrets.items()))
        if t.shell.working_dir:
            doc["workdir"] = t.shell.working_dir
        if t.shell.run_as:
            doc["run-as"] = t.shell.run_as
    elif kind == "python":
        doc["python"] = t.python.name
        if t.python.args_json:
            try:
                doc["args"] = json.loads(t.python.args_json)
            except ValueError:
                doc["args"] = t.python.args_json
    return doc


def _retry_doc(r: pb.RetryPolicy) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    tuned = any(r.HasField(f) for f in ("initial_backoff", "max_backoff")) or bool(
        r.multiplier or r.retry_on
    )
    if r.max_attempts or tuned:
        doc["max-attempts"] = r.max_attempts or 1
    if r.HasField("initial_backoff"):
        doc["backoff"] = _td(r.initial_backoff)
    if r.HasField("max_backoff"):
        doc["max-backoff"] = _td(r.max_backoff)
    if r.multiplier:
        doc["backoff-multiplier"] = r.multiplier
    if r.retry_on:
        doc["retry-on"] = [RETRY_ON_NAMES[c] for c in r.retry_on]
    if r.HasField("deadline"):
        doc["deadline"] = _td(r.deadline)
    return doc


def _policy_doc(t: pb.TaskSpec) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if t.HasField("timeout"):
        doc["timeout"] = _td(t.timeout)
    if t.on_owner_lost:
        doc["on-owner-lost"] = (
            "mark-lost" if t.on_owner_lost == pb.OWNER_LOST_MARK_LOST else "retry"
        )
    if t.overlap:
        doc["overlap"] = OVERLAP_NAMES[t.overlap]
    if t.catch_up:
        doc["catch-up"] = CATCH_UP_NAMES[t.catch_up]
    if t.HasField("catch_up_window"):
        doc["catch-up-window"] = _td(t.catch_up_window)
    if t.HasField("misfire_threshold"):
        doc["misfire-threshold"] = _td(t.misfire_threshold)
    if t.HasField("retry"):
        doc.update(_retry_doc(t.retry))
    if t.priority:
        doc["priority"] = t.priority
    if t.on_failure:
        doc["on-failure"] = t.on_failure
    return doc


def spec_to_doc(t: pb.TaskSpec) -> dict[str, Any]:
    """The document of a task (its user fields; server fields left out), keys in a fixed
    order; ``paused`` only when the task is paused. See the module docstring."""
    doc: dict[str, Any] = {"id": t.id}
    if t.description:
        doc["description"] = t.description
    doc.update(_schedule_doc(t.schedule))
    doc.update(_target_doc(t))
    doc.update(_policy_doc(t))
    if t.paused:
        doc["paused"] = True
    if t.labels:
        doc["labels"] = dict(sorted(t.labels.items()))
    if t.node_selector:
        doc["node-selector"] = t.node_selector
    if t.source:
        doc["source"] = t.source
    return doc


# -- files ----------------------------------------------------------------------------------------


def dump_yaml(docs: list[dict[str, Any]]) -> str:
    """Documents as YAML, separated by ``---``."""
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, default_flow_style=False)


def to_yaml(msg: Message) -> str:
    """``-o yaml``: a task (or a task list) as task documents, anything else as the YAML of its
    protobuf JSON mapping."""
    if isinstance(msg, pb.TaskSpec):
        return dump_yaml([spec_to_doc(msg)])
    if isinstance(msg, pb.ListTasksResponse):
        return dump_yaml([spec_to_doc(t) for t in msg.tasks])
    data = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def print_result(args: argparse.Namespace, msg: object, text: Callable[[], str]) -> None:
    """Print an API answer as ``-o/--output`` (``args.output``) asks: ``json`` (proto field
    names), ``yaml`` (task documents, :func:`to_yaml`), else ``text()``, the table for people."""
    if args.output == "json" and isinstance(msg, Message):
        print(to_json(msg))
    elif args.output == "yaml" and isinstance(msg, Message):
        print(to_yaml(msg), end="")
    else:
        print(text())


def dump_json(doc: dict[str, Any]) -> str:
    """One document as indented JSON."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def parse_text(text: str, fmt: str, name: str) -> list[tuple[str, Any]]:
    """The documents of a file's text (``fmt``: ``yaml``, ``toml`` or ``json``) as
    ``(where, document)``: ``NAME: document N`` (YAML, 1-based), ``NAME: tasks[i]`` for the
    entries of a ``tasks`` list, else ``NAME``. Empty YAML documents are skipped.

    Raises:
        InvalidArgument: naming ``name`` when the text does not parse.
    """
    try:
        if fmt == "yaml":
            raw = [d for d in yaml.safe_load_all(text)]
        elif fmt == "toml":
            raw = [tomllib.loads(text)]
        else:
            raw = [json.loads(text)]
    except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise InvalidArgument(
            name, f"not valid {fmt.upper()}: {' '.join(str(exc).split())}"
        ) from None
    out: list[tuple[str, Any]] = []
    several = len(raw) > 1
    for n, doc in enumerate(raw, 1):
        where = f"{name}: document {n}" if several else name
        if doc is None:
            continue
        if isinstance(doc, Mapping) and list(doc) == ["tasks"]:
            tasks = doc["tasks"]
            if not isinstance(tasks, list):
                raise InvalidArgument(f"{where}: tasks", "expected a list of tasks")
            out += [(f"{where}: tasks[{i}]", t) for i, t in enumerate(tasks)]
        else:
            out.append((where, doc))
    return out


def _format_of(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise InvalidArgument(str(path), f"unknown file type (expected {', '.join(EXTENSIONS)})")
    return {".yml": "yaml", ".yaml": "yaml", ".toml": "toml", ".json": "json"}[ext]


def task_files(path: Path) -> list[Path]:
    """``path`` itself, or the task files of a directory in name order.

    Raises:
        InvalidArgument: no such file or directory, or a directory without task files.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise InvalidArgument(str(path), f"no task files ({', '.join(EXTENSIONS)}) in it")
        return files
    if not path.exists():
        raise InvalidArgument(str(path), "no such file or directory")
    return [path]


def load_documents(path: Path) -> Iterator[tuple[str, Any]]:
    """Every document of ``path`` (a file or a directory, see the module docstring).

    Raises:
        InvalidArgument: naming the file (unreadable, unknown type, not parseable).
    """
    for file in task_files(path):
        fmt = _format_of(file)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(str(file), f"cannot read it: {exc}") from None
        yield from parse_text(text, fmt, str(file))


__all__ = [
    "DOC_KEYS",
    "DocumentError",
    "doc_to_spec",
    "dump_json",
    "dump_yaml",
    "load_documents",
    "parse_text",
    "spec_to_doc",
    "task_files",
    "to_yaml",
]
