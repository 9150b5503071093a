"""The gzip end-of-stream check: never call a truncated file whole."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from transferd.discovery.gzipcheck import check_gzip_file, check_stream, check_tail, is_bgzf_header


def _random_fastq(reads: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    return b"".join(
        b"@r%d\n%s\n+\n%s\n" % (i, bytes(rnd.choice(b"ACGT") for _ in range(80)), b"F" * 80) for i in range(reads)
    )


@pytest.fixture(scope="module")
def big_member() -> bytes:
    """One gzip member much larger than the small windows used below."""
    return gzip.compress(_random_fastq(3000), mtime=0)


def test_good_files(tmp_path: Path, files, big_member: bytes) -> None:
    small = gzip.compress(b"@a\nACGT\n+\nIIII\n", mtime=0)
    cases = {
        "single.gz": big_member,
        "multi.gz": big_member + small + big_member,  # cat a.gz b.gz: valid multi-member gzip
        "bgzf.gz": files.bgzf_compress(_random_fastq(2000)),
        "bgzf_cat.gz": files.bgzf_compress(b"@x\nA\n+\nI\n") * 2,  # interior EOF block is fine
        "gzip_then_bgzf.gz": small + files.bgzf_compress(b"@x\nA\n+\nI\n"),
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        for window in (1 << 20, 4096, 64):
            assert check_gzip_file(tmp_path / name, window=window) is None, (name, window)


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda b: b[:-7], "truncated"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b + b[: len(b) // 3], "truncated"),  # second member cut short
        (lambda b: b + b"\x00\x00\x00", "trailing garbage"),
        (lambda b: b[:-8] + b"\x00\x00\x00\x00" + b[-4:], "incorrect data check"),  # bad CRC32
        (lambda b: b[:-4] + b"\x01\x00\x00\x00", "incorrect length check"),  # bad ISIZE
        (lambda b: b"", "empty file"),
        (lambda b: b"@read\nACGT\n+\nIIII\n", "not gzip"),
    ],
    ids=["cut-trailer", "cut-half", "cut-2nd-member", "garbage", "crc", "isize", "empty", "plain"],
)
@pytest.mark.parametrize("window", [1 << 20, 4096])
def test_bad_files(tmp_path: Path, big_member: bytes, mutate, expect: str, window: int) -> None:
    path = tmp_path / "x.fastq.gz"
    path.write_bytes(mutate(big_member))
    problem = check_gzip_file(path, window=window)
    assert problem is not None and expect in problem


def test_bgzf_needs_eof_block(tmp_path: Path, files) -> None:
    whole = files.bgzf_compress(_random_fastq(2000))
    assert is_bgzf_header(whole[:64])
    path = tmp_path / "x.fastq.bgz"
    path.write_bytes(whole[:-28])  # cut exactly at a block boundary: every block is valid, EOF block missing
    problem = check_gzip_file(path)
    assert problem is not None and "EOF block" in problem


def test_tail_decides_without_a_full_read(big_member: bytes) -> None:
    # The last member starts inside the window: decided from the tail alone.
    assert check_tail((b"x" * 100) + big_member) == (True, None)
    # A CRC-verified member followed by a cut one: decided "broken" from the tail alone.
    decided, problem = check_tail(big_member + big_member[:100])
    assert decided is False and problem and "truncated" in problem
    # Only the middle of a huge member: undecided -> the caller does a full check.
    assert check_tail(big_member[len(big_member) // 2 :]) == (None, None)


def test_stream_check_in_small_chunks(big_member: bytes) -> None:
    data = big_member + big_member
    chunks = [data[i : i + 333] for i in range(0, len(data), 333)]
    assert check_stream(chunks) is None
    assert check_stream(chunks[:-1]) is not None
