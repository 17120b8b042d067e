"""peerd.core.runstate: the life of a run on its claimant, one table."""

from __future__ import annotations

import pytest

from peerd.core.runstate import TRANSITIONS, IllegalTransition, RunState, step

EVENTS = sorted({event for _, event in TRANSITIONS})


def test_happy_path() -> None:
    state = step(None, "claimed")
    for event, expected in (
        ("start", RunState.RUNNING),
        ("start", RunState.RUNNING),  # a retry's next attempt
        ("finish", RunState.FINISHING),
        ("written", RunState.DONE),
    ):
        state = step(state, event)
        assert state is expected


@pytest.mark.parametrize("state", [None, *RunState])
@pytest.mark.parametrize("event", EVENTS)
def test_every_pair_is_in_the_table_or_illegal(state: RunState | None, event: str) -> None:
    if (state, event) in TRANSITIONS:
        assert step(state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransition, match=repr(event)):
            step(state, event)


def test_done_is_final_and_claims_happen_once() -> None:
    for event in EVENTS:
        with pytest.raises(IllegalTransition):
            step(RunState.DONE, event)
    for state in RunState:
        with pytest.raises(IllegalTransition):
            step(state, "claimed")  # a second claim of a run the registry holds
