"""Issue 13, upload side, against `transferd run` as a real process and the sandbox: what cannot be handled is
isolated and shown (a non-UTF-8 file name next to a good run), and a delivery's identity is its content
(reused folder, renamed folder, grown FASTQ, grown manifest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import REPO, Daemon, free_port, write_config
from helpers import make_fastq_gz, wait_for

from transferd.sandbox import SandboxProcess


@dataclass
class Env:
    daemon: Daemon
    sandbox: SandboxProcess
    config: Path
    root: Path

    def project_samples(self) -> list[dict[str, Any]]:
        return self.sandbox.control.samples(self.sandbox.info.project_id)

    def assigned(self, client_id: str) -> list[dict[str, Any]]:
        return [s for s in self.project_samples() if s.get("client_id") == client_id]

    def status(self) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "transferd", "status", "-c", str(self.config), "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]


def write_run(folder: Path, samples: dict[str, int], seed: int = 0, reads: int = 200) -> list[Path]:
    """A BCL Convert output folder, its completion marker written last."""
    files = [
        make_fastq_gz(folder / f"{name}_S{n}_L001_{read}_001.fastq.gz", reads=reads, seed=seed + n * 10 + i)
        for name, n in samples.items()
        for i, read in enumerate(("R1", "R2"))
    ]
    (folder / "Logs").mkdir(exist_ok=True)
    (folder / "Logs" / "FastqComplete.txt").write_text("done\n")
    return files


@pytest.fixture(scope="module")
def env(sandbox_proc: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    sandbox_proc.control.reset()
    info = sandbox_proc.info
    base = tmp_path_factory.mktemp("ingest")
    root = base / "runs"
    root.mkdir()
    port = free_port()
    config = write_config(
        base / "config.toml", api_url=info.api_url, s3_url=info.s3_url, state=base / "state" / "journal.sqlite3",
        port=port, grace=5,
        watches=[{"path": root, "destination": "gncv://ingest", "project_id": info.project_id,
                  "settle_seconds": 0, "rescan_interval": "1s"}],
    )  # fmt: skip
    daemon = Daemon(config, port, {"TRANSFERD_API_KEY": info.api_key}, base / "daemon.log")
    try:
        daemon.wait_ready()
        yield Env(daemon, sandbox_proc, config, root)
    finally:
        daemon.stop()


def test_a_non_utf8_name_fails_its_sample_only(env: Env) -> None:
    write_run(env.root / "GOOD1", {"good1": 1})
    bad = env.root / "MIXED1"
    write_run(bad, {"fine1": 1}, seed=100)
    for read in ("R1", "R2"):
        name = os.fsdecode(b"caf\xe9_S2_L001_" + read.encode() + b"_001.fastq.gz")
        make_fastq_gz(bad / name, reads=50, seed=7)
    d = env.daemon
    wait_for(lambda: env.assigned("good1") and env.assigned("fine1"), timeout=60, interval=0.25,
             message="the good run and the good sample beside the bad name assigned")  # fmt: skip
    problems = wait_for(
        lambda: [e["message"] for e in env.status()["errors"] if "caf\\xe9" in e["message"]],
        timeout=30, interval=0.25, message="the bad sample's problem in status --json",
    )  # fmt: skip
    assert any("caf\\xe9_S2_L001_R1_001.fastq.gz: file name is not valid UTF-8" in p for p in problems), problems
    assert not [s for s in env.project_samples() if "caf" in (s.get("client_id") or "")]
    assert d.events("upload.sample_rejected") and "caf\\\\xe9" in "\n".join(d.events("upload.sample_rejected"))
    assert not d.events("watch.callback_failed") and not d.events("upload.run_failed")
    assert (d.value("transferd_samples", state="failed") or 0) >= 1
