"""`transferd requeue`: a sample that failed (here: Gencove refused one of its uploads) goes back to work once
the cause is fixed, and ends uploaded and assigned exactly once; nothing else is sent again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_pipeline import assigned_once, setup, upload_once
from upload_support import REPO, make_run, make_watch, s3_sha256, sha256_concat, sources_of, uploads_by_path

from transferd.sandbox import SandboxProcess


def requeue(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "transferd", "requeue", "-c", str(config), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


async def test_a_failed_sample_requeued_after_the_fix_is_uploaded_and_assigned_once(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "RUNQ", {"A": 1, "B": 1}, mib_per_file=1)
    state = tmp_path / "j.sqlite3"
    config = tmp_path / "requeue.toml"
    config.write_text(f'[state]\npath = "{state}"\n')
    watch = make_watch(tmp_path, sandbox.info.project_id)
    cfg = setup(sandbox, tmp_path)
    sandbox.control.mark_path_deleted("gncv://seq1/RUNQ/A_R2.fastq.gz")  # Gencove refuses this one upload
    first = await upload_once(cfg, state, watch, run_dir)
    outcome = {s.client_id: s.state for s in first.samples}
    assert outcome == {"A": "failed", "B": "assigned"}, first

    assert requeue(config).returncode == 2  # which samples must be said
    dry = requeue(config, "--sample", "A", "--dry-run")
    assert dry.returncode == 0 and "would requeue for uploading" in dry.stdout, dry.stdout + dry.stderr
    sandbox.control.clear_faults()  # the cause is fixed
    done = requeue(config, "--run", "RUNQ")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "seq1/RUNQ/A (" in done.stdout and "requeued for uploading" in done.stdout and "/B " not in done.stdout
    assert requeue(config, "--sample", "A").returncode == 1  # nothing failed any more

    seq = sandbox.control.last_log_seq()
    second = await upload_once(cfg, state, watch, run_dir)
    assert second.ok, [(s.client_id, s.state, s.error) for s in second.samples]
    assigned_once(sandbox, "A", "B")
    for read in ("R1", "R2"):
        up = uploads_by_path(sandbox)[f"gncv://seq1/RUNQ/A_{read}.fastq.gz"]
        assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
            sources_of(run_dir, "A", read)
        )
    b_keys = {uploads_by_path(sandbox)[f"gncv://seq1/RUNQ/B_{r}.fastq.gz"]["s3"]["object_name"] for r in ("R1", "R2")}
    assert not [e for e in sandbox.control.log(target="s3", since=seq) if e.get("key") in b_keys]  # B left alone
