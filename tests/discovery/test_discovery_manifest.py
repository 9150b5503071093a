"""``*.fastq-map.csv``: every bad row reported at once with its line number; a bad manifest uploads nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferd.discovery.manifest import ManifestError, load_manifest, parse_manifest
from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.scanner import scan_paths


def test_good_manifest_concatenates_in_row_order(tmp_path: Path, files) -> None:
    a2 = files.write_fastq(tmp_path / "fq" / "a_L002_R1.fastq.gz")
    a1 = files.write_fastq(tmp_path / "fq" / "a_L001_R1.fastq.gz")
    b1 = files.write_fastq(tmp_path / "fq" / "a_L001_R2.FASTQ.BGZ", "bgzf")
    elsewhere = files.write_fastq(tmp_path.parent / f"{tmp_path.name}-abs" / "abs_R2.fq.gz")
    text = (
        "\ufeffClient_ID , R_Notation , Path\n"  # BOM, case and spaces in the header are tolerated
        "\n"
        "smp-1,R1,fq/a_L002_R1.fastq.gz\n"
        "smp-1,r1,./fq/a_L001_R1.fastq.gz\n"
        "smp-1,R2,fq/a_L001_R2.FASTQ.BGZ\n"
        f"smp-1,R2,{elsewhere}\n"
    )
    path = files.touch(tmp_path / "x.fastq-map.csv", text)
    manifest = load_manifest(path).raise_if_bad()
    samples = manifest.samples()
    assert list(samples) == ["smp-1"]
    assert [r.path for r in samples["smp-1"]["R1"]] == [a2, a1]
    assert [r.path for r in samples["smp-1"]["R2"]] == [b1, elsewhere]
    assert [r.line for r in manifest.rows] == [3, 4, 5, 6]


def test_every_bad_row_is_reported_with_its_line(tmp_path: Path, files) -> None:
    for name in ("ok_R1.fastq.gz", "ok_R2.fastq.gz", "dup_R1.fastq.gz", "a.fastq", "solo_R1.fastq.gz"):
        files.write_fastq(tmp_path / name)
    text = "\n".join(
        [
            "client_id,r_notation,path",  # 1
            "good,R1,ok_R1.fastq.gz",  # 2
            "good,R2,ok_R2.fastq.gz",  # 3
            "bad_id,R1,dup_R1.fastq.gz",  # 4: '_' in client_id
            "x,R3,dup_R1.fastq.gz",  # 5: bad r_notation, and duplicate of line 4
            "y,R1,missing_R1.fastq.gz",  # 6: missing file
            "z,R1,a.fastq",  # 7: bad ending
            "w,R1",  # 8: wrong column count
            ",R1,ok_R1.fastq.gz",  # 9: empty client_id, duplicate of line 2
            "u,R1,https://example.org/u_R1.fastq.gz",  # 10: URL
            "v,R2,solo_R1.fastq.gz",  # 11: R2 without R1
        ]
    )
    path = files.touch(tmp_path / "bad.fastq-map.csv", text + "\n")
    manifest = load_manifest(path)
    assert not manifest.ok
    by_line: dict[int, list[str]] = {}
    for problem in manifest.errors:
        assert problem.startswith(f"{path}:")
        line = int(problem[len(str(path)) + 1 :].split(":", 1)[0])
        by_line.setdefault(line, []).append(problem)
    assert any("'_'" in p for p in by_line[4])
    assert any("r_notation" in p for p in by_line[5]) and any("duplicate" in p and "line 4" in p for p in by_line[5])
    assert any("not found" in p for p in by_line[6])
    assert any("ending" in p for p in by_line[7])
    assert any("3 columns" in p for p in by_line[8])
    assert any("empty client_id" in p for p in by_line[9]) and any("line 2" in p for p in by_line[9])
    assert any("URL" in p for p in by_line[10])
    assert any("no R1" in p for p in by_line[11])
    assert 1 not in by_line and 2 not in by_line and 3 not in by_line
    with pytest.raises(ManifestError) as err:
        manifest.raise_if_bad()
    assert len(err.value.problems) == len(manifest.errors) >= 10

    # Scanned: nothing in it is ready, not even the good sample, and every error is listed.
    [run] = scan_paths([path], DiscoveryRules(settle_seconds=0), now=None)
    assert run.samples and not any(s.ready for s in run.samples)
    assert set(manifest.errors) <= set(run.problems)
    good = next(s for s in run.samples if s.client_id == "good")
    assert any("error(s)" in p for p in good.problems)


def test_bad_header_and_missing_mate(tmp_path: Path, files) -> None:
    files.write_fastq(tmp_path / "a_R1.fastq.gz")
    text = "path,client_id,r_notation\na,R1,a_R1.fastq.gz\n"  # reordered header: positional columns
    m = parse_manifest(text, tmp_path / "m.fastq-map.csv", is_file=lambda p: p.exists())
    assert m.errors[0].endswith("expected 'client_id,r_notation,path'") and ":1:" in m.errors[0]
    assert any(":2:" in e and "no R2 row" in e for e in m.errors)
    single = parse_manifest(
        text.replace("path,client_id,r_notation", "client_id,r_notation,path"),
        tmp_path / "m.fastq-map.csv",
        is_file=lambda p: p.exists(),
        single_end=True,
    )
    assert single.ok


def test_empty_and_unreadable(tmp_path: Path, files) -> None:
    empty = files.touch(tmp_path / "e.fastq-map.csv", "")
    assert ":1: empty manifest" in load_manifest(empty).errors[0]
    binary = tmp_path / "b.fastq-map.csv"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert "cannot read manifest" in load_manifest(binary).errors[0]


def test_a_line_the_csv_module_refuses_is_a_problem_of_that_line(tmp_path: Path, files) -> None:
    """A field over the csv module's size limit (a corrupt or hostile manifest) names its line; the scan of the root
    goes on (it used to escape as `_csv.Error` and fail every scan of the root)."""
    files.write_fastq(tmp_path / "ok_R1.fastq.gz")
    files.write_fastq(tmp_path / "ok_R2.fastq.gz")
    huge = "x" * (200 * 1024)
    text = f'client_id,r_notation,path\nok,R1,ok_R1.fastq.gz\n"{huge}",R1,a_R1.fastq.gz\nok,R2,ok_R2.fastq.gz\n'
    path = files.touch(tmp_path / "huge.fastq-map.csv", text)
    manifest = load_manifest(path)
    assert [e for e in manifest.errors if e.startswith(f"{path}:3: not a CSV line: field larger than field limit")]
    runs = scan_paths([tmp_path], DiscoveryRules())
    assert runs and any("huge.fastq-map.csv:3" in p for r in runs for p in r.problems)
