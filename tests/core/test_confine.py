"""Upload sources stay inside their watch root (real paths: symlinks and manifest rows that leave it are a
per-sample problem naming the path), and a gzip whose first record is not FASTQ is a problem, not an upload."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

from helpers import make_fastq_gz

from transferd.discovery.confine import SourceGuard, first_record_problem
from transferd.discovery.models import Run
from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.scanner import scan_root

RULES = DiscoveryRules(settle_seconds=0, completion="quiet", quiet_seconds=0)


def _scan(root: Path) -> list[Run]:
    return scan_root(root, RULES, time.time() + 5)


def _samples(runs: list[Run]) -> dict[str, tuple[bool, tuple[str, ...]]]:
    return {s.client_id: (s.ready, s.problems) for r in runs for s in r.samples}


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    run = root / "RUN1"
    for read in ("R1", "R2"):
        make_fastq_gz(run / f"GOOD_S1_L001_{read}_001.fastq.gz", reads=20)
        make_fastq_gz(elsewhere / f"x_{read}.fastq.gz", reads=20, seed=3)
        (run / f"LINKED_S2_L001_{read}_001.fastq.gz").symlink_to(elsewhere / f"x_{read}.fastq.gz")
        with gzip.open(run / f"TEXT_S3_L001_{read}_001.fastq.gz", "wb") as f:
            f.write(b"root:x:0:0:root:/root:/bin/bash\n" * 10)  # a whole gzip, but not FASTQ
    manifest = root / "EXTRA.fastq-map.csv"
    manifest.write_text(
        "client_id,r_notation,path\n"
        f"M1,r1,{elsewhere / 'x_R1.fastq.gz'}\nM1,r2,{elsewhere / 'x_R2.fastq.gz'}\n"
        f"M2,r1,{run / 'GOOD_S1_L001_R1_001.fastq.gz'}\nM2,r2,{run / 'GOOD_S1_L001_R2_001.fastq.gz'}\n"
    )
    return root, elsewhere


def test_sources_leaving_the_root_and_non_fastq_gzips_are_sample_problems(tmp_path: Path) -> None:
    root, elsewhere = _layout(tmp_path)
    runs = _scan(root)
    before = _samples(runs)
    assert all(ready for ready, _ in before.values()), before  # discovery alone would upload them all
    after = _samples(SourceGuard(root).check(runs))
    assert after["GOOD"] == (True, ()) and after["M2"] == (True, ())  # inside the root: untouched
    for linked in ("LINKED", "M1"):  # a symlink and a manifest row that lead out of the root
        ready, problems = after[linked]
        assert not ready and len(problems) == 2
        for read, problem in zip(("R1", "R2"), problems, strict=True):
            assert f"resolves to {elsewhere / f'x_{read}.fastq.gz'}, outside the watch root {root}" in problem
            assert "allow_outside_root = true" in problem
    ready, problems = after["TEXT"]
    assert not ready and len(problems) == 2
    assert all("TEXT_S3_L001_" in p and "not FASTQ: the first line does not start with '@'" in p for p in problems)


def test_allow_outside_root_lets_linked_files_through_but_still_reads_them(tmp_path: Path) -> None:
    root, _ = _layout(tmp_path)
    after = _samples(SourceGuard(root, allow_outside_root=True).check(_scan(root)))
    assert after["LINKED"] == (True, ()) and after["M1"] == (True, ())
    assert not after["TEXT"][0]  # the content check does not depend on the opt-in


def test_a_root_that_is_itself_a_symlink_is_judged_by_its_real_path(tmp_path: Path) -> None:
    real = tmp_path / "real"
    make_fastq_gz(real / "RUN1" / "A_S1_L001_R1_001.fastq.gz")
    make_fastq_gz(real / "RUN1" / "A_S1_L001_R2_001.fastq.gz")
    (tmp_path / "link").symlink_to(real)
    after = _samples(SourceGuard(tmp_path / "link").check(_scan(tmp_path / "link")))
    assert after["A"] == (True, ())


def test_first_record_checks(tmp_path: Path) -> None:
    def gz(name: str, data: bytes) -> Path:
        path = tmp_path / name
        with gzip.open(path, "wb") as f:
            f.write(data)
        return path

    assert first_record_problem(make_fastq_gz(tmp_path / "ok.fastq.gz")) is None
    assert first_record_problem(gz("crlf.fastq.gz", b"@r1\r\nACGTN\r\n+\r\nIIIII\r\n")) is None
    assert first_record_problem(gz("trimmed.fastq.gz", b"@r1\n\n+\n\n@r2\nAC\n+\nII\n")) is None
    long_read = b"@r1\n" + b"ACGT" * 100_000 + b"\n+\n"  # a long read past the window: judged on what was read
    assert first_record_problem(gz("long.fastq.gz", long_read)) is None
    cases = {
        b"": "holds no reads",
        b"@r1\nACGT\n+\nIII\n": "4 bases but 3 quality values",
        b"@r1\nACGT\n-\nIIII\n": "third line does not start with '+'",
        b"@r1\n{\"json\": 1}\n+\nIIII\n": "second line is not a sequence",
        b"@r1\nACGT\n": "ends inside the first record",
        b">r1\nACGT\n": "first line does not start with '@'",
    }
    for i, (data, why) in enumerate(cases.items()):
        problem = first_record_problem(gz(f"bad{i}.fastq.gz", data))
        assert problem is not None and why in problem and f"bad{i}.fastq.gz: not FASTQ" in problem, (data, problem)
    plain = tmp_path / "plain.fastq.gz"
    plain.write_bytes(b"@r1\nACGT\n+\nIIII\n")
    assert first_record_problem(plain) is None  # not gzip at all: the gzip check's verdict, not ours


def test_files_already_recorded_for_upload_are_not_read_again(tmp_path: Path) -> None:
    root, _ = _layout(tmp_path)
    runs = _scan(root)
    trusted = frozenset(f.fingerprint() for r in runs for s in r.samples if s.client_id == "TEXT" for f in s.r1)
    after = _samples(SourceGuard(root, trusted=trusted).check(runs))
    ready, problems = after["TEXT"]  # R1 is trusted (its sample is in the journal already); R2 is still read
    assert not ready and len(problems) == 1 and "TEXT_S3_L001_R2_001" in problems[0]
