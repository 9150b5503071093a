"""Fidelity: the real `gencove` CLI (PyPI gencove==4.5.1) uploads to and downloads from the sandbox.

The CLI is installed once into its own venv under `.cache/gencove-venv` (reused while it holds 4.5.1).
If it cannot be installed the test fails loudly; set TRANSFERD_SKIP_FIDELITY=1 to skip it offline.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import make_fastq_gz, s3_client, sha256_file, wait_for

from transferd.sandbox import SandboxProcess

GENCOVE_VERSION = "4.5.1"
REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".cache" / "gencove-venv"
MIB = 1024 * 1024

pytestmark = pytest.mark.slow


def _installed_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('gencove'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_gencove_cli(venv: Path = VENV) -> Path:
    """The path of a `gencove` 4.5.1 executable, installing it into `venv` if needed."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "gencove-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs must not build the venv twice
        if _installed_version(venv) != GENCOVE_VERSION:
            steps = [
                [sys.executable, "-m", "venv", "--clear", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"gencove=={GENCOVE_VERSION}"],
            ]
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    pytest.fail(
                        f"cannot install gencove=={GENCOVE_VERSION} ({' '.join(step)} exited {done.returncode}).\n"
                        f"Set TRANSFERD_SKIP_FIDELITY=1 to skip this test offline.\n"
                        f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}",
                        pytrace=False,
                    )
            if _installed_version(venv) != GENCOVE_VERSION:
                pytest.fail(f"gencove {GENCOVE_VERSION} is not importable in {venv} after install", pytrace=False)
    return venv / "bin" / "gencove"


@pytest.fixture(scope="module")
def gencove_cli() -> Path:
    if os.environ.get("TRANSFERD_SKIP_FIDELITY") == "1":
        pytest.skip("TRANSFERD_SKIP_FIDELITY=1")
    return ensure_gencove_cli()


def run_cli(cli: Path, sandbox: SandboxProcess, args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GENCOVE_"))}
    env.update(
        GENCOVE_LOCALSTACK_S3_ENDPOINT=sandbox.info.s3_url,
        GENCOVE_SAVE_DUMP_LOG="FALSE",
    )
    common = ["--host", sandbox.info.api_url, "--api-key", sandbox.info.api_key]
    done = subprocess.run(
        [str(cli), *args, *common], cwd=cwd, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    assert done.returncode == 0, (
        f"gencove {args[0]} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done


async def test_real_gencove_cli_uploads_assigns_and_downloads(
    sandbox: SandboxProcess, gencove_cli: Path, tmp_path: Path
) -> None:
    c, info = sandbox.control, sandbox.info
    project = c.create_project("fidelity")["id"]
    source = tmp_path / "run"
    files = {
        "S1_R1": make_fastq_gz(source / "S1_R1.fastq.gz", reads=200, seed=1),
        "S1_R2": make_fastq_gz(source / "S1_R2.fastq.gz", reads=200, seed=2),
        # > 8 MiB (stored, not compressed, to be quick to make): the CLI downloads it with parallel Ranges.
        "S2_R1": make_fastq_gz(source / "S2_R1.fastq.gz", reads=45_000, seed=3, compresslevel=0),
        "S2_R2": make_fastq_gz(source / "S2_R2.fastq.gz", reads=200, seed=4),
    }
    assert files["S2_R1"].stat().st_size > 8 * MIB

    # 1. upload + assignment (the CLI sleeps 10 s before it reads the sample sheet)
    run_cli(gencove_cli, sandbox, ["upload", str(source), "gncv://fidelity/", "--run-project-id", project,
                                   "--no-progress"], tmp_path)  # fmt: skip
    uploads = {u["destination_path"]: u for u in c.uploads()}
    assert set(uploads) == {f"gncv://fidelity/{name}.fastq.gz" for name in files}
    assignments = c.assignments()
    assert sorted(a["destination_path"] for a in assignments) == sorted(uploads)
    assert all(a["attempts"] == 1 and a["assigned"] and a["project_id"] == project for a in assignments)
    samples = c.samples(project)
    assert sorted(s["client_id"] for s in samples) == ["S1", "S2"]
    calls = [(e["method"], e["endpoint"] or e["operation"]) for e in c.log() if e["target"] in ("api", "s3")]
    assert calls[0] == ("POST", "upload-credentials")
    assert calls.count(("POST", "uploads-post-data")) == 4 and calls.count(("PUT", "PutObject")) == 4
    assert calls[-2:] == [("GET", "sample-sheet"), ("POST", "project-samples")]

    # Re-running the upload sends nothing again: every file is "already uploaded".
    seq = c.last_log_seq()
    again = run_cli(gencove_cli, sandbox, ["upload", str(source), "gncv://fidelity/", "--no-progress"], tmp_path)
    assert (again.stdout + again.stderr).count("File was already uploaded") == 4
    assert c.log(target="s3", since=seq) == []

    def all_succeeded() -> bool:
        return all(s["last_status"]["status"] == "succeeded" for s in c.samples(project))

    wait_for(all_succeeded, 15, message="the uploaded samples to succeed")

    # 2. download everything, with checksum files
    dest = tmp_path / "dest"
    seq = c.last_log_seq()
    run_cli(gencove_cli, sandbox, ["download", str(dest), "--project-id", project, "--checksums", "--no-progress"],
            tmp_path)  # fmt: skip
    checked = 0
    async with s3_client(info.s3_upstream_url, "sandbox", "sandbox") as s3:
        for sample in c.samples(project):
            folder = dest / sample["client_id"] / sample["id"]
            assert (folder / f"{sample['id']}_qc.json").exists() and (folder / f"{sample['id']}_metadata.json").exists()
            for sample_file in sample["files"]:
                local = folder / sample_file["filename"]
                obj = await s3.get_object(Bucket=sample_file["bucket"], Key=sample_file["key"])
                async with obj["Body"] as body:
                    deliverable = await body.read()
                assert sha256_file(local) == hashlib.sha256(deliverable).hexdigest() == sample_file["checksum_sha256"]
                checksum_file = local.with_name(local.name + ".sha256")
                assert checksum_file.read_text() == f"{sample_file['checksum_sha256']} *{local.name}\n"
                checked += 1
    assert checked == 8  # 2 samples x (fastq-r1, fastq-r2, impute-vcf, impute-vcf-tbi)
    s2 = next(s for s in c.samples(project) if s["client_id"] == "S2")
    s2_r1 = next(f for f in s2["files"] if f["file_type"] == "fastq-r1")
    assert s2_r1["checksum_sha256"] == sha256_file(files["S2_R1"])
    ranged = [e for e in c.log(target="download", since=seq) if e["file_id"] == s2_r1["id"] and e["range"]]
    assert len(ranged) >= 2 and all(e["status"] == 206 for e in ranged)
    assert sum(e["bytes_out"] for e in ranged) == s2_r1["size"]
