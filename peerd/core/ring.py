"""Task ownership by rendezvous (highest random weight) hashing.

Each (node, task) pair gets a pseudo-random 64-bit weight; the owner of a task is the live member
with the highest weight. Source: Thaler & Ravishankar, "A Name-Based Mapping Scheme for Rendezvous"
(1996), and "Using name-based mappings to increase hit rates", IEEE/ACM ToN 6(1), 1998.

Properties (tested in ``tests/unit/test_ring.py``):

* exactly one owner per task for a given member set, whatever the order of ``members``;
* balance: each node owns ~1/N of the tasks (for 10,000 tasks on 5 nodes max/mean ~1.03);
* minimal disruption: when a node joins, only tasks moving *to* it change owner; when a node
  leaves, only its own tasks move. No task moves between two surviving nodes.

The weight is the first 8 bytes of BLAKE2b(node_id, task_id), so every node, process and Python
version computes the same owner (``hash()`` is salted per process and must not be used).
Cost: O(N) per lookup, 1-2 µs per member on the project's 2-core machine.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from functools import lru_cache
from hashlib import blake2b


@lru_cache(maxsize=1024)
def _keyed(node_id: str) -> blake2b:
    """A BLAKE2b state keyed with ``node_id`` (at most 64 bytes, BLAKE2b's limit), no data yet:
    each weight copies it instead of keying a new one (keying hashes a whole 128-byte block;
    owner of a task among 3 members: 4.3 -> 2.6 µs on the project's machine)."""
    return blake2b(digest_size=8, key=node_id.encode()[:64])


def _digest(node_id: str, data: bytes) -> bytes:
    h = _keyed(node_id).copy()
    h.update(data)
    return h.digest()


def weight(node_id: str, task_id: str) -> int:
    """The rendezvous weight of ``node_id`` for ``task_id``: an unsigned 64-bit integer."""
    return int.from_bytes(_digest(node_id, task_id.encode()), "big")


def owner(task_id: str, members: Iterable[str]) -> str | None:
    """The node that owns ``task_id`` among ``members`` (node ids), or None if there are none.

    Ties (astronomically unlikely) are broken by the larger node id, so the result never depends
    on the iteration order of ``members``. The weights are compared as their 8 big-endian
    digest bytes, which orders them like :func:`weight` without converting (this is the hot
    loop of a reconcile pass: 100,000 tasks x N members).
    """
    data = task_id.encode()
    best: tuple[bytes, str] | None = None
    for node_id in members:
        h = _keyed(node_id).copy()  # inline _digest: the hot loop
        h.update(data)
        candidate = (h.digest(), node_id)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]


def ranked(task_id: str, members: Iterable[str]) -> list[str]:
    """All ``members`` ordered by weight for ``task_id``, owner first (the handoff order)."""
    return sorted(members, key=lambda n: (weight(n, task_id), n), reverse=True)


def owned_by(node_id: str, task_ids: Iterable[str], members: Collection[str]) -> list[str]:
    """The subset of ``task_ids`` that ``node_id`` owns among ``members``."""
    return [t for t in task_ids if owner(t, members) == node_id]
