"""Mirror cycles against the sandbox: byte-identical files, an incremental steady state, safe paths, archives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import sha256_file
from mirror_support import assert_mirrored, default_path, file_of

from transferd.config import Config, ProjectSource
from transferd.journal import Journal
from transferd.journal import downloads as jd
from transferd.mirror.loop import MirrorLoop
from transferd.sandbox import SandboxProcess
from transferd.stats import STATS

Seeder = Callable[..., list[dict[str, Any]]]


def _requests(sandbox: SandboxProcess, since: int) -> list[tuple[str, str, str]]:
    return [(e["target"], e["method"], e["path"]) for e in sandbox.control.log(since=since)]


async def test_mirrors_byte_identical_then_steady_state_is_one_listing(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    samples = finished_samples(3)
    samples += finished_samples(1, prefix="R1only", r2_size=0)
    root = tmp_path / "mirror"
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key) as loop:
        first = await loop.cycle(project)
        assert first.ok and first.count("done") == 4 and first.examined == 4
        assert assert_mirrored(root, samples) == first.downloaded == 3 * 4 + 3
        assert STATS.samples["mirrored"] == 4 and STATS.files["download"] == 15
        assert STATS.e2e_seconds["mirror"].n == 4

        # Steady state: one listing request; no sample requests, no downloads.
        seq = sandbox.control.last_log_seq()
        again = await loop.cycle(project)
        assert again.ok and again.samples == () and again.listed == 4
        assert _requests(sandbox, seq) == [("api", "GET", f"/api/v2/project-samples/{project.id}")]

        # A new sample costs its own request and downloads, nothing for the others.
        (new,) = finished_samples(1, prefix="N")
        seq = sandbox.control.last_log_seq()
        third = await loop.cycle(project)
        assert [r.sample_id for r in third.samples] == [new["id"]] and third.downloaded == 4
        sample_gets = [p for t, _, p in _requests(sandbox, seq) if p.startswith("/api/v2/samples/")]
        assert sample_gets == [f"/api/v2/samples/{new['id']}"]
        assert_mirrored(root, [*samples, new])
    assert journal.call(jd.files_by_state) == {"done": 19}


async def test_a_placed_file_is_recognised_not_hashed_or_fetched_and_a_deleted_one_comes_back(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1)
    root = tmp_path / "mirror"
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key) as loop:
        await loop.cycle(project)
        r1 = default_path(root, sample, file_of(sample, "fastq-r1"))
        r1.unlink()
        seq = sandbox.control.last_log_seq()
        (report,) = await loop.mirror(project, [sample["id"]])  # e.g. a webhook naming it again
        assert report.state == "done" and report.present == 3 and report.downloaded == 1
        downloads = sandbox.control.log(target="download", since=seq)
        assert [e["file_id"] for e in downloads] == [file_of(sample, "fastq-r1")["id"]]
        assert sha256_file(r1) == file_of(sample, "fastq-r1")["checksum_sha256"]


async def test_file_types_are_exact_and_the_template_is_applied(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1)
    cfg = mirror_config(file_types=("impute-vcf",), template="{client_id}/{file_type}.{file_extension}")
    async with MirrorLoop(cfg, journal, sandbox.info.api_key) as loop:
        report = await loop.cycle(project)
    assert report.ok and report.downloaded == 1  # not impute-vcf-tbi: no prefix match
    files = sorted(p.relative_to(tmp_path / "mirror").as_posix() for p in (tmp_path / "mirror").rglob("*.*"))
    assert files == ["S0/impute-vcf.vcf.gz"]
    assert sha256_file(tmp_path / "mirror" / files[0]) == file_of(sample, "impute-vcf")["checksum_sha256"]


async def test_a_hostile_client_id_lands_inside_the_destination(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    tmp_path: Path,
) -> None:  # fmt: skip
    c = sandbox.control
    c.set_settings(sample_delay=0)
    sid = c.seed_sample(project.id, "../../etc", r1_size=100, r2_size=0)["id"]
    root = tmp_path / "mirror"
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key) as loop:
        deadline = time.monotonic() + 10
        while not (report := await loop.cycle(project)).count("done"):  # the sample finishes after a delay
            assert time.monotonic() < deadline, report
            await asyncio.sleep(0.05)
    placed = await asyncio.to_thread(lambda: [p for p in tmp_path.rglob("*") if p.is_file() and "state" not in p.parts])
    assert placed and all(p.is_relative_to(root) for p in placed)
    assert {p.relative_to(root).parts[0] for p in placed} == {".._.._etc"}
    assert (root / ".._.._etc" / sid / f"{sid}_R1.fastq.gz").is_file()
    assert not (tmp_path.parent / "etc").exists()


async def test_two_files_on_one_path_fail_that_sample_with_a_clear_error(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1)
    cfg = mirror_config(template="{client_id}/{file_extension}")
    async with MirrorLoop(cfg, journal, sandbox.info.api_key) as loop:
        (report,) = (await loop.cycle(project)).samples
    assert report.state == "failed" and "fastq-r1" in (report.error or "") and "fastq-r2" in (report.error or "")
    assert "would both be written to 'S0/fastq.gz'" in (report.error or "")
    assert not (tmp_path / "mirror").exists()
    row = journal.call(jd.sample_rows, f"v2:{sandbox.info.api_url}:{project.id}", [sample["id"]])[sample["id"]]
    assert row.state == "failed" and row.error == report.error


async def test_collision_across_samples_is_reported_not_overwritten(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    first = finished_samples(1, prefix="DUP")[0]
    second = finished_samples(1, prefix="DUP", folder="gncv://rerun/")[0]  # the same client id, re-sequenced
    cfg = mirror_config(template="{client_id}/{file_type}.{file_extension}", file_types=("fastq-r1",))
    async with MirrorLoop(cfg, journal, sandbox.info.api_key) as loop:
        report = await loop.cycle(project)
    states = {r.sample_id: r for r in report.samples}
    assert sorted(r.state for r in states.values()) == ["done", "failed"]
    loser = next(r for r in states.values() if r.state == "failed")
    winner = first if loser.sample_id == second["id"] else second
    assert "already owns this path" in (loser.error or "")
    placed = tmp_path / "mirror" / "DUP0" / "fastq-r1.fastq.gz"
    assert sha256_file(placed) == file_of(winner, "fastq-r1")["checksum_sha256"]


async def test_archived_samples_are_reported_or_restored_then_mirrored(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1)
    sandbox.control.archive([sample["id"]])
    source = f"v2:{sandbox.info.api_url}:{project.id}"
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key) as loop:
        (report,) = (await loop.cycle(project)).samples
        assert report.state == "archived" and "auto_restore" in (report.error or "") and not report.fetched
        assert journal.call(jd.sample_rows, source, [sample["id"]])[sample["id"]].state == "archived"
        events = journal.call(lambda c: [r["message"] for r in c.execute("SELECT message FROM events")])
        assert any("is archived" in m for m in events)
        assert (await loop.cycle(project)).samples == ()  # reported once, not every cycle

    sandbox.control.archive([sample["id"]])  # a new archive transition (new `modified`)
    seq = sandbox.control.last_log_seq()
    async with MirrorLoop(mirror_config(auto_restore=True), journal, sandbox.info.api_key) as loop:
        (report,) = (await loop.cycle(project)).samples
        assert report.state == "restoring"
        restores = sandbox.control.log(endpoint="project-restore-samples", since=seq)
        assert [e["status"] for e in restores] == [202]
        deadline = time.monotonic() + 10
        while not (cycle := await loop.cycle(project)).count("done"):  # re-checked every cycle until restored
            assert time.monotonic() < deadline, cycle
            await asyncio.sleep(0.05)
    assert_mirrored(tmp_path / "mirror", [sample])


async def test_failed_samples_only_when_configured(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    sandbox.control.fail_qc(project.id, "Q0")
    (sample,) = finished_samples(1, prefix="Q")
    assert sample["last_status"]["status"] == "failed qc"
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key) as loop:
        (report,) = (await loop.cycle(project)).samples
    assert report.state == "skipped" and not (tmp_path / "mirror").exists()
    async with MirrorLoop(mirror_config(include_failed=True), journal, sandbox.info.api_key) as loop:
        (report,) = await loop.mirror(project, [sample["id"]])
    assert report.state == "done"
    assert assert_mirrored(tmp_path / "mirror", [sample]) == 2  # a failed sample delivers its inputs only
