"""Confined writes: a symlink planted in the download tree never turns a download into a write elsewhere; the
file concerned fails alone with a message naming the path, and temp files never collide with deliverables."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import sha256_file
from mirror_support import FAST, assert_mirrored, default_path, file_of, part_of

from transferd.config import Config, ProjectSource
from transferd.journal import Journal
from transferd.journal import downloads as jd
from transferd.mirror import confined
from transferd.mirror.loop import MirrorLoop
from transferd.sandbox import SandboxProcess

Seeder = Callable[..., list[dict[str, Any]]]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _add_file(sandbox: SandboxProcess, sample_id: str, filename: str, file_type: str, size: int = 1000) -> None:
    body = {"filename": filename, "file_type": file_type, "size": size, "seed": len(filename)}
    sandbox.control.api("POST", f"/_sandbox/samples/{sample_id}/files", body)


def _others_mirrored(root: Path, sample: dict[str, Any], but: str) -> None:
    for f in sample["files"]:
        if f["file_type"] != but:
            path = default_path(root, sample, f)
            assert sha256_file(path) == f["checksum_sha256"], path


async def test_a_symlink_planted_at_the_part_path_fails_that_file_alone_and_writes_nothing_outside(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1)
    root, outside = tmp_path / "mirror", tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    r1 = file_of(sample, "fastq-r1")
    part = part_of(default_path(root, sample, r1), r1)
    part.parent.mkdir(parents=True)
    part.symlink_to(outside / "victim")
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        (report,) = (await loop.cycle(project)).samples
    assert report.state == "failed" and report.downloaded == 3
    assert f"{part} is a symbolic link; refusing to write through it" in (report.error or "")
    assert _tree(outside) == {"victim": b"precious"}
    assert not default_path(root, sample, r1).exists()
    _others_mirrored(root, sample, but="fastq-r1")


async def test_a_client_folder_symlinked_outside_the_root_fails_that_sample_and_writes_nothing_outside(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    bad, good = finished_samples(2)
    root, outside = tmp_path / "mirror", tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / bad["client_id"]).symlink_to(outside, target_is_directory=True)
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        reports = {r.sample_id: r for r in (await loop.cycle(project)).samples}
    assert _tree(outside) == {}
    assert reports[bad["id"]].state == "failed"
    assert f"{root / bad['client_id'] / bad['id']}" in (reports[bad["id"]].error or "")
    assert "symbolic link" in (reports[bad["id"]].error or "")
    assert reports[good["id"]].state == "done"
    assert_mirrored(root, [good])


def test_the_write_time_check_refuses_a_symlinked_folder_created_after_the_path_was_checked(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "b").symlink_to(outside, target_is_directory=True)  # swapped in after resolve_inside ran
    with pytest.raises(confined.PathRefused, match=f"{root / 'a' / 'b'} is a symbolic link"):
        confined.open_dir(root, ("a", "b", "c"), create=True)
    with pytest.raises(confined.PathRefused):
        confined.write_atomic(root, Path("a/b/x.json"), b"{}", "t")
    assert _tree(outside) == {} and not (outside / "c").exists()


def test_a_foreign_or_hard_linked_part_is_never_written_into(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    os.link(outside, tmp_path / ".x.1.part")  # a hard link to a file elsewhere, at our temp name
    dir_fd = confined.open_dir(tmp_path, (), create=False)
    assert dir_fd is not None
    try:
        fd = confined.open_part(dir_fd, ".x.1.part", tmp_path / ".x.1.part", ours=True)
        os.write(fd, b"new")
        os.close(fd)
    finally:
        os.close(dir_fd)
    assert outside.read_bytes() == b"precious" and (tmp_path / ".x.1.part").read_bytes() == b"new"


def test_part_names_fit_name_max_and_quote_the_file_id() -> None:
    name = confined.part_name("é" * 200, "../id/x")
    assert len(name.encode()) <= confined.NAME_MAX and name.endswith("..._id_x.part") and "/" not in name
    assert "/" not in confined.part_name("x.bam", "a/b") and confined.part_name("x.bam", "f1") == ".x.bam.f1.part"


async def test_deliverables_named_x_and_x_part_are_both_mirrored(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1, r2_size=0)
    _add_file(sandbox, sample["id"], "x.bam", "bam", size=5000)
    _add_file(sandbox, sample["id"], "x.bam.part", "bam-part", size=3000)
    (sample,) = [s for s in sandbox.control.samples(project.id) if s["id"] == sample["id"]]
    root = tmp_path / "mirror"
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        (report,) = (await loop.cycle(project)).samples
        assert report.state == "done" and report.downloaded == 5
        assert (await loop.cycle(project)).downloaded == 0  # nothing changed: nothing to do
    assert assert_mirrored(root, [sample]) == 5
    assert (default_path(root, sample, file_of(sample, "bam-part"))).name == "x.bam.part"


def test_only_the_verified_file_is_placed(tmp_path: Path) -> None:
    dir_fd = confined.open_dir(tmp_path, (), create=False)
    assert dir_fd is not None
    try:
        fd = confined.open_part(dir_fd, ".x.1.part", tmp_path / ".x.1.part", ours=False)
        os.write(fd, b"verified")
        os.rename(tmp_path / ".x.1.part", tmp_path / "aside")  # someone swaps the temp name after verification
        (tmp_path / ".x.1.part").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(confined.PathRefused, match="its temp file was replaced while downloading"):
            confined.place(fd, dir_fd, ".x.1.part", "x", tmp_path / "x")
        assert not os.path.lexists(tmp_path / "x")
        os.unlink(tmp_path / ".x.1.part")
        os.rename(tmp_path / "aside", tmp_path / ".x.1.part")
        confined.place(fd, dir_fd, ".x.1.part", "x", tmp_path / "x")  # back in place: it is placed
        os.close(fd)
    finally:
        os.close(dir_fd)
    assert (tmp_path / "x").read_bytes() == b"verified" and not (tmp_path / "elsewhere").exists()


async def test_a_destination_that_is_itself_a_symlink_is_trusted_and_journalled_as_configured(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1)
    share = tmp_path / "mnt" / "share"
    share.mkdir(parents=True)
    (tmp_path / "mirror").symlink_to(share, target_is_directory=True)  # /data/results -> the mount
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        assert (await loop.cycle(project)).ok
    assert_mirrored(share, [sample])
    paths = journal.call(lambda c: [r["dest_path"] for r in c.execute("SELECT dest_path FROM downloads")])
    assert len(paths) == 4 and all(p.startswith(f"{tmp_path / 'mirror'}/") for p in paths)  # stable across upgrades


async def test_an_old_style_part_is_removed_once_its_file_is_placed_but_never_a_deliverable(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1, r2_size=0)
    _add_file(sandbox, sample["id"], "x.bam", "bam", size=5000)
    _add_file(sandbox, sample["id"], "x.bam.part", "bam-part", size=3000)
    (sample,) = [s for s in sandbox.control.samples(project.id) if s["id"] == sample["id"]]
    root, source = tmp_path / "mirror", f"v2:{sandbox.info.api_url}:{project.id}"
    r1, bam = file_of(sample, "fastq-r1"), file_of(sample, "bam")
    # What an older version left after a kill: `<name>.part` files, journalled as partial.
    for f in (r1, bam):
        path = default_path(root, sample, f)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(path.name + ".part").write_bytes(b"old prefix")
        journal.call(jd.claim_file, source, project_id=project.id, sample_id=sample["id"],
                     client_id=sample["client_id"], file_id=f["id"], file_type=f["file_type"], dest_path=str(path),
                     size=f["size"], sha256=f["checksum_sha256"])  # fmt: skip
        journal.call(jd.file_progress, source, f["id"], 10)
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        assert (await loop.cycle(project)).ok
    r1_path = default_path(root, sample, r1)
    assert not r1_path.with_name(r1_path.name + ".part").exists()  # the old temp file is gone
    assert assert_mirrored(root, [sample]) == 5  # x.bam.part is the deliverable's bytes, not removed
