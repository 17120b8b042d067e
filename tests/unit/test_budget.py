"""peerd.core.budget: claim batches sized from etcd's operation budget."""

from __future__ import annotations

import pytest

from peerd.core.budget import MAX_TXN_OPS, pack


def _fits(costs: list[int], batches: list[range], max_items: int) -> None:
    assert [i for b in batches for i in b] == list(range(len(costs)))  # in order, all, once
    for b in batches:
        assert len(b) <= max_items
        assert len(b) + max(costs[i] for i in b) <= MAX_TXN_OPS


def test_plain_claims_fill_127_per_transaction() -> None:
    costs = [1] * 300
    batches = pack(costs, 127)
    _fits(costs, batches, 127)
    assert [len(b) for b in batches] == [127, 127, 46]


def test_lock_claims_fit_126_and_replace_claims_125() -> None:
    assert [len(b) for b in pack([2] * 127, 127)] == [126, 1]
    assert [len(b) for b in pack([3] * 127, 127)] == [125, 2]


def test_one_wide_claim_shrinks_only_its_batch() -> None:
    costs = [1] * 126 + [3] + [1] * 10
    batches = pack(costs, 127)
    _fits(costs, batches, 127)
    assert [len(b) for b in batches] == [126, 11]  # the wide one starts the next batch


def test_claim_batch_setting_caps_items() -> None:
    costs = [1, 2, 3, 1, 1, 2, 1]
    batches = pack(costs, 3)
    _fits(costs, batches, 3)
    assert [len(b) for b in batches] == [3, 3, 1]


def test_empty_and_invalid() -> None:
    assert pack([], 64) == []
    with pytest.raises(ValueError, match="max_items"):
        pack([1], 0)
    with pytest.raises(ValueError, match="cannot fit"):
        pack([MAX_TXN_OPS], 10)
    with pytest.raises(ValueError, match="cannot fit"):
        pack([0], 10)
