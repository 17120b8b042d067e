"""Overlap decisions: claim modes per policy and what a turned-away claim does next."""

from __future__ import annotations

import pytest

from peerd.core.overlap import (
    LOCK,
    QUEUE,
    REPLACE,
    SKIP,
    effective,
    first_mode,
    needs_lock,
    when_busy,
)
from peerd.v1 import scheduler_pb2 as pb


def test_unspecified_means_allow() -> None:
    assert effective(pb.OVERLAP_POLICY_UNSPECIFIED) == pb.OVERLAP_ALLOW
    assert first_mode(pb.OVERLAP_POLICY_UNSPECIFIED) is None
    assert not needs_lock(pb.OVERLAP_POLICY_UNSPECIFIED)


@pytest.mark.parametrize(
    ("policy", "mode", "locked"),
    [
        (pb.OVERLAP_ALLOW, None, False),
        (pb.OVERLAP_FORBID, LOCK, True),
        (pb.OVERLAP_BUFFER_ONE, LOCK, True),
        (pb.OVERLAP_REPLACE, REPLACE, True),
    ],
)
def test_first_claim_mode(policy: int, mode: str | None, locked: bool) -> None:
    assert first_mode(policy) == mode
    assert needs_lock(policy) is locked


def test_forbid_skips_when_busy() -> None:
    assert when_busy(pb.OVERLAP_FORBID, LOCK) == SKIP


def test_buffer_one_queues_once_then_skips() -> None:
    assert when_busy(pb.OVERLAP_BUFFER_ONE, LOCK) == QUEUE
    assert when_busy(pb.OVERLAP_BUFFER_ONE, QUEUE) == SKIP


@pytest.mark.parametrize("mode", [None, REPLACE])
def test_modes_that_are_never_busy(mode: str | None) -> None:
    with pytest.raises(ValueError, match="never turned away"):
        when_busy(pb.OVERLAP_REPLACE, mode)
