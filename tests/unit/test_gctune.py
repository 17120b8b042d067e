"""The garbage-collector tuning of a node (:mod:`peerd.gctune`), on this process's collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from peerd import gctune
from peerd.clock import SystemClock
from peerd.gctune import Freezer, GcPauses


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_pauses_are_timed_per_generation() -> None:
    pauses = GcPauses(log_over_ms=-1.0)  # every collection counts as long
    pauses.install()
    pauses.install()  # idempotent: one callback
    try:
        gc.collect(2)
        gc.collect(0)
    finally:
        pauses.uninstall()
    assert pauses.count[2] >= 1 and pauses.count[0] >= 1
    assert 0 < pauses.worst_ms[2] <= pauses.total_s[2] * 1000
    seen = list(pauses.count)
    gc.collect(2)  # uninstalled: not counted
    assert pauses.count == seen
    # Long ones are kept by the callback and logged later, outside any collection.
    kept = len(pauses.pending)
    assert kept == min(sum(seen), gctune.PENDING_MAX)
    assert pauses.report() == kept and not pauses.pending


def test_freezes_only_once_ready_and_grown() -> None:
    size, ready = [5000], [False]
    freezer = Freezer(lambda: size[0], lambda: ready[0], SystemClock(), growth=0.1, minimum=1000)
    assert not freezer.check()  # not ready: nothing frozen
    assert gc.get_freeze_count() == 0
    ready[0] = True
    kept = [[i] for i in range(100)]  # tracked objects that live on
    assert freezer.check()
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept) and freezer.frozen_at == 5000 and freezer.freezes == 1
    size[0] = 5900  # grew by less than the minimum
    assert not freezer.check()
    size[0] = 6000
    assert freezer.check() and freezer.frozen_at == 6000
    size[0] = 60_000  # the share decides above the minimum: 10 % of 66,000 is 6,600
    assert freezer.check()
    size[0] = 66_000
    assert not freezer.check()
    size[0] = 40_000  # tasks handed off: the baseline follows it down
    assert not freezer.check() and freezer.frozen_at == 40_000
    size[0] = 45_000  # taken back: 5,000 new long-lived tasks' objects
    assert freezer.check() and freezer.frozen_at == 45_000


def test_a_set_that_lost_and_regained_as_many_members_counts_as_grown() -> None:
    """A ring change can hand 5,000 tasks off and acquire 5,000 others between two checks: the
    size is the same, but the acquired tasks' objects are new and unfrozen."""
    size, acquired = [50_000], [0]
    freezer = Freezer(
        lambda: size[0], lambda: True, SystemClock(), growth=0.1, minimum=1000,
        added=lambda: acquired[0],
    )  # fmt: skip
    assert freezer.check() and freezer.added_at == 0  # the first full view
    acquired[0] = 4000  # fewer than 10 % of 50,000
    assert not freezer.check()
    acquired[0] = 5000
    assert freezer.check() and freezer.added_at == 5000 and freezer.frozen_at == 50_000
    assert not freezer.check()


def test_the_first_freeze_does_not_wait_for_growth() -> None:
    """A node holding a few tasks still freezes what it imported, once it is ready (unfrozen,
    its full collections lowered the execution limit in the chaos set-up)."""
    size, ready = [200], [False]
    freezer = Freezer(lambda: size[0], lambda: ready[0], SystemClock(), growth=0.1, minimum=1000)
    assert not freezer.check()  # not ready
    ready[0] = True
    assert freezer.check() and freezer.freezes == 1 and gc.get_freeze_count() > 0
    size[0] = 400  # then growth decides, as before
    assert not freezer.check() and freezer.freezes == 1
