"""Table-driven: real-world FASTQ names, parsed from the right."""

from __future__ import annotations

import pytest

from transferd.discovery.naming import client_id_for, looks_like_fastq, parse_fastq_name

# name -> (sample, S number, lane, read, chunk, compression, convention)
PARSED = [
    # bcl2fastq / BCL Convert / DRAGEN
    ("NA12878_S1_L001_R1_001.fastq.gz", ("NA12878", 1, 1, "R1", 1, "gz", "illumina")),
    ("NA12878_S1_L001_R2_001.fastq.gz", ("NA12878", 1, 1, "R2", 1, "gz", "illumina")),
    ("my_sample_R1_x_S12_L002_R1_001.fastq.gz", ("my_sample_R1_x", 12, 2, "R1", 1, "gz", "illumina")),
    ("tumor_L001_S3_L001_R2_001.fastq.gz", ("tumor_L001", 3, 1, "R2", 1, "gz", "illumina")),
    ("S1_S1_L001_R1_001.fastq.gz", ("S1", 1, 1, "R1", 1, "gz", "illumina")),
    ("PT-001-A_S7_L008_R1_002.fastq.gz", ("PT-001-A", 7, 8, "R1", 2, "gz", "illumina")),
    ("sample.v2_S2_R1_001.fastq.ora", ("sample.v2", 2, None, "R1", 1, "ora", "illumina")),
    ("Undetermined_S0_R1_001.fastq.gz", ("Undetermined", 0, None, "R1", 1, "gz", "illumina")),
    ("Undetermined_S0_L004_R2_001.fastq.gz", ("Undetermined", 0, 4, "R2", 1, "gz", "illumina")),
    ("x_S5_L001_R1_001_S6_L002_R2_001.fastq.gz", ("x_S5_L001_R1_001", 6, 2, "R2", 1, "gz", "illumina")),
    ("NA10931_S12_R1_001.fastq.gz", ("NA10931", 12, None, "R1", 1, "gz", "illumina")),
    ("Sample1_S1_L001_I1_001.fastq.gz", ("Sample1", 1, 1, "I1", 1, "gz", "illumina")),
    ("Sample1_S1_L001_I2_001.fastq.gz", ("Sample1", 1, 1, "I2", 1, "gz", "illumina")),
    ("Sample1_S1_L003_R1_003.fastq.gz", ("Sample1", 1, 3, "R1", 3, "gz", "illumina")),
    ("Sample1_S1_L001_R1_001.fq.gz", ("Sample1", 1, 1, "R1", 1, "gz", "illumina")),
    ("Sample1_S1_L001_R1_001.fastq.bgz", ("Sample1", 1, 1, "R1", 1, "bgz", "illumina")),
    ("Sample1_S1_L001_R1_001.fq.bgz", ("Sample1", 1, 1, "R1", 1, "bgz", "illumina")),
    ("Sample1_S1_L001_R1_001.FASTQ.GZ", ("Sample1", 1, 1, "R1", 1, "gz", "illumina")),
    ("Sample1_S1_L001_R1_001.fastq.GZ", ("Sample1", 1, 1, "R1", 1, "gz", "illumina")),
    ("Sample1_S1_L001_R1_001.fastq", ("Sample1", 1, 1, "R1", 1, None, "illumina")),
    ("x_S1_L001_R1_001.fastq.bz2", ("x", 1, 1, "R1", 1, "bz2", "illumina")),
    ("ABC-123.rerun_S104_L002_R2_001.fastq.gz", ("ABC-123.rerun", 104, 2, "R2", 1, "gz", "illumina")),
    ("pool_S1_S12_L001_R1_001.fastq.gz", ("pool_S1", 12, 1, "R1", 1, "gz", "illumina")),
    ("a__b_S9_R2_001.fastq.gz", ("a__b", 9, None, "R2", 1, "gz", "illumina")),
    ("Sample_1_S1_L001_R1_001.fastq.gz", ("Sample_1", 1, 1, "R1", 1, "gz", "illumina")),
    ("sample_L001_R1_S2_R1_001.fastq.gz", ("sample_L001_R1", 2, None, "R1", 1, "gz", "illumina")),
    ("2023-01-01_run_S1_L001_R1_001.fastq.gz", ("2023-01-01_run", 1, 1, "R1", 1, "gz", "illumina")),
    ("Sample_S1_L001_R2_001_S3_L001_R1_001.fastq.gz", ("Sample_S1_L001_R2_001", 3, 1, "R1", 1, "gz", "illumina")),
    # CASAVA 1.8 / bcl2fastq 1.8: barcode instead of the S number
    ("X_ATCACG_L001_R1_001.fastq.gz", ("X", None, 1, "R1", 1, "gz", "casava")),
    ("lib1_ACGTACGT-TTGCAAGG_L002_R2_001.fastq.gz", ("lib1", None, 2, "R2", 1, "gz", "casava")),
    ("lib_2_NoIndex_L003_R1_002.fastq.gz", ("lib_2", None, 3, "R1", 2, "gz", "casava")),
    # Gencove's simple convention (fallback)
    ("SAMPLE_R1.fastq.gz", ("SAMPLE", None, None, "R1", 1, "gz", "simple")),
    ("SAMPLE_R2.fastq.gz", ("SAMPLE", None, None, "R2", 1, "gz", "simple")),
    ("SAMPLE_R1_L001.fastq.gz", ("SAMPLE", None, 1, "R1", 1, "gz", "simple")),
    ("SAMPLE_L002_R2_001.fastq.gz", ("SAMPLE", None, 2, "R2", 1, "gz", "simple")),
    ("my_R1_sample_R1.fastq.gz", ("my_R1_sample", None, None, "R1", 1, "gz", "simple")),
    ("SAMPLE_R1_002.fq.gz", ("SAMPLE", None, None, "R1", 2, "gz", "simple")),
    ("X_S1_R1.fastq.gz", ("X_S1", None, None, "R1", 1, "gz", "simple")),
    ("lib.v3-b_R2.FQ.BGZ", ("lib.v3-b", None, None, "R2", 1, "bgz", "simple")),
]

REJECTED = [
    "X_S1_L1_R1_001.fastq.gz",  # lane must have 3 digits
    "Sample1_S1_L01_R1_001.fastq.gz",
    "_S1_L001_R1_001.fastq.gz",  # empty sample name
    "Sample1_S1_L001_R1_1.fastq.gz",  # chunk must have 3 digits
    "NA12878_S1_L001_R1_001.fastq.gz.tmp",
    "NA12878_S1_L001_R1_001.fastq.gz.md5",
    ".NA12878_S1_L001_R1_001.fastq.gz.Xa3b9Q",  # rsync temporary
    "SAMPLE.fastq.gz",  # no read token
    "SAMPLE_1.fastq.gz",  # SRA-style
    "SAMPLE_R3_001.fastq.gz",
    "Sample1_S1_L001_R3_001.fastq.gz",
    "SampleSheet.csv",
    "Sample1_S1_L001_R1_001.bam",
]


@pytest.mark.parametrize(("name", "expected"), PARSED, ids=[n for n, _ in PARSED])
def test_parses(name: str, expected: tuple[object, ...]) -> None:
    parsed = parse_fastq_name(name)
    assert parsed is not None, name
    got = (parsed.sample, parsed.s_number, parsed.lane, parsed.read, parsed.chunk, parsed.compression)
    assert (*got, parsed.convention) == expected


@pytest.mark.parametrize("name", REJECTED)
def test_rejects(name: str) -> None:
    assert parse_fastq_name(name) is None


def test_table_is_big_enough() -> None:
    assert len(PARSED) + len(REJECTED) >= 40


def test_flags() -> None:
    und = parse_fastq_name("Undetermined_S0_L001_R1_001.fastq.gz")
    idx = parse_fastq_name("S_S1_L001_I1_001.fastq.gz")
    ora = parse_fastq_name("S_S1_L001_R1_001.fastq.ora")
    bgz = parse_fastq_name("S_S1_L001_R1_001.fastq.bgz")
    assert und and und.is_undetermined and not und.is_index
    assert idx and idx.is_index and not idx.is_undetermined
    assert ora and not ora.is_gzip
    assert bgz and bgz.is_gzip
    casava = parse_fastq_name("X_ATCACG_L001_R1_001.fastq.gz")
    assert casava and casava.barcode == "ATCACG" and casava.group_id == ("X", "ATCACG")


def test_looks_like_fastq() -> None:
    assert looks_like_fastq("weird.fastq.gz") and looks_like_fastq("a.FQ") and looks_like_fastq("x.fastq.ora")
    assert not looks_like_fastq("x.fastq.gz.tmp") and not looks_like_fastq("Stats.json")


@pytest.mark.parametrize(
    ("policy", "name", "client_id", "problem"),
    [
        ("replace", "NA12878", "NA12878", False),
        ("replace", "my_sample_R1_x", "my-sample-R1-x", False),
        ("reject", "PT-001-A", "PT-001-A", False),
        ("reject", "my_sample", "my_sample", True),
    ],
)
def test_client_id(policy: str, name: str, client_id: str, problem: bool) -> None:
    got, why = client_id_for(name, policy)
    assert got == client_id
    assert (why is not None) == problem
    if why:
        assert "'_'" in why and name in why
