"""Failure isolation: one file, or one sample, fails alone with a message naming it; its neighbours are mirrored
(no ExceptionGroup cancels them) and the one-shot command ends with exit 1 and a summary, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import sha256_file
from mirror_support import FAST, assert_mirrored, default_path

from transferd.cli import main
from transferd.config import Config, ProjectSource
from transferd.journal import Journal
from transferd.mirror.loop import MirrorLoop
from transferd.sandbox import SandboxProcess

Seeder = Callable[..., list[dict[str, Any]]]


def _listed(sandbox: SandboxProcess, sample_id: str) -> dict[str, Any]:
    (s,) = [s for s in sandbox.control.samples(sandbox.info.project_id) if s["id"] == sample_id]
    return s


async def test_a_name_over_name_max_and_a_folder_that_is_a_file_fail_alone(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    long_name, blocked, fine = finished_samples(3)
    body = {"filename": "n" * 300 + ".bam", "file_type": "bam", "size": 1000}
    sandbox.control.api("POST", f"/_sandbox/samples/{long_name['id']}/files", body)
    root = tmp_path / "mirror"
    root.mkdir()
    (root / blocked["client_id"]).write_text("a file where the client folder goes")
    async with MirrorLoop(mirror_config(), journal, sandbox.info.api_key, policy=FAST) as loop:
        reports = {r.sample_id: r for r in (await loop.cycle(project)).samples}

    r = reports[long_name["id"]]
    assert r.state == "failed" and r.downloaded == 4  # the four ordinary files of that sample are placed
    assert "n" * 300 + ".bam: File name too long" in (r.error or "") and "1 of 5 files failed" in (r.error or "")
    for f in _listed(sandbox, long_name["id"])["files"]:
        if f["file_type"] != "bam":
            assert sha256_file(default_path(root, long_name, f)) == f["checksum_sha256"]

    r = reports[blocked["id"]]
    assert r.state == "failed" and f"{root / blocked['client_id']} is not a folder" in (r.error or "")
    assert reports[fine["id"]].state == "done"
    assert_mirrored(root, [fine])


def test_one_shot_download_one_sample_refused_one_malformed_the_others_mirrored(
    sandbox: SandboxProcess, finished_samples: Seeder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    refused, malformed, good = finished_samples(3)
    c = sandbox.control
    c.add_fault(target="api", endpoint=f"/samples/{refused['id']}$", status=403, times=None)
    c.add_fault(target="api", endpoint=f"/samples/{malformed['id']}$", status=200, times=None)  # {"detail": ...}
    monkeypatch.setenv("TRANSFERD_API_KEY", sandbox.info.api_key)
    dest = tmp_path / "dest"
    code = main(["download", str(dest), "--host", sandbox.info.api_url, "--state", str(tmp_path / "s.sqlite3"),
                 "--no-progress", "--sample-ids", f"{refused['id']},{malformed['id']},{good['id']}"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    assert_mirrored(dest, [good])
    assert "1 sample(s) mirrored" in out and "2 failed" in out and len(out.strip().splitlines()) == 1
    assert f"sample {refused['id']}: ApiError" in err and "HTTP 403" in err
    assert f"sample {malformed['id']}: MalformedResponse" in err and "has no 'id' field" in err
    assert "Traceback" not in err + out


def test_one_shot_download_into_a_file_fails_with_the_reason(
    sandbox: SandboxProcess, finished_samples: Seeder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (sample,) = finished_samples(1)
    monkeypatch.setenv("TRANSFERD_API_KEY", sandbox.info.api_key)
    dest = tmp_path / "dest"
    dest.write_text("not a folder")
    code = main(["download", str(dest), "--host", sandbox.info.api_url, "--state", str(tmp_path / "s.sqlite3"),
                 "--no-progress", "--sample-ids", sample["id"]])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1 and "1 paused" in out and f"paused: {dest} is not a folder" in err
    assert dest.read_text() == "not a folder"
