"""Issue 13, upload side, against `transferd run` as a real process and the sandbox: what cannot be handled is
isolated and shown (a non-UTF-8 file name next to a good run), and a delivery's identity is its content
(reused folder, renamed folder, grown FASTQ, grown manifest)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
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


def held(env: Env, client_id: str, reason: str) -> list[dict[str, Any]]:
    return [h for h in env.status()["held"] if h["sample"].endswith(f"/{client_id}") and h["reason"] == reason]


def uploads_under(env: Env, folder: str) -> list[dict[str, Any]]:
    return [u for u in env.sandbox.control.uploads() if u["destination_path"].startswith(folder)]


def transferd(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transferd", *args, "-c", str(env.config)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


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
                  "settle_seconds": 0, "quiet_seconds": "1s", "rescan_interval": "1s"}],
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


def test_a_reused_folder_with_new_data_is_delivered_as_new(env: Env) -> None:
    run = env.root / "REUSE1"
    write_run(run, {"reuse1": 1}, seed=1)
    wait_for(lambda: env.assigned("reuse1"), timeout=60, interval=0.25, message="the first delivery assigned")
    shutil.rmtree(run)  # the sequencer writes the same run name again, with other data
    write_run(run, {"reuse1": 1}, seed=500)
    d = env.daemon
    wait_for(lambda: len(env.assigned("reuse1")) == 2, timeout=60, interval=0.25, message="the new delivery assigned")
    again = uploads_under(env, "gncv://ingest/REUSE1@")
    assert len(again) == 2 and len(uploads_under(env, "gncv://ingest/REUSE1/")) == 2, again
    assert all(a["attempts"] == 1 for a in env.sandbox.control.assignments())
    assert len(env.assigned("reuse1")) == 2  # each delivery once
    assert d.events("upload.path_reused") and not held(env, "reuse1", "changed")


def test_a_renamed_folder_is_held_naming_the_first_delivery(env: Env) -> None:
    write_run(env.root / "MOVE1", {"move1": 1}, seed=2)
    wait_for(lambda: env.assigned("move1"), timeout=60, interval=0.25, message="the first delivery assigned")
    os.rename(env.root / "MOVE1", env.root / "MOVE1-renamed")
    d = env.daemon
    (hold,) = wait_for(lambda: held(env, "move1", "duplicate"), timeout=30, interval=0.25, message="a held sample")
    assert hold["sample"] == "gncv://ingest/MOVE1-renamed/move1"
    assert "the same files as gncv://ingest/MOVE1/move1" in hold["problem"], hold
    assert (d.value("transferd_samples_held", reason="duplicate") or 0) >= 1
    assert d.value("transferd_samples_held", reason="changed") is not None  # every reason exported, 0 too
    logged = [line for line in d.events("upload.sample_held") if "MOVE1-renamed/move1" in line]
    assert logged and "level=warning" in logged[0] and "reason=duplicate" in logged[0]
    assert uploads_under(env, "gncv://ingest/MOVE1-renamed") == [] and len(env.assigned("move1")) == 1

    out = transferd(env, "requeue", "--sample", "move1", "--as-new")  # the deliberate re-upload
    assert out.returncode == 0 and "as a new delivery gncv://ingest/MOVE1-renamed" in out.stdout, out.stdout
    wait_for(lambda: len(env.assigned("move1")) == 2, timeout=90, interval=0.25, message="the re-upload assigned")
    assert not held(env, "move1", "duplicate")


def test_a_fastq_that_grows_after_assignment_is_held(env: Env) -> None:
    files = write_run(env.root / "GROW1", {"grow1": 1}, seed=3)
    wait_for(lambda: env.assigned("grow1"), timeout=60, interval=0.25, message="assigned")
    before = len(env.sandbox.control.uploads())
    with files[0].open("ab") as f:  # another gzip member: still a valid FASTQ.gz, now bigger
        f.write(gzip.compress(b"@extra\nACGT\n+\nIIII\n"))
    (hold,) = wait_for(lambda: held(env, "grow1", "grown"), timeout=30, interval=0.25, message="held as grown")
    assert f"R1: {files[0]} grew from" in hold["problem"], hold
    d = env.daemon
    assert (d.value("transferd_samples_held", reason="grown") or 0) >= 1
    assert any("GROW1/grow1" in line and "reason=grown" in line for line in d.events("upload.sample_held"))
    assert len(env.sandbox.control.uploads()) == before and len(env.assigned("grow1")) == 1


def test_a_manifest_that_gains_rows_for_an_assigned_sample_is_held(env: Env) -> None:
    data = env.root  # beside the manifest (sources must lie inside the watch root)
    r1 = make_fastq_gz(data / "m_R1_a.fastq.gz", reads=100, seed=41)
    r2 = make_fastq_gz(data / "m_R2_a.fastq.gz", reads=100, seed=42)
    manifest = env.root / "MANI1.fastq-map.csv"

    def write_manifest(*rows: tuple[str, Path]) -> None:
        tmp = env.root.parent / "manifest.tmp"
        tmp.write_text("client_id,r_notation,path\n" + "".join(f"mani1,{r},{p}\n" for r, p in rows))
        os.replace(tmp, manifest)

    write_manifest(("R1", r1), ("R2", r2))
    wait_for(lambda: env.assigned("mani1"), timeout=60, interval=0.25, message="assigned")
    extra = make_fastq_gz(data / "m_R1_b.fastq.gz", reads=50, seed=43)
    write_manifest(("R1", r1), ("R1", extra), ("R2", r2))
    (hold,) = wait_for(lambda: held(env, "mani1", "grown"), timeout=30, interval=0.25, message="held as grown")
    assert f"R1: 1 more file(s): {extra}" in hold["problem"], hold
    assert any("mani1" in line and "reason=grown" in line for line in env.daemon.events("upload.sample_held"))
    assert (env.daemon.value("transferd_samples_held", reason="grown") or 0) >= 1
    assert len(env.assigned("mani1")) == 1
