"""SIGTERM in the middle of a multipart upload: a part already on its way finishes and is journaled, no new
part starts, the process exits 0 within the grace, and the next start completes the upload from the journal
without sending the acknowledged parts again."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

from daemon_harness import Daemon, free_port, write_config
from helpers import make_fastq_gz, wait_for

from transferd.sandbox import SandboxControl, SandboxProcess

GRACE = 6.0
LATENCY = 1.5  # per UploadPart: keeps a part in flight long enough to stop in the middle


def parts_done(journal: Path) -> int:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM parts").fetchone()[0])


def object_states(journal: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT destination_path, state FROM objects").fetchall())


def assigned_paths(control: SandboxControl) -> set[str]:
    return {a["destination_path"] for a in control.assignments() if a["assigned"]}


def test_sigterm_mid_upload_then_resume(sandbox: SandboxProcess, tmp_path: Path) -> None:
    info, control = sandbox.info, sandbox.control
    root = tmp_path / "runs"
    journal = tmp_path / "state" / "journal.sqlite3"
    port = free_port()
    config = write_config(
        tmp_path / "config.toml", api_url=info.api_url, s3_url=info.s3_url, state=journal, port=port, grace=GRACE,
        upload={"concurrency": 1, "max_objects": 1, "part_size": "5MiB", "max_bytes_in_flight": "5MiB",
                "single_put_max": "0"},
        watches=[{"path": root, "destination": "gncv://sigterm", "project_id": info.project_id,
                  "settle_seconds": 0, "rescan_interval": "1s"}],
        log_format="json",
    )  # fmt: skip
    run = root / "RUN_T"
    # ~11 MiB stored-gzip R1 (3 parts of 5 MiB; one part buffered at a time), a small R2.
    make_fastq_gz(run / "BIG_S1_L001_R1_001.fastq.gz", reads=52_000, seed=1, compresslevel=0)
    make_fastq_gz(run / "BIG_S1_L001_R2_001.fastq.gz", reads=50, seed=2)
    control.add_fault(target="s3", operation="UploadPart", latency=LATENCY)
    env = {"TRANSFERD_API_KEY": info.api_key}

    first = Daemon(config, port, env, tmp_path / "first.log")
    try:
        first.wait_http()
        (run / "Logs").mkdir()
        (run / "Logs" / "FastqComplete.txt").write_text("")
        wait_for(lambda: journal.exists() and parts_done(journal) >= 1, timeout=60, interval=0.05,
                 message="the first part acknowledged")  # fmt: skip
        wait_for(lambda: first.value("transferd_in_flight_bytes", direction="upload"), timeout=10, interval=0.02,
                 message="the next part buffered for sending")  # fmt: skip
        seq = control.last_log_seq()
        started = time.monotonic()
        first.signal(signal.SIGTERM)
        assert first.wait(GRACE + 5) == 0
        elapsed = time.monotonic() - started
    finally:
        first.stop()
    assert elapsed < GRACE + 2, f"took {elapsed:.1f}s to stop with a {GRACE}s grace"
    after = parts_done(journal)
    sent = control.log(target="s3", operation="UploadPart", since=seq)
    assert len(sent) <= 1, "only the part buffered at SIGTERM may still go out"
    assert all(e["status"] == 200 for e in sent), "no part was cut off mid-request"
    assert after == 1 + len(sent), "every part S3 acknowledged during the drain was journaled"
    states = object_states(journal)
    assert states["gncv://sigterm/RUN_T/BIG_R1.fastq.gz"] == "uploading" and after < 3
    lines = [json.loads(line) for line in (tmp_path / "first.log").read_text().splitlines()]  # format = json
    assert next(x for x in lines if x["event"] == "service.stopping")["signal"] == "SIGTERM"

    control.clear_faults()
    seq = control.last_log_seq()
    second = Daemon(config, port, env, tmp_path / "second.log")
    try:
        wait_for(lambda: set(object_states(journal).values()) == {"done"}, timeout=60, interval=0.2,
                 message="all objects done after the restart")  # fmt: skip
        wait_for(lambda: assigned_paths(control) == set(states), timeout=30, message="both reads assigned")
    finally:
        assert second.stop() == 0
    resent = control.log(target="s3", operation="UploadPart", since=seq)
    assert len(resent) == 3 - after + 1, "only the missing R1 part and the R2 part are sent after the restart"
