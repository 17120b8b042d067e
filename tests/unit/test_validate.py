"""Validation of submitted TaskSpecs: every rejection names the field and the reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from peerd.core.validate import validate_pause_note, validate_python, validate_task
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def base() -> pb.TaskSpec:
    spec = pb.TaskSpec(id="job", http=pb.HttpTarget(url="http://127.0.0.1:9/hook"))
    spec.schedule.cron = "*/5 * * * *"
    return spec


def python_spec(name: str = "peerd.echo", args: str = "") -> pb.TaskSpec:
    spec = base()
    spec.python.name = name
    spec.python.args_json = args
    return spec


def _with(fn: Callable[[pb.TaskSpec], object]) -> pb.TaskSpec:
    spec = base()
    fn(spec)
    return spec


BAD: list[tuple[str, pb.TaskSpec, str, str]] = [
    ("overlap", _with(lambda s: setattr(s, "overlap", 9)), "task.overlap", "unknown"),
    ("catch_up", _with(lambda s: setattr(s, "catch_up", 42)), "task.catch_up", "unknown"),
    (
        "on_owner_lost",
        _with(lambda s: setattr(s, "on_owner_lost", 7)),
        "task.on_owner_lost",
        "unknown",
    ),
    (
        "window too short",
        _with(lambda s: s.catch_up_window.FromMilliseconds(500)),
        "task.catch_up_window",
        "1s and 7d",
    ),
    (
        "window too long",
        _with(lambda s: s.catch_up_window.FromTimedelta(timedelta(days=7, seconds=1))),
        "task.catch_up_window",
        "1s and 7d",
    ),
    (
        "window negative",
        _with(lambda s: s.catch_up_window.FromSeconds(-5)),
        "task.catch_up_window",
        "negative",
    ),
    (
        "misfire too long",
        _with(lambda s: s.misfire_threshold.FromTimedelta(timedelta(days=1, seconds=1))),
        "task.misfire_threshold",
        "between 0 and 1d",
    ),
    (
        "misfire negative",
        _with(lambda s: s.misfire_threshold.FromSeconds(-1)),
        "task.misfire_threshold",
        "negative",
    ),
    ("priority high", _with(lambda s: setattr(s, "priority", 101)), "task.priority", "101"),
    ("priority low", _with(lambda s: setattr(s, "priority", -101)), "task.priority", "-101"),
    (
        "on_failure malformed",
        _with(lambda s: setattr(s, "on_failure", "Not An Id")),
        "task.on_failure",
        "must match",
    ),
    ("on_failure self", _with(lambda s: setattr(s, "on_failure", "job")), "task.on_failure", "own"),
    (
        "retry attempts",
        _with(lambda s: setattr(s.retry, "max_attempts", 101)),
        "task.retry.max_attempts",
        "",
    ),
    (
        "retry multiplier",
        _with(lambda s: setattr(s.retry, "multiplier", -1.0)),
        "task.retry.multiplier",
        "",
    ),
    ("python no name", python_spec(""), "task.python.name", "required"),
    ("python spaces", python_spec("my task"), "task.python.name", "not an entry-point name"),
    ("python args not json", python_spec(args="{nope"), "task.python.args_json", "not valid JSON"),
    ("python args list", python_spec(args="[1, 2]"), "task.python.args_json", "JSON object"),
    (
        "python args huge",
        python_spec(args=json.dumps({"x": "a" * 70_000})),
        "task.python.args_json",
        "64 KiB",
    ),
    ("no target", _with(lambda s: s.ClearField("http")), "task.target", "python"),
]


@pytest.mark.parametrize(("name", "spec", "field", "mention"), BAD, ids=[b[0] for b in BAD])
def test_bad_policies_name_the_field(
    name: str, spec: pb.TaskSpec, field: str, mention: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_task(spec, NOW, rules=RULES)
    assert info.value.field == field, str(info.value)
    assert mention in info.value.reason
    assert str(info.value).startswith(f"{field}: ")


def test_field_prefix_follows_the_batch_index() -> None:
    spec = _with(lambda s: setattr(s, "priority", 500))
    with pytest.raises(InvalidArgument) as info:
        validate_task(spec, NOW, "tasks[3]", rules=RULES)
    assert info.value.field == "tasks[3].priority"


def test_good_policies_pass() -> None:
    spec = base()
    spec.overlap = pb.OVERLAP_BUFFER_ONE
    spec.catch_up = pb.CATCH_UP_RUN_ALL
    spec.catch_up_window.FromTimedelta(timedelta(days=7))
    spec.misfire_threshold.FromTimedelta(timedelta(days=1))
    spec.retry.max_attempts = 3
    spec.retry.retry_on.extend([pb.RETRY_ON_HTTP_5XX, pb.RETRY_ON_TIMEOUT])
    spec.priority = -100
    spec.on_failure = "job-alert"  # need not exist yet
    spec.pause_note = "ignored: the server clears it"
    validate_task(spec, NOW, rules=RULES)


def test_zero_and_unset_durations_mean_default() -> None:
    spec = base()
    spec.catch_up_window.FromSeconds(0)  # 0 = the default window
    spec.misfire_threshold.FromSeconds(0)  # 0 = fire only exactly on time (allowed)
    validate_task(spec, NOW, rules=RULES)


def test_catch_up_window_is_accepted_without_run_all() -> None:
    spec = base()
    spec.catch_up = pb.CATCH_UP_SKIP
    spec.catch_up_window.FromTimedelta(timedelta(hours=2))
    validate_task(spec, NOW, rules=RULES)


def test_python_target() -> None:
    validate_python(pb.PythonTarget(name="peerd.echo"))
    validate_python(pb.PythonTarget(name="billing.nightly", args_json='{"a": [1, 2]}'))
    validate_task(python_spec(args='{"n": 1}'), NOW, rules=RULES)
    with pytest.raises(InvalidArgument) as info:
        validate_python(pb.PythonTarget(name="x", args_json='"str"'), "tasks[0].python")
    assert info.value.field == "tasks[0].python.args_json"


def test_pause_note_length() -> None:
    validate_pause_note("x" * 1024)
    with pytest.raises(InvalidArgument) as info:
        validate_pause_note("x" * 1025)
    assert info.value.field == "note" and "1025" in info.value.reason
