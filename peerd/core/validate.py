"""Validation of a submitted ``TaskSpec`` (pure: ``now`` is a parameter).

Every rejection is an :class:`~peerd.errors.InvalidArgument` naming the field (``task.id``,
``task.schedule.cron``, ``task.http.url``, ...) and the reason. Validation happens before any
write, so a rejected request changes nothing.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import httpx

from peerd.core.schedule import validate_schedule
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
MAX_SPEC_BYTES = 256 * 1024
MAX_TIMEOUT = timedelta(hours=24)
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
RESERVED_HEADERS = ("idempotency-key", "peerd-fencing-token")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$")


def new_task_id() -> str:
    """A generated task id: ``t-`` and 12 hex digits."""
    return f"t-{uuid.uuid4().hex[:12]}"


def validate_task_id(task_id: str, field: str = "task.id") -> None:
    """Raises InvalidArgument unless ``task_id`` matches ``[a-z0-9][a-z0-9._-]{0,127}``."""
    if not TASK_ID_RE.match(task_id):
        raise InvalidArgument(field, f"{task_id[:140]!r} must match [a-z0-9][a-z0-9._-]{{0,127}}")


def validate_task(spec: pb.TaskSpec, now: datetime, field: str = "task") -> None:
    """Check a task submitted for creation.

    Raises:
        InvalidArgument: naming the first offending field and the reason.
    """
    size = spec.ByteSize()
    if size > MAX_SPEC_BYTES:
        raise InvalidArgument(field, f"spec is {size} bytes, over the 256 KiB limit")
    validate_task_id(spec.id, f"{field}.id")
    if not spec.HasField("schedule"):
        raise InvalidArgument(f"{field}.schedule", "a schedule (cron, every or at) is required")
    validate_schedule(spec.schedule, now, f"{field}.schedule", creating=True)
    kind = spec.WhichOneof("target")
    if kind == "http":
        _validate_http(spec.http, f"{field}.http")
    elif kind == "shell":
        _validate_shell(spec.shell, f"{field}.shell")
    else:
        raise InvalidArgument(f"{field}.target", "one of http or shell is required")
    if spec.HasField("timeout"):
        t = spec.timeout.ToTimedelta()
        if t <= timedelta(0) or t > MAX_TIMEOUT:
            raise InvalidArgument(f"{field}.timeout", f"must be > 0 and <= 24h, got {t}")
    if spec.on_owner_lost not in pb.OwnerLostPolicy.values():
        raise InvalidArgument(f"{field}.on_owner_lost", f"unknown policy {spec.on_owner_lost}")
    if len(spec.description) > 1024:
        raise InvalidArgument(f"{field}.description", "longer than 1024 characters")


def _validate_http(http: pb.HttpTarget, field: str) -> None:
    method = http.method.upper() or "POST"
    if method not in HTTP_METHODS:
        raise InvalidArgument(f"{field}.method", f"{http.method!r} is not one of {HTTP_METHODS}")
    try:
        url = httpx.URL(http.url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidArgument(f"{field}.url", f"{http.url!r} is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise InvalidArgument(f"{field}.url", f"{http.url!r}: scheme must be http or https")
    if not url.host:
        raise InvalidArgument(f"{field}.url", f"{http.url!r} has no host")
    for name, value in http.headers.items():
        if not _HEADER_NAME_RE.match(name):
            raise InvalidArgument(f"{field}.headers", f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidArgument(f"{field}.headers", f"{name!r} is set by peerd")
        if "\r" in value or "\n" in value:
            raise InvalidArgument(f"{field}.headers", f"value of {name!r} contains a line break")


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
    if shell.working_dir and not shell.working_dir.startswith("/"):
        raise InvalidArgument(f"{field}.working_dir", "must be an absolute path")
    if shell.run_as and not _USER_RE.match(shell.run_as):
        raise InvalidArgument(f"{field}.run_as", f"{shell.run_as!r} is not a valid user name")
