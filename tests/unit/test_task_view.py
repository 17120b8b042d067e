"""ListTasks' filter and a task's status (pure, :mod:`peerd.core.task_view`), and the dashboard's
files as the package ships them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from peerd.core.task_schedule import task_schedule
from peerd.core.task_view import MAX_ID_CONTAINS, TaskFilter, task_status
from peerd.errors import InvalidArgument
from peerd.http.dashboard import FILES, STATIC
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

CREATED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
R = pb.ListTasksRequest


def spec(task_id: str, *, paused: bool = False, every_s: int = 60, **labels: str) -> pb.TaskSpec:
    s = pb.TaskSpec(id=task_id, paused=paused, labels=labels)
    s.schedule.every.FromSeconds(every_s)
    s.created_at.FromDatetime(CREATED)
    return s


TASKS = [
    spec("backup-db", team="ops"),
    spec("backup-files", paused=True, team="ops"),
    spec("report", team="finance"),
]


@pytest.mark.parametrize(
    ("request_", "kept"),
    [
        (R(), ["backup-db", "backup-files", "report"]),
        (R(id_contains="backup"), ["backup-db", "backup-files"]),
        (R(id_contains="BACKUP"), []),
        (R(paused=R.PAUSED_FILTER_ACTIVE), ["backup-db", "report"]),
        (R(paused=R.PAUSED_FILTER_PAUSED), ["backup-files"]),
        (R(label_selector="team=ops", paused=R.PAUSED_FILTER_ACTIVE), ["backup-db"]),
        (R(label_selector="team!=ops", id_contains="re"), ["report"]),
    ],
)
def test_filter_keeps_what_every_part_matches(
    request_: pb.ListTasksRequest, kept: list[str]
) -> None:
    keep = TaskFilter.of(request_)
    assert [t.id for t in TASKS if keep.matches(t)] == kept
    assert keep.empty == (request_ == R())


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (R(id_contains="x" * (MAX_ID_CONTAINS + 1)), "id_contains"),
        (R(paused=7), "paused"),  # type: ignore[arg-type]
        (R(label_selector="team in ("), "label_selector"),
    ],
)
def test_bad_filters_name_the_field(request_: pb.ListTasksRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        TaskFilter.of(request_)
    assert err.value.field == field


def test_status_gives_the_next_slot_after_now_and_the_newest_run() -> None:
    task = spec("t", every_s=60)
    last = pb.RunRecord(task_id="t", status=pb.SUCCEEDED, node_id="n2")
    last.lateness.FromMilliseconds(42)
    now = CREATED + timedelta(minutes=5, seconds=10)
    status = task_status(task, task_schedule(task, rules=RULES), last, now)
    assert status.task_id == "t"
    assert status.next_slot.ToDatetime(tzinfo=UTC) == CREATED + timedelta(minutes=6)
    assert status.next_fire_at == status.next_slot  # no jitter
    assert status.last_run == last


def test_status_of_a_paused_task_or_one_that_does_not_compile_has_no_next_slot() -> None:
    paused = spec("p", paused=True)
    now = CREATED + timedelta(minutes=1)
    for task, schedule in [(paused, task_schedule(paused, rules=RULES)), (spec("x"), None)]:
        status = task_status(task, schedule, None, now)
        assert not status.HasField("next_slot") and not status.HasField("next_fire_at")
        assert not status.HasField("last_run")


def test_status_after_the_last_slot_has_none() -> None:
    task = spec("once")
    task.schedule.ClearField("every")
    task.schedule.at.FromDatetime(CREATED + timedelta(hours=1))
    schedule = task_schedule(task, rules=RULES)
    before = task_status(task, schedule, None, CREATED)
    assert before.next_slot.ToDatetime(tzinfo=UTC) == CREATED + timedelta(hours=1)
    assert not task_status(task, schedule, None, CREATED + timedelta(hours=2)).HasField("next_slot")


def test_dashboard_files_are_in_the_package() -> None:
    assert (STATIC / "index.html").is_file()
    assert sorted(FILES) == ["dashboard.css", "dashboard.js"]
    index = (STATIC / "index.html").read_text()
    for name in FILES:
        assert f"/dashboard/{name}" in index
