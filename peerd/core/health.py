"""What a node's health checks answer, from facts about the node (pure: no I/O, no clock).

The node gathers :class:`HealthFacts` (node.py) and serves the verdicts in two places: the
``grpc.health.v1`` statuses per service and ``/livez`` and ``/readyz`` on the HTTP port.

=========================  =======================================================================
check                      SERVING / 200 when
=========================  =======================================================================
``""`` (overall)           serving, the member and task views are loaded, not draining
``peerd.v1.Scheduler``     ready (below): the API can read, write and trigger
``peerd.v1.Peer``          serving and not draining: peers may probe and hand tasks over
``peerd.node.loops``       no supervised loop is degraded
``/livez``                 the event loop answers (the HTTP handler runs at all)
``/readyz``                registered, watching (both views loaded), able to claim (live lease),
                           no degraded supervised loop, no etcd alarm, not draining
=========================  =======================================================================

``""`` keeps its meaning from before per-service statuses existed (container health checks and
``peerd dev`` wait for it): a node with a degraded loop or an etcd alarm is still alive and
answering, which is what restarts are decided on; load balancers should use ``/readyz`` or
``peerd.v1.Scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass

OVERALL = ""
SCHEDULER = "peerd.v1.Scheduler"
PEER = "peerd.v1.Peer"
LOOPS = "peerd.node.loops"
SERVICES = (OVERALL, SCHEDULER, PEER, LOOPS)
"""The grpc.health.v1 service names a node registers."""


@dataclass(frozen=True)
class HealthFacts:
    """What the node knows about itself at one moment.

    Attributes:
        serving: the gRPC server has started.
        registered: this node's member key was written at least once.
        watching: the member view and the task view are loaded.
        claiming: the node holds a live lease and may claim (``Membership.claim_ready``).
        draining: the node is shutting down.
        degraded_loops: names of supervised loops that crashed and are not healthy again.
        alarms: active etcd alarms (``"NOSPACE"``, ``"CORRUPT"``).
    """

    serving: bool
    registered: bool
    watching: bool
    claiming: bool
    draining: bool
    degraded_loops: tuple[str, ...] = ()
    alarms: tuple[str, ...] = ()


def readiness_problems(facts: HealthFacts) -> list[str]:
    """Why the node is not ready, one short reason each (empty: ready), in a fixed order."""
    problems = []
    if not facts.serving:
        problems.append("not serving yet")
    if not facts.registered:
        problems.append("not registered in etcd")
    if not facts.watching:
        problems.append("member and task views not loaded")
    if not facts.claiming:
        problems.append("no live lease: not claiming")
    if facts.draining:
        problems.append("draining")
    problems += [f"loop {name} degraded" for name in facts.degraded_loops]
    problems += [f"etcd alarm {alarm}" for alarm in facts.alarms]
    return problems


def service_status(facts: HealthFacts) -> dict[str, bool]:
    """Service name -> SERVING (True) or NOT_SERVING, for each of :data:`SERVICES`."""
    up = facts.serving and not facts.draining
    return {
        OVERALL: up and facts.watching,
        SCHEDULER: not readiness_problems(facts),
        PEER: up,
        LOOPS: not facts.degraded_loops,
    }
