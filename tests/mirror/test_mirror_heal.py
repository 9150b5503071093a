"""A mirror that heals and notices: an unmounted results share pauses it (nothing lands on the bare mount
point), files deleted or changed by hand are fetched again, a sample dated in the future cannot hide later
samples from polling, and a periodic full re-list catches what a poll missed."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import sha256_file
from mirror_support import FAST, assert_mirrored, default_path, eventually

from transferd.config import Config, ProjectSource
from transferd.journal import Journal
from transferd.mirror.loop import MirrorLoop
from transferd.sandbox import SandboxProcess
from transferd.stats import STATS

Seeder = Callable[..., list[dict[str, Any]]]
MARKER = ".transferd-destination"


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if not p.is_dir()]


def _redate(sandbox: SandboxProcess, sample_id: str, modified: datetime) -> None:
    sandbox.control.api("POST", f"/_sandbox/samples/{sample_id}/status",
                        {"status": "succeeded", "modified": modified.isoformat()})  # fmt: skip


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Callable[[bool], None]]:
    """The results share at tmp_path/mirror, with its marker. `mounted(False)` leaves what an unmount leaves:
    an empty folder (the mount point) without the marker; `mounted(True)` brings the share back."""
    root, away = tmp_path / "mirror", tmp_path / "share-while-unmounted"
    root.mkdir()
    (root / MARKER).touch()

    def mounted(up: bool) -> None:
        if up:
            os.rmdir(root)  # the bare mount point must be empty: nothing was written there
            os.rename(away, root)
        else:
            os.rename(root, away)
            os.mkdir(root)

    yield mounted


async def test_an_unmounted_share_pauses_the_mirror_and_nothing_lands_on_the_mount_point(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path, share: Callable[[bool], None], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    samples = finished_samples(3, r1_size=400_000, r2_size=400_000)
    root = tmp_path / "mirror"
    unmounted = False

    def unmount_mid_transfer(n: int) -> None:  # the share goes away while the first bytes arrive
        nonlocal unmounted
        if not unmounted:
            unmounted = True
            share(False)

    cfg = mirror_config(marker=MARKER, concurrency=2)
    async with MirrorLoop(cfg, journal, sandbox.info.api_key, policy=FAST, on_bytes=unmount_mid_transfer) as loop:
        first = await loop.cycle(project)
        assert unmounted and not first.ok
        assert _files(root) == []  # the bare mount point got nothing: no file, no folder
        failed = [r for r in first.samples if r.state == "failed"]
        assert failed and all("is missing (share not mounted?)" in (r.error or "") for r in failed)

        caplog.set_level(logging.WARNING)
        second = await loop.cycle(project)  # while it stays unmounted: paused, no listing, no request
        assert second.paused == f"{root / MARKER} is missing (share not mounted?)" and second.samples == ()
        assert STATS.destination_up[str(root)] is False
        assert "mirror.destination_down" in caplog.text
        assert loop.destination_check() == (False, second.paused)
        assert _files(root) == []

        share(True)
        third = await loop.cycle(project)
        assert third.ok and third.paused is None and STATS.destination_up[str(root)] is True
    assert assert_mirrored(root, samples) == 12
    events = journal.call(lambda c: [r["message"] for r in c.execute("SELECT message FROM events")])
    assert any("unusable, mirror paused" in m for m in events) and any("usable again" in m for m in events)


async def test_a_destination_that_stops_being_a_mount_point_pauses_the_mirror(
    journal: Journal, mirror_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    mounts = {tmp_path / "mirror"}
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) in mounts)  # mounting needs root: the kernel's
    (tmp_path / "mirror").mkdir()                                          # answer is what changes, not the code
    async with MirrorLoop(mirror_config(), journal, "key") as loop:
        assert loop.dest is not None and (await loop.dest.refresh()).up
        mounts.clear()
        state = await loop.dest.refresh()
        assert not state.up and state.reason == f"{tmp_path / 'mirror'} is no longer a mount point (share unmounted?)"
        mounts.add(tmp_path / "mirror")
        assert (await loop.dest.refresh()).up


async def test_files_deleted_or_changed_by_hand_are_fetched_again(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    samples = finished_samples(2)
    root = tmp_path / "mirror"
    loop = MirrorLoop(mirror_config(interval=3600, recheck_interval=0.2), journal, sandbox.info.api_key, policy=FAST)
    task = asyncio.create_task(loop.run())
    try:
        await eventually(lambda: all(default_path(root, s, f).exists() for s in samples for f in s["files"]), 15)
        deleted = default_path(root, samples[0], samples[0]["files"][0])
        changed = default_path(root, samples[1], samples[1]["files"][2])
        deleted.unlink()
        with changed.open("ab") as f:
            f.write(b"edited by hand")
        await eventually(lambda: deleted.exists() and sha256_file(changed) == samples[1]["files"][2]["checksum_sha256"],
                         15)  # fmt: skip
        await eventually(lambda: STATS.mirror_repairs == {"missing": 1, "changed": 1})
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert_mirrored(root, samples)
    assert STATS.samples["mirrored"] == 2  # a repaired sample is not counted as mirrored twice


async def test_a_sample_dated_in_the_future_does_not_hide_later_samples_from_polling(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    (future,) = finished_samples(1, prefix="F")
    _redate(sandbox, future["id"], datetime.now(UTC) + timedelta(days=1))
    caplog.set_level(logging.WARNING)
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        first = await loop.cycle(project)
        assert first.count("done") == 1
        assert first.watermark is not None
        assert datetime.fromisoformat(first.watermark) <= datetime.now(UTC) + timedelta(minutes=1)
        assert caplog.text.count("mirror.future_modified") == 1

        later = finished_samples(2, prefix="L")  # no webhook: polling alone must find them
        second = await loop.cycle(project)
        assert second.count("done") == 2
        assert caplog.text.count("mirror.future_modified") == 1  # warned once per sample
    assert_mirrored(tmp_path / "mirror", [future, *later])


async def test_a_periodic_full_relist_finds_a_sample_polling_missed(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    root = tmp_path / "mirror"
    (seen,) = finished_samples(1, prefix="A")
    cfg = mirror_config(interval=3600, recheck_interval=0, full_relist_interval=0.3)
    async with MirrorLoop(cfg, journal, sandbox.info.api_key, policy=FAST) as loop:
        assert (await loop.cycle(project)).count("done") == 1
        # Samples committed late, dated long before the watermark: a poll (watermark - 2 min) never lists them.
        missed = finished_samples(2, prefix="B")
        for s in missed:
            _redate(sandbox, s["id"], datetime.now(UTC) - timedelta(hours=1))
        assert (await loop.cycle(project)).listed == 1  # only A, in the overlap
        assert (await loop.cycle(project, full=True)).count("done") == 2  # the backstop finds them

    # The daemon runs the full re-list by itself every full_relist_interval.
    (late,) = finished_samples(1, prefix="C")
    _redate(sandbox, late["id"], datetime.now(UTC) - timedelta(hours=1))
    loop = MirrorLoop(cfg, journal, sandbox.info.api_key, policy=FAST)
    task = asyncio.create_task(loop.run())
    try:
        await eventually(lambda: all(default_path(root, late, f).exists() for f in late["files"]), 15)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert_mirrored(root, [seen, *missed, late])


async def test_a_mirror_started_while_the_share_is_away_says_so_and_writes_nothing(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    finished_samples(1)
    root = tmp_path / "mirror"
    root.mkdir()  # the bare mount point, no marker
    caplog.set_level(logging.WARNING)
    async with MirrorLoop(mirror_config(marker=MARKER), journal, sandbox.info.api_key, policy=FAST) as loop:
        assert loop.destination_check() == (True, "being checked")  # no red flash before the first probe
        report = await loop.cycle(project)
        assert report.paused == f"{root / MARKER} is missing (share not mounted?)"
        assert loop.destination_check() == (False, report.paused)
    assert caplog.text.count("mirror.destination_down") == 1
    assert _files(root) == []
