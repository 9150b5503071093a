"""Download paths: tokens, filename from the signed URL, sanitising, empty segments, collisions (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferd.mirror.template import (
    DEFAULT_TEMPLATE,
    FileNaming,
    TemplateCollision,
    TemplateError,
    default_filename,
    file_extension,
    plan_sample,
    render,
    resolve_inside,
    safe_component,
    validate_template,
)

SID = "5c4e0f1a-0000-4000-8000-000000000001"


def naming(client_id: str = "S1", file_type: str = "fastq-r1", filename: str = f"{SID}_R1.fastq.gz") -> FileNaming:
    return FileNaming(client_id=client_id, gencove_id=SID, file_type=file_type, default_filename=filename)


def test_default_template_is_gencoves() -> None:
    assert render(DEFAULT_TEMPLATE, naming()) == f"S1/{SID}/{SID}_R1.fastq.gz"


def test_every_token() -> None:
    t = "{client_id}-{gencove_id}/{file_type}/x.{file_extension}/{default_filename}"
    assert render(t, naming()) == f"S1-{SID}/fastq-r1/x.fastq.gz/{SID}_R1.fastq.gz"


RCD = "https://s3/b/k?X-Amz=1&response-content-disposition=attachment%3B%20"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (RCD + "filename%3DABC_R1.fastq.gz", "ABC_R1.fastq.gz"),  # the real shape: unquoted, percent-encoded
        (RCD + "filename%3D%22q%20r.vcf.gz%22", "q r.vcf.gz"),
        (RCD + "filename%2A%3DUTF-8%27%27caf%C3%A9.bam", "café.bam"),
        (RCD + "filename%3Da.bam%3B%20size%3D1", "a.bam"),
        ("https://s3.example/bucket/path/to/obj%20name.vcf.gz?sig=1", "obj name.vcf.gz"),  # fallback: last segment
        ("https://s3/b/k.tbi?response-content-disposition=inline", "k.tbi"),
    ],
)
def test_default_filename(url: str, expected: str) -> None:
    assert default_filename(url) == expected


@pytest.mark.parametrize(
    ("name", "ext"),
    [("a.fastq.gz", "fastq.gz"), ("x_R1.fastq.gz", "fastq.gz"), ("noext", ""), ("v.vcf.gz.tbi", "vcf.gz.tbi")],
)
def test_file_extension_is_after_the_first_dot(name: str, ext: str) -> None:
    assert file_extension(name) == ext


@pytest.mark.parametrize(
    ("client_id", "first"),
    [
        ("../../etc", ".._.._etc"),
        ("/etc/passwd", "_etc_passwd"),
        ("..", "__"),
        (".", "_"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("bad\x00name\n", "bad_name_"),
    ],
)
def test_client_id_cannot_nest_or_climb(client_id: str, first: str, tmp_path: Path) -> None:
    rel = render(DEFAULT_TEMPLATE, naming(client_id=client_id))
    assert rel.split("/")[0] == first
    assert resolve_inside(tmp_path, rel).is_relative_to(tmp_path)


def test_hostile_filename_is_one_component() -> None:
    assert render("{default_filename}", naming(filename="../../x")) == ".._.._x"
    assert safe_component("..") == "__"


def test_empty_segments_are_dropped() -> None:
    assert render(DEFAULT_TEMPLATE, naming(client_id="")) == f"{SID}/{SID}_R1.fastq.gz"
    assert render("/{client_id}//./{file_type}/", naming(client_id="")) == "fastq-r1"  # absolute becomes relative


def test_template_that_leaves_nothing_is_an_error() -> None:
    with pytest.raises(TemplateError):
        render("{client_id}", naming(client_id=""))


def test_resolve_inside_refuses_escape(tmp_path: Path) -> None:
    with pytest.raises(TemplateError):
        resolve_inside(tmp_path, "../x")
    with pytest.raises(TemplateError):
        resolve_inside(tmp_path, "")


def test_validate_template() -> None:
    validate_template(DEFAULT_TEMPLATE)
    validate_template("{client_id}/{file_type}.{file_extension}")
    for bad in ("{nope}/{default_filename}", "{client_id}", "../{default_filename}", "{client_id"):
        with pytest.raises(TemplateError):
            validate_template(bad)


def test_collision_in_one_sample_names_both_files() -> None:
    files = [("f1", naming(file_type="fastq-r1")), ("f2", naming(file_type="fastq-r2"))]
    with pytest.raises(TemplateCollision, match=r"f1 \(fastq-r1\) and f2 \(fastq-r2\)"):
        plan_sample("{client_id}/{file_extension}", files)
    plan = plan_sample("{client_id}/{file_type}.{file_extension}", files)
    assert plan == {"f1": "S1/fastq-r1.fastq.gz", "f2": "S1/fastq-r2.fastq.gz"}
