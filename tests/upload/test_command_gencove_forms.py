"""`transferd upload` as gencove users type it: `SOURCE gncv://DEST --run-project-id ID`, GENCOVE_API_KEY and
GENCOVE_HOST, `--json`; sources confined to SOURCE's folder like a watch root's; an unreachable host fails in
seconds, naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from test_pipeline import assigned_once
from upload_support import REPO, make_run, uploads_by_path

from transferd.sandbox import SandboxProcess


def _gencove_env(sb: SandboxProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRANSFERD_", "GENCOVE_"))}
    return {**env, "GENCOVE_API_KEY": sb.info.api_key, "GENCOVE_HOST": sb.info.api_url, "PYTHONPATH": str(REPO)}


def _upload(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "transferd", "upload", *args, "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_gencove_form_with_the_gencove_environment_and_json(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUNG", {"G1": 1, "G2": 1})
    done = _upload(_gencove_env(sandbox), str(run_dir), "gncv://gencove-form/", "--run-project-id",
                   sandbox.info.project_id, "--s3-endpoint-url", sandbox.info.s3_url,
                   "--state", str(tmp_path / "s.sqlite3"), "--json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] and doc["destination"] == "gncv://gencove-form"  # (the run's folder name is added below it)
    assert sorted((s["client_id"], s["state"]) for s in doc["samples"]) == [("G1", "assigned"), ("G2", "assigned")]
    assert {p.rsplit("/", 1)[0] for p in uploads_by_path(sandbox)} == {"gncv://gencove-form/RUNG"}
    assigned_once(sandbox, "G1", "G2")


def test_a_source_that_leaves_the_folder_is_a_problem_unless_allowed(sandbox: SandboxProcess, tmp_path: Path) -> None:
    elsewhere = make_run(tmp_path / "elsewhere", {"X": 1})
    run_dir = make_run(tmp_path / "RUNL", {"IN": 1})
    for f in elsewhere.iterdir():  # a sample whose files are links out of the run folder
        (run_dir / f.name).symlink_to(f)
    args = (str(run_dir), "--s3-endpoint-url", sandbox.info.s3_url, "--state", str(tmp_path / "s.sqlite3"))
    done = _upload(_gencove_env(sandbox), *args)
    assert done.returncode == 1
    assert "X" in done.stdout + done.stderr and "outside" in (done.stdout + done.stderr)
    assert sorted(p.rsplit("/", 1)[1] for p in uploads_by_path(sandbox)) == ["IN_R1.fastq.gz", "IN_R2.fastq.gz"]
    done = _upload(_gencove_env(sandbox), *args, "--allow-outside-root")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.rsplit("/", 1)[1] for p in uploads_by_path(sandbox)) == [
        "IN_R1.fastq.gz", "IN_R2.fastq.gz", "X_R1.fastq.gz", "X_R2.fastq.gz"
    ]  # fmt: skip


def test_an_unreachable_host_fails_in_seconds_naming_it(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUNU", {"U": 1})
    env = {
        **os.environ,
        "GENCOVE_API_KEY": "k",
        "GENCOVE_HOST": "http://no-such-host.invalid:9",
        "PYTHONPATH": str(REPO),
    }
    env.pop("TRANSFERD_API_KEY", None)
    started = time.monotonic()
    done = _upload(env, str(run_dir), "--run-project-id", "00000000-0000-4000-8000-000000000000",
                   "--state", str(tmp_path / "s.sqlite3"))  # fmt: skip
    assert done.returncode in (1, 2) and time.monotonic() - started < 30, done.stderr
    assert "no-such-host.invalid" in done.stderr and "Traceback" not in done.stderr


def test_a_refused_api_key_fails_at_once_naming_the_host(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUNK", {"K": 1})
    env = {**_gencove_env(sandbox), "GENCOVE_API_KEY": "not-the-key"}
    for cmd in (["upload", str(run_dir), "--run-project-id", sandbox.info.project_id],
                ["download", str(tmp_path / "d"), "--project-id", sandbox.info.project_id]):  # fmt: skip
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "transferd", *cmd, "--state", str(tmp_path / f"{cmd[0]}.db"),
                               "--no-progress"], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2 and time.monotonic() - started < 20, done.stderr
        assert f"{sandbox.info.api_url}: the API key was refused (HTTP 401)" in done.stderr
    assert uploads_by_path(sandbox) == {}
