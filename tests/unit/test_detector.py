from __future__ import annotations

import pytest

from peerd.core.detector import FailureDetector, State, Verdict


def detector(n: int = 5, **kw: int) -> FailureDetector:
    d = FailureDetector("n1", **kw)
    d.update_members({f"n{i}": 100 + i for i in range(1, n + 1)})
    return d


def test_probes_ring_neighbours_only() -> None:
    d = detector(5)
    assert d.probe_targets() == ["n2", "n5"]
    assert detector(5, neighbours=2).probe_targets() == ["n2", "n3", "n4", "n5"]
    small = FailureDetector("a")
    small.update_members({"a": 1, "b": 2})
    assert small.probe_targets() == ["b"]


def test_suspect_after_misses_then_dead_when_indirect_fails() -> None:
    d = detector(3, suspect_after=3)
    assert d.on_probe("n2", False) is None
    assert d.on_probe("n2", False) is None
    assert d.state("n2") is State.ALIVE
    d.on_probe("n2", False)
    assert d.suspects() == ["n2"]
    assert d.helpers_for("n2") == ["n3"]
    assert d.on_indirect("n2", reachable=False) == Verdict("n2", 102, dead=True)
    assert d.dead() == {"n2"}
    assert d.alive() == ["n3"]
    # a DEAD peer keeps being probed so that its return is noticed
    assert "n2" in d.probe_targets()
    assert d.on_probe("n2", True, lease_id=102) == Verdict("n2", 102, dead=False)
    assert d.dead() == set()


def test_indirect_success_clears_suspicion() -> None:
    d = detector(3, suspect_after=1)
    d.on_probe("n2", False)
    assert d.on_indirect("n2", reachable=True) is None
    assert d.state("n2") is State.ALIVE
    # a later single miss does not re-suspect immediately with suspect_after=2
    d2 = detector(3, suspect_after=2)
    d2.on_probe("n2", False)
    d2.on_probe("n2", True, lease_id=102)
    d2.on_probe("n2", False)
    assert d2.state("n2") is State.ALIVE


def test_rumours_apply_only_to_the_same_incarnation() -> None:
    d = detector(3)
    assert not d.on_rumor("n2", 999, dead=True)  # other incarnation
    assert not d.on_rumor("n1", 101, dead=True)  # about myself
    d.on_rumor("n2", 102, dead=True)
    assert d.state("n2") is State.SUSPECT  # hearsay: a suspect until my own probe fails
    assert d.suspects() == []  # no indirect probe needed: it was confirmed elsewhere
    assert "n2" in d.probe_targets()
    assert d.on_probe("n2", False) == Verdict("n2", 102, dead=True)
    assert d.rumors() == [Verdict("n2", 102, True)]
    assert d.on_rumor("n2", 102, dead=False)
    assert d.dead() == set()


def test_a_reachable_peer_is_never_marked_dead_on_hearsay() -> None:
    """Stale rumours kept a healed partition flapping before (chaos long profile)."""
    d = detector(3)
    for _ in range(10):
        d.on_rumor("n2", 102, dead=True)
        assert d.on_probe("n2", True, lease_id=102) is None  # refuted, and nothing to gossip
        assert d.dead() == set()


def test_new_incarnation_starts_alive_and_departed_members_are_forgotten() -> None:
    d = detector(3)
    d.on_rumor("n2", 102, dead=True)
    d.update_members({"n1": 101, "n2": 202, "n3": 103})
    assert d.state("n2") is State.ALIVE
    d.update_members({"n1": 101, "n3": 103})
    assert d.state("n2") is None
    assert d.on_probe("n2", False) is None


def test_answer_from_a_newer_incarnation_is_not_taken_for_the_old_one() -> None:
    d = detector(3, suspect_after=1)
    d.on_probe("n2", False)
    d.on_indirect("n2", reachable=False)
    assert d.on_probe("n2", True, lease_id=555) is None
    assert d.state("n2") is State.DEAD


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FailureDetector("a", suspect_after=0)
