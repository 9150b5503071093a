"""Pure parts of the legacy platforms: URL fields -> file types, alias dedupe, trait JSON, credentials, dates."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from transferd.config import Config, DownloadConfig, GencoveConfig, ProjectSource
from transferd.errors import ConfigError
from transferd.gencove.legacy_client import LEGACY_HOST, LegacyCredential
from transferd.mirror.platform import make_platform
from transferd.mirror.platforms import legacy_platform as lp
from transferd.mirror.platforms.legacy_files import (
    APP_FIELDS,
    PROJECT_FIELDS,
    deliverables,
    file_type_of,
    object_key,
    traits_document,
)
from transferd.mirror.platforms.legacy_traits import TraitsCollision, TraitsWriter

S3 = "https://bucket.s3.amazonaws.com/deliverables/17"
SIG = "?AWSAccessKeyId=AKIA&Signature=abc&Expires=1700000000"


@pytest.mark.parametrize(
    ("field", "file_type"),
    [
        ("fastq_r1_url_s3", "fastq-r1"), ("fastq_r2_url_s3", "fastq-r2"), ("bam_url_s3", "bam"), ("bai_url_s3", "bai"),
        ("fastq_nongrch37_url_s3", "fastq-nongrch37"), ("ancestry_url_s3", "ancestry"),
        ("microbiome_url_s3", "microbiome"), ("vcf_url_s3", "vcf"), ("tbi_url_s3", "tbi"), ("csi_url_s3", "csi"),
        ("snp_url_s3", "snp"), ("traits_url_s3", "traits"), ("url_s3", "raw-data"), ("new_thing_url_s3", "new-thing"),
    ],
)  # fmt: skip
def test_each_url_field_maps_to_a_file_type(field: str, file_type: str) -> None:
    assert file_type_of(field) == file_type


def test_apps_have_no_fastq_or_traits_fields() -> None:
    assert set(APP_FIELDS) == set(PROJECT_FIELDS) - {"fastq_r1_url_s3", "fastq_r2_url_s3", "fastq_nongrch37_url_s3",
                                                     "traits_url_s3"}  # fmt: skip
    with pytest.raises(ValueError, match="not a"):
        file_type_of("trait_values")


def test_the_alias_and_any_duplicate_object_is_listed_once_nulls_are_skipped() -> None:
    row = {
        "sample_id": 17, "external_id": "S1", "project_id": 5,
        "url_s3": f"{S3}/17.vcf.gz?Signature=other&Expires=1700000001",  # the same object, signed on its own
        "vcf_url_s3": f"{S3}/17.vcf.gz{SIG}", "tbi_url_s3": f"{S3}/17.vcf.gz.tbi{SIG}",
        "bam_url_s3": None, "csi_url_s3": "", "snp_url_s3": 12, "fastq_r1_url_s3": f"{S3}/17_R1.fastq.gz{SIG}",
        "microbiome_url_s3": f"{S3}/17.microbiome.tsv{SIG}",
        "trait_values": {"h": 1}, "ancestry_url_suffix": "/anc",
    }  # fmt: skip
    files = deliverables(row, "17")
    assert [(f.file_type, f.default_filename) for f in files] == [
        ("fastq-r1", "17_R1.fastq.gz"), ("microbiome", "17.microbiome.tsv"), ("vcf", "17.vcf.gz"),
        ("tbi", "17.vcf.gz.tbi"),
    ]  # fmt: skip
    assert [f.file_id for f in files] == ["17:fastq-r1", "17:microbiome", "17:vcf", "17:tbi"]
    assert next(f for f in files if f.file_type == "vcf").url == row["vcf_url_s3"]  # the named field wins


def test_an_alias_of_nothing_else_is_kept_as_raw_data_and_unknown_fields_are_kept() -> None:
    row = {"member_id": 9, "url_s3": f"{S3}/9.zip{SIG}", "vcf_url_s3": None, "zzz_url_s3": f"{S3}/9.zzz{SIG}"}
    files = deliverables(row, "9", APP_FIELDS)
    assert [(f.file_type, f.field) for f in files] == [("zzz", "zzz_url_s3"), ("raw-data", "url_s3")]
    assert object_key("HTTPS://Host.Example/a/b?x=1#f") == "https://host.example/a/b"


def test_content_disposition_names_the_file_when_the_url_carries_one() -> None:
    url = f"{S3}/abc?response-content-disposition=attachment%3B%20filename%3D17.vcf.gz&Signature=s"
    assert deliverables({"vcf_url_s3": url}, "17")[0].default_filename == "17.vcf.gz"


def test_traits_document_only_with_values() -> None:
    row = {"sample_id": 17, "external_id": "S1", "project_id": 5, "trait_values": {"height": 40}}
    doc = traits_document(row, "17", "sample_id", {"height": "Height percentile"})
    assert doc == {"gencove_id": "17", "sample_id": 17, "external_id": "S1", "project_id": 5,
                   "trait_values": {"height": 40}, "trait_descriptions": {"height": "Height percentile"}}  # fmt: skip
    assert traits_document({**row, "trait_values": None}, "17", "sample_id", {}) is None


async def test_traits_are_written_atomically_once_and_never_over_another_samples(tmp_path: Path) -> None:
    writer = TraitsWriter(tmp_path, "{client_id}/{gencove_id}/{default_filename}")
    path = await writer.write("S1", "17", {"gencove_id": "17", "trait_values": {"h": 1}})
    assert path == tmp_path / "S1" / "17" / "17_traits.json"
    assert json.loads(path.read_text())["trait_values"] == {"h": 1}
    mtime = path.stat().st_mtime_ns
    await writer.write("S1", "17", {"gencove_id": "17", "trait_values": {"h": 1}})
    assert path.stat().st_mtime_ns == mtime  # unchanged bytes are not rewritten
    assert [p.name for p in path.parent.iterdir()] == ["17_traits.json"]  # no temp file left

    flat = TraitsWriter(tmp_path, "{client_id}/{file_type}.{file_extension}")
    first = await flat.write("TWIN", "1", {"gencove_id": "1"})
    with pytest.raises(TraitsCollision, match="collides"):
        await flat.write("TWIN", "2", {"gencove_id": "2"})
    assert json.loads(first.read_text()) == {"gencove_id": "1"}  # not overwritten
    assert await TraitsWriter(tmp_path, "{default_filename}", ("vcf",)).write("X", "3", {}) is None  # not wanted


def test_credentials_are_a_key_or_email_and_password_and_never_printed() -> None:
    key = LegacyCredential.parse("  0123456789abcdef0123456789abcdef0123\n")
    assert key.api_key == "0123456789abcdef0123456789abcdef0123" and key.email is None
    login = LegacyCredential.parse(json.dumps({"email": "me@example.com", "password": "hunter2hunter2"}))
    assert (login.email, login.password, login.api_key) == ("me@example.com", "hunter2hunter2", None)
    assert "hunter2" not in repr(login) and "0123456789" not in repr(key)
    for bad in ("{not json", json.dumps({"email": "me@example.com"}), json.dumps({"email": "", "password": "p"})):
        with pytest.raises(ValueError):
            LegacyCredential.parse(bad)


def test_order_dates_statuses_and_the_modified_stand_in() -> None:
    assert lp._date({"year": 2017, "month": 3, "day": 4, "hour": 5, "minute": 6, "second": 7}) == datetime(
        2017, 3, 4, 5, 6, 7, tzinfo=UTC
    )
    assert lp._date("2021-04-09T12:01:26Z") == datetime(2021, 4, 9, 12, 1, 26, tzinfo=UTC)
    assert lp._date(None) is None and lp._date({"year": "x"}) is None and lp._date("yesterday") is None
    assert lp._status("Completed") == "succeeded" and lp._status("failed qc") == "failed qc"
    running, done = lp._summary("7", "S7", {"status": "running"}), lp._summary("7", "S7", {"status": "succeeded"})
    assert running.modified != done.modified  # a status change is a change the loop notices
    assert lp._summary("7", "S7", {"status": "running"}).modified == running.modified  # and only that
    assert running.status_time is None and running.archive_status == "available" and done.downloadable


def _config(tmp_path: Path, host: str = "https://api.gencove.com") -> Config:
    return Config(file=tmp_path / "t.toml", gencove=GencoveConfig(host=host),
                  download=DownloadConfig(destination=tmp_path / "m"))  # fmt: skip


def test_the_factory_picks_the_generation_host_and_checks_the_entry(tmp_path: Path) -> None:
    apps = make_platform(ProjectSource(id="42", api="legacy-apps"), _config(tmp_path), "k" * 36)
    assert apps.source == f"legacy-apps:{LEGACY_HOST}:42" and apps.project_id == "42"
    assert not apps.capabilities.has_checksums and not apps.capabilities.supports_restore
    projects = make_platform(ProjectSource(id="7", api="legacy-projects"), _config(tmp_path, "http://127.0.0.1:9"), "k")
    assert projects.source == "legacy-projects:http://127.0.0.1:9:7"
    own = make_platform(ProjectSource(id="7", api="legacy-projects", host="http://h:1/x"), _config(tmp_path), "k")
    assert own.source == "legacy-projects:http://h:1:7"
    with pytest.raises(ConfigError, match="integers"):
        make_platform(ProjectSource(id="abc", api="legacy-projects"), _config(tmp_path), "k")
    with pytest.raises(ConfigError, match="api_key_file"):
        make_platform(ProjectSource(id="7", api="legacy-apps"), _config(tmp_path), "{oops")


async def test_traits_are_not_written_while_the_destination_lacks_its_marker(tmp_path: Path) -> None:
    from transferd.mirror.confined import DestinationDown

    writer = TraitsWriter(tmp_path, "{client_id}/{gencove_id}/{default_filename}", marker=".transferd-destination")
    with pytest.raises(DestinationDown, match=r"\.transferd-destination is missing"):
        await writer.write("C1", "7", {"gencove_id": "7"})
    assert os.listdir(tmp_path) == []  # not even a folder on the bare mount point
    (tmp_path / ".transferd-destination").touch()
    assert await writer.write("C1", "7", {"gencove_id": "7"}) == tmp_path / "C1" / "7" / "7_traits.json"
