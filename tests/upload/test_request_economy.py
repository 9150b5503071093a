"""Request economy (counted from the sandbox's request log, so a regression fails CI): in the common case an
object costs one registration (uploads-post-data) and its PUT, or its parts and the Complete; no HeadObject
before a first PUT, nor after a PUT or Complete whose answer named the checksum S3 verified."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from test_pipeline import assigned_once, setup, upload_once
from upload_support import MiB, make_run, make_watch

from transferd.sandbox import SandboxProcess


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


async def test_a_multipart_object_costs_its_parts_and_one_complete(sandbox: SandboxProcess, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "seq" / "BIG", {"B": 1}, mib_per_file=11)
    cfg = setup(sandbox, tmp_path, part_size=5 * MiB)
    watch = make_watch(tmp_path / "seq", sandbox.info.project_id)
    report = await upload_once(cfg, tmp_path / "j.sqlite3", watch, run_dir)
    assert report.ok, [(s.client_id, s.state, s.error) for s in report.samples]
    s3_ops = Counter(e["operation"] for e in sandbox.control.log(target="s3"))
    assert s3_ops == {"CreateMultipartUpload": 2, "UploadPart": 6, "CompleteMultipartUpload": 2}  # R1 and R2
    assigned_once(sandbox, "B")
