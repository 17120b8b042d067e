"""peerd.runner.process_group against asyncio's child watcher: signalling a command's process
group never reaps the command behind the watcher (which would turn its exit status into 255)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peerd.runner import process_group

pytestmark = pytest.mark.skipif(
    not hasattr(asyncio, "ThreadedChildWatcher"),
    reason="this Python's asyncio has no child watchers to hold",
)


class HeldWatcher(asyncio.ThreadedChildWatcher):
    """asyncio's default child watcher (Python 3.11), except that it starts waiting for a child
    only on :meth:`release`. Until then a child that exited stays a zombie that nobody but its
    watcher may reap: the moment, made as long as a test needs, between a child's death and the
    watcher's ``waitpid``."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[tuple[int, Callable[..., object], tuple[Any, ...]]] = []

    def add_child_handler(self, pid: int, callback: Callable[..., object], *args: Any) -> None:
        self._held.append((pid, callback, args))

    def release(self) -> None:
        for pid, callback, args in self._held:
            super().add_child_handler(pid, callback, *args)
        self._held.clear()


@pytest.fixture
def held_watcher() -> Iterator[HeldWatcher]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # child watchers: 3.12+
        previous = asyncio.get_child_watcher()
        watcher = HeldWatcher()
        asyncio.set_child_watcher(watcher)
        try:
            yield watcher
        finally:
            asyncio.set_child_watcher(previous)


def process_state(pid: int) -> str:
    """The state letter of ``pid`` in ``/proc`` (``Z`` for a zombie), "" once it is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    return stat[stat.rfind(")") + 2]


async def until_zombie(pid: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while process_state(pid) != "Z":
        assert time.monotonic() < deadline, f"pid {pid} is {process_state(pid)!r}, not a zombie"
        await asyncio.sleep(0.01)


def test_killing_a_group_whose_leader_died_leaves_reaping_to_the_watcher(
    held_watcher: HeldWatcher, caplog: pytest.LogCaptureFixture
) -> None:
    # The race of the flaky test_timeout_escalates_to_sigkill_when_sigterm_ignored, held open:
    # the command died (SIGKILL) and the watcher has not reaped it yet when the group is signalled.
    async def scenario() -> tuple[str, int]:
        proc = await asyncio.create_subprocess_exec("sleep", "100", start_new_session=True)
        os.kill(proc.pid, signal.SIGKILL)
        await until_zombie(proc.pid)
        killing = asyncio.create_task(process_group.kill_group(proc))
        await asyncio.sleep(0)  # kill_group signals the group before its first await
        state = process_state(proc.pid)
        held_watcher.release()
        await killing
        return state, await proc.wait()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        state_after_signal, code = asyncio.run(scenario())

    assert state_after_signal == "Z", "signalling the group reaped the child behind the watcher"
    assert code == -signal.SIGKILL
    assert "Unknown child process" not in caplog.text
