"""`transferd download --api legacy-projects|legacy-apps`: verified files, a second run without downloads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from legacy_support import LEGACY_TYPES, Legacy, assert_mirrored

from transferd.cli import main


@pytest.fixture
def download(legacy: Legacy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    monkeypatch.setenv("TRANSFERD_API_KEY", legacy.sandbox.info.api_key)

    def run(dest: str, *args: str) -> int:
        return main(["download", str(tmp_path / dest), "--host", legacy.api_url,
                     "--state", str(tmp_path / "state.sqlite3"), "--no-progress", *args])  # fmt: skip

    return run


def test_legacy_projects_and_apps_download_once_then_a_second_run_downloads_nothing(
    legacy: Legacy, download: Callable[..., int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vid, aid = legacy.view("projects"), legacy.view("apps")
    samples = legacy.finished(2)
    control = legacy.sandbox.control

    assert download("p", "--api", "legacy-projects", "--project-id", str(vid)) == 0
    assert assert_mirrored(tmp_path / "p", samples, tuple(LEGACY_TYPES)) == 8
    assert len(list((tmp_path / "p").rglob("*_traits.json"))) == 2
    assert "2 sample(s) mirrored" in (out := capsys.readouterr().out) and "8 file(s) downloaded" in out

    seq = control.last_log_seq()
    assert download("p", "--api", "legacy-projects", "--project-id", str(vid)) == 0
    full = [e for e in control.log(target="download", since=seq) if e["range"] != "bytes=0-0"]
    assert full == []  # only the one-byte size probes
    assert "0 file(s) downloaded" in (out := capsys.readouterr().out) and "8 already present" in out

    assert download("a", "--api", "legacy-apps", "--project-id", str(aid), "--file-types", "vcf") == 0
    assert assert_mirrored(tmp_path / "a", samples, ("impute-vcf",)) == 2
    assert "2 file(s) downloaded" in capsys.readouterr().out

    assert download("a", "--api", "legacy-apps", "--sample-ids", "1") == 2  # legacy needs the app id
    assert download("a", "--api", "legacy-apps", "--project-id", str(aid), "--file-types", "fastq-r1") == 2
    assert "Invalid file types: fastq-r1" in capsys.readouterr().err
