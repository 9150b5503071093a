"""`transferd upload` as a real subprocess: crashes (SIGKILL mid-multipart, a crash right after the
assignment request) and restarts, and what the one-shot refuses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import make_fastq_gz, wait_for
from upload_support import (
    cli_args,
    cli_env,
    journal_rows,
    make_run,
    run_cli,
    s3_sha256,
    sha256_concat,
    sources_of,
    uploads_by_path,
)

from transferd import cli
from transferd.sandbox import SandboxProcess


def test_sigkill_mid_multipart_resumes_without_resending_done_parts(
    sandbox: SandboxProcess, tmp_path: Path, small_parts_config: Path
) -> None:
    run_dir = tmp_path / "RUNK"
    for lane in (1, 2):  # R1: 2 x ~17 MiB -> 7 parts of 5 MiB; R2 small
        make_fastq_gz(run_dir / f"K_S1_L00{lane}_R1_001.fastq.gz", reads=80_000, seed=lane, compresslevel=0)
        make_fastq_gz(run_dir / f"K_S1_L00{lane}_R2_001.fastq.gz", reads=1_000, seed=lane + 10, compresslevel=0)
    sandbox.control.add_fault(target="s3", operation="UploadPart", latency=0.3, times=None)
    state = tmp_path / "j.sqlite3"
    args = [*cli_args(sandbox, run_dir, state, "--project-id", sandbox.info.project_id), "-c", str(small_parts_config)]
    proc = subprocess.Popen(args, env=cli_env(sandbox), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def two_parts_done() -> bool:
        if proc.poll() is not None:
            return True  # exited on its own: reported below
        return journal_rows(state, "SELECT COUNT(*) FROM parts")[0][0] >= 2

    try:
        wait_for(two_parts_done, timeout=60, interval=0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (out + err).decode()
    done_before = {n for (n,) in journal_rows(state, "SELECT part_number FROM parts WHERE object_id = 1")}
    (upload_id,) = journal_rows(state, "SELECT s3_upload_id FROM objects WHERE id = 1")[0]
    assert upload_id and 2 <= len(done_before) < 7

    sandbox.control.clear_faults()
    seq = sandbox.control.last_log_seq()
    result = run_cli(sandbox, run_dir, state, "--project-id", sandbox.info.project_id, "-c", str(small_parts_config))
    assert result.returncode == 0, result.stdout + result.stderr

    log = [e for e in sandbox.control.log(operation="UploadPart") if e["upload_id"] == upload_id]
    accepted = Counter(e["part"] for e in log if e["status"] == 200)
    assert sorted(accepted) == list(range(1, 8))
    # A part can land twice only if it was still in flight when the process died (S3 had not listed it when
    # the restart asked ListParts); a part journaled as done before the kill is never sent again.
    twice = {n for n, c in accepted.items() if c > 1}
    assert not twice & done_before, (accepted, done_before)
    after = {e["part"] for e in log if e["seq"] > seq}
    assert after and not after & done_before  # parts done before the kill were not sent again
    completes = sandbox.control.log(operation="CompleteMultipartUpload")
    assert [e["upload_id"] for e in completes if e["status"] == 200].count(upload_id) == 1
    up = uploads_by_path(sandbox)["gncv://RUNK/RUNK/K_R1.fastq.gz"]
    assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
        sources_of(run_dir, "K", "R1")
    )
    assert len(sandbox.control.samples(sandbox.info.project_id)) == 1


def test_crash_right_after_the_assignment_request_does_not_assign_again(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "RUNC", {"A": 1, "B": 2})
    state = tmp_path / "j.sqlite3"
    project = ("--project-id", sandbox.info.project_id)
    crashed = run_cli(sandbox, run_dir, state, *project, TRANSFERD_CRASH_AT="after_assign_request")
    assert crashed.returncode == 137, crashed.stderr
    first = {s["client_id"] for s in sandbox.control.samples(sandbox.info.project_id)}
    assert first  # the first assignment POST went through ...
    assert journal_rows(state, "SELECT state FROM assignments") == [("requested",)] * len(first)  # ... unrecorded

    seq = sandbox.control.last_log_seq()
    result = run_cli(sandbox, run_dir, state, *project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 of 2 samples uploaded and assigned" in result.stdout
    posts = sandbox.control.log(endpoint="project-samples", since=seq)
    assert len(posts) == 2 - len(first)  # only the sample the crashed process never asked for
    assert [a["attempts"] for a in sandbox.control.assignments()] == [1, 1, 1, 1]  # 4 uploads, each named once
    assert sorted(s["client_id"] for s in sandbox.control.samples(sandbox.info.project_id)) == ["A", "B"]
    assert journal_rows(state, "SELECT state FROM samples") == [("assigned",), ("assigned",)]
    # Nothing was uploaded again (a HEAD that confirms an object completed before the crash is fine).
    assert [e for e in sandbox.control.log(target="s3", since=seq) if e["method"] in ("PUT", "POST")] == []


def test_one_shot_refuses_a_truncated_gzip_and_uploads_the_rest(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUNT", {"GOOD": 1, "BAD": 1})
    bad = sources_of(run_dir, "BAD", "R2")[0]
    bad.write_bytes(bad.read_bytes()[:-100])
    result = run_cli(sandbox, run_dir, tmp_path / "j.sqlite3", "--destination", "gncv://oneshot/")
    assert result.returncode == 1
    assert "ok      gncv://oneshot/RUNT/GOOD: uploaded" in result.stdout
    assert "FAILED  gncv://oneshot/RUNT/BAD" in result.stdout and bad.name in result.stdout
    assert "1 of 2 samples uploaded" in result.stderr
    requeue = subprocess.run(
        [sys.executable, "-m", "transferd", "requeue", "--state", str(tmp_path / "j.sqlite3"), "--all-failed",
         "--dry-run"], capture_output=True, text=True, timeout=60, env=cli_env(sandbox),
    )  # fmt: skip
    assert requeue.returncode == 0 and "gncv://oneshot/RUNT/BAD" in requeue.stdout, requeue.stdout + requeue.stderr
    assert set(uploads_by_path(sandbox)) == {
        "gncv://oneshot/RUNT/GOOD_R1.fastq.gz",
        "gncv://oneshot/RUNT/GOOD_R2.fastq.gz",
    }


def test_usage_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = make_run(tmp_path / "RUNU", {"A": 1})
    monkeypatch.delenv("TRANSFERD_API_KEY", raising=False)
    assert cli.main(["upload", str(run_dir)]) == 2  # no API key
    monkeypatch.setenv("TRANSFERD_API_KEY", "key-for-usage-tests")
    assert cli.main(["upload", str(run_dir), "--project-id", "not-a-uuid"]) == 2
    assert cli.main(["upload", str(run_dir), "--destination", "s3://x"]) == 2
    assert cli.main(["upload", str(run_dir), "--metadata", "{nope"]) == 2
    assert cli.main(["upload", str(tmp_path / "missing")]) == 2
    assert cli.main(["upload"]) == 2


def test_run_again_with_a_project_assigns_what_was_uploaded_without_one(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "RUNP", {"PA": 1, "PB": 1})
    state = tmp_path / "j.sqlite3"
    first = run_cli(sandbox, run_dir, state)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 of 2 samples uploaded to gncv://RUNP (no project)" in first.stdout
    assert "assigned" not in first.stdout and sandbox.control.samples(sandbox.info.project_id) == []

    seq = sandbox.control.last_log_seq()
    again = run_cli(sandbox, run_dir, state, "--project-id", sandbox.info.project_id)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"2 of 2 samples uploaded and assigned to project {sandbox.info.project_id}" in again.stdout
    assert sorted(s["client_id"] for s in sandbox.control.samples(sandbox.info.project_id)) == ["PA", "PB"]
    assert [e for e in sandbox.control.log(target="s3", since=seq) if e["method"] in ("PUT", "POST")] == []
    assert journal_rows(state, "SELECT state FROM samples") == [("assigned",), ("assigned",)]
    status = subprocess.run(
        [sys.executable, "-m", "transferd", "status", "--state", str(state), "--json"],
        capture_output=True, text=True, timeout=60, env=cli_env(sandbox),
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["overview"]["counts"]["samples"]["assigned"] == 2


def test_a_wrong_project_id_fails_before_any_byte_is_sent(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUNW", {"WA": 1})
    wrong = "0b3f3c5e-0000-4000-8000-000000000000"
    seq = sandbox.control.last_log_seq()
    result = run_cli(sandbox, run_dir, tmp_path / "j.sqlite3", "--project-id", wrong)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"project {wrong}: not found for this API key (HTTP 404); nothing was uploaded" in result.stderr
    sent = sandbox.control.log(since=seq)
    assert [(e["method"], e["path"]) for e in sent] == [("GET", f"/api/v2/projects/{wrong}")], sent
    assert sandbox.control.uploads() == []
