"""peerd.core.taskspec: what an update keeps, pause transitions, and the recorded changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from peerd.core.taskspec import field_changes, prepare_update, set_paused, user_view, write_ops
from peerd.v1 import scheduler_pb2 as pb

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


def stored() -> pb.TaskSpec:
    s = pb.TaskSpec(id="t", http=pb.HttpTarget(url="http://h/a", method="POST"))
    s.schedule.every.FromSeconds(30)
    s.created_at.FromDatetime(T0)
    s.updated_at.FromDatetime(T0)
    return s


def desired(**kw: object) -> pb.TaskSpec:
    d = stored()
    d.ClearField("created_at")
    d.ClearField("updated_at")
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def test_an_update_that_changes_nothing_is_the_stored_spec() -> None:
    assert prepare_update(stored(), desired(), LATER) == stored()
    py = pb.TaskSpec(id="t", python=pb.PythonTarget(name="x", args_json='{"a":1}'))
    py.schedule.every.FromSeconds(30)
    again = pb.TaskSpec()
    again.CopyFrom(py)
    again.python.args_json = '{ "a" : 1 }'  # same JSON, other spacing
    assert prepare_update(py, again, LATER) == py


def test_user_fields_are_replaced_server_fields_kept_and_updated_at_moves() -> None:
    d = desired(description="new")
    d.http.method = "get"
    d.created_at.FromDatetime(LATER)  # ignored
    d.revision = 99  # ignored
    d.pause_note = "ignored"
    new = prepare_update(stored(), d, LATER)
    assert new.description == "new" and new.http.method == "GET"
    assert new.created_at.ToDatetime(UTC) == T0 and new.updated_at.ToDatetime(UTC) == LATER
    assert new.revision == 0 and new.pause_note == ""
    assert not new.HasField("schedule_since") and not new.HasField("previous_schedule")
    paths = [c.field for c in field_changes(stored(), new)]
    assert paths == ["description", "http.method"]


def test_a_schedule_change_keeps_the_old_schedule_up_to_the_change() -> None:
    d = desired()
    d.schedule.every.FromSeconds(10)
    first = prepare_update(stored(), d, LATER)
    assert first.schedule_since.ToDatetime(UTC) == LATER
    assert first.previous_schedule.schedule == stored().schedule
    assert first.previous_schedule.since.ToDatetime(UTC) == T0
    d2 = desired()
    d2.schedule.cron = "* * * * *"
    second = prepare_update(first, d2, LATER + timedelta(minutes=5))
    assert second.previous_schedule.schedule == first.schedule
    assert second.previous_schedule.since.ToDatetime(UTC) == LATER
    (change,) = field_changes(stored(), first)
    assert (change.field, change.before, change.after) == ("schedule.every", '"30s"', '"10s"')


def test_an_every_written_as_cron_is_normalised_before_comparing() -> None:
    d = desired()
    d.schedule.cron = "@every  30s"
    assert prepare_update(stored(), d, LATER) == stored()


def test_paused_changes_pause_and_resume_like_the_pause_calls() -> None:
    paused = prepare_update(stored(), desired(paused=True), LATER)
    assert paused.paused and paused.paused_at.ToDatetime(UTC) == LATER
    resumed = prepare_update(paused, desired(), LATER + timedelta(minutes=1))
    assert not resumed.paused and resumed.resumed_at.ToDatetime(UTC) == LATER + timedelta(minutes=1)
    assert resumed.paused_at == paused.paused_at  # when it was last paused


def test_set_paused_transitions() -> None:
    s = stored()
    assert set_paused(s, True, "why", LATER) and s.pause_note == "why"
    assert not set_paused(s, True, "", LATER)  # paused again without a note: nothing
    assert set_paused(s, True, "other", LATER) and s.pause_note == "other"
    assert set_paused(s, False, "", LATER) and s.pause_note == "" and not s.paused
    assert not set_paused(s, False, "", LATER)


def test_field_changes_name_map_entries_and_cut_long_values() -> None:
    a = stored()
    b = stored()
    b.http.headers["X-Key"] = "v"
    b.description = "x" * 500
    changes = {c.field: c for c in field_changes(a, b)}
    assert set(changes) == {"http.headers.X-Key", "description"}
    assert changes["http.headers.X-Key"].before == ""
    assert len(changes["description"].after) == 200 and changes["description"].after.endswith("…")
    assert user_view(b).HasField("created_at") is False


def test_write_ops_counts_what_one_transaction_holds() -> None:
    assert write_ops(1, 0, 0) == 1
    assert write_ops(10, 10, 10) == 70
