"""The real daemon against the sandbox: a FASTQ symlinked from outside the watch root fails its sample with a
WARNING naming the path (and shows in `transferd status`), while its neighbour in the same run is delivered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from daemon_harness import Daemon, free_port, write_config
from helpers import make_fastq_gz, wait_for

from transferd.sandbox import SandboxProcess


def test_a_symlink_out_of_the_root_fails_its_sample_only(sandbox: SandboxProcess, tmp_path: Path) -> None:
    info = sandbox.info
    root, secret = tmp_path / "runs", tmp_path / "not-for-upload"
    run = root / "RUN_LINKS"
    for read in ("R1", "R2"):
        make_fastq_gz(run / f"OK_S1_L001_{read}_001.fastq.gz", reads=50)
        make_fastq_gz(secret / f"other_{read}.fastq.gz", reads=50, seed=9)
        (run / f"LINK_S2_L001_{read}_001.fastq.gz").symlink_to(secret / f"other_{read}.fastq.gz")
    (run / "Logs").mkdir()
    (run / "Logs" / "FastqComplete.txt").write_text("done\n")
    port = free_port()
    config = write_config(
        tmp_path / "config.toml", api_url=info.api_url, s3_url=info.s3_url, state=tmp_path / "state" / "j.sqlite3",
        port=port, grace=5,
        watches=[{"path": root, "destination": "gncv://confine", "project_id": info.project_id,
                  "settle_seconds": 0, "rescan_interval": "1s"}],
    )  # fmt: skip
    env = {"TRANSFERD_API_KEY": info.api_key}
    daemon = Daemon(config, port, env, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        wait_for(
            lambda: (daemon.value("transferd_samples_completed_total", stage="assigned") or 0) >= 1
            and daemon.value("transferd_samples", state="failed") == 1,
            timeout=60, interval=0.25, message="OK assigned and LINK failed",
        )  # fmt: skip
        rejected = daemon.events("upload.sample_rejected")
        assert len(rejected) == 1 and "level=warning" in rejected[0] and "client_id=LINK" in rejected[0]
        assert f"outside the watch root {root}" in rejected[0] and str(secret / "other_R1.fastq.gz") in rejected[0]
        uploaded = [u["destination_path"] for u in sandbox.control.uploads()]
        assert any(p.endswith("/OK_R1.fastq.gz") for p in uploaded) and not any("/LINK_R" in p for p in uploaded)
        status = subprocess.run(
            [sys.executable, "-m", "transferd", "status", "-c", str(config)], capture_output=True, text=True,
            timeout=60, check=False, env={**os.environ, **env},
        )  # fmt: skip
        assert status.returncode == 0 and "outside the watch root" in status.stdout
    finally:
        assert daemon.stop() == 0
