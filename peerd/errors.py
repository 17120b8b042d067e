"""The peerd error hierarchy.

Every error peerd raises on purpose derives from :class:`PeerdError`. The gRPC layer maps these
classes to status codes in one place (:mod:`peerd.rpc.errors`); the CLI maps status codes to exit
codes (:mod:`peerd.cli`).
"""

from __future__ import annotations


class PeerdError(Exception):
    """Root of all peerd errors."""


class InvalidArgument(PeerdError):
    """A request or configuration value is invalid.

    Attributes:
        field: dotted name of the offending field, e.g. ``"task.schedule.cron"``.
        reason: human-readable reason, e.g. ``"minute 61 is out of range 0-59"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(PeerdError):
    """The named object does not exist."""


class AlreadyExists(PeerdError):
    """An object with that identity already exists."""


class Aborted(PeerdError):
    """A conditional write found the object changed since it was read (an ``expected_revision``
    that no longer matches); nothing was written. Read it again and retry."""


class PermissionDenied(PeerdError):
    """The node's configuration forbids the request (e.g. a shell command not allow-listed)."""


class AccessDenied(PermissionDenied):
    """The auth policy does not grant the caller a permission the call needs.

    Attributes:
        principal: who called (the policy's name for them).
        permission: the missing permission (``read``, ``write``, ``trigger``, ``shell``,
            ``admin``).
        task_id: the task it is missing on; ``None`` when the call names no task (then the
            permission is missing on every task).
    """

    def __init__(self, principal: str, permission: str, task_id: str | None = None) -> None:
        where = f"on task {task_id!r}" if task_id is not None else "on any task"
        super().__init__(f"principal {principal!r} lacks permission {permission!r} {where}")
        self.principal = principal
        self.permission = permission
        self.task_id = task_id


class Unauthenticated(PeerdError):
    """The caller presented no credentials, or credentials that do not verify (a wrong or
    expired token, a certificate that is not a node's on a node-only call)."""


class Unavailable(PeerdError):
    """etcd (or another dependency) cannot be reached; nothing was written."""


class ResourceExhausted(PeerdError):
    """etcd refused a write because its database reached its space quota (the NOSPACE alarm).

    Nothing was written. Reads keep working; writes fail until space is freed and the alarm is
    disarmed (see docs/operations.md, "NOSPACE"). The message names the cause and the fix.

    Args:
        detail: what refused the write, e.g. ``etcd said: etcdserver: mvcc: database space
            exceeded``.
        hint: what this node does about it (e.g. how often it compacts etcd).
    """

    def __init__(self, detail: str, hint: str = "") -> None:
        hint = f" {hint.strip()}" if hint.strip() else ""
        super().__init__(
            f"etcd is out of space (NOSPACE alarm: the database reached etcd's "
            f"--quota-backend-bytes; {detail}); writes are refused, reads go on.{hint} "
            "Fix by hand: see docs/operations.md (NOSPACE): compact, defragment each member, "
            "then `etcdctl alarm disarm`."
        )
        self.detail = detail


class RateLimited(PeerdError):
    """A caller made more requests than its rate limit allows (``--api-rate-limit``); nothing
    was done.

    Attributes:
        principal: the caller, as the limit counts it.
        retry_after_s: seconds until it may call again.
    """

    def __init__(self, principal: str, retry_after_s: float) -> None:
        super().__init__(
            f"rate limit: {principal} made more requests than this node's --api-rate-limit "
            f"allows (--api-burst at once); retry in {max(retry_after_s, 0.001):.3f}s"
        )
        self.principal = principal
        self.retry_after_s = retry_after_s


class LeaseLost(PeerdError):
    """This node's membership lease is gone; it must not claim until it has re-registered."""


class DuplicateNode(PeerdError):
    """Another live node already registered the same node_id."""
