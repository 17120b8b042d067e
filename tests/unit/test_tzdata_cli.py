"""The CLI side of time-zone rules: ``peerd version``, ``peerd tzdata``, and what ``cluster``,
``preview`` and a run's details show about them."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerd.cli import main
from peerd.cli_output_cluster import cluster_text
from peerd.cli_output_runs import preview_table, run_detail
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES
from tests.tzfiles import write_database


def run(capsys: pytest.CaptureFixture[str], *argv: str, **env: str) -> tuple[int, str, str]:
    code = main(list(argv), env=env)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_client_shows_its_own_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "version", "--client")
    assert code == 0 and f"tzdata {RULES.version} (package)" in out
    db = write_database(tmp_path, "2030q", {})
    code, out, _ = run(capsys, "version", "--client", "--tzdata", str(db))
    assert code == 0 and f"tzdata 2030q (path {db})" in out
    code, out, _ = run(capsys, "version", "--client", PEERD_TZDATA=str(db))
    assert code == 0 and "tzdata 2030q" in out
    code, out, _ = run(capsys, "-o", "json", "version", "--client", "--tzdata", str(db))
    assert code == 0 and '"tzdata": "2030q"' in out and '"tzdata_source"' in out


def test_version_with_unreadable_rules_is_an_input_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "version", "--client", "--tzdata", str(tmp_path))
    assert code == 2
    assert err.startswith("peerd: error: --tzdata: cannot tell the tzdata version of")


def test_tzdata_commands_parse(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tzdata")
    assert code == 2 and "tzdata" in err
    code, out, _ = run(capsys, "tzdata", "--help")
    assert code == 0 and "peerd tzdata pin NEW" in out


def cluster(*versions: str, agreed: str = "2026f", pinned: bool = False) -> pb.GetClusterResponse:
    resp = pb.GetClusterResponse(
        cluster="c", node_id="n1", tzdata_version=agreed, tzdata_pinned=pinned
    )
    for i, v in enumerate(versions, 1):
        resp.members.add(node_id=f"n{i}", tzdata_version=v, tzdata_source="package")
    return resp


def test_cluster_shows_versions_and_flags_a_mismatch() -> None:
    text = cluster_text(cluster("2026f", "2026f"))
    assert "tzdata: 2026f (agreed)" in text and "MISMATCH" not in text
    assert "TZDATA" in text.splitlines()[2]
    text = cluster_text(cluster("2026f", "2025b", "2025b", pinned=True))
    assert "tzdata: 2026f (pinned)" in text
    assert "tzdata MISMATCH: n2, n3 run 2025b, not 2026f: no slot of a task whose schedule" in text
    assert "no version agreed yet" in cluster_text(cluster("2026f", agreed=""))


def test_preview_and_run_details_name_the_rules() -> None:
    resp = pb.PreviewScheduleResponse(
        time_zone="America/Vancouver", tzdata_version="2026f", tzdata_source="package"
    )
    resp.slots.add(local_time="2027-01-15T09:00:00-07:00").scheduled_at.FromSeconds(1800000000)
    assert preview_table(resp).splitlines()[-1] == "time-zone rules: tzdata 2026f (package)"
    rec = pb.RunRecord(task_id="t", tzdata_version="2026f", local_time="2027-01-15T09:00:00-07:00")
    assert "local_time:" in run_detail(rec)
    assert "2027-01-15T09:00:00-07:00 (tzdata 2026f)" in run_detail(rec)
    assert "local_time" not in run_detail(pb.RunRecord(task_id="t"))
