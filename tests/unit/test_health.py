"""The health verdicts (peerd.core.health): readiness reasons and the status per service."""

from __future__ import annotations

from dataclasses import replace

from peerd.core.health import (
    LOOPS,
    OVERALL,
    PEER,
    SCHEDULER,
    SERVICES,
    HealthFacts,
    readiness_problems,
    service_status,
)

READY = HealthFacts(serving=True, registered=True, watching=True, claiming=True, draining=False)


def test_a_ready_node_serves_everything() -> None:
    assert readiness_problems(READY) == []
    assert service_status(READY) == dict.fromkeys(SERVICES, True)


def test_each_fact_names_its_reason() -> None:
    cases = {
        "not serving yet": replace(READY, serving=False),
        "not registered in etcd": replace(READY, registered=False),
        "member and task views not loaded": replace(READY, watching=False),
        "no live lease: not claiming": replace(READY, claiming=False),
        "draining": replace(READY, draining=True),
        "loop engine.writer degraded": replace(READY, degraded_loops=("engine.writer",)),
        "etcd alarm NOSPACE": replace(READY, alarms=("NOSPACE",)),
    }
    for reason, facts in cases.items():
        assert readiness_problems(facts) == [reason]
        assert service_status(facts)[SCHEDULER] is False


def test_a_degraded_loop_or_alarm_keeps_the_node_alive_but_not_ready() -> None:
    for facts in (replace(READY, degraded_loops=("x",)), replace(READY, alarms=("NOSPACE",))):
        status = service_status(facts)
        assert status[OVERALL] and status[PEER] and not status[SCHEDULER]
    assert service_status(replace(READY, degraded_loops=("x",)))[LOOPS] is False
    assert service_status(replace(READY, alarms=("NOSPACE",)))[LOOPS] is True


def test_a_lost_lease_keeps_peers_served() -> None:
    status = service_status(replace(READY, claiming=False))
    assert status == {OVERALL: True, SCHEDULER: False, PEER: True, LOOPS: True}


def test_draining_stops_everything_but_the_loops_status() -> None:
    status = service_status(replace(READY, draining=True))
    assert status == {OVERALL: False, SCHEDULER: False, PEER: False, LOOPS: True}
