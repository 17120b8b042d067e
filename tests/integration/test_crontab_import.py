"""``peerd import-crontab`` of a Debian system crontab into a live cluster, all or nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from peerd.client import SchedulerClient
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import assert_eventually, cli

DEBIAN_CRONTAB = """\
# /etc/crontab: system-wide crontab
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin

# m h dom mon dow user\tcommand
17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }
47 6\t* * 7\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }
52 6\t1 * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }
#
"""


def test_import_system_crontab(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1, allow_shell=["/bin/sh -c *"])
    crontab = tmp_path / "etc" / "crontab"
    crontab.parent.mkdir()
    crontab.write_text(DEBIAN_CRONTAB)
    res = cli(node.address, "import-crontab", str(crontab), "--system", "--id-prefix", "sys-")
    assert res.returncode == 0, res.stderr
    with SchedulerClient(node.address) as client:
        tasks = {t.id: t for t in client.list_tasks()}
        assert len(tasks) == 4
        hourly = tasks["sys-crontab-6"]
        assert hourly.schedule.cron == "17 * * * *"
        assert list(hourly.shell.argv) == [
            "/bin/sh",
            "-c",
            "cd / && run-parts --report /etc/cron.hourly",
        ]
        assert hourly.shell.run_as == "root"
        assert hourly.shell.env["PATH"].startswith("/usr/local/sbin")
        # a second import collides on every id: nothing is created, exit 5
        again = cli(node.address, "import-crontab", str(crontab), "--system", "--id-prefix", "sys-")
        assert again.returncode == 5
        assert len(client.list_tasks()) == 4


def test_import_with_a_bad_line_imports_nothing(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1, allow_shell=["/bin/sh -c *"])
    crontab = tmp_path / "mine"
    crontab.write_text("*/5 * * * * echo ok\n@reboot echo boot\n99 * * * * echo bad\n")
    res = cli(node.address, "import-crontab", str(crontab))
    assert res.returncode == 2
    assert "line 2" in res.stderr and "line 3" in res.stderr
    with SchedulerClient(node.address) as client:
        assert client.list_tasks() == []
    res = cli(node.address, "import-crontab", str(crontab), "--skip-invalid")
    assert res.returncode == 0, res.stderr
    with SchedulerClient(node.address) as client:
        (task,) = client.list_tasks()
        assert task.schedule.cron == "*/5 * * * *"


def test_imported_crontab_entry_runs(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (node,) = nodes(1, allow_shell=["/bin/sh -c *"])
    marker = tmp_path / "ran"
    crontab = tmp_path / "every-minute"
    crontab.write_text(f"MARK=hello\n* * * * * echo $MARK >> {marker}\n")
    assert cli(node.address, "import-crontab", str(crontab)).returncode == 0
    with SchedulerClient(node.address) as client:
        (task,) = client.list_tasks()
        run = client.trigger_task(task.id)

        def ran() -> None:
            (rec,) = [
                r for r in client.list_runs(task.id, 5) if r.idempotency_key == run.idempotency_key
            ]
            assert rec.status == pb.SUCCEEDED, rec
            assert marker.read_text() == "hello\n"

        assert_eventually(ran, timeout=10)


DEBIAN_CRON_D = Path(__file__).resolve().parents[1] / "data" / "cron.d"


def test_every_debian_cron_d_file_outside_etc_imports_with_its_user_column(  # type: ignore[no-untyped-def]
    nodes, tmp_path: Path
) -> None:
    (node,) = nodes(1, allow_shell=["/bin/sh -c *"])
    expected: dict[str, tuple[str, str]] = {}  # task id -> (user, first word of the command)
    for src in sorted(DEBIAN_CRON_D.iterdir()):
        if src.name in ("README.md", ".placeholder"):
            continue
        copy = tmp_path / "migrate" / src.name
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(src, copy)
        res = cli(node.address, "import-crontab", str(copy), "--skip-invalid")
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("format: system (user column), detected from its content")
        for no, line in enumerate(src.read_text().splitlines(), 1):
            words = line.split()
            if words and not line.startswith(("#", "@reboot")) and "=" not in words[0]:
                expected[f"{src.name}-{no}"] = (words[5], words[6])
    with SchedulerClient(node.address) as client:
        tasks = {t.id: t for t in client.list_tasks()}
    assert set(tasks) == set(expected)
    for task_id, (user, first_word) in expected.items():
        shell = tasks[task_id].shell
        assert shell.run_as == user, task_id
        assert shell.argv[:2] == ["/bin/sh", "-c"] and shell.argv[2].split()[0] == first_word
    mdadm = tasks["mdadm-12"]
    assert mdadm.shell.argv[2].startswith("if [ -x /usr/share/mdadm/checkarray ] && [ $(date +%d)")
    assert (mdadm.schedule.cron, mdadm.shell.run_as) == ("57 0 * * 0", "root")
