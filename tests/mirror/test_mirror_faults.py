"""Transfers under faults: resets resume with Range, corruption is caught, expired URLs are refreshed at once,
a full disk fails one file cleanly, and cancellation leaves a resumable `.part`."""

from __future__ import annotations

import asyncio
import errno
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import sha256_file
from mirror_support import FAST, assert_mirrored, default_path, file_of, part_of

from transferd.config import Config, ProjectSource
from transferd.journal import Journal
from transferd.journal import downloads as jd
from transferd.mirror import transfer
from transferd.mirror.loop import MirrorLoop
from transferd.sandbox import SandboxProcess
from transferd.stats import STATS

Seeder = Callable[..., list[dict[str, Any]]]
SIZE = 600_000


def _downloads(sandbox: SandboxProcess, file_id: str, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in sandbox.control.log(target="download", since=since) if e["file_id"] == file_id]


async def test_a_reset_mid_body_resumes_with_a_range_request(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    size, cut = 2_000_000, 1_500_000
    (sample,) = finished_samples(1, r1_size=size, r2_size=0)
    r1 = file_of(sample, "fastq-r1")
    sandbox.control.add_fault(target="download", file_id=r1["id"], reset_after_bytes=cut)
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        report = await loop.cycle(project)
    assert report.ok
    first, second = _downloads(sandbox, r1["id"])
    assert first["range"] is None and first["fault"]
    # A reset loses what was still in flight (the RST drops unread data, and aiohttp raises before handing over
    # its buffer), so the client holds some prefix of at most `cut` bytes: the resume starts exactly there.
    have = size - second["bytes_out"]
    assert 0 < have <= cut
    assert second["range"] == f"bytes={have}-" and second["status"] == 206
    assert_mirrored(tmp_path / "mirror", [sample])
    assert STATS.retries[("download.sha256", "connection")] >= 1


async def test_a_part_left_by_a_previous_run_is_resumed_and_a_bad_one_is_replaced(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1, r1_size=SIZE, r2_size=SIZE)
    r1, r2 = file_of(sample, "fastq-r1"), file_of(sample, "fastq-r2")
    root = tmp_path / "mirror"
    # What a killed run leaves: the true first 100,000 bytes of R1, and 1,000 wrong bytes of R2, both journalled.
    request = urllib.request.Request(r1["download_url"], headers={"Range": "bytes=0-99999"})
    head = await asyncio.to_thread(lambda: urllib.request.urlopen(request).read())
    p1, p2 = default_path(root, sample, r1), default_path(root, sample, r2)
    p1.parent.mkdir(parents=True)
    part_of(p1, r1).write_bytes(head)
    part_of(p2, r2).write_bytes(b"x" * 1000)
    source = f"v2:{sandbox.info.api_url}:{project.id}"
    for f, path, have in ((r1, p1, len(head)), (r2, p2, 1000)):
        journal.call(
            jd.claim_file, source, project_id=project.id, sample_id=sample["id"], client_id=sample["client_id"],
            file_id=f["id"], file_type=f["file_type"], dest_path=str(path), size=f["size"], sha256=f["checksum_sha256"],
        )  # fmt: skip
        journal.call(jd.file_progress, source, f["id"], have)
    seq = sandbox.control.last_log_seq()
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        assert (await loop.cycle(project)).ok
    (resumed,) = _downloads(sandbox, r1["id"], seq)
    assert resumed["range"] == "bytes=100000-" and resumed["status"] == 206
    wrong, again = _downloads(sandbox, r2["id"], seq)
    assert wrong["range"] == "bytes=1000-"  # resumed, then the sha256 failed: the .part was deleted ...
    assert again["range"] is None and again["status"] == 200  # ... and fetched from 0
    assert_mirrored(root, [sample])
    assert STATS.retries[("download.sha256", "integrity")] == 1


async def test_a_corrupted_transfer_is_detected_and_fetched_again(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1, r1_size=SIZE, r2_size=0)
    vcf = file_of(sample, "impute-vcf")
    sandbox.control.add_fault(target="download", file_type="impute-vcf", corrupt=True)
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        assert (await loop.cycle(project)).ok
    bad, good = _downloads(sandbox, vcf["id"])
    assert bad["fault"] == "corrupt" and good["fault"] is None and good["range"] is None
    assert_mirrored(tmp_path / "mirror", [sample])
    assert STATS.retries[("download.sha256", "integrity")] == 1


async def test_a_file_that_never_verifies_fails_after_three_full_tries(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1, r2_size=0)
    vcf = file_of(sample, "impute-vcf")
    sandbox.control.add_fault(target="download", file_type="impute-vcf", corrupt=True, times=10)
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        (report,) = (await loop.cycle(project)).samples
    assert report.state == "failed" and "3 times in a row" in (report.error or "")
    assert len(_downloads(sandbox, vcf["id"])) == 3
    placed = default_path(tmp_path / "mirror", sample, vcf)
    assert not placed.exists() and not part_of(placed, vcf).exists()


async def test_an_expired_url_is_refreshed_at_once(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1, r2_size=0)
    sandbox.control.add_fault(url_ttl=-60, times=1)  # the next GET samples/{id} hands out expired URLs
    seq = sandbox.control.last_log_seq()
    async with MirrorLoop(mirror_config(concurrency=1), journal, sandbox.info.api_key) as loop:
        assert (await loop.cycle(project)).ok
    log = [e for e in sandbox.control.log(since=seq) if e["target"] == "download" or "/samples/" in e["path"]]
    kinds = [("403" if e["status"] == 403 else "dl") if e["target"] == "download" else "GET" for e in log]
    assert kinds[:3] == ["GET", "403", "GET"]  # the first 403 is answered with a fresh sample right away
    assert kinds.count("GET") == 2  # one refresh serves every file of the sample
    assert kinds.count("403") == 1 and kinds.count("dl") == 3
    first_403 = next(e for e in log if e["status"] == 403)
    refresh = log[kinds.index("403") + 1]
    gap = (datetime.fromisoformat(refresh["time"]) - datetime.fromisoformat(first_403["time"])).total_seconds()
    assert gap < 0.5, f"refresh took {gap:.2f}s after the 403"
    assert_mirrored(tmp_path / "mirror", [sample])


async def test_a_full_disk_fails_the_file_cleanly_and_the_next_cycle_recovers(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1, r1_size=SIZE, r2_size=0)
    real_write = transfer._PartFile.write

    def write_then_full(self: transfer._PartFile, data: bytes) -> None:
        if "_R1.fastq.gz." in self.path.name:
            real_write(self, data[: len(data) // 2])  # some bytes land, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, data)

    monkeypatch.setattr(transfer._PartFile, "write", write_then_full)
    root = tmp_path / "mirror"
    r1_path = default_path(root, sample, file_of(sample, "fastq-r1"))
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        (report,) = (await loop.cycle(project)).samples
        assert report.state == "failed" and "disk full" in (report.error or "") and str(r1_path) in report.error
        assert report.present + report.downloaded == 2  # the other files were placed
        assert not r1_path.exists() and not part_of(r1_path, file_of(sample, "fastq-r1")).exists()
        row = journal.call(jd.file_row, f"v2:{sandbox.info.api_url}:{project.id}", file_of(sample, "fastq-r1")["id"])
        assert row is not None and row.state == "failed" and "disk full" in (row.error or "")
        assert STATS.errors["mirror"] >= 1

        monkeypatch.setattr(transfer._PartFile, "write", real_write)  # space freed
        (report,) = (await loop.cycle(project)).samples  # a failed sample is owed: retried without a listing change
        assert report.state == "done" and report.downloaded == 1 and report.present == 2
    assert_mirrored(root, [sample])


async def test_cancelling_a_download_leaves_a_resumable_part_and_a_consistent_journal(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    big = 3_000_000
    (sample,) = finished_samples(1, r1_size=big, r2_size=0)
    r1 = file_of(sample, "fastq-r1")
    final = default_path(tmp_path / "mirror", sample, r1)
    part = part_of(final, r1)
    cfg = mirror_config(file_types=("fastq-r1",), max_bytes_in_flight=1024**2)
    seq = sandbox.control.last_log_seq()
    received = 0

    def stop_mid_body(n: int) -> None:  # cancel like a SIGTERM would, half way through the body
        nonlocal received
        received += n
        if received >= big // 2:
            task.cancel()

    loop = MirrorLoop(cfg, journal, sandbox.info.api_key, policy=FAST, on_bytes=stop_mid_body)
    task = asyncio.create_task(loop.run())
    with pytest.raises(asyncio.CancelledError):
        await task
    have = part.stat().st_size
    assert 0 < have < big and not final.exists()
    source = f"v2:{sandbox.info.api_url}:{project.id}"
    row = journal.call(jd.file_row, source, r1["id"])
    assert row is not None and row.state == "partial"  # never `done` for a file that is not placed
    assert journal.call(jd.sample_rows, source, [sample["id"]])[sample["id"]].state == "pending"

    async with MirrorLoop(cfg, journal, sandbox.info.api_key, policy=FAST) as again:  # the restarted daemon
        assert (await again.cycle(project)).ok
    ranges = [e["range"] for e in _downloads(sandbox, r1["id"], seq)]
    assert ranges == [None, f"bytes={have}-"]
    assert sha256_file(final) == r1["checksum_sha256"] and not part.exists()
