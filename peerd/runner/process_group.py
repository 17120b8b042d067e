"""A child process leading its own process group: wait for it, read its output, kill the group.

The shell executor starts each command in a new session (``start_new_session=True``), so the
command's pid is also its process group id and it can never leave that group (a session leader
cannot change its group). :func:`supervise` waits for the command under a timeout while its
output is read; on timeout or cancellation :func:`kill_group` ends the whole group, whatever the
command spawned included.

Reaping. asyncio's child watcher is the one reaper of the child: on Python 3.11 the default
``ThreadedChildWatcher`` blocks a thread in ``waitpid(pid, 0)`` and tells the loop the exit
status, which ``Process.returncode`` then shows. Nothing here may reap it first. That rules out
``Process.send_signal``/``terminate``/``kill``: they call ``Popen.send_signal``, which since
Python 3.9 polls first (``waitpid(pid, WNOHANG)``, bpo-38630) and so reaps a child that has just
died before the watcher's thread gets to it. The watcher's ``waitpid`` then fails, it logs
``Unknown child process pid N, will report returncode 255`` and the run's exit code (``-9``, a
signal) becomes 255. So the group is signalled with :func:`os.killpg` only, and the transport is
closed (which may poll too) only once the watcher has reported the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

from peerd.runner.base import OutputTail

KILL_GRACE_SECONDS = 2.0
"""Seconds between SIGTERM and SIGKILL when a process group is killed."""

DRAIN_GRACE_SECONDS = 1.0
"""Seconds to keep reading output after the command exited, while a background process it
left behind still holds the output pipe open. After that the pipe is closed (the leftover
process is not killed)."""

_READ_CHUNK = 64 * 1024
_POLL_SECONDS = 0.05
_EXIT_POLL_SECONDS = 0.1


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` still has a live (non-zombie) member.

    Zombies count as dead: without a reaping init (e.g. a container whose PID 1 is not an init)
    orphaned members stay zombies forever, yet ``killpg(pgid, 0)`` still succeeds for them.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # members exist but run as a user we cannot signal
        pass
    return _live_members_in_proc(pgid)


def _live_members_in_proc(pgid: int) -> bool:
    """Scan ``/proc`` for a non-zombie process in group ``pgid`` (True if ``/proc`` is absent)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def signal_group(proc: asyncio.subprocess.Process, signum: int) -> None:
    """Send ``signum`` to the process group ``proc`` leads (``proc`` included).

    Only :func:`os.killpg`, never ``proc.send_signal``: that would reap ``proc`` behind
    asyncio's child watcher (see the module docstring). A group that is gone, or whose members
    we may not signal, is left alone.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, wait up to :data:`KILL_GRACE_SECONDS` for the leader to be
    reaped and the group to empty, then SIGKILL whatever is left and wait for the leader.

    SIGKILL is sent even if this coroutine is itself cancelled during the grace period.
    """
    pgid = proc.pid
    signal_group(proc, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_GRACE_SECONDS
    gone = False
    try:
        while loop.time() < deadline:
            if proc.returncode is not None and not group_alive(pgid):
                gone = True
                return
            await asyncio.sleep(_POLL_SECONDS)
    finally:
        if not gone:
            signal_group(proc, signal.SIGKILL)
    # Not proc.wait(): that also waits for the output pipe, which a process that escaped
    # the group (setsid) may hold open.
    while proc.returncode is None:
        await asyncio.sleep(_POLL_SECONDS)


async def supervise(
    proc: asyncio.subprocess.Process, out: OutputTail, timeout_s: float, log: Any
) -> bool:
    """Wait for ``proc`` to exit, at most ``timeout_s`` seconds, while its stdout is read into
    ``out``; on expiry kill its group (:func:`kill_group`). Then keep reading for at most
    :data:`DRAIN_GRACE_SECONDS`, and close our end of the output pipe.

    Args:
        proc: a child started with ``start_new_session=True`` and ``stdout=PIPE``.
        out: where its output goes.
        timeout_s: the run's timeout in seconds.
        log: a structlog logger bound to the run (``shell.timeout``,
            ``shell.output_pipe_held`` are logged on it).

    Returns:
        Whether the timeout expired. ``proc.returncode`` is set on return.

    Raises:
        asyncio.CancelledError: after the group was killed (cancellation never leaves the
            command running).
    """
    assert proc.stdout is not None
    reader = asyncio.create_task(_pump(proc.stdout, out))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout_s):
                await _wait_exit(proc, reader)
        except TimeoutError:
            timed_out = True
            log.warning("shell.timeout", pid=proc.pid, seconds=timeout_s)
            await kill_group(proc)
        done, _ = await asyncio.wait({reader}, timeout=DRAIN_GRACE_SECONDS)
        if not done:
            log.warning("shell.output_pipe_held")
    except BaseException:
        # Cancellation (or anything unexpected): never leave the command running.
        await kill_group(proc)
        raise
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        _close_output(proc)
    return timed_out


def _close_output(proc: asyncio.subprocess.Process) -> None:
    """Close our end of the output pipe even if a leftover background process still holds the
    other end (``asyncio.subprocess.Process`` has no public ``close()``).

    The whole transport is closed only once the watcher has reported the exit: before that,
    ``close()`` polls the child (``Popen.poll``) and could reap it behind the watcher.
    """
    transport: asyncio.SubprocessTransport | None = getattr(proc, "_transport", None)
    if transport is None:
        return
    if proc.returncode is not None:
        transport.close()
        return
    pipe = transport.get_pipe_transport(1)
    if pipe is not None:
        pipe.close()


async def _wait_exit(proc: asyncio.subprocess.Process, reader: asyncio.Task[None]) -> None:
    """Return once ``proc`` has exited.

    ``Process.wait()`` only returns after the output pipe is closed, which a background
    process left behind by the command can delay indefinitely; so while the pipe is open
    this watches ``returncode`` instead.
    """
    while proc.returncode is None:
        if reader.done():  # output closed: wait() now returns as soon as the process exits
            await proc.wait()
            return
        await asyncio.wait({reader}, timeout=_EXIT_POLL_SECONDS)


async def _pump(stream: asyncio.StreamReader, out: OutputTail) -> None:
    while chunk := await stream.read(_READ_CHUNK):
        out.add(chunk)
