"""Objects up to `upload.single_put_max` go as one streamed PutObject (against the sandbox and moto over HTTP):
byte-identical, checksummed, retried through faults, restarted when a source changes, and never sent again
after a crash once S3 holds them."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import make_fastq_gz, wait_for
from test_pipeline import assigned_once, setup, upload_once, wait_until
from upload_support import (
    FAST,
    MiB,
    cli_args,
    cli_env,
    journal_rows,
    make_run,
    make_watch,
    run_cli,
    s3_client,
    s3_sha256,
    scan,
    sha256_concat,
    sources_of,
    uploads_by_path,
)

from transferd.gencove.client import GencoveClient
from transferd.journal import Journal
from transferd.sandbox import SandboxProcess
from transferd.upload.pipeline import UploadPipeline
from transferd.upload.s3 import SHA256_META

MULTIPART_OPS = {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "ListParts"}


def assert_identical(
    sandbox: SandboxProcess, run_dir: Path, folder: str, samples: list[str], put: tuple[str, ...] | None = None
) -> None:
    """Byte-identical in S3; those in `put` (default: all) went as a single PUT whose SHA-256 S3 verified (sent as
    a trailer) and keeps as the object's checksum."""
    for name in samples:
        for read in ("R1", "R2"):
            up = uploads_by_path(sandbox)[f"gncv://{folder}/{name}_{read}.fastq.gz"]
            expected = sha256_concat(sources_of(run_dir, name, read))
            assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == expected
            head = s3_client(sandbox).head_object(
                Bucket=up["s3"]["bucket"], Key=up["s3"]["object_name"], ChecksumMode="ENABLED"
            )
            single_put = put is None or name in put
            assert head.get("ChecksumSHA256") == (base64.b64encode(bytes.fromhex(expected)).decode() if single_put
                                                  else None)  # fmt: skip
            assert SHA256_META not in head["Metadata"]


async def test_small_objects_go_as_one_put_each_and_big_ones_as_multipart(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "seq" / "RUNP", {"S1": 4, "S2": 1}, mib_per_file=3)  # S1: 12 MiB, S2: 3 MiB
    cfg = setup(sandbox, tmp_path, single_put_max=8 * MiB)
    report = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path / "seq", sandbox.info.project_id),
                               run_dir)  # fmt: skip
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    assert_identical(sandbox, run_dir, "seq1/RUNP", ["S1", "S2"], put=("S2",))
    name_of = {u["s3"]["object_name"]: path.rsplit("/", 1)[-1] for path, u in uploads_by_path(sandbox).items()}
    s3_log = sandbox.control.log(target="s3")
    puts = [e for e in s3_log if e["operation"] == "PutObject"]
    assert sorted(name_of[e["key"]] for e in puts) == ["S2_R1.fastq.gz", "S2_R2.fastq.gz"]
    for e in puts:  # the whole object in one request (aws-chunked: a size line per 4 MiB and the trailer)
        read = name_of[e["key"]].split("_")[1].split(".")[0]
        size = sum(p.stat().st_size for p in sources_of(run_dir, "S2", read))
        assert e["status"] == 200 and size < e["bytes_in"] < size + 128, (e["bytes_in"], size)
    multipart = {name_of[e["key"]] for e in s3_log if e["operation"] in MULTIPART_OPS}
    assert sorted(multipart) == ["S1_R1.fastq.gz", "S1_R2.fastq.gz"]
    s2 = next(s for s in report.samples if s.client_id == "S2")
    assert all(o.sha256 == sha256_concat(sources_of(run_dir, "S2", o.read)) for o in s2.objects)
    assigned_once(sandbox, "S1", "S2")


async def test_put_rides_out_s3_faults_resets_and_expiring_credentials(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUNF", {"A": 2, "B": 1}, mib_per_file=3)
    c = sandbox.control
    c.add_faults([
        {"target": "s3", "operation": "PutObject", "status": 500, "times": 2},
        {"target": "s3", "operation": "PutObject", "status": 503, "code": "SlowDown", "times": 1},
        {"target": "s3", "operation": "PutObject", "reset": True, "times": 2},
        {"target": "s3", "operation": "PutObject", "latency": 0.3, "times": None},
        {"credentials_ttl": 1.5, "times": None},
    ])  # fmt: skip
    cfg = setup(sandbox, tmp_path, single_put_max=64 * MiB, concurrency=2)
    report = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path, sandbox.info.project_id), run_dir)
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    assert_identical(sandbox, run_dir, "seq1/RUNF", ["A", "B"])
    faulted = [e for e in c.log(operation="PutObject") if e["fault"] and e["fault"] != "latency 0.3s"]
    assert len(faulted) == 5, faulted
    ok = [e["key"] for e in c.log(operation="PutObject") if e["status"] == 200]
    assert len(ok) == len(set(ok)) == 4, ok  # each object stored once
    assigned_once(sandbox, "A", "B")


def _rewrite_in_place(path: Path, new: Path) -> None:
    """Same inode, new bytes: what a tool that opens with O_TRUNC does (a reader with the file open sees it)."""
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(new.read_bytes())


@pytest.mark.parametrize("how", ["replaced", "in_place"])
async def test_a_source_rewritten_during_the_put_restarts_with_the_new_bytes(
    sandbox: SandboxProcess, tmp_path: Path, how: str
) -> None:
    run_dir = make_run(tmp_path / "RUNW", {"A": 2}, mib_per_file=6)
    # Each PUT is held 1.5 s by the server before it reads the body: the rewrite lands while R1's is in flight.
    sandbox.control.add_fault(target="s3", operation="PutObject", latency=1.5, times=None)
    cfg = setup(sandbox, tmp_path, single_put_max=64 * MiB, concurrency=1, max_objects=1)
    victim = sources_of(run_dir, "A", "R1")[0]

    def r1_state(conn: sqlite3.Connection) -> str | None:
        row = conn.execute("SELECT state FROM objects WHERE destination_path LIKE '%/A_R1.fastq.gz'").fetchone()
        return row[0] if row else None

    with Journal.open(tmp_path / "j.sqlite3") as journal:
        async with GencoveClient(cfg.gencove.host, sandbox.info.api_key, policy=FAST) as client:
            pipeline = UploadPipeline(cfg, journal, client, s3_policy=FAST)
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(pipeline.upload_once(make_watch(tmp_path, None), scan(run_dir)))
                await wait_until(lambda: journal.read(r1_state) == "uploading")
                if how == "replaced":  # a new file renamed over the old one (a new inode)
                    await asyncio.to_thread(make_fastq_gz, victim, reads=20_000, seed=999, compresslevel=0)
                else:
                    fresh = await asyncio.to_thread(make_fastq_gz, tmp_path / "fresh.fastq.gz", reads=20_000,
                                                    seed=999, compresslevel=0)  # fmt: skip
                    await asyncio.to_thread(_rewrite_in_place, victim, fresh)
            report = task.result()
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    restarts = journal_rows(tmp_path / "j.sqlite3", "SELECT message FROM events WHERE message LIKE ?",
                            "%starting the object again%")  # fmt: skip
    assert restarts, "the rewrite did not land during the PUT"
    expected = sha256_concat(sources_of(run_dir, "A", "R1"))
    up = uploads_by_path(sandbox)["gncv://seq1/RUNW/A_R1.fastq.gz"]
    assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == expected
    assert report.samples[0].objects[0].sha256 == expected


def test_sigkill_after_the_put_landed_does_not_send_it_again(sandbox: SandboxProcess, tmp_path: Path) -> None:
    """The process dies between S3 storing the PUT and the journal recording it: the restart finds the object
    (size and SHA-256 metadata match the sources) and finishes it without sending the bytes again."""
    run_dir = make_run(tmp_path / "RUNK", {"K": 1}, mib_per_file=2)
    config = tmp_path / "put.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "daemon.sqlite3"}"\n'
                      '[upload]\nsingle_put_max = "64MiB"\nretry_deadline = "60s"\nassign_deadline = "60s"\n')
    state = tmp_path / "j.sqlite3"
    args = [*cli_args(sandbox, run_dir, state), "-c", str(config)]
    # The object is stored, then the answer to the PUT is held back long enough to kill the client; Gencove
    # notices the upload only later, so the restart cannot learn from its upload slot that the bytes are there.
    sandbox.control.add_fault(target="s3", operation="PutObject", response_latency=5.0, times=None)
    sandbox.control.set_settings(upload_notice_delay=600)
    proc = subprocess.Popen(args, env=cli_env(sandbox), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    up_key = "RUNK/RUNK/K_R1.fastq.gz"

    def stored() -> bool:
        if proc.poll() is not None:
            return True  # exited on its own: reported below
        up = uploads_by_path(sandbox).get(f"gncv://{up_key}")
        if not up or not up.get("s3"):
            return False
        try:
            s3_client(sandbox).head_object(Bucket=up["s3"]["bucket"], Key=up["s3"]["object_name"])
        except Exception:
            return False
        return True

    try:
        wait_for(stored, timeout=60, interval=0.05, message="the R1 object stored in S3")
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (out + err).decode()
    sandbox.control.clear_faults()
    r1 = uploads_by_path(sandbox)[f"gncv://{up_key}"]["s3"]["object_name"]
    # The killed client's PUT is logged once its held answer is over (up to 5 s later): only then count anew.
    wait_for(lambda: [e for e in sandbox.control.log(operation="PutObject") if e["key"] == r1], timeout=30,
             message="the killed client's PUT in the request log")  # fmt: skip
    seq = sandbox.control.last_log_seq()
    result = run_cli(sandbox, run_dir, state, "-c", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already succeeded on Gencove" not in result.stderr  # the HEAD check found it, not the upload slot
    assert_identical(sandbox, run_dir, "RUNK/RUNK", ["K"])
    assert [e for e in sandbox.control.log(operation="PutObject", since=seq) if e["key"] == r1] == [], (
        "the object S3 already held was sent again"
    )


async def test_a_put_whose_answer_is_lost_is_not_stored_twice(sandbox: SandboxProcess, tmp_path: Path) -> None:
    """S3 stores the PUT, the answer never arrives in time (read timeout), the call is retried: the retry asks
    S3 first and finds the object with our SHA-256, so the bytes are stored once."""
    run_dir = make_run(tmp_path / "RUNL", {"L": 1}, mib_per_file=1)
    seq = sandbox.control.last_log_seq()
    sandbox.control.add_fault(target="s3", operation="PutObject", response_latency=4.0, times=1)
    cfg = setup(sandbox, tmp_path, single_put_max=64 * MiB, max_objects=1)
    cfg = dataclasses.replace(cfg, gencove=dataclasses.replace(cfg.gencove, request_timeout=1.5))
    report = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path, None), run_dir)
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    assert_identical(sandbox, run_dir, "seq1/RUNL", ["L"])
    # The held-back answer is logged when the proxy finally sends it, after the client has moved on.
    mine = {u["s3"]["object_name"] for p, u in uploads_by_path(sandbox).items() if p.startswith("gncv://seq1/RUNL/")}

    def puts() -> list[dict[str, object]]:
        return [e for e in sandbox.control.log(operation="PutObject", since=seq) if e["key"] in mine]

    late = wait_for(lambda: [e for e in puts() if e["fault"]], timeout=20)
    assert len(late) == 1 and late[0]["status"] == 200, puts()  # stored, answered too late
    assert len([e for e in puts() if e["key"] == late[0]["key"]]) == 1, puts()  # and never sent again
