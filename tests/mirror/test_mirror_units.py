"""Pure pieces: the platform factory and protocol, journal queries, error scrubbing."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferd.config import Config, GencoveConfig, ProjectSource
from transferd.errors import UsageError
from transferd.journal import Journal
from transferd.journal import downloads as jd
from transferd.mirror.platform import Platform, SampleSummary, V2Platform, make_platform
from transferd.mirror.transfer import scrub

CFG = Config(file=Path("/etc/transferd.toml"), gencove=GencoveConfig(host="https://api.gencove.com/some/path"))


def test_make_platform_v2_and_legacy_kinds(tmp_path: Path) -> None:
    p = make_platform(ProjectSource(id="P1"), CFG, "key-0123456789")
    assert isinstance(p, V2Platform) and isinstance(p, Platform)
    assert p.source == "v2:https://api.gencove.com:P1" and p.capabilities.has_checksums
    other = make_platform(ProjectSource(id="P1", host="http://127.0.0.1:9"), CFG, "key-0123456789")
    assert other.source == "v2:http://127.0.0.1:9:P1"  # same id, other host: separate journal state
    key_file = tmp_path / "k"
    key_file.write_text("project-key-0123456789\n")
    own = make_platform(ProjectSource(id="P2", api_key_file=key_file), CFG, "key-0123456789")
    assert own._key == "project-key-0123456789"  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match=r"project P3: unknown api 'v9'"):
        make_platform(ProjectSource(id="P3", api="v9"), CFG, "key-0123456789")


def test_archive_states() -> None:
    def summary(archive: str) -> SampleSummary:
        from datetime import UTC, datetime

        return SampleSummary("s", "c", "succeeded", archive, datetime.now(UTC))

    assert summary("available").downloadable and summary("restored").downloadable
    assert not summary("archived").downloadable and not summary("restore_requested").downloadable
    assert not summary("").downloadable


def claim(journal: Journal, sample: str, file_id: str, path: str, sha: str = "a" * 64) -> jd.DownloadRow | None:
    return journal.call(
        jd.claim_file, "src", project_id="P", sample_id=sample, client_id="C", file_id=file_id, file_type="t",
        dest_path=path, size=10, sha256=sha,
    )  # fmt: skip


def test_claim_file_keeps_progress_takes_over_its_own_sample_and_reports_other_samples(journal: Journal) -> None:
    assert claim(journal, "s1", "f1", "/d/x") is None
    journal.call(jd.file_progress, "src", "f1", 5)
    assert claim(journal, "s1", "f1", "/d/x") is None
    row = journal.call(jd.file_row, "src", "f1")
    assert row is not None and (row.state, row.bytes_done) == ("partial", 5)  # unchanged file: progress kept
    assert claim(journal, "s1", "f1", "/d/x", sha="b" * 64) is None
    row = journal.call(jd.file_row, "src", "f1")
    assert row is not None and (row.state, row.bytes_done, row.sha256) == ("pending", 0, "b" * 64)
    assert claim(journal, "s1", "f2", "/d/x") is None  # re-analysis: a new file id of the same sample
    assert journal.call(jd.file_row, "src", "f1") is None
    holder = claim(journal, "s2", "f3", "/d/x")  # another sample: a collision, nothing changes
    assert holder is not None and (holder.sample_id, holder.file_id) == ("s1", "f2")


def test_remember_events_and_watermarks(journal: Journal) -> None:
    assert journal.call(jd.remember_events, ["a", "b", "a"]) == ["a", "b"]
    assert journal.call(jd.remember_events, ["b", "c"]) == ["c"]
    assert journal.call(jd.get_watermark, "src") is None
    journal.call(jd.set_watermark, "src", "2026-01-01T00:00:00+00:00")
    assert journal.call(jd.get_watermark, "src") == "2026-01-01T00:00:00+00:00"
    journal.call(jd.mark_sample, "src", "s1", state="failed", client_id="C", modified="m", status="succeeded",
                 error="boom")  # fmt: skip
    journal.call(jd.mark_sample, "src", "s2", state="done", client_id="C", modified="m", status="succeeded")
    assert [r.sample_id for r in journal.call(jd.unresolved_samples, "src")] == ["s1"]


def test_scrub_removes_signatures() -> None:
    text = "GET https://s3.example/b/k?X-Amz-Signature=secret&x=1 failed; see http://h/_dl/f?sig=abc."
    assert "secret" not in scrub(text) and "sig=abc" not in scrub(text)
    assert "https://s3.example/b/k?..." in scrub(text)


@pytest.mark.parametrize(
    ("line", "key"),
    [('marker = "a/b"', "download.marker"), ('recheck_interval = "-1s"', "download.recheck_interval"),
     ('full_relist_interval = "soon"', "download.full_relist_interval")],
)  # fmt: skip
def test_the_mirror_keys_are_checked_naming_the_key(tmp_path: Path, line: str, key: str) -> None:
    from transferd.config import load_config
    from transferd.errors import ConfigError

    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[state]\npath = "j.sqlite3"\n[download]\ndestination = "/r"\n{line}\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert err.value.key == key


def test_the_mirror_keys_default_and_zero_means_off(tmp_path: Path) -> None:
    from transferd.config import load_config

    cfg = tmp_path / "t.toml"
    cfg.write_text('[state]\npath = "j.sqlite3"\n[download]\ndestination = "/r"\nmarker = ".m"\n'
                   'recheck_interval = "0"\n')
    dl = load_config(cfg).download
    assert (dl.marker, dl.recheck_interval, dl.full_relist_interval) == (".m", 0.0, 86400.0)
