"""SWIM-style failure detection, as a pure state machine (no I/O, no clock reads).

Source: Das, Gupta, Motivala, "SWIM: Scalable Weakly-consistent Infection-style Process Group
Membership Protocol", DSN 2002 — direct probes, indirect probes through k other members before
declaring a failure, and dissemination of the verdict. We keep etcd's lease as the authoritative
membership; this detector only decides, faster than the lease TTL, which members *own nothing*
for now.

Per peer incarnation ``(node_id, lease_id)``:

    ALIVE --(suspect_after consecutive failed direct probes)--> SUSPECT
    SUSPECT --(an indirect probe through another member succeeds)--> ALIVE
    SUSPECT --(all indirect probes fail, or no other member to ask)--> DEAD
    SUSPECT/DEAD --(a direct probe succeeds)--> ALIVE
    ALIVE --(rumour "dead" for this incarnation)--> SUSPECT (rumoured)
    SUSPECT (rumoured) --(one failed direct probe)--> DEAD
    DEAD --(rumour "alive" for this incarnation)--> ALIVE

A "dead" rumour is only a suspicion until this node's own probe fails: a peer it can reach is
never marked dead on hearsay. Without that, stale rumours re-infect nodes that have just
cleared them, and a healed partition keeps flapping (seen in the chaos long profile).
    (a new lease_id for the node) --> ALIVE, a fresh incarnation

The I/O layer (:mod:`peerd.peer`) performs the probes and feeds their outcomes here; it acts on
the returned :class:`Verdict` (gossip it, recompute ownership).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class State(enum.Enum):
    """A peer's state in this node's detector."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True)
class Verdict:
    """A change worth telling the cluster: ``dead`` True = confirmed failed, False = back."""

    node_id: str
    lease_id: int
    dead: bool


@dataclass
class _Peer:
    lease_id: int
    state: State = State.ALIVE
    misses: int = 0
    rumoured: bool = False


class FailureDetector:
    """Tracks the other members of the cluster from this node's point of view.

    Args:
        self_id: this node's id (never tracked).
        suspect_after: consecutive failed direct probes before a peer is suspected (>= 1).
        neighbours: how many ring neighbours each node probes on each side (>= 1).

    Raises:
        ValueError: for out-of-range arguments.
    """

    def __init__(self, self_id: str, suspect_after: int = 3, neighbours: int = 1) -> None:
        if suspect_after < 1 or neighbours < 1:
            raise ValueError("suspect_after and neighbours must be >= 1")
        self.self_id = self_id
        self.suspect_after = suspect_after
        self.neighbours = neighbours
        self._peers: dict[str, _Peer] = {}

    # -- membership -------------------------------------------------------------------------

    def update_members(self, members: Mapping[str, int]) -> None:
        """Set the member view: ``{node_id: lease_id}`` from etcd (may include this node).

        New members and new incarnations start ALIVE; members gone from etcd are forgotten.
        """
        current: dict[str, _Peer] = {}
        for node_id, lease_id in members.items():
            if node_id == self.self_id:
                continue
            peer = self._peers.get(node_id)
            current[node_id] = peer if peer and peer.lease_id == lease_id else _Peer(lease_id)
        self._peers = current

    def state(self, node_id: str) -> State | None:
        """The peer's state, or None if it is not a member."""
        peer = self._peers.get(node_id)
        return peer.state if peer else None

    def dead(self) -> set[str]:
        """Members confirmed dead: they own nothing in this node's ownership view."""
        return {n for n, p in self._peers.items() if p.state is State.DEAD}

    def alive(self) -> list[str]:
        """Members not confirmed dead (ALIVE or SUSPECT), sorted."""
        return sorted(n for n, p in self._peers.items() if p.state is not State.DEAD)

    # -- probing ----------------------------------------------------------------------------

    def probe_targets(self) -> list[str]:
        """Peers to probe directly this round: the ring neighbours of this node among the
        members not known dead (``neighbours`` on each side, in node-id order), plus every
        DEAD or SUSPECT peer (so a recovered node is noticed)."""
        ring = sorted(
            [*(n for n, p in self._peers.items() if p.state is State.ALIVE), self.self_id]
        )
        me = ring.index(self.self_id)
        targets: set[str] = set()
        for step in range(1, self.neighbours + 1):
            for index in (me + step, me - step):
                node = ring[index % len(ring)]
                if node != self.self_id:
                    targets.add(node)
        targets.update(n for n, p in self._peers.items() if p.state is not State.ALIVE)
        return sorted(targets)

    def on_probe(self, node_id: str, ok: bool, lease_id: int = 0) -> Verdict | None:
        """Record a direct probe. ``lease_id`` is the one the peer answered with (ok only).

        Returns:
            A Verdict when a DEAD peer came back or a rumoured suspicion was confirmed (tell the
            others), else None.
        """
        peer = self._peers.get(node_id)
        if peer is None:
            return None
        if ok:
            if lease_id and lease_id != peer.lease_id:
                return None  # a newer incarnation answered; the etcd view will catch up
            was_dead = peer.state is State.DEAD
            peer.state, peer.misses, peer.rumoured = State.ALIVE, 0, False
            return Verdict(node_id, peer.lease_id, dead=False) if was_dead else None
        peer.misses += 1
        if peer.state is State.SUSPECT and peer.rumoured:
            peer.state, peer.rumoured = State.DEAD, False
            return Verdict(node_id, peer.lease_id, dead=True)
        if peer.state is State.ALIVE and peer.misses >= self.suspect_after:
            peer.state = State.SUSPECT
        return None

    def suspects(self) -> list[str]:
        """Peers waiting for an indirect probe (rumoured ones wait for a direct probe)."""
        return sorted(
            n for n, p in self._peers.items() if p.state is State.SUSPECT and not p.rumoured
        )

    def helpers_for(self, target: str, k: int = 2) -> list[str]:
        """Up to ``k`` ALIVE members, other than ``target``, to ask for an indirect probe."""
        return [
            n for n, p in sorted(self._peers.items()) if n != target and p.state is State.ALIVE
        ][:k]

    def on_indirect(self, target: str, reachable: bool) -> Verdict | None:
        """Record the outcome of the indirect probes of a SUSPECT peer (``reachable`` is True if
        any helper reached it; pass False when there was no helper to ask).

        Returns:
            A dead Verdict when the suspicion is confirmed, else None.
        """
        peer = self._peers.get(target)
        if peer is None or peer.state is not State.SUSPECT or peer.rumoured:
            return None
        if reachable:
            peer.state, peer.misses = State.ALIVE, 0
            return None
        peer.state = State.DEAD
        return Verdict(target, peer.lease_id, dead=True)

    # -- dissemination ----------------------------------------------------------------------

    def on_rumor(self, node_id: str, lease_id: int, dead: bool) -> bool:
        """Apply another node's verdict. Returns True if the dead set changed (a "dead" rumour
        never changes it directly: it makes the peer a suspect to probe).

        Rumours about other incarnations, about this node, or about non-members are ignored.
        """
        peer = self._peers.get(node_id)
        if peer is None or peer.lease_id != lease_id:
            return False
        if dead and peer.state is State.ALIVE:
            peer.state, peer.rumoured = State.SUSPECT, True
            return False  # confirmed (or refuted) by this node's next direct probe
        if not dead and peer.state is not State.ALIVE:
            was_dead = peer.state is State.DEAD
            peer.state, peer.misses, peer.rumoured = State.ALIVE, 0, False
            return was_dead
        return False

    def rumors(self) -> list[Verdict]:
        """Current DEAD verdicts, to piggyback on probes."""
        return [
            Verdict(n, p.lease_id, True) for n, p in self._peers.items() if p.state is State.DEAD
        ]


MAX_LOCAL_HEALTH = 8
"""Highest local health score: probe timeouts grow to at most ``1 + 8`` times the base."""


def local_health(score: int, round_s: float, timeout_s: float) -> int:
    """This node's local health score after a probe round (Lifeguard's *local health
    multiplier*: Dadgar, Phillips, Currey, "Lifeguard: Local Health Awareness for More Accurate
    Failure Detection", DSN 2018).

    A node whose own event loop is starved (CPU saturation, a long pause) sees its probes time
    out and would accuse healthy peers. So a round that took more than twice its probe timeout
    (``round_s > 2 * timeout_s``: this node was slow, whatever the peers did) raises the score by
    one, up to :data:`MAX_LOCAL_HEALTH`, and a round on time lowers it by one, down to 0. The
    prober multiplies its probe timeouts by ``1 + score`` and does not count the misses of a
    round that overran.
    """
    if round_s > 2 * timeout_s:
        return min(MAX_LOCAL_HEALTH, score + 1)
    return max(0, score - 1)
