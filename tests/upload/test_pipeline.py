"""The upload pipeline in-process against the sandbox (real API over HTTP, real moto S3 behind its proxy)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import make_fastq_gz, wait_for
from upload_support import (
    FAST,
    MiB,
    make_config,
    make_run,
    make_watch,
    s3_client,
    s3_sha256,
    scan,
    sha256_concat,
    sources_of,
    uploads_by_path,
)

from transferd.config import Config, WatchConfig
from transferd.gencove.client import GencoveClient
from transferd.gencove.models import Credentials
from transferd.journal import Journal
from transferd.retry import Policy
from transferd.sandbox import SandboxProcess
from transferd.upload import assign
from transferd.upload.pipeline import UploadPipeline, UploadReport
from transferd.upload.s3 import S3Backend


async def upload_once(cfg: Config, state: Path, watch: WatchConfig, source: Path) -> UploadReport:
    with Journal.open(state) as journal:
        async with GencoveClient(cfg.gencove.host, _key(cfg), policy=FAST) as client:
            pipeline = UploadPipeline(cfg, journal, client, s3_policy=FAST)
            return await pipeline.upload_once(watch, scan(source))


_KEYS: dict[str, str] = {}


def _key(cfg: Config) -> str:
    return _KEYS[cfg.gencove.host]


def setup(sandbox: SandboxProcess, tmp_path: Path, **upload: object) -> Config:
    _KEYS[sandbox.info.api_url] = sandbox.info.api_key
    return make_config(sandbox, tmp_path, **upload)


async def wait_until(predicate: Callable[[], object], within: float = 20.0) -> None:
    """`helpers.wait_for` in a thread, so the pipeline keeps running on the loop meanwhile."""
    await asyncio.to_thread(wait_for, predicate, within)


def assigned_once(sandbox: SandboxProcess, *client_ids: str) -> None:
    samples = sandbox.control.samples(sandbox.info.project_id)
    assert sorted(s["client_id"] for s in samples) == sorted(client_ids)
    attempts = sandbox.control.assignments()
    assert attempts and all(a["attempts"] == 1 and a["assigned"] for a in attempts), attempts


async def test_four_lane_paired_sample_arrives_byte_identical_and_is_assigned_once(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "seq" / "RUN1", {"S1": 4}, mib_per_file=3)
    cfg = setup(sandbox, tmp_path)
    report = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path / "seq", sandbox.info.project_id),
                               run_dir)  # fmt: skip
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    uploads = uploads_by_path(sandbox)
    assert set(uploads) == {"gncv://seq1/RUN1/S1_R1.fastq.gz", "gncv://seq1/RUN1/S1_R2.fastq.gz"}
    for read in ("R1", "R2"):
        up = uploads[f"gncv://seq1/RUN1/S1_{read}.fastq.gz"]
        expected = sha256_concat(sources_of(run_dir, "S1", read))
        assert len(sources_of(run_dir, "S1", read)) == 4
        assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == expected
        obj = next(o for o in report.samples[0].objects if o.read == read)
        assert obj.sha256 == expected and obj.size > 10 * MiB
    parts = sandbox.control.log(target="s3", operation="UploadPart")
    assert len(parts) == 6  # 3 parts of 5 MiB per object
    assigned_once(sandbox, "S1")
    assert report.samples[0].gencove_sample_id == sandbox.control.samples(sandbox.info.project_id)[0]["id"]

    # Run again: everything is known and done; nothing is sent, nothing assigned twice.
    seq = sandbox.control.last_log_seq()
    again = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path / "seq", sandbox.info.project_id),
                              run_dir)  # fmt: skip
    assert again.ok, [(s.client_id, s.state, s.error) for s in again.samples]
    assert sandbox.control.log(target="s3", since=seq) == []
    assigned_once(sandbox, "S1")


async def test_faults_on_s3_and_api_and_expiring_credentials(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUN2", {"A": 2, "B": 1}, mib_per_file=3)
    c = sandbox.control
    c.add_faults([
        {"target": "s3", "operation": "UploadPart", "part": 1, "status": 500, "times": 2},
        {"target": "s3", "operation": "UploadPart", "part": 2, "status": 503, "code": "SlowDown", "times": 2},
        {"target": "s3", "operation": "UploadPart", "reset": True, "times": 2},
        {"target": "s3", "operation": "CompleteMultipartUpload", "status": 503, "times": 1},
        {"target": "s3", "operation": "UploadPart", "latency": 0.3, "times": None},
        {"target": "api", "endpoint": "uploads-post-data", "status": 502, "times": 2},
        {"target": "api", "endpoint": "sample-sheet", "status": 429, "retry_after": 0.1, "times": 2},
        {"target": "api", "endpoint": "project-samples", "status": 503, "times": 1},
        {"target": "api", "endpoint": "upload-credentials", "status": 500, "times": 1},
        {"credentials_ttl": 1.5, "times": None},  # every credential set expires during the upload
    ])  # fmt: skip
    cfg = setup(sandbox, tmp_path, concurrency=2)
    # The 503'd POST may still be carried out behind a proxy: it is held for request_timeout + 15 s before the
    # sheet is read again. A short request timeout keeps that hold at 17 s instead of 45 s.
    cfg = dataclasses.replace(cfg, gencove=dataclasses.replace(cfg.gencove, request_timeout=2.0))
    report = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path, sandbox.info.project_id), run_dir)
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    for name in ("A", "B"):
        for read in ("R1", "R2"):
            up = uploads_by_path(sandbox)[f"gncv://seq1/RUN2/{name}_{read}.fastq.gz"]
            assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
                sources_of(run_dir, name, read)
            )
    assigned_once(sandbox, "A", "B")
    faulted = [e for e in c.log() if e["fault"] and e["fault"] != "latency 0.3s"]
    assert len(faulted) == 13, faulted  # every injected failure was met, and ridden out
    assert len(c.log(endpoint="upload-credentials", method="POST")) >= 4  # refreshed during the upload
    assert not [e for e in c.log(target="s3") if e["fault"] == "expired credentials"]  # always ahead of expiry


async def test_a_refused_object_fails_its_sample_and_the_rest_goes_on(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUN3", {"A": 1, "B": 1})
    sandbox.control.mark_path_deleted("gncv://seq1/RUN3/A_R2.fastq.gz")
    cfg = setup(sandbox, tmp_path)
    state = tmp_path / "j.sqlite3"
    report = await upload_once(cfg, state, make_watch(tmp_path, sandbox.info.project_id), run_dir)
    assert not report.ok
    by_id = {s.client_id: s for s in report.samples}
    assert by_id["B"].ok and by_id["B"].state == "assigned"
    assert by_id["A"].state == "failed"
    assert "A_R2.fastq.gz" in (by_id["A"].error or "") and "deleted" in (by_id["A"].error or "")
    with sqlite3.connect(state) as db:
        events = [r[0] for r in db.execute("SELECT message FROM events WHERE level = 'error'")]
    assert any("taken by another upload that was deleted" in m for m in events)
    assigned_once(sandbox, "B")


async def test_unknown_project_fails_the_samples_with_the_reason(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUN4", {"A": 1})
    cfg = setup(sandbox, tmp_path)
    missing = "00000000-0000-4000-8000-000000000000"
    report = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path, missing), run_dir)
    (sample,) = report.samples
    assert sample.state == "failed" and "404" in (sample.error or "") and missing in (sample.error or "")
    assert sandbox.control.log(endpoint="project-samples")[-1]["status"] == 404
    assert all(o.state == "done" for o in sample.objects)  # the uploads themselves went through


async def test_stop_drains_and_a_new_pipeline_resumes_without_resending(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "RUN5", {"A": 4}, mib_per_file=6)  # 24 MiB per read: 5 parts
    sandbox.control.add_fault(target="s3", operation="UploadPart", latency=0.4, times=None)
    cfg = setup(sandbox, tmp_path, concurrency=1, max_objects=1)
    state = tmp_path / "j.sqlite3"
    watch = make_watch(tmp_path, None)
    with Journal.open(state) as journal:
        async with GencoveClient(cfg.gencove.host, sandbox.info.api_key, policy=FAST) as client:
            pipeline = UploadPipeline(cfg, journal, client, s3_policy=FAST)
            await pipeline.submit(watch, scan(run_dir))
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(pipeline.run())
                await wait_until(lambda: len(sandbox.control.log(operation="UploadPart")) >= 2)
                assert pipeline.in_flight()["objects"][0]["destination_path"] == "gncv://seq1/RUN5/A_R1.fastq.gz"
                await pipeline.stop(grace=5.0)
                assert task.done()
            parts_done = journal.call(lambda c: c.execute("SELECT COUNT(*) FROM parts").fetchone()[0])
            state_now = journal.call(lambda c: c.execute("SELECT state FROM objects WHERE id = 1").fetchone()[0])
    assert state_now == "uploading" and 2 <= parts_done < 5
    first_upload = sandbox.control.log(operation="UploadPart")[0]["upload_id"]
    sent_before = {
        e["part"]
        for e in sandbox.control.log(operation="UploadPart")
        if e["status"] == 200 and e["upload_id"] == first_upload
    }
    assert len(sent_before) == parts_done  # the part in flight at stop() finished and was journaled
    sandbox.control.clear_faults()
    # Part 2 in S3 no longer holds our bytes (same size): its ETag stops matching the local md5.
    up = uploads_by_path(sandbox)["gncv://seq1/RUN5/A_R1.fastq.gz"]
    s3_client(sandbox).upload_part(
        Bucket=up["s3"]["bucket"], Key=up["s3"]["object_name"], UploadId=first_upload, PartNumber=2,
        Body=b"\0" * (5 * MiB),
    )  # fmt: skip
    seq = sandbox.control.last_log_seq()
    report = await upload_once(cfg, state, watch, run_dir)
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    resent = {
        e["part"] for e in sandbox.control.log(operation="UploadPart", since=seq) if e["upload_id"] == first_upload
    }
    assert resent & sent_before == {2}  # only the mismatching part was sent again
    assert sandbox.control.log(operation="ListParts", since=seq)
    for read in ("R1", "R2"):
        up = uploads_by_path(sandbox)[f"gncv://seq1/RUN5/A_{read}.fastq.gz"]
        assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
            sources_of(run_dir, "A", read)
        )


class _OptimisticClient(GencoveClient):
    """Believes every credential set lasts an hour, so only S3's ExpiredToken tells it otherwise."""

    async def upload_credentials(self) -> Credentials:
        creds = await super().upload_credentials()
        return dataclasses.replace(creds, expiry=datetime.now(UTC) + timedelta(hours=1))


async def test_expired_token_from_s3_forces_a_refresh_and_the_part_is_retried(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "RUN6", {"A": 2}, mib_per_file=3)
    sandbox.control.add_faults([
        {"credentials_ttl": 1.0, "times": None},
        {"target": "s3", "operation": "UploadPart", "latency": 0.5, "times": None},
    ])  # fmt: skip
    cfg = setup(sandbox, tmp_path, concurrency=2, max_objects=1)
    with Journal.open(tmp_path / "j.sqlite3") as journal:
        async with _OptimisticClient(cfg.gencove.host, sandbox.info.api_key, policy=FAST) as client:
            pipeline = UploadPipeline(cfg, journal, client, s3_policy=FAST)
            report = await pipeline.upload_once(make_watch(tmp_path, sandbox.info.project_id), scan(run_dir))
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    expired = [e for e in sandbox.control.log(target="s3") if e["fault"] == "expired credentials"]
    assert expired and expired[0]["status"] == 400
    assert len(sandbox.control.log(endpoint="upload-credentials")) >= 2
    up = uploads_by_path(sandbox)["gncv://seq1/RUN6/A_R2.fastq.gz"]
    assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
        sources_of(run_dir, "A", "R2")
    )
    assigned_once(sandbox, "A")


async def test_head_object_with_an_expired_token_refreshes_and_asks_again(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    """A HEAD answer has no body: S3 says only "400" for an expired token (no ExpiredToken code to go by)."""
    sandbox.control.add_fault(credentials_ttl=0.001, times=1)  # only the first credential set is born expired
    cfg = setup(sandbox, tmp_path)
    s3_client(sandbox).put_object(Bucket=sandbox.info.bucket, Key="probe", Body=b"12345")
    async with (
        _OptimisticClient(cfg.gencove.host, sandbox.info.api_key, policy=FAST) as client,
        S3Backend(cfg.gencove, cfg.upload, client, FAST) as s3,
    ):
        assert await s3.head(sandbox.info.bucket, "probe") == (5, hashlib.md5(b"12345").hexdigest())
    heads = sandbox.control.log(operation="HeadObject")
    assert [(e["status"], e["fault"]) for e in heads] == [(400, "expired credentials"), (200, None)]
    assert len(sandbox.control.log(endpoint="upload-credentials")) == 2


async def test_a_source_rewritten_during_the_upload_aborts_and_uploads_the_new_bytes(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "RUN7", {"A": 2}, mib_per_file=6)
    sandbox.control.add_fault(target="s3", operation="UploadPart", latency=0.3, times=None)
    cfg = setup(sandbox, tmp_path, concurrency=1, max_objects=1)
    victim = sources_of(run_dir, "A", "R1")[0]
    with Journal.open(tmp_path / "j.sqlite3") as journal:
        async with GencoveClient(cfg.gencove.host, sandbox.info.api_key, policy=FAST) as client:
            pipeline = UploadPipeline(cfg, journal, client, s3_policy=FAST)
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(pipeline.upload_once(make_watch(tmp_path, None), scan(run_dir)))
                await wait_until(lambda: sandbox.control.log(operation="UploadPart"))
                await asyncio.to_thread(make_fastq_gz, victim, reads=20_000, seed=999, compresslevel=0)
            report = task.result()
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    assert sandbox.control.log(operation="AbortMultipartUpload")
    up = uploads_by_path(sandbox)["gncv://seq1/RUN7/A_R1.fastq.gz"]
    assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
        sources_of(run_dir, "A", "R1")
    )
    assert report.samples[0].objects[0].sha256 == sha256_concat(sources_of(run_dir, "A", "R1"))


async def test_assignment_refused_because_already_assigned_is_recorded_not_repeated(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path / "RUN8", {"A": 1, "B": 1})
    cfg = setup(sandbox, tmp_path)
    first = await upload_once(cfg, tmp_path / "one.sqlite3", make_watch(tmp_path, None), run_dir)
    assert first.ok
    # Someone assigns A by hand before transferd does.
    sheet = sandbox.control.api("GET", "/api/v2/sample-sheet/", query={"search": "gncv://seq1/RUN8/", "status": "all"})
    item = next(e for e in sheet["results"] if e["client_id"] == "A")
    sandbox.control.api("POST", f"/api/v2/project-samples/{sandbox.info.project_id}", {"uploads": [item]})
    seq = sandbox.control.last_log_seq()
    report = await upload_once(cfg, tmp_path / "two.sqlite3", make_watch(tmp_path, sandbox.info.project_id), run_dir)
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    assert sandbox.control.log(target="s3", since=seq) == []  # both reads were already on Gencove
    posts = [e["status"] for e in sandbox.control.log(endpoint="project-samples", method="POST", since=seq)]
    assert posts[0] == 400 and 201 in posts  # the batch was refused; B went through on its own
    samples = sandbox.control.samples(sandbox.info.project_id)
    assert sorted(s["client_id"] for s in samples) == ["A", "B"]


async def test_a_vanished_multipart_upload_starts_the_object_again(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "RUN9", {"A": 2}, mib_per_file=6, paired=False)
    sandbox.control.add_fault(target="s3", operation="UploadPart", latency=0.3, times=None)
    cfg = setup(sandbox, tmp_path, concurrency=1, max_objects=1)
    state = tmp_path / "j.sqlite3"
    watch = dataclasses.replace(make_watch(tmp_path, None), single_end=True)
    runs = scan(run_dir, single_end=True)
    with Journal.open(state) as journal:
        async with GencoveClient(cfg.gencove.host, sandbox.info.api_key, policy=FAST) as client:
            pipeline = UploadPipeline(cfg, journal, client, s3_policy=FAST)
            await pipeline.submit(watch, runs)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pipeline.run())
                await wait_until(lambda: sandbox.control.log(operation="UploadPart"))
                await pipeline.stop(grace=5.0)
            (old_id,) = journal.call(lambda c: c.execute("SELECT s3_upload_id FROM objects").fetchone())
    sandbox.control.clear_faults()
    up = uploads_by_path(sandbox)["gncv://seq1/RUN9/A_R1.fastq.gz"]
    s3_client(sandbox).abort_multipart_upload(Bucket=up["s3"]["bucket"], Key=up["s3"]["object_name"], UploadId=old_id)
    with Journal.open(state) as journal:
        async with GencoveClient(cfg.gencove.host, sandbox.info.api_key, policy=FAST) as client:
            report = await UploadPipeline(cfg, journal, client, s3_policy=FAST).upload_once(watch, runs)
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    completed = [e["upload_id"] for e in sandbox.control.log(operation="CompleteMultipartUpload") if e["status"] == 200]
    assert len(completed) == 1 and completed[0] != old_id
    assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
        sources_of(run_dir, "A", "R1")
    )


async def test_the_next_object_streams_while_an_earlier_one_completes(sandbox: SandboxProcess, tmp_path: Path) -> None:
    """An object gives its streaming slot back once its last part is handed off: with max_objects = 1, the
    second read's parts reach S3 while the first one's (slow) CompleteMultipartUpload is still running, and
    both objects still end verified and journaled in order (parts, completing, done)."""
    run_dir = make_run(tmp_path / "RUNC", {"A": 1}, mib_per_file=2)
    sandbox.control.add_fault(target="s3", operation="CompleteMultipartUpload", latency=1.5, times=None)
    cfg = setup(sandbox, tmp_path, max_objects=1)
    report = await upload_once(cfg, tmp_path / "j.sqlite3", make_watch(tmp_path, None), run_dir)
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    s3_log = sandbox.control.log(target="s3")
    completes = [e for e in s3_log if e["operation"] == "CompleteMultipartUpload" and e["status"] == 200]
    assert len(completes) == 2
    first, second = sorted(completes, key=lambda e: e["seq"])
    second_parts = [e for e in s3_log if e["operation"] == "UploadPart" and e["upload_id"] == second["upload_id"]]
    assert second_parts and min(e["seq"] for e in second_parts) < first["seq"]  # overlapped the first Complete
    for read in ("R1", "R2"):
        up = uploads_by_path(sandbox)[f"gncv://seq1/RUNC/A_{read}.fastq.gz"]
        assert s3_sha256(sandbox, up["s3"]["bucket"], up["s3"]["object_name"]) == sha256_concat(
            sources_of(run_dir, "A", read)
        )


async def test_unanswered_assignment_post_is_not_sent_again_while_it_may_be_in_flight(
    sandbox: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Request timeout 1.5 s plus a 1 s margin: a POST whose answer never came may be in flight for 2.5 s.
    monkeypatch.setattr(assign, "IN_FLIGHT_MARGIN", 1.0)
    cfg = setup(sandbox, tmp_path)
    cfg = dataclasses.replace(cfg, gencove=dataclasses.replace(cfg.gencove, request_timeout=1.5))
    run_dir = make_run(tmp_path / "RUNU", {"A": 1})
    seq = sandbox.control.last_log_seq()
    # Both attempts of the first POST fail: its outcome is unknown to the assigner (retries ran out).
    sandbox.control.add_fault(target="api", endpoint="project-samples", method="POST", status=503, times=2)
    policy = Policy(deadline=60.0, initial=0.05, max_wait=0.2, max_attempts=2)
    with Journal.open(tmp_path / "u.sqlite3") as journal:
        async with GencoveClient(cfg.gencove.host, _key(cfg), policy=policy) as client:
            pipeline = UploadPipeline(cfg, journal, client, s3_policy=FAST)
            report = await pipeline.upload_once(make_watch(tmp_path, sandbox.info.project_id), scan(run_dir))
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    posts = sandbox.control.log(endpoint="project-samples", method="POST", since=seq)
    assert [e["status"] for e in posts] == [503, 503, 201]
    # Sent again only once the first could no longer be in flight, but then soon; the sheet was polled meanwhile.
    gap = datetime.fromisoformat(posts[2]["time"]) - datetime.fromisoformat(posts[1]["time"])
    assert timedelta(seconds=2.0) <= gap < timedelta(seconds=15), posts
    sheet = sandbox.control.log(endpoint="sample-sheet", since=posts[1]["seq"])
    polls = [e for e in sheet if e["seq"] < posts[2]["seq"]]
    assert len(polls) >= 2, polls
    assert [a["attempts"] for a in sandbox.control.assignments()] == [1, 1]


async def test_a_run_that_cannot_be_recorded_does_not_stop_the_others(
    sandbox: SandboxProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "seq"
    make_run(root / "BROKEN", {"B1": 1})
    make_run(root / "RUNOK", {"G1": 1})
    cfg = setup(sandbox, tmp_path)
    state = tmp_path / "j.sqlite3"
    with Journal.open(state) as journal:  # a real failure inside the journal transaction for one run only
        journal.call(lambda c: c.execute(
            "CREATE TRIGGER no_broken BEFORE INSERT ON runs WHEN NEW.path LIKE '%BROKEN%'"
            " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        ))  # fmt: skip
    with caplog.at_level(logging.ERROR):
        report = await upload_once(cfg, state, make_watch(root, sandbox.info.project_id), root)
    assert [(s.run_name, s.client_id, s.state) for s in report.samples] == [("RUNOK", "G1", "assigned")]
    assert not report.ok and report.run_problems == (
        f"{root / 'BROKEN'}: could not be recorded; nothing of it was uploaded (see the log)",
    )
    failed = [r for r in caplog.records if r.getMessage() == "upload.run_failed"]
    assert len(failed) == 1 and failed[0].fields["run"] == str(root / "BROKEN")  # type: ignore[attr-defined]
    assert failed[0].exc_info and "disk says no" in str(failed[0].exc_info[1])  # logged with its traceback
