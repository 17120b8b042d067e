"""The web dashboard in headless Chromium on a real 3-node cluster (real etcd, real processes).

ListTasks' statuses over gRPC first (next fire time, newest run, server-side filters), then the
browser: tasks appear with the status of their last run, a task page lists runs and draws the
lateness chart, the live view shows runs as they happen, and a node killed with SIGKILL shows
as a dead member. Screenshots go to the test's tmp dir, or to ``$PEERD_SCREENSHOTS`` when set
(``PEERD_SCREENSHOTS=docs/img`` regenerates the images of docs/observability.md).

The browser is the system's Chromium (Debian's ``chromium``; ``scripts/setup.sh`` installs it),
driven by Playwright without ``playwright install``. Without it the test is skipped, except in
CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from peerd.client import SchedulerClient
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from peerd.v1 import scheduler_pb2_grpc as pb_grpc
from tests.helpers import assert_eventually

WAIT_MS = 30_000
"""Playwright's waits for a condition (generous: the machine is shared and slow)."""


def _browser_or_skip() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = "playwright (pip install -e '.[dev]')"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium = None
    else:
        missing = "Chromium (apt-get install chromium; scripts/setup.sh)"
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail(f"the dashboard test needs {missing}")
        pytest.skip(f"the dashboard test needs {missing}")
    return chromium


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A Playwright page in headless system Chromium; fails the test on a page error."""
    chromium = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(WAIT_MS)
        try:
            yield page
        finally:
            browser.close()
    assert not errors, f"errors in the page: {errors}"


def _task(task_id: str, **kw: Any) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, **kw)
    if not spec.schedule.WhichOneof("kind"):  # every second unless given
        spec.schedule.every.FromSeconds(1)
    spec.timeout.FromSeconds(10)
    return spec


def workload(sink_url: str) -> list[pb.TaskSpec]:
    echo = pb.PythonTarget(name="peerd.echo", args_json=json.dumps({"report": "daily"}))
    paused = _task("dash-nightly", python=pb.PythonTarget(name="peerd.echo"), paused=True)
    paused.schedule.cron = "0 3 * * *"
    return [
        _task("dash-echo", python=echo, labels={"team": "payments"}),
        _task("dash-hook", http=pb.HttpTarget(url=f"{sink_url}/hook"), labels={"team": "ops"}),
        _task("dash-fail", python=pb.PythonTarget(name="peerd.fail"), labels={"team": "ops"}),
        paused,
    ]


def check_statuses(address: str) -> None:
    """ListTasks with include_status and the server-side filters, over gRPC."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SchedulerStub(channel)

        def statuses() -> dict[str, pb.TaskStatus]:
            asked = datetime.now(UTC)
            resp = stub.ListTasks(pb.ListTasksRequest(include_status=True), timeout=10)
            assert [s.task_id for s in resp.statuses] == [t.id for t in resp.tasks]
            out = {s.task_id: s for s in resp.statuses}
            assert out["dash-echo"].last_run.status == pb.SUCCEEDED
            assert out["dash-fail"].last_run.status == pb.FAILED
            # The next slot follows the node's now, which follows ours (one clock, no jitter).
            assert out["dash-echo"].next_fire_at.ToDatetime(tzinfo=UTC) > asked
            return out

        got = assert_eventually(statuses, timeout=30)
        assert got["dash-echo"].last_run.node_id in {"n1", "n2", "n3"}
        assert got["dash-fail"].last_run.error
        assert not got["dash-nightly"].HasField("next_fire_at")
        assert not got["dash-nightly"].HasField("last_run")

        def ids(**kw: Any) -> list[str]:
            resp = stub.ListTasks(pb.ListTasksRequest(**kw), timeout=10)
            assert not resp.statuses  # only with include_status
            return [t.id for t in resp.tasks]

        assert ids(id_contains="ho") == ["dash-echo", "dash-hook"]
        assert ids(paused=pb.ListTasksRequest.PAUSED_FILTER_PAUSED) == ["dash-nightly"]
        assert ids(label_selector="team=ops", id_contains="fail") == ["dash-fail"]
        page = stub.ListTasks(pb.ListTasksRequest(page_size=1, id_contains="dash-"), timeout=10)
        assert [t.id for t in page.tasks] == ["dash-echo"] and page.next_page_token == "dash-echo"
        with pytest.raises(grpc.RpcError) as err:
            stub.ListTasks(pb.ListTasksRequest(id_contains="x" * 200), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "id_contains" in (err.value.details() or "")


def test_dashboard_on_a_three_node_cluster(  # type: ignore[no-untyped-def]
    nodes, sink: WebhookSink, browser_page, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("PEERD_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    n1, _, n3 = nodes(3, http_port=0)
    with SchedulerClient(n1.address) as client:
        client.create_tasks(workload(sink.url))
    check_statuses(n1.address)

    page = browser_page
    from playwright.sync_api import expect

    base = f"http://{n1.http_address}/"
    page.goto(base)
    expect(page.locator("#members tbody tr")).to_have_count(3)
    expect(page.locator("#members .state")).to_have_text(["alive"] * 3)
    row = page.locator('#tasks tr[data-task="dash-echo"]')
    expect(row.locator(".last")).to_have_text("SUCCEEDED")
    expect(row.locator(".next")).to_contain_text("in ")
    expect(page.locator('#tasks tr[data-task="dash-fail"] .last')).to_have_text("FAILED")
    expect(page.locator('#tasks tr[data-task="dash-nightly"] .next')).to_have_text("paused")
    page.screenshot(path=shots / "dashboard-cluster.png", full_page=True)

    # Server-side filter from the form: only the matching task stays; its page has the runs
    # (status, node, lateness, output tail) and the lateness chart.
    page.fill('#task-filters input[name="labelSelector"]', "team=payments")
    page.click('#task-filters button[type="submit"]')
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    page.click('#tasks a[href="#/tasks/dash-echo"]')
    succeeded = page.locator("#runs tbody .status").filter(has_text="SUCCEEDED")
    expect(succeeded.nth(2)).to_be_attached()  # at least three runs listed
    expect(page.locator("#lateness-chart circle").nth(2)).to_be_attached()
    page.locator("#runs details summary").first.click()
    expect(page.locator("#runs pre.tail").first).to_contain_text('"report": "daily"')
    page.screenshot(path=shots / "dashboard-task.png", full_page=True)

    # The live view: records arrive after the page opened (beyond the replayed ones).
    page.goto(base + "#/live")
    live = page.locator("#live-runs tbody tr")
    expect(live.first).to_be_visible()
    first_keys = set(live.evaluate_all("rows => rows.map(r => r.dataset.key)"))
    page.wait_for_function(
        "keys => [...document.querySelectorAll('#live-runs tbody tr')]"
        ".some(r => !keys.includes(r.dataset.key))",
        arg=sorted(first_keys),
    )
    page.screenshot(path=shots / "dashboard-live.png")

    # kill -9 a node: the dashboard (served by n1) shows it dead.
    n3.kill()
    page.goto(base)
    expect(page.locator('#members tr[data-node="n3"] .state')).to_have_text("dead")
    expect(page.locator('#members tr[data-node="n1"] .state')).to_have_text("alive")
    page.screenshot(path=shots / "dashboard-dead-member.png", full_page=True)
