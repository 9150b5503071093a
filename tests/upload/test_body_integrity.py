"""Objects large enough to fill the socket transport's buffers (tens of MiB, several in flight) arrive
byte-identical through both the single-PUT and the multipart paths, on every interpreter and event loop CI runs.

Python 3.12's zero-copy socket transport (and uvloop) keeps a view of the caller's memory for whatever the socket
did not take at once, so a body buffer refilled too early corrupts the object; 3.11's transport copied and hid it.
The sandbox verifies every checksum header as S3 does, so a corrupt body is also refused there (`BadDigest`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_fastq_gz
from test_pipeline import assigned_once, setup, upload_once
from upload_support import (
    FAST,
    READ_BYTES,
    MiB,
    journal_rows,
    make_run,
    make_watch,
    s3_sha256,
    scan,
    sha256_concat,
    sources_of,
    uploads_by_path,
)

from transferd.gencove.client import GencoveClient
from transferd.journal import Journal
from transferd.retry import Policy
from transferd.sandbox import SandboxProcess
from transferd.upload.pipeline import UploadPipeline


async def test_large_objects_arrive_byte_identical_by_single_put_and_by_multipart(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    # P*: 2 lanes x 9 MiB = 18 MiB per object, one PUT each (several 4 MiB body chunks); M: 40 MiB, multipart.
    run_dir = make_run(tmp_path / "seq" / "RUNT", {"P1": 2, "P2": 2, "P3": 2}, mib_per_file=9)
    for r in (1, 2):
        make_fastq_gz(run_dir / f"M_S4_L001_R{r}_001.fastq.gz", reads=40 * MiB // READ_BYTES, seed=r, compresslevel=0)
    # The server reads bodies at 96 MiB/s: socket buffers fill, so transports hold what the socket did not take.
    sandbox.control.add_fault(target="s3", read_rate=96 * MiB, times=None)
    cfg = setup(sandbox, tmp_path, single_put_max=32 * MiB, part_size=8 * MiB, concurrency=6, max_objects=4)
    report = await upload_once(
        cfg, tmp_path / "j.sqlite3", make_watch(tmp_path / "seq", sandbox.info.project_id), run_dir
    )
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    uploads = uploads_by_path(sandbox)
    for name in ("P1", "P2", "P3", "M"):
        for read in ("R1", "R2"):
            up = uploads[f"gncv://seq1/RUNT/{name}_{read}.fastq.gz"]
            assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
                sources_of(run_dir, name, read)
            ), f"{name}_{read} differs in S3"
    s3_log = sandbox.control.log(target="s3")
    assert not [e for e in s3_log if e["status"] == 400], "a body was refused: it did not match its checksum"
    ops = [e["operation"] for e in s3_log]
    assert ops.count("PutObject") == 6 and ops.count("CompleteMultipartUpload") == 2
    assigned_once(sandbox, "P1", "P2", "P3", "M")


async def test_a_body_corrupted_on_its_way_is_refused_by_s3_and_sent_again(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "seq" / "RUNC", {"P": 1, "M": 2}, mib_per_file=3)  # P: one PUT, M: 2 parts
    sandbox.control.add_faults([
        {"target": "s3", "operation": "PutObject", "corrupt": True, "times": 1},
        {"target": "s3", "operation": "UploadPart", "corrupt": True, "times": 1},
    ])  # fmt: skip
    cfg = setup(sandbox, tmp_path, single_put_max=4 * MiB, part_size=5 * MiB)
    report = await upload_once(
        cfg, tmp_path / "j.sqlite3", make_watch(tmp_path / "seq", sandbox.info.project_id), run_dir
    )
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    refused = [(e["operation"], e["status"]) for e in sandbox.control.log(target="s3") if e["fault"]]
    assert refused == [("PutObject", 400), ("UploadPart", 400)] or refused == [("UploadPart", 400), ("PutObject", 400)]
    for name in ("P", "M"):
        for read in ("R1", "R2"):
            up = uploads_by_path(sandbox)[f"gncv://seq1/RUNC/{name}_{read}.fastq.gz"]
            expected = sha256_concat(sources_of(run_dir, name, read))
            assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == expected
    assigned_once(sandbox, "P", "M")


async def test_a_body_that_never_arrives_intact_is_never_recorded_done(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "seq" / "RUNX", {"P": 1}, mib_per_file=1)
    sandbox.control.add_fault(target="s3", operation="PutObject", corrupt=True, times=None)
    cfg = setup(sandbox, tmp_path, single_put_max=4 * MiB)
    state = tmp_path / "j.sqlite3"
    with Journal.open(state) as journal:
        async with GencoveClient(cfg.gencove.host, sandbox.info.api_key, policy=FAST) as client:
            pipeline = UploadPipeline(cfg, journal, client, s3_policy=Policy(deadline=1.5, initial=0.05, max_wait=0.2))
            report = await pipeline.upload_once(make_watch(tmp_path / "seq", sandbox.info.project_id), scan(run_dir))
    (sample,) = report.samples
    assert sample.state == "failed" and "BadDigest" in (sample.error or "")
    assert journal_rows(state, "SELECT COUNT(*) FROM objects WHERE state = 'done'") == [(0,)]
    puts = [e for e in sandbox.control.log(target="s3") if e["operation"] == "PutObject"]
    # Retried as S3 would have it and never stored: refused (400 BadDigest), or cut short on the way (status 0).
    assert len([e for e in puts if e["status"] == 400]) >= 2 and not [e for e in puts if e["status"] == 200]
    assert not sandbox.control.assignments()


async def test_a_server_that_stores_aws_chunked_framing_is_noticed_and_puts_fall_back(
    sandbox: SandboxProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An old S3-compatible server that knows no aws-chunked stores the framing as the object's bytes and names no
    checksum: the size check after the PUT catches it, that object starts again, and from then on single PUTs
    send their SHA-256 up front (a first pass over the sources)."""
    run_dir = make_run(tmp_path / "seq" / "RAW", {"A": 1, "B": 1}, mib_per_file=1)
    sandbox.control.add_fault(target="s3", raw_chunked=True, times=None)
    cfg = setup(sandbox, tmp_path, single_put_max=4 * MiB, max_objects=1)
    report = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path / "seq", sandbox.info.project_id),
                               run_dir)  # fmt: skip
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    for name in ("A", "B"):
        for read in ("R1", "R2"):
            up = uploads_by_path(sandbox)[f"gncv://seq1/RAW/{name}_{read}.fastq.gz"]
            expected = sha256_concat(sources_of(run_dir, name, read))
            assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == expected
    assert [r.levelname for r in caplog.records if "upload.s3_no_aws_chunked" in r.getMessage()] == ["WARNING"]
    puts = [e for e in sandbox.control.log(target="s3") if e["operation"] == "PutObject"]
    # The objects in flight when it was noticed went framed (small ones go together), then each went plain once.
    assert 5 <= len(puts) <= 8, len(puts)


async def test_a_server_that_refuses_aws_chunked_bodies_gets_the_checksum_up_front(
    sandbox: SandboxProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """501 NotImplemented to an aws-chunked PUT: the object starts again and single PUTs send their SHA-256 as a
    header from then on (a first pass over the sources); the sample is delivered, not failed."""
    run_dir = make_run(tmp_path / "seq" / "NOCHUNK", {"A": 1}, mib_per_file=1)
    sandbox.control.add_fault(target="s3", operation="PutObject", status=501, code="NotImplemented", times=1)
    cfg = setup(sandbox, tmp_path, single_put_max=4 * MiB, max_objects=1)
    report = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path / "seq", sandbox.info.project_id),
                               run_dir)  # fmt: skip
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    puts = [(e["status"], e["fault"]) for e in sandbox.control.log(target="s3") if e["operation"] == "PutObject"]
    assert sorted(puts, key=str) == [(200, None), (200, None), (501, "status 501 NotImplemented")]
    assert [r.levelname for r in caplog.records if "upload.s3_no_aws_chunked" in r.getMessage()] == ["WARNING"]
    for read in ("R1", "R2"):
        up = uploads_by_path(sandbox)[f"gncv://seq1/NOCHUNK/A_{read}.fastq.gz"]
        assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
            sources_of(run_dir, "A", read)
        )
