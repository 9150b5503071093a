"""The real daemon with its journal on a small tmpfs that fills up: work pauses (readiness red, the metric, a
WARNING), the process stays up, and when space returns the run is uploaded and assigned as if nothing happened."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import Daemon, free_port, write_config
from helpers import wait_for
from test_daemon import write_run

from transferd.sandbox import SandboxProcess


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "state"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the journal needs root (the unit test covers SQLITE_FULL)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def test_a_full_journal_disk_pauses_work_and_resumes(sandbox: SandboxProcess, tmp_path: Path, small_disk: Path) -> None:
    info = sandbox.info
    root = tmp_path / "runs"
    root.mkdir()
    port = free_port()
    config = write_config(
        tmp_path / "config.toml", api_url=info.api_url, s3_url=info.s3_url, state=small_disk / "journal.sqlite3",
        port=port, grace=5,
        watches=[{"path": root, "destination": "gncv://full-disk", "project_id": info.project_id,
                  "settle_seconds": 0, "rescan_interval": "1s"}],
    )  # fmt: skip
    daemon = Daemon(config, port, {"TRANSFERD_API_KEY": info.api_key}, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        filler = _fill(small_disk)
        write_run(root, "RUN_FULL", {"F1": 1})

        def paused() -> bool:
            status, doc = daemon.get_json("/readyz")
            return status == 503 and "disk full" in doc["checks"]["journal"]["detail"]

        wait_for(paused, timeout=30, interval=0.2, message="readiness red for the full journal disk")
        assert daemon.value("transferd_journal_full") == 1
        assert daemon.proc.poll() is None  # paused, not exited
        assert daemon.events("journal.full") and "level=warning" in daemon.events("journal.full")[0]
        assert not [a for a in sandbox.control.assignments() if a.get("client_id") == "F1"]
        status = subprocess.run(
            [sys.executable, "-m", "transferd", "status", "-c", str(config)], capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert status.returncode == 0 and "journal disk:    FULL" in status.stdout, status.stdout + status.stderr

        filler.unlink()  # space returns
        wait_for(
            lambda: (daemon.value("transferd_samples_completed_total", stage="assigned") or 0) >= 1,
            timeout=60, interval=0.25, message="the run uploaded and assigned after space returned",
        )  # fmt: skip
        wait_for(lambda: daemon.get("/readyz")[0] == 200, timeout=15, message="readiness green again")
        assert daemon.value("transferd_journal_full") == 0 and daemon.events("journal.resumed")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_text()[-3000:]


def test_a_stop_while_paused_exits_cleanly_and_the_next_start_delivers(
    sandbox: SandboxProcess, tmp_path: Path, small_disk: Path
) -> None:
    info = sandbox.info
    root = tmp_path / "runs"
    root.mkdir()
    port = free_port()
    config = write_config(
        tmp_path / "config.toml", api_url=info.api_url, s3_url=info.s3_url, state=small_disk / "journal.sqlite3",
        port=port, grace=3,
        watches=[{"path": root, "destination": "gncv://full-stop", "project_id": info.project_id,
                  "settle_seconds": 0, "rescan_interval": "1s"}],
    )  # fmt: skip
    env = {"TRANSFERD_API_KEY": info.api_key}
    daemon = Daemon(config, port, env, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        filler = _fill(small_disk)
        write_run(root, "RUN_STOP", {"G1": 1})
        wait_for(lambda: daemon.value("transferd_journal_full") == 1, timeout=30, message="paused")
    finally:
        code = daemon.stop(timeout=30)  # SIGTERM while writes wait for space
    assert code == 0, daemon.log_text()[-3000:]
    filler.unlink()
    daemon = Daemon(config, port, env, tmp_path / "daemon2.log")
    try:
        wait_for(
            lambda: (daemon.value("transferd_samples_completed_total", stage="assigned") or 0) >= 1,
            timeout=60, interval=0.25, message="the run delivered after the restart",
        )  # fmt: skip
    finally:
        assert daemon.stop() == 0
