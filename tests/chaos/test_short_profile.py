"""The short chaos profile end to end: ``python -m chaos --profile short`` must pass.

Real etcd and three real ``peerd serve`` processes on loopback, 50 tasks every second, and kill -9,
SIGSTOP, a rolling restart and an etcd restart (about 90 s). Run with ``-s`` to see the table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from peerd.devtools.etcd_server import EtcdNotInstalled, find_etcd_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240


@pytest.mark.integration
@pytest.mark.timeout(TIMEOUT_S + 30)
@pytest.mark.slow
def test_short_profile_passes(tmp_path: Path) -> None:
    try:
        find_etcd_binary()
    except EtcdNotInstalled as exc:
        pytest.skip(f"the chaos harness needs a real etcd: {exc}")
    workdir = tmp_path / "chaos"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "chaos", "--profile", "short", "--workdir", str(workdir)]
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"chaos short profile still running after {TIMEOUT_S}s:\n{out}")
    print(proc.stdout)
    if proc.stderr.strip():
        print(proc.stderr, file=sys.stderr)
    if proc.returncode != 0:
        # pytest prunes old tmp dirs; keep the evidence (node logs, ledger, sink) somewhere stable.
        kept = Path(tempfile.gettempdir()) / f"peerd-chaos-short-failed-{int(time.time())}"
        shutil.copytree(workdir, kept, dirs_exist_ok=True)
        pytest.fail(
            f"python -m chaos --profile short exited {proc.returncode}; workdir kept in {kept}\n"
            f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        )
    assert (workdir / "report.txt").is_file()
    assert (workdir / "summary.json").is_file()
    assert "RESULT: PASS" in proc.stdout
