"""peerd.coord.etcd_messages.TxnBuilder: requests built in place, the same bytes as the builders."""

from __future__ import annotations

from peerd.coord.etcd_messages import (
    TxnBuilder,
    cmp_create_revision,
    cmp_exists,
    cmp_lease,
    cmp_mod_revision,
    op_get,
    op_put,
    op_txn,
    txn_request,
)

KEY = b"/peerd/c/runs/t/0001764522000123"
LOCK = b"/peerd/c/active/t"


def test_nested_claims_and_fenced_puts_serialize_like_the_builders() -> None:
    want = txn_request(
        [cmp_lease(b"/peerd/c/members/n1", 7)],
        [
            op_txn([cmp_create_revision(KEY, 0)], [op_put(KEY, b"record")], [op_get(KEY)]),
            op_txn(
                [cmp_create_revision(KEY, 0), cmp_mod_revision(b"tz", 41)],
                [op_get(LOCK), op_put(KEY, b"r2"), op_put(LOCK, b"holder", 7)],
                [op_get(KEY), op_get(LOCK)],
            ),
            op_txn([cmp_lease(b"m", 9), cmp_exists(KEY)], [op_put(KEY, b"final")]),
        ],
    )
    txn = TxnBuilder()
    txn.compare_lease(b"/peerd/c/members/n1", 7)
    first = txn.nested()
    first.compare_create_revision(KEY, 0)
    first.put(KEY, b"record")
    first.get(KEY, failure=True)
    second = txn.nested()
    second.compare_create_revision(KEY, 0)
    second.compare_mod_revision(b"tz", 41)
    second.get(LOCK)
    second.put(KEY, b"r2")
    second.put(LOCK, b"holder", 7)
    second.get(KEY, failure=True)
    second.get(LOCK, failure=True)
    third = txn.nested()
    third.compare_lease(b"m", 9)
    third.compare_exists(KEY)
    third.put(KEY, b"final")
    assert txn.txn.SerializeToString() == want.SerializeToString()
    assert txn.txn == want
