"""How many nested transactions fit in one etcd transaction (pure).

etcd limits a transaction to ``--max-txn-ops`` operations (default 128) and gives a nested
transaction only what its parent leaves: in etcd 3.4's ``checkTxnRequest``
(``etcdserver/api/v3rpc/key.go``), a transaction's size is ``max(len(compare), len(success),
len(failure))`` and each nested transaction is checked against ``max_ops - parent size``. An
outer transaction holding ``n`` nested ones is therefore valid when ``n + max(nested sizes) <=
max_ops``: 127 plain claims (size 1), but only 126 claims that take an overlap lock (size 2) and
125 REPLACE claims (size 3). A batch sized from a constant is rejected as a whole by etcd when it
holds a larger claim, and retrying it changes nothing; so batches are sized from the cost of
what they hold.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_TXN_OPS = 128
"""etcd's default ``--max-txn-ops``."""


def pack(costs: Sequence[int], max_items: int, max_ops: int = MAX_TXN_OPS) -> list[range]:
    """Split items, in order, into consecutive batches that each fit one transaction.

    Args:
        costs: the size of each item's nested transaction (>= 1).
        max_items: at most this many items per batch (>= 1; the node's ``claim_batch``).
        max_ops: the server's operation limit.

    Returns:
        Index ranges covering ``costs`` in order; each batch has ``len(batch) + max(cost) <=
        max_ops`` and ``len(batch) <= max_items``.

    Raises:
        ValueError: ``max_items`` < 1, a cost < 1, or one item alone does not fit.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    batches: list[range] = []
    start = 0
    widest = 0
    for i, cost in enumerate(costs):
        if cost < 1 or 1 + cost > max_ops:
            raise ValueError(f"an item of size {cost} cannot fit a transaction of {max_ops} ops")
        size = i - start
        if size and (size + 1 > max_items or size + 1 + max(widest, cost) > max_ops):
            batches.append(range(start, i))
            start, widest = i, 0
        widest = max(widest, cost)
    if start < len(costs):
        batches.append(range(start, len(costs)))
    return batches
