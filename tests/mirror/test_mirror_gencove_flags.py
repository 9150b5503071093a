"""`transferd download` as gencove users type it: `--download-urls` (JSON to DEST or stdout), `--checksums`
(`<file>.sha256` in sha256sum format), `--json`, GENCOVE_API_KEY / GENCOVE_HOST, and a host that cannot be
reached fails in seconds, naming it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from transferd.cli import main
from transferd.sandbox import SandboxProcess

Seeder = Callable[..., list[dict[str, Any]]]


def _run(sandbox: SandboxProcess, tmp_path: Path, *args: str) -> int:
    return main(["download", *args, "--host", sandbox.info.api_url, "--state", str(tmp_path / "s.sqlite3"),
                 "--no-progress"])  # fmt: skip


def test_download_urls_to_stdout(
    sandbox: SandboxProcess, finished_samples: Seeder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("TRANSFERD_API_KEY", sandbox.info.api_key)
    samples = finished_samples(2)
    seq = sandbox.control.last_log_seq()
    assert _run(sandbox, tmp_path, "-", "--project-id", sandbox.info.project_id, "--download-urls",
                "--file-types", "impute-vcf") == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert sorted(d["client_id"] for d in doc) == sorted(s["client_id"] for s in samples)
    for d in doc:
        assert set(d["files"]) == {"impute-vcf", "impute-vcf-tbi"}  # a key takes the types it begins, as in gencove
        for f in d["files"].values():
            assert f["download_url"].startswith("http") and len(f["checksum_sha256"]) == 64
    assert sandbox.control.log(target="download", since=seq) == []  # nothing downloaded
    assert _run(sandbox, tmp_path, "-", "--project-id", sandbox.info.project_id) == 2  # '-' needs --download-urls


def test_checksums_and_json_with_the_gencove_environment(
    sandbox: SandboxProcess, finished_samples: Seeder, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("TRANSFERD_API_KEY", raising=False)
    monkeypatch.setenv("GENCOVE_API_KEY", sandbox.info.api_key)
    monkeypatch.setenv("GENCOVE_HOST", sandbox.info.api_url)
    (sample,) = finished_samples(1)
    dest = tmp_path / "dest"
    assert main(["download", str(dest), "--sample-ids", sample["id"], "--checksums", "--json", "--no-progress",
                 "--state", str(tmp_path / "s.sqlite3")]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["samples"] == {"done": 1} and doc["files_downloaded"] == len(sample["files"])
    files = [p for p in dest.rglob("*") if p.is_file() and not p.name.endswith(".sha256")]
    assert len(files) == len(sample["files"])
    for f in files:
        line = (f.parent / (f.name + ".sha256")).read_text()
        assert line == f"{hashlib.sha256(f.read_bytes()).hexdigest()} *{f.name}\n"  # sha256sum -c reads it


def test_an_unreachable_host_fails_in_seconds_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "TRANSFERD_API_KEY": "k", "GENCOVE_HOST": "http://no-such-host.invalid:9"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "transferd", "download", str(tmp_path / "d"), "--project-id",
                           "00000000-0000-4000-8000-000000000000", "--state", str(tmp_path / "s.sqlite3"),
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and time.monotonic() - started < 30, done.stderr
    assert "no-such-host.invalid" in done.stderr and "Traceback" not in done.stderr


def test_a_listing_whose_next_never_advances_stops_with_a_clear_error(
    sandbox: SandboxProcess, finished_samples: Seeder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A hostile or broken API (the sandbox's `stuck_next` fault): the listing stops at once, naming it."""
    monkeypatch.setenv("TRANSFERD_API_KEY", sandbox.info.api_key)
    finished_samples(1)
    sandbox.control.add_fault(target="api", endpoint="project-samples", stuck_next=True, times=None)
    seq = sandbox.control.last_log_seq()
    assert _run(sandbox, tmp_path, str(tmp_path / "dest"), "--project-id", sandbox.info.project_id) == 1
    assert "meta.next does not advance" in capsys.readouterr().err
    assert len(sandbox.control.log(endpoint="project-samples", since=seq)) == 1  # the page is not asked for again
