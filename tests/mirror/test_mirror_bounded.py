"""Bounded reads: a body that does not end stops at the declared size; the listing is handled in batches; ids
that could steer a request path never reach one."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mirror_support import FAST, assert_mirrored, default_path

from transferd.cli import main
from transferd.config import Config, ProjectSource
from transferd.journal import Journal
from transferd.mirror import loop as loop_module
from transferd.mirror.loop import MirrorLoop
from transferd.sandbox import SandboxProcess

Seeder = Callable[..., list[dict[str, Any]]]


async def test_a_body_that_never_ends_stops_at_the_declared_size_and_fails_that_file_alone(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    (sample,) = finished_samples(1)
    body = {"filename": "x.bam", "file_type": "bam", "size": 1000}
    added = sandbox.control.api("POST", f"/_sandbox/samples/{sample['id']}/files", body)
    bam = next(f for f in added["files"] if f["file_type"] == "bam")
    sandbox.control.add_fault(target="download", file_id=bam["id"], endless=True, times=None)
    root = tmp_path / "mirror"
    started = time.monotonic()
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        (report,) = (await loop.cycle(project)).samples
    assert time.monotonic() - started < 10
    assert report.state == "failed" and report.downloaded == 4
    final = root / sample["client_id"] / sample["id"] / "x.bam"
    assert f"{final}: the server sent more than the declared 1000 bytes" in (report.error or "")
    assert not final.exists() and not list(final.parent.glob(".x.bam.*"))  # nothing kept of that body
    (served,) = [e for e in sandbox.control.log(target="download") if e["file_id"] == bam["id"]]
    assert served["fault"] == "endless" and served["bytes_out"] < 64 * 1024**2  # the client hung up early
    assert_mirrored(root, [sample])  # its other files


async def test_the_listing_is_mirrored_batch_by_batch(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    samples = finished_samples(5, r1_size=1000, r2_size=0)
    monkeypatch.setattr(loop_module, "LIST_BATCH", 2)
    seen: list[int] = []
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        real = loop._listed

        async def spy(p: Any, batch: list[Any]) -> Any:
            seen.append(len(batch))
            return await real(p, batch)

        monkeypatch.setattr(loop, "_listed", spy)
        report = await loop.cycle(project)
    assert report.listed == 5 and report.count("done") == 5
    assert max(seen) <= 2 and sum(seen) == 5
    assert_mirrored(tmp_path / "mirror", samples)


def test_an_id_that_could_steer_a_request_path_is_refused_without_a_request(
    sandbox: SandboxProcess, finished_samples: Seeder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (good,) = finished_samples(1)
    monkeypatch.setenv("TRANSFERD_API_KEY", sandbox.info.api_key)
    seq = sandbox.control.last_log_seq()
    dest = tmp_path / "dest"
    code = main(["download", str(dest), "--host", sandbox.info.api_url, "--state", str(tmp_path / "s.sqlite3"),
                 "--no-progress", "--sample-ids", f"..%2F..%2Fprojects,../../projects,{good['id']}"])  # fmt: skip
    assert code == 1
    assert "is not a valid id" in capsys.readouterr().err
    assert all(".." not in e["path"] and "%2F" not in e["path"] for e in sandbox.control.log(since=seq))
    assert_mirrored(dest, [good])
    assert default_path(dest, good, good["files"][0]).exists()
