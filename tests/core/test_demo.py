"""The README's first quickstart command must stay true: `transferd demo` runs the whole job and says ok."""

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "transferd", "demo", "--workdir", str(tmp_path / "demo"), "--reads", "2000"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][-1])
    assert summary == {"workdir": str(tmp_path / "demo"), "samples": 5, "ok": True}
    assert res.stdout.count("ok (sources == uploaded == mirrored)") == 5
    assert "daemon stopped with exit code 0" in res.stdout
