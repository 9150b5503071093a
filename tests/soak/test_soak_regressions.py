"""Focused reproductions of what the chaos soak found, each against the real daemon and the sandbox.

Each test was written failing, against a bug in another module, marked xfail(strict=False) with the reason
(what is wrong and where); the marker comes off once the owner fixes the bug, and the test stays as the
regression guard. Tests still marked xfail reproduce bugs that are open. See docs/SOAK.md, "Bugs found".
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_for
from soak_env import Proxy, no_dac_prefix
from soak_helpers import REPO, big_fastq, sha, start_daemon, write_config

pytestmark = pytest.mark.soak


def _bclconvert_run(root: Path, name: str, sample: str, size: int, seed: int) -> tuple[bytes, bytes]:
    run = root / name
    (run / "Logs").mkdir(parents=True)
    r1 = big_fastq(run / f"{sample}_S1_L001_R1_001.fastq.gz", size, seed)
    r2 = big_fastq(run / f"{sample}_S1_L001_R2_001.fastq.gz", size, seed + 1)
    (run / "Logs" / "FastqComplete.txt").write_text("done\n")
    return r1, r2


def _upload_of(sandbox, path: str) -> dict | None:
    return next((u for u in sandbox.control.uploads() if u["destination_path"] == path), None)


def _parts_started(sandbox, key: str) -> bool:
    return any(e.get("key") == key for e in sandbox.control.log(target="s3", operation="UploadPart"))


def _assigned_sample(sandbox, path: str) -> dict | None:
    u = _upload_of(sandbox, path)
    if not u or not u.get("sample_id"):
        return None
    return sandbox.control.sample(u["sample_id"])


def test_watch_root_away_during_upload_does_not_lose_the_sample(sandbox, tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    r1, r2 = _bclconvert_run(root, "RUN_AWAY", "Away_1", 16 * 1024**2, 1)
    cfg, port = write_config(tmp_path, sandbox.info, [root])
    # Slow parts, so the root can go away while the object is in flight.
    sandbox.control.add_fault(target="s3", operation="UploadPart", latency=1.0, times=None)
    daemon = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        path = "gncv://focus-0/RUN_AWAY/Away-1_R1.fastq.gz"
        upload = wait_for(lambda: _upload_of(sandbox, path), timeout=60, message="the R1 upload slot")
        wait_for(lambda: _parts_started(sandbox, upload["s3"]["object_name"]), timeout=60, message="parts going")
        away = root.with_name("share.away")
        os.rename(root, away)
        wait_for(lambda: "watch.root_down" in daemon.log.read_text(errors="replace"), timeout=30,
                 message="the daemon to notice the root away")  # fmt: skip
        os.rename(away, root)
        sandbox.control.clear_faults()

        def outcome() -> str | None:
            if _assigned_sample(sandbox, path):
                return "assigned"
            log = daemon.log.read_text(errors="replace")
            at = log.find("upload.object_failed")
            return "failed: " + log[at : at + 300] if at >= 0 else None

        result = wait_for(outcome, timeout=90, interval=0.5, message="the sample assigned or failed")
        assert result == "assigned", f"the sample was given up while its root was away: {result}"
        assert daemon.alive()
    finally:
        daemon.terminate(20)
    sheet = {f["file_type"]: f for f in wait_for(lambda: _files(sandbox, path), timeout=30)}
    assert sheet["fastq-r1"]["checksum_sha256"] == sha(r1)
    assert sheet["fastq-r2"]["checksum_sha256"] == sha(r2)


def _files(sandbox, path: str) -> list[dict] | None:
    s = _assigned_sample(sandbox, path)
    files = s.get("files") if s else None
    return files or None


def test_run_folder_deleted_while_uploading_fails_cleanly(sandbox, tmp_path: Path) -> None:
    """The daemon must not crash; the deleted samples fail (or finish) cleanly; nothing half-uploaded is
    assigned; and the daemon goes on uploading the next run."""
    root = tmp_path / "seq"
    root.mkdir()
    _bclconvert_run(root, "RUN_GONE", "Gone", 20 * 1024**2, 7)
    cfg, port = write_config(tmp_path, sandbox.info, [root])
    sandbox.control.add_fault(target="s3", operation="UploadPart", latency=1.0, times=None)
    daemon = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        path = "gncv://focus-0/RUN_GONE/Gone_R1.fastq.gz"
        upload = wait_for(lambda: _upload_of(sandbox, path), timeout=60, message="the R1 upload slot")
        wait_for(lambda: _parts_started(sandbox, upload["s3"]["object_name"]), timeout=60, message="parts going")
        shutil.rmtree(root / "RUN_GONE")
        sandbox.control.clear_faults()
        wait_for(lambda: "upload.object_failed" in daemon.log.read_text(errors="replace"), timeout=60,
                 message="the object to fail cleanly")  # fmt: skip
        assert daemon.alive(), "the daemon crashed after a run folder was deleted"
        # Nothing of the deleted run is assigned.
        for read in ("R1", "R2"):
            u = _upload_of(sandbox, f"gncv://focus-0/RUN_GONE/Gone_{read}.fastq.gz")
            assert u is None or not u.get("sample_id"), f"a half-uploaded {read} was assigned"
        # And the daemon still works.
        _bclconvert_run(root, "RUN_NEXT", "Next", 1024**2, 9)
        sample = wait_for(lambda: _assigned_sample(sandbox, "gncv://focus-0/RUN_NEXT/Next_R1.fastq.gz"),
                          timeout=60, interval=0.5, message="the next run assigned")  # fmt: skip
        assert sample["client_id"] == "Next"
    finally:
        code = daemon.terminate(20)
    assert code == 0


def test_unreadable_fastq_fixed_later_is_uploaded(sandbox, tmp_path: Path) -> None:
    prefix, how, meaningful = no_dac_prefix()
    if not meaningful:
        pytest.skip(f"cannot make a file unreadable here: {how}")
    root = tmp_path / "seq"
    run = root / "RUN_LOCKED"
    (run / "Logs").mkdir(parents=True)
    r1 = big_fastq(run / "Locked_S1_L001_R1_001.fastq.gz", 200_000, 1)
    r2_path = run / "Locked_S1_L001_R2_001.fastq.gz"
    r2 = big_fastq(r2_path, 200_000, 2)
    r2_path.chmod(0o000)
    (run / "Logs" / "FastqComplete.txt").write_text("done\n")
    cfg, port = write_config(tmp_path, sandbox.info, [root])
    daemon = start_daemon(cfg, port, tmp_path / "daemon.log", prefix)  # root, but file modes count
    try:
        status = [sys.executable, "-m", "transferd", "status", "-c", str(cfg), "--json"]
        wait_for(lambda: "Permission denied" in _run_cmd(status), timeout=30, message="the sample failed as unreadable")
        r2_path.chmod(0o644)  # the lab fixes the permissions
        path = "gncv://focus-0/RUN_LOCKED/Locked_R1.fastq.gz"
        # Discovery rescans every second and revives a failed sample that is ready now: 15 s is plenty.
        sample = wait_for(lambda: _assigned_sample(sandbox, path), timeout=15, interval=0.5,
                          message="the sample uploaded once its file is readable")  # fmt: skip
        assert sample["client_id"] == "Locked"
    finally:
        r2_path.chmod(0o644)
        daemon.terminate(20)
    files = {f["file_type"]: f for f in wait_for(lambda: _files(sandbox, path), timeout=30)}
    assert files["fastq-r1"]["checksum_sha256"] == sha(r1)
    assert files["fastq-r2"]["checksum_sha256"] == sha(r2)



def _run_cmd(cmd: list[str]) -> str:
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr



def _broken_drop_judged(sandbox, tmp_path: Path) -> tuple[Path, str, str]:
    """A manifest drop with bad rows on lines 4 and 5, judged by a daemon: (manifest, daemon log, status)."""
    root = tmp_path / "seq"
    drop = root / "drop 1"
    big_fastq(drop / "fastq" / "a.r1.fq.gz", 50_000, 1)
    big_fastq(drop / "fastq" / "a.r2.fq.gz", 50_000, 2)
    manifest = drop / "samples.fastq-map.csv"
    manifest.write_text("client_id,r_notation,path\nA,R1,fastq/a.r1.fq.gz\nA,R2,fastq/a.r2.fq.gz\n"
                        "B_x,R1,fastq/a.r1.fq.gz\nC,R3,fastq/none.fq.gz\n")  # fmt: skip
    cfg, port = write_config(tmp_path, sandbox.info, [root])
    daemon = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        wait_for(lambda: "upload.run_submitted" in daemon.log.read_text(errors="replace"), timeout=30,
                 message="the drop to be judged")  # fmt: skip
        status = _run_cmd([sys.executable, "-m", "transferd", "status", "-c", str(cfg)])
    finally:
        assert daemon.terminate(20) == 0
    assert not sandbox.control.uploads(), "a broken manifest uploaded something"
    return manifest, daemon.log.read_text(errors="replace"), status


def test_broken_manifest_rows_are_reported_with_line_numbers_in_status(sandbox, tmp_path: Path) -> None:
    manifest, _log, status = _broken_drop_judged(sandbox, tmp_path)
    for line in (4, 5):
        assert f"{manifest}:{line}:" in status, f"line {line} is not in `transferd status`:\n{status}"


def test_daemon_log_names_broken_manifest_rows_with_line_numbers(sandbox, tmp_path: Path) -> None:
    manifest, log, _status = _broken_drop_judged(sandbox, tmp_path)
    for line in (4, 5):
        assert f"{manifest}:{line}:" in log, f"line {line} is not in the daemon log"


def _journal_rows(journal: Path, query: str) -> list[str]:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            return [row[0] for row in conn.execute(query)]
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def _journal_assignment_states(journal: Path) -> list[str]:
    return _journal_rows(journal, "SELECT state FROM assignments")


def test_crash_while_assignment_post_in_flight_does_not_post_twice(sandbox, tmp_path: Path) -> None:
    root = tmp_path / "seq"
    _bclconvert_run(root, "RUN_ASSIGN", "Once", 300_000, 3)
    # The daemon reaches the API through a reverse proxy (as behind any load balancer): a request that is in
    # flight when the daemon dies is still carried out by the server.
    proxy = Proxy(sandbox.info.api_url, sandbox.info.s3_url, tmp_path / "proxy.log")
    info = dataclasses.replace(sandbox.info, api_url=proxy.api_url)
    cfg, port = write_config(tmp_path, info, [root])
    # The server is slow to process the assignment: it is still working on it when the daemon dies.
    sandbox.control.add_fault(target="api", endpoint="project-samples", method="POST", latency=3.0, times=1)
    daemon = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        def posting() -> bool:
            return any(r.startswith("POST /api/v2/project-samples/") for r in proxy.stats()["recorder"]["inflight"])

        wait_for(posting, timeout=60, interval=0.02, message="the assignment POST in flight")
        daemon.kill("while its assignment POST is in flight")
        daemon.start()  # systemd's Restart=: back within a second
        path = "gncv://focus-0/RUN_ASSIGN/Once_R1.fastq.gz"
        wait_for(lambda: _assigned_sample(sandbox, path), timeout=60, interval=0.2, message="the sample assigned")
        wait_for(lambda: _journal_assignment_states(tmp_path / "journal.sqlite3") == ["done"], timeout=30,
                 message="the daemon to record the assignment")  # fmt: skip
        time.sleep(4)  # let a late request land (the first one was delayed 3 s)
    finally:
        daemon.terminate(20)
        proxy.stop()
    attempts = {a["destination_path"]: a["attempts"] for a in sandbox.control.assignments()}
    assert attempts == {path: 1, path.replace("_R1", "_R2"): 1}, f"assignment requests per upload: {attempts}"


def _upload_and_assign_behind_the_daemons_back(sandbox, folder: str, client_id: str, r1: bytes, r2: bytes) -> None:
    """What an earlier install, a colleague in the web UI, or an assignment POST whose answer was lost leaves
    behind: the sample's uploads exist on Gencove and are assigned, and this daemon's journal knows nothing."""
    import boto3
    from botocore.config import Config

    ctl = sandbox.control
    creds = ctl.api("POST", "/api/v2/upload-credentials/")
    s3 = boto3.client("s3", endpoint_url=sandbox.info.s3_url, region_name="us-east-1",
                      aws_access_key_id=creds["access_key"], aws_secret_access_key=creds["secret_key"],
                      aws_session_token=creds["token"], config=Config(s3={"addressing_style": "path"}))  # fmt: skip
    fastq = {}
    for read, data in (("r1", r1), ("r2", r2)):
        slot = ctl.api("POST", "/api/v2/uploads-post-data/",
                       {"destination_path": f"{folder}/{client_id}_{read.upper()}.fastq.gz"})  # fmt: skip
        s3.put_object(Bucket=slot["s3"]["bucket"], Key=slot["s3"]["object_name"], Body=data)
        fastq[read] = {"upload": slot["id"]}
    wait_for(lambda: all(_upload_of(sandbox, f"{folder}/{client_id}_{r}.fastq.gz")["last_status"]["status"]
                         == "succeeded" for r in ("R1", "R2")), timeout=10)  # fmt: skip
    ctl.api("POST", f"/api/v2/project-samples/{sandbox.info.project_id}/",
            {"uploads": [{"client_id": client_id, "fastq": fastq}]})  # fmt: skip


def test_batch_refused_for_one_already_assigned_sample_does_not_fail_the_other(sandbox, tmp_path: Path) -> None:
    root = tmp_path / "seq"
    run = root / "RUN_BATCH"
    (run / "Logs").mkdir(parents=True)
    a1 = big_fastq(run / "Early_S1_L001_R1_001.fastq.gz", 100_000, 1)
    a2 = big_fastq(run / "Early_S1_L001_R2_001.fastq.gz", 100_000, 2)
    big_fastq(run / "Other_S2_L001_R1_001.fastq.gz", 100_000, 3)
    big_fastq(run / "Other_S2_L001_R2_001.fastq.gz", 100_000, 4)
    _upload_and_assign_behind_the_daemons_back(sandbox, "gncv://focus-0/RUN_BATCH", "Early", a1, a2)
    (run / "Logs" / "FastqComplete.txt").write_text("done\n")
    cfg, port = write_config(tmp_path, sandbox.info, [root])
    # Both samples must reach the assigner in one batch: they upload while the sample sheet is unavailable,
    # then the daemon restarts (a crash, an update) and its first round finds both ready.
    sandbox.control.add_fault(target="api", endpoint="sample-sheet", status=503, times=None)
    daemon = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        wait_for(lambda: _journal_rows(tmp_path / "journal.sqlite3", "SELECT state FROM objects") == ["done"] * 4,
                 timeout=60, message="all four objects uploaded and journaled")  # fmt: skip
        daemon.kill("so that the next start finds both samples ready")
        sandbox.control.clear_faults()
        daemon.start()

        def outcome() -> str | None:
            if _assigned_sample(sandbox, "gncv://focus-0/RUN_BATCH/Other_R1.fastq.gz"):
                return "assigned"
            log = daemon.log.read_text(errors="replace")
            at = log.find("assign.sample_failed")
            return "failed: " + log[at : at + 400] if at >= 0 else None

        result = wait_for(outcome, timeout=60, interval=0.5, message="the other sample assigned or failed")
    finally:
        daemon.terminate(20)
    assert result == "assigned", f"a sample that was never refused was failed: {result}"


def test_two_root_level_manifests_with_the_same_client_id_both_upload(sandbox, tmp_path: Path) -> None:
    root = tmp_path / "seq"
    for stem, seed in (("batch-1", 10), ("batch-2", 20)):
        staging = root / f".staging-{stem}"
        big_fastq(staging / "p1.r1.fq.gz", 50_000, seed)
        big_fastq(staging / "p1.r2.fq.gz", 50_000, seed + 1)
        (root / f"{stem}.fastq-map.csv").write_text(
            f"client_id,r_notation,path\nP1,R1,.staging-{stem}/p1.r1.fq.gz\nP1,R2,.staging-{stem}/p1.r2.fq.gz\n"
        )
    cfg, port = write_config(tmp_path, sandbox.info, [root])
    daemon = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        for stem, timeout in (("batch-1", 30), ("batch-2", 15)):  # the second comes seconds after the first
            path = f"gncv://focus-0/{stem}/P1_R1.fastq.gz"
            wait_for(lambda p=path: _assigned_sample(sandbox, p), timeout=timeout, interval=0.5,
                     message=f"{stem}'s P1 assigned")  # fmt: skip
    finally:
        daemon.terminate(20)


def _release_fifo(path: Path) -> None:
    """Open a FIFO for writing and close it: a reader blocked in open() gets EOF and moves on."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # no reader (ENXIO) or gone
        return
    os.close(fd)


def test_a_fifo_named_like_a_fastq_does_not_hang_discovery_or_shutdown(sandbox, tmp_path: Path) -> None:
    """Found by the soak: the gzip check open()ed a FIFO and blocked forever (no scan of that root any more,
    SIGTERM waited for the scan thread). A non-regular file is now a finding about the sample, named in the
    log, and scans never block on one."""
    root = tmp_path / "seq"
    run = root / "RUN_PIPE"
    (run / "Logs").mkdir(parents=True)
    big_fastq(run / "Piped_S1_L001_R1_001.fastq.gz", 50_000, 1)
    fifo = run / "Piped_S1_L001_R2_001.fastq.gz"
    os.mkfifo(fifo)
    (run / "Logs" / "FastqComplete.txt").write_text("done\n")
    cfg, port = write_config(tmp_path, sandbox.info, [root])
    daemon = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        wait_for(lambda: "a FIFO (named pipe)" in daemon.log.read_text(errors="replace"), timeout=30,
                 message="the FIFO reported in the daemon log")  # fmt: skip
        _bclconvert_run(root, "RUN_AFTER", "After", 50_000, 5)  # a normal run arriving later in the same root
        wait_for(lambda: _assigned_sample(sandbox, "gncv://focus-0/RUN_AFTER/After_R1.fastq.gz"), timeout=20,
                 interval=0.5, message="a later run in the same root uploaded")  # fmt: skip
        code = daemon.terminate(15)  # grace 3 s
        assert code == 0, f"SIGTERM did not stop the daemon within 15 s (exit {code})"
    finally:
        _release_fifo(fifo)
        if daemon.alive():
            daemon.terminate(15)
    assert _upload_of(sandbox, "gncv://focus-0/RUN_PIPE/Piped_R1.fastq.gz") is None, "half a sample was uploaded"
