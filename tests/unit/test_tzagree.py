"""The agreement rule (peerd.core.tzagree): which tzdata version the cluster computes with, and
who may own a zone-dependent task. Pure: members are plain ``pb.Member`` values."""

from __future__ import annotations

import pytest

from peerd.core.tzagree import agreed_version, live_versions, may_own, mismatch
from peerd.v1 import scheduler_pb2 as pb


def members(*versions: str, draining: tuple[str, ...] = ()) -> dict[str, pb.Member]:
    return {
        f"n{i}": pb.Member(node_id=f"n{i}", tzdata_version=v, draining=f"n{i}" in draining)
        for i, v in enumerate(versions, 1)
    }


@pytest.mark.parametrize(
    ("current", "pinned", "live", "agreed"),
    [
        (None, False, [], None),  # nobody publishes: nothing to agree on
        (None, False, ["2026f"], "2026f"),  # the first node decides
        (None, False, ["2025b", "2026f", "2025b"], "2025b"),  # most live nodes
        (None, False, ["2025b", "2026f"], "2026f"),  # a tie goes to the newest
        ("2025b", False, ["2026f", "2026f", "2025b"], "2025b"),  # sticky while one node runs it
        ("2025b", False, ["2026f", "2026f"], "2026f"),  # its last node left
        ("2025b", False, ["2026f", "2026g", "2026g"], "2026g"),  # ... then the most common
        ("2025b", False, [], "2025b"),  # no live member: unchanged
        ("2027a", True, ["2026f", "2026f"], "2027a"),  # pinned: whatever the members run
        ("2026f", False, ["", "2026f"], "2026f"),  # members without a version do not count
        ("2025b", False, ["", ""], "2025b"),
    ],
)
def test_agreed_version(current: str | None, pinned: bool, live: list[str], agreed: str) -> None:
    assert agreed_version(current, pinned, live) == agreed


def test_rolling_upgrade_switches_once_when_the_last_old_node_leaves() -> None:
    """Three nodes move from 2025b to 2026f one by one (each drains, then restarts): the agreed
    version stays 2025b while any old node is live (not draining), switches once when the last
    one starts draining, and never goes back."""
    versions = ["2025b", "2025b", "2025b"]
    agreed = agreed_version(None, False, versions)
    history = [agreed]
    for i in range(3):
        draining = (f"n{i + 1}",)
        agreed = agreed_version(agreed, False, live_versions(members(*versions, draining=draining)))
        history.append(agreed)
        versions[i] = "2026f"
        agreed = agreed_version(agreed, False, live_versions(members(*versions)))
        history.append(agreed)
    assert history == ["2025b"] * 5 + ["2026f"] * 2
    assert [a for i, a in enumerate(history) if i == 0 or a != history[i - 1]] == [
        "2025b",
        "2026f",
    ]


def test_live_versions_skip_draining_members_and_empty_versions() -> None:
    view = members("2025b", "2026f", "", draining=("n1",))
    assert live_versions(view) == ["2026f"]


def test_may_own() -> None:
    zoned = pb.Schedule(cron="0 9 * * *", time_zone="America/Vancouver")
    utc = pb.Schedule(cron="0 9 * * *", time_zone="UTC")
    assert may_own(zoned, "2026f", "2026f")
    assert not may_own(zoned, "2025b", "2026f")
    assert not may_own(zoned, "2026f", None)  # nothing agreed: nobody owns it
    assert may_own(utc, "2025b", "2026f") and may_own(utc, "2025b", None)


def test_mismatch_says_why() -> None:
    assert mismatch("2026f", "2026f", False) is None
    assert mismatch("2025b", "2026f", True) == (
        "tzdata 2025b differs from the cluster's 2026f (pinned): this node claims no slot of a "
        "task whose schedule depends on time-zone rules"
    )
    assert "(agreed)" in (mismatch("2025b", "2026f", False) or "")
    assert mismatch("2026f", None, False) == "the cluster has not agreed on a tzdata version yet"
