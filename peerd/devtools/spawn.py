"""What the dev tools' child processes and loopback servers share: free ports, ``HOST:PORT``
spelling, the parent-death signal of a child, the tail of a log file, and the ``with`` protocol
of a server that starts and stops (:class:`StartStop`).

Nothing here is registered globally at import time (no atexit hooks, no signal handlers).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it by binding port 0).

    Another process may take it before the caller binds it; callers that can retry should.

    Raises:
        OSError: ``host`` cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets (``[::1]:2379``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``SIGKILL`` when its parent dies (Linux only).

    It calls ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through ctypes in the forked child before
    ``exec``; the setting survives ``exec``. If the parent already died between ``fork`` and the
    ``prctl`` call, the child exits at once. The kernel sends the signal when the *thread* that
    forked the child exits, so spawn from a long-lived thread.

    Returns:
        The function, or ``None`` where ``prctl`` is unavailable (non-Linux, no libc).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent_pid = os.getpid()

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return _preexec


def tail_file(path: Path, lines: int, since: int = 0) -> str:
    """The last ``lines`` lines of ``path`` after byte offset ``since`` ("" if unreadable)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(since, size - 64 * 1024, 0))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class StartStop:
    """Context-manager protocol of the dev tools' servers (:class:`~.etcd_server.EmbeddedEtcd`,
    :class:`~.etcd_cluster.EtcdCluster`, :class:`~.sink.WebhookSink`): ``with`` calls
    :meth:`start` (with its defaults) and, on exit, :meth:`stop`."""

    def start(self) -> None:
        """Start and wait until ready (see subclasses)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop and clean up (see subclasses)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
