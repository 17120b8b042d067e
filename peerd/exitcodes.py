"""Process exit codes of the ``peerd`` command, shared by :mod:`peerd.cli` and
:mod:`peerd.devtools.dev`.

The gRPC status -> exit code mapping lives in :func:`peerd.client.exit_code_for_status`; the
mapping for errors raised locally (before any RPC) is :func:`exit_code_for_error` here.
"""

from __future__ import annotations

from peerd.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PeerdError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

EXIT_OK = 0
"""Success."""
EXIT_ERROR = 1
"""Anything not covered by a more specific code. Also ``peerd audit``'s verdict: the audit ran
and found a slot claimed more than once."""
EXIT_INVALID = 2
"""Invalid input or usage (including argparse usage errors and unreadable input files)."""
EXIT_NOT_FOUND = 3
"""The named task (or other object) does not exist."""
EXIT_UNAVAILABLE = 4
"""The server (or etcd behind it) cannot be reached, or did not answer in time."""
EXIT_ALREADY_EXISTS = 5
"""A task with that id already exists."""
EXIT_PERMISSION_DENIED = 6
"""The server's configuration forbids the request (e.g. a shell command not allow-listed), the
auth policy does not grant the caller the permission, or the caller is not authenticated."""
EXIT_NOT_RUN = 7
"""The request was valid but the task's policy did not run it: ``task trigger`` answered with a
SKIPPED record (overlap FORBID, or BUFFER_ONE with a slot already waiting)."""
EXIT_NO_SPACE = 8
"""etcd is out of space (its NOSPACE alarm is on): the write was refused, nothing changed. Reads
still work; see docs/operations.md (NOSPACE) for the fix."""
EXIT_CONFLICT = 9
"""The task changed since it was read (``task update``/``task edit``/``apply`` with a revision
that no longer matches: gRPC ABORTED); nothing was written. Read it again and retry."""


def exit_code_for_error(exc: PeerdError) -> int:
    """Exit code for a :class:`~peerd.errors.PeerdError` raised in this process (not via gRPC)."""
    if isinstance(exc, InvalidArgument):
        return EXIT_INVALID
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, AlreadyExists):
        return EXIT_ALREADY_EXISTS
    if isinstance(exc, PermissionDenied | Unauthenticated):
        return EXIT_PERMISSION_DENIED
    if isinstance(exc, ResourceExhausted):
        return EXIT_NO_SPACE
    if isinstance(exc, Aborted):
        return EXIT_CONFLICT
    return EXIT_ERROR


__all__ = [
    "EXIT_ALREADY_EXISTS",
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_NOT_RUN",
    "EXIT_NO_SPACE",
    "EXIT_OK",
    "EXIT_PERMISSION_DENIED",
    "EXIT_UNAVAILABLE",
    "exit_code_for_error",
]
