from __future__ import annotations

from collections import Counter
from hashlib import blake2b

from peerd.core.ring import owned_by, owner, ranked, weight

TASKS = [f"task-{i}" for i in range(10_000)]


def owners(members: list[str]) -> dict[str, str | None]:
    return {t: owner(t, members) for t in TASKS}


def test_one_owner_independent_of_member_order() -> None:
    members = ["n1", "n2", "n3", "n4", "n5"]
    forward = owners(members)
    backward = owners(list(reversed(members)))
    assert forward == backward
    assert all(o in members for o in forward.values())
    for t in TASKS[:200]:
        assert [m for m in members if owned_by(m, [t], members)] == [forward[t]]


def test_no_members_no_owner() -> None:
    assert owner("x", []) is None


def test_balance_10000_tasks_5_nodes() -> None:
    members = [f"node-{i}" for i in range(5)]
    counts = Counter(owners(members).values())
    mean = len(TASKS) / len(members)
    assert len(counts) == 5
    assert max(counts.values()) / mean <= 1.15


def test_adding_a_node_moves_only_to_it() -> None:
    members = [f"node-{i}" for i in range(5)]
    before = owners(members)
    after = owners([*members, "node-new"])
    moved = [t for t in TASKS if before[t] != after[t]]
    assert all(after[t] == "node-new" for t in moved)
    assert len(moved) <= 1.1 * len(TASKS) / 6


def test_removing_a_node_moves_only_its_tasks() -> None:
    members = [f"node-{i}" for i in range(5)]
    before = owners(members)
    after = owners(members[1:])
    moved = [t for t in TASKS if before[t] != after[t]]
    assert all(before[t] == "node-0" for t in moved)
    assert len(moved) <= 1.1 * len(TASKS) / 5
    # every task of the removed node moved, none between survivors
    assert {t for t in TASKS if before[t] == "node-0"} == set(moved)


def test_weight_is_stable_across_processes() -> None:
    # Pinned values: a change of hash would silently reshuffle every cluster during an upgrade.
    assert weight("n1", "t1") == 17075193666590932288
    assert weight("node-0", "task-0") == 9562284794742610736
    assert weight("n1", "t1") != weight("n2", "t1")
    assert ranked("t1", ["n1", "n2", "n3"])[0] == owner("t1", ["n3", "n2", "n1"])


def test_weights_and_owners_are_keyed_blake2b_of_the_task_id() -> None:
    """The copied keyed state gives what keying BLAKE2b afresh for every weight gives (the
    definition in the module docstring), for ids long and short and members of any name."""
    members = ["n1", "node-2", "x" * 70, "é"]  # a key over 64 bytes is cut to 64
    for task_id in [*TASKS[:2000], "", "t" * 300]:
        expected = {
            m: blake2b(task_id.encode(), digest_size=8, key=m.encode()[:64]).digest()
            for m in members
        }
        for m in members:
            assert weight(m, task_id) == int.from_bytes(expected[m], "big")
        assert owner(task_id, members) == max(members, key=lambda m: (expected[m], m))
