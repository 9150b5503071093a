"""`transferd download`: gencove-compatible flags, verified files, a free second run, exit codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mirror_support import assert_mirrored, default_path, file_of

from transferd.cli import main
from transferd.sandbox import SandboxProcess

Seeder = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def download(sandbox: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    monkeypatch.setenv("TRANSFERD_API_KEY", sandbox.info.api_key)

    def run(*args: str) -> int:
        return main(["download", str(tmp_path / "dest"), "--host", sandbox.info.api_url,
                     "--state", str(tmp_path / "state.sqlite3"), "--no-progress", *args])  # fmt: skip

    return run


def test_project_download_then_a_second_run_downloads_nothing(
    sandbox: SandboxProcess, finished_samples: Seeder, download: Callable[..., int], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    samples = finished_samples(2)
    sandbox.control.set_settings(sample_delay=3600)
    sandbox.control.seed_sample(sandbox.info.project_id, "SLOW")  # not finished yet: reported, not a failure
    assert download("--project-id", sandbox.info.project_id) == 0
    assert_mirrored(tmp_path / "dest", samples)
    out = capsys.readouterr().out
    assert "2 sample(s) mirrored" in out and "8 file(s) downloaded" in out and "1 not ready" in out

    seq = sandbox.control.last_log_seq()
    assert download("--project-id", sandbox.info.project_id) == 0
    assert sandbox.control.log(target="download", since=seq) == []
    assert "0 file(s) downloaded" in capsys.readouterr().out

    assert download("--project-id", sandbox.info.project_id, "--no-skip-existing") == 0
    assert len(sandbox.control.log(target="download", since=seq)) == 8
    assert_mirrored(tmp_path / "dest", samples)


def test_sample_ids_file_types_and_template(
    sandbox: SandboxProcess, finished_samples: Seeder, download: Callable[..., int], tmp_path: Path
) -> None:
    a, b, _ = finished_samples(3)
    ids = f"{a['id']},{b['id']}"
    assert download("--sample-ids", ids, "--file-types", "fastq-r1,impute-vcf",
                    "--download-template", "{client_id}/{file_type}.{file_extension}") == 0  # fmt: skip
    got = sorted(p.relative_to(tmp_path / "dest").as_posix() for p in (tmp_path / "dest").rglob("*.*"))
    # As gencove download matches them, a key also takes the types it begins: impute-vcf takes impute-vcf-tbi.
    assert got == [f"{s}/{f}" for s in ("S0", "S1")
                   for f in ("fastq-r1.fastq.gz", "impute-vcf-tbi.vcf.gz.tbi", "impute-vcf.vcf.gz")]  # fmt: skip


def test_what_is_not_mirrored_fails_the_run_with_a_summary(
    sandbox: SandboxProcess, finished_samples: Seeder, download: Callable[..., int], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    ok, archived = finished_samples(2)
    sandbox.control.archive([archived["id"]])
    missing = "00000000-0000-4000-8000-000000000000"
    assert download("--sample-ids", f"{ok['id']},{archived['id']},{missing}") == 1
    err = capsys.readouterr().err
    assert f"sample {missing} not found" in err and f"sample {archived['id']} (S1) is archived" in err
    r1 = default_path(tmp_path / "dest", ok, file_of(ok, "fastq-r1"))
    assert r1.is_file()
    assert download("--project-id", sandbox.info.project_id) == 1  # the archived sample is still not mirrored


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project-id", "p", "--sample-ids", "s"], "Must specify only one of"),
        ([], "Must specify one of"),
        (["--project-id", "{pid}", "--file-types", "fastq-r1,nope"], "Invalid file types: nope"),
        (["--project-id", "p", "--download-template", "{client_id}"], "--download-template"),
        (["--project-id", "p", "--download-template", "{oops}/{default_filename}"], "unknown token"),
    ],
)
def test_usage_errors_exit_2(
    sandbox: SandboxProcess, download: Callable[..., int], args: list[str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert download(*[a.replace("{pid}", sandbox.info.project_id) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_without_a_key_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSFERD_API_KEY", raising=False)
    assert main(["download", str(tmp_path), "--project-id", "p", "--state", str(tmp_path / "s")]) == 2


def test_an_unknown_project_fails(sandbox: SandboxProcess, download: Callable[..., int]) -> None:
    assert download("--project-id", "00000000-0000-4000-8000-000000000001") == 1


def test_a_project_download_goes_batch_by_batch(
    sandbox: SandboxProcess, finished_samples: Seeder, download: Callable[..., int], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from transferd.mirror import command

    samples = finished_samples(3)
    monkeypatch.setattr(command, "LIST_BATCH", 1)
    seq = sandbox.control.last_log_seq()
    assert download("--project-id", sandbox.info.project_id) == 0
    assert_mirrored(tmp_path / "dest", samples)
    log = sandbox.control.log(since=seq)
    details = [e["seq"] for e in log if e["target"] == "api" and "/samples/" in e["path"] and e["method"] == "GET"
               and not e["path"].rstrip("/").endswith("samples")]  # fmt: skip
    downloads = [e["seq"] for e in log if e["target"] == "download"]
    assert len(details) == 3 and min(downloads) < max(details)  # the first sample's files before the last detail
