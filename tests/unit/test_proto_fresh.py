"""The committed generated code in peerd/v1 matches proto/ (run scripts/gen_proto.sh if not)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    generated = sorted(p.name for p in (tmp_path / "peerd" / "v1").iterdir())
    assert "scheduler_pb2.py" in generated
    for name in generated:
        fresh = (tmp_path / "peerd" / "v1" / name).read_text()
        committed = (ROOT / "peerd" / "v1" / name).read_text()
        assert fresh == committed, f"peerd/v1/{name} is stale: run scripts/gen_proto.sh"
