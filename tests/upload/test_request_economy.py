"""Request economy (counted from the sandbox's request log, so a regression fails CI): in the common case an
object costs one registration (uploads-post-data) and its PUT, or its parts and the Complete; no HeadObject
before a first PUT, nor after a PUT or Complete whose answer named the checksum S3 verified."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from test_pipeline import assigned_once, setup, upload_once
from upload_support import FAST, MiB, make_run, make_watch, scan

from transferd.gencove.client import GencoveClient
from transferd.journal import Journal
from transferd.journal import uploads as jq
from transferd.sandbox import SandboxProcess
from transferd.upload.pipeline import UploadPipeline


async def test_a_small_object_costs_one_registration_and_one_put(sandbox: SandboxProcess, tmp_path: Path) -> None:
    names = [f"LP{n}" for n in range(1, 9)]
    run_dir = make_run(tmp_path / "seq" / "LOWPASS", dict.fromkeys(names, 1), mib_per_file=0.05)
    cfg = setup(sandbox, tmp_path, single_put_max=8 * MiB)
    report = await upload_once(
        cfg, tmp_path / "j.sqlite3", make_watch(tmp_path / "seq", sandbox.info.project_id), run_dir
    )
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    objects = 2 * len(names)
    s3_ops = Counter(e["operation"] for e in sandbox.control.log(target="s3"))
    assert s3_ops == {"PutObject": objects}
    registrations = sandbox.control.log(endpoint="uploads-post-data")
    assert len(registrations) == objects
    assigned_once(sandbox, *names)
    # Assignment is gathered: a few rounds of one sample-sheet read and one POST for the whole run, not a round
    # per sample (8 samples used to take ~8 sheet reads and ~8 POSTs).
    sheets, posts = sandbox.control.log(endpoint="sample-sheet"), sandbox.control.log(endpoint="project-samples")
    assert len(posts) <= 2 and len(sheets) <= 4, (len(sheets), len(posts))


async def test_a_multipart_object_costs_its_parts_and_one_complete(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "seq" / "BIG", {"B": 1}, mib_per_file=11)
    cfg = setup(sandbox, tmp_path, part_size=5 * MiB)
    watch = make_watch(tmp_path / "seq", sandbox.info.project_id)
    report = await upload_once(cfg, tmp_path / "j.sqlite3", watch, run_dir)
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    s3_ops = Counter(e["operation"] for e in sandbox.control.log(target="s3"))
    assert s3_ops == {"CreateMultipartUpload": 2, "UploadPart": 6, "CompleteMultipartUpload": 2}  # R1 and R2
    assigned_once(sandbox, "B")


def _bytes_read() -> int:
    """Bytes this process has read through read(2)-like calls so far (all threads; files and sockets)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


async def test_each_source_byte_is_read_once(sandbox: SandboxProcess, tmp_path: Path) -> None:
    """A single PUT's SHA-256 goes as a trailer computed by the pass that sends the body: no first pass."""
    run_dir = make_run(tmp_path / "seq" / "ONCE", {"A": 2, "B": 2}, mib_per_file=6)  # 4 objects of 12 MiB
    cfg = setup(sandbox, tmp_path, single_put_max=64 * MiB)
    watch = make_watch(tmp_path / "seq", sandbox.info.project_id)
    source_bytes = sum(p.stat().st_size for p in run_dir.iterdir())
    runs = scan(run_dir)  # discovery (its gzip checks) is not the upload
    with Journal.open(tmp_path / "j.sqlite3") as journal:
        async with GencoveClient(cfg.gencove.host, sandbox.info.api_key, policy=FAST) as client:
            pipeline = UploadPipeline(cfg, journal, client, s3_policy=FAST)
            before = _bytes_read()
            report = await pipeline.upload_once(watch, runs)
            read = _bytes_read() - before
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    assert Counter(e["operation"] for e in sandbox.control.log(target="s3")) == {"PutObject": 4}
    assert source_bytes <= read < 1.1 * source_bytes, f"{read / source_bytes:.2f} reads per source byte"


async def test_a_requeued_object_whose_put_landed_is_not_sent_again(sandbox: SandboxProcess, tmp_path: Path) -> None:
    """An object that failed after its PUT had landed (answer lost, then a deadline), requeued by the operator: the
    journal knows a slot was handed out, so S3 is asked first and the bytes are not sent twice."""
    sandbox.control.set_settings(upload_notice_delay=600)  # Gencove does not tell; only S3 knows
    run_dir = make_run(tmp_path / "seq" / "REQ", {"R": 1}, mib_per_file=1)
    cfg = setup(sandbox, tmp_path, single_put_max=8 * MiB)
    watch = make_watch(tmp_path / "seq", None)
    state = tmp_path / "j.sqlite3"
    assert (await upload_once(cfg, state, watch, run_dir)).ok
    with Journal.open(state) as journal:  # as if the PUTs' answers had been lost and the objects had failed
        journal.call(lambda c: c.execute("UPDATE objects SET state = 'failed', error = 'S3 PutObject: timed out'"))
        journal.call(lambda c: c.execute("UPDATE samples SET state = 'failed', error = 'S3 PutObject: timed out'"))
        assert [r.client_id for r in journal.call(jq.requeue_failed)] == ["R"]
    seq = sandbox.control.last_log_seq()
    assert (await upload_once(cfg, state, watch, run_dir)).ok
    ops = Counter(e["operation"] for e in sandbox.control.log(target="s3", since=seq))
    assert ops == {"HeadObject": 2}
