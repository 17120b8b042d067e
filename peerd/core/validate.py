"""Validation of a submitted ``TaskSpec`` (pure: ``now`` is a parameter).

Every rejection is an :class:`~peerd.errors.InvalidArgument` naming the field (``task.id``,
``task.schedule.cron``, ``task.http.url``, ``task.retry.max_attempts``, ...) and the reason.
Validation happens before any write, so a rejected request changes nothing.

What is *not* checked here, because it depends on the cluster rather than on the spec:

* whether a ``python`` target's entry point is installed (the service checks it on the node that
  answers, :meth:`peerd.rpc.service.SchedulerService._check_python`);
* whether the shell command is allow-listed (also the service);
* whether the HTTP target passes the node's ``--http-allow``/``--http-deny`` policy (the
  service, through the HTTP executor's check; again at run time on every resolved address);
* whether a referenced secret (``header_secrets``, ``env_secrets``) exists: the node that runs
  the task looks it up then, and fails the run (not retried) when it lacks it;
* whether the ``on_failure`` task exists: it is looked up when a run's final attempt fails. If it
  is missing then, the engine logs the failure and notes it in the failed run's ``error``; the
  tasks may be created in any order.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2

from peerd.core.crontab import USER_NAME_RE
from peerd.core.durations import format_duration
from peerd.core.labels import compile_selector, validate_labels
from peerd.core.retry import validate_retry
from peerd.core.schedule import validate_schedule
from peerd.core.secrets import SECRET_NAME_RE
from peerd.core.targets import TargetError, parse_target
from peerd.core.tzrules import TimeZoneRules
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
MAX_SPEC_BYTES = 256 * 1024
MAX_TIMEOUT = timedelta(hours=24)
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
RESERVED_HEADERS = ("idempotency-key", "peerd-fencing-token")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_CATCH_UP_WINDOW = timedelta(days=7)
MIN_CATCH_UP_WINDOW = timedelta(seconds=1)
MAX_MISFIRE_THRESHOLD = timedelta(days=1)
MIN_PRIORITY, MAX_PRIORITY = -100, 100
MAX_PYTHON_ARGS_BYTES = 64 * 1024
MAX_PYTHON_NAME = 200
MAX_PAUSE_NOTE = 1024


def new_task_id() -> str:
    """A generated task id: ``t-`` and 12 hex digits."""
    return f"t-{uuid.uuid4().hex[:12]}"


def validate_task_id(task_id: str, field: str = "task.id") -> None:
    """Raises InvalidArgument unless ``task_id`` matches ``[a-z0-9][a-z0-9._-]{0,127}``."""
    if not TASK_ID_RE.match(task_id):
        raise InvalidArgument(field, f"{task_id[:140]!r} must match [a-z0-9][a-z0-9._-]{{0,127}}")


def validate_task(
    spec: pb.TaskSpec,
    now: datetime,
    field: str = "task",
    *,
    rules: TimeZoneRules,
    creating: bool = True,
) -> None:
    """Check a task submitted for creation (``now``: aware, for schedules in the past), or for an
    update (``creating`` false when the update keeps the schedule: a one-shot that has fired, or
    an ``end_at`` now past, stays valid); ``rules``: the time-zone rules its zone must be known
    to.

    Checks, in order: size (<= 256 KiB serialised), ``id``, ``schedule`` (including jitter and
    DST policies, :func:`peerd.core.schedule.validate_schedule`), exactly one target (http,
    shell, python: :func:`validate_python`), ``timeout`` (> 0, <= 24 h), the run policies
    (:func:`_validate_policies`), ``description`` (<= 1024 characters), ``labels`` and
    ``node_selector`` (Kubernetes syntax and limits, :mod:`peerd.core.labels`).

    Raises:
        InvalidArgument: naming the first offending field (``<field>.retry.max_attempts``, ...)
            and the reason.
    """
    size = spec.ByteSize()
    if size > MAX_SPEC_BYTES:
        raise InvalidArgument(field, f"spec is {size} bytes, over the 256 KiB limit")
    validate_task_id(spec.id, f"{field}.id")
    if not spec.HasField("schedule"):
        raise InvalidArgument(f"{field}.schedule", "a schedule (cron, every or at) is required")
    validate_schedule(spec.schedule, now, f"{field}.schedule", rules=rules, creating=creating)
    kind = spec.WhichOneof("target")
    if kind == "http":
        _validate_http(spec.http, f"{field}.http")
    elif kind == "shell":
        _validate_shell(spec.shell, f"{field}.shell")
    elif kind == "python":
        validate_python(spec.python, f"{field}.python")
    else:
        raise InvalidArgument(f"{field}.target", "one of http, shell or python is required")
    if spec.HasField("timeout"):
        t = spec.timeout.ToTimedelta()
        if t <= timedelta(0) or t > MAX_TIMEOUT:
            raise InvalidArgument(f"{field}.timeout", f"must be > 0 and <= 24h, got {t}")
    _validate_policies(spec, field)
    if len(spec.description) > 1024:
        raise InvalidArgument(f"{field}.description", "longer than 1024 characters")
    validate_labels(spec.labels, f"{field}.labels")
    compile_selector(spec.node_selector, f"{field}.node_selector")


_ENUM_NUMBERS: dict[str, frozenset[int]] = {}
"""Enum full name -> its numbers (``EnumTypeWrapper.values()`` builds a list on each call)."""


def _enum(value: int, enum: Any, name: str, field: str) -> None:
    # proto3 enums are open: an unknown number survives parsing, so check it explicitly.
    numbers = _ENUM_NUMBERS.get(enum.DESCRIPTOR.full_name)
    if numbers is None:
        numbers = _ENUM_NUMBERS[enum.DESCRIPTOR.full_name] = frozenset(enum.values())
    if value not in numbers:
        raise InvalidArgument(field, f"unknown {name} {value}")


def _validate_policies(spec: pb.TaskSpec, field: str) -> None:
    """The run policies of a task (everything beside schedule, target and timeout).

    Rules (ranges inclusive):

    * ``on_owner_lost``, ``overlap``, ``catch_up``: a value the enum defines (0 = the default).
    * ``catch_up_window``: unset, 0 (= the default, 1 h) or 1 s .. 7 days. Only CATCH_UP_RUN_ALL
      reads it; with another policy it is accepted and ignored.
    * ``misfire_threshold``: unset (= the node's ``--misfire-threshold``) or 0 .. 1 day.
    * ``retry``: :func:`peerd.core.retry.validate_retry` (field ``<field>.retry.*``).
    * ``priority``: -100 .. 100.
    * ``on_failure``: empty, or a well-formed task id other than the task's own. The task need
      not exist yet (it is looked up when a run fails; see the module docstring).
    * ``pause_note``: not checked; the server clears it on create (PauseTask sets it).
    """
    _enum(spec.on_owner_lost, pb.OwnerLostPolicy, "policy", f"{field}.on_owner_lost")
    _enum(spec.overlap, pb.OverlapPolicy, "overlap policy", f"{field}.overlap")
    _enum(spec.catch_up, pb.CatchUpPolicy, "catch-up policy", f"{field}.catch_up")
    if spec.HasField("catch_up_window"):
        w = _duration(spec.catch_up_window, f"{field}.catch_up_window")
        if w != timedelta(0) and not MIN_CATCH_UP_WINDOW <= w <= MAX_CATCH_UP_WINDOW:
            raise InvalidArgument(
                f"{field}.catch_up_window",
                f"must be 0 (default 1h) or between 1s and 7d, got {format_duration(w)}",
            )
    if spec.HasField("misfire_threshold"):
        m = _duration(spec.misfire_threshold, f"{field}.misfire_threshold")
        if not timedelta(0) <= m <= MAX_MISFIRE_THRESHOLD:
            raise InvalidArgument(
                f"{field}.misfire_threshold", f"must be between 0 and 1d, got {format_duration(m)}"
            )
    if spec.HasField("retry"):
        validate_retry(spec.retry, f"{field}.retry")
    if not MIN_PRIORITY <= spec.priority <= MAX_PRIORITY:
        raise InvalidArgument(
            f"{field}.priority",
            f"must be between {MIN_PRIORITY} and {MAX_PRIORITY}, got {spec.priority}",
        )
    if spec.on_failure:
        validate_task_id(spec.on_failure, f"{field}.on_failure")
        if spec.on_failure == spec.id:
            raise InvalidArgument(
                f"{field}.on_failure", f"a task cannot be its own failure handler ({spec.id!r})"
            )


def _duration(d: duration_pb2.Duration, field: str) -> timedelta:
    """A protobuf Duration as a timedelta; negative or malformed ones are rejected."""
    if d.seconds < 0 or d.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    try:
        return d.ToTimedelta()
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(field, f"invalid duration: {exc}") from None


def validate_python(target: pb.PythonTarget, field: str = "task.python") -> None:
    """Check a python target's shape: ``name`` non-empty (<= 200 characters, no whitespace or
    control characters) and ``args_json`` empty or a JSON object of at most 64 KiB (UTF-8).

    Whether ``name`` is installed is checked by the service, not here.

    Raises:
        InvalidArgument: ``<field>.name`` or ``<field>.args_json`` with the reason.
    """
    name = target.name
    if not name:
        raise InvalidArgument(f"{field}.name", "an entry-point name is required (e.g. peerd.echo)")
    if len(name) > MAX_PYTHON_NAME or any(c.isspace() or not c.isprintable() for c in name):
        raise InvalidArgument(
            f"{field}.name",
            f"{name[:60]!r} is not an entry-point name (<= {MAX_PYTHON_NAME} characters, "
            "no whitespace)",
        )
    if not target.args_json:
        return
    size = len(target.args_json.encode())
    if size > MAX_PYTHON_ARGS_BYTES:
        raise InvalidArgument(f"{field}.args_json", f"{size} bytes, over the 64 KiB limit")
    try:
        args = json.loads(target.args_json)
    except ValueError as exc:
        raise InvalidArgument(f"{field}.args_json", f"not valid JSON: {exc}") from None
    if not isinstance(args, dict):
        raise InvalidArgument(
            f"{field}.args_json", f"must be a JSON object, got {type(args).__name__}"
        )


def validate_pause_note(note: str, field: str = "note") -> None:
    """A PauseTask note: at most 1024 characters.

    Raises:
        InvalidArgument: naming ``field``.
    """
    if len(note) > MAX_PAUSE_NOTE:
        raise InvalidArgument(
            field, f"{len(note)} characters, longer than the {MAX_PAUSE_NOTE} allowed"
        )


def _validate_http(http: pb.HttpTarget, field: str) -> None:
    method = http.method.upper() or "POST"
    if method not in HTTP_METHODS:
        raise InvalidArgument(f"{field}.method", f"{http.method!r} is not one of {HTTP_METHODS}")
    try:
        parse_target(http.url)
    except TargetError as exc:
        raise InvalidArgument(f"{field}.url", str(exc)) from None
    for name, value in http.headers.items():
        if not _HEADER_NAME_RE.match(name):
            raise InvalidArgument(f"{field}.headers", f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidArgument(f"{field}.headers", f"{name!r} is set by peerd")
        if "\r" in value or "\n" in value:
            raise InvalidArgument(f"{field}.headers", f"value of {name!r} contains a line break")
    literal = {name.lower() for name in http.headers}
    for name, secret in http.header_secrets.items():
        where = f"{field}.header_secrets"
        if not _HEADER_NAME_RE.match(name):
            raise InvalidArgument(where, f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidArgument(where, f"{name!r} is set by peerd")
        if name.lower() in literal:
            raise InvalidArgument(where, f"{name!r} is also a literal header")
        _validate_secret_name(secret, where, name)


def _validate_secret_name(secret: str, field: str, key: str) -> None:
    if not SECRET_NAME_RE.match(secret):
        raise InvalidArgument(
            field,
            f"secret name {secret[:140]!r} of {key!r} must match {SECRET_NAME_RE.pattern[1:-1]}",
        )


def _validate_shell(shell: pb.ShellTarget, field: str) -> None:
    if not shell.argv or not shell.argv[0]:
        raise InvalidArgument(f"{field}.argv", "a command (argv[0]) is required")
    if any("\0" in a for a in shell.argv):
        raise InvalidArgument(f"{field}.argv", "arguments cannot contain NUL bytes")
    for name, value in shell.env.items():
        if not _ENV_NAME_RE.match(name):
            raise InvalidArgument(f"{field}.env", f"{name!r} is not a valid variable name")
        if "\0" in value:
            raise InvalidArgument(f"{field}.env", f"value of {name!r} contains a NUL byte")
    for name, secret in shell.env_secrets.items():
        where = f"{field}.env_secrets"
        if not _ENV_NAME_RE.match(name):
            raise InvalidArgument(where, f"{name!r} is not a valid variable name")
        if name in shell.env:
            raise InvalidArgument(where, f"{name!r} is also a literal variable")
        _validate_secret_name(secret, where, name)
    if shell.working_dir and not shell.working_dir.startswith("/"):
        raise InvalidArgument(f"{field}.working_dir", "must be an absolute path")
    if shell.run_as and not USER_NAME_RE.match(shell.run_as):
        raise InvalidArgument(f"{field}.run_as", f"{shell.run_as!r} is not a valid user name")
