"""A synthetic sequencer run of real gzip FASTQs: 8 samples x 4 lanes x R1/R2 by default (low-pass: hundreds of
samples x 1 lane), Illumina names, any total size.

Fast to build at any size: a handful of gzip members of realistic, varied records (NovaSeq-style headers, 151 bp,
binned qualities) are compressed once, then each file is a run of whole members (gzip members concatenate into one
valid multi-member gzip stream), in a file-specific order. Files are therefore valid FASTQ when decompressed and do
not compress further (S3 servers don't dedupe). The run is cached under the work directory, keyed by its manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLES = 8
LANES = 4
READS = ("R1", "R2")
READ_LENGTH = 151
MEMBERS = 8  # distinct gzip members per run
MEMBER_PLAIN_BYTES = 1_500_000  # uncompressed FASTQ per member (~0.45 MB compressed)
MANIFEST = "bench-manifest.json"
FORMAT_VERSION = 2
COMPLETION_MARKERS = ("RTAComplete.txt", "CopyComplete.txt")

# NovaSeq-style binned qualities, weighted towards the top bin.
_QUALITY_TABLE = b"F" * 200 + b":" * 32 + b"," * 18 + b"#" * 6
_BASE_TABLE = b"ACGT" * 63 + b"NNNN"


@dataclass(frozen=True, slots=True)
class FastqFile:
    path: Path
    sample: str
    lane: int
    read: str
    size: int
    md5: str  # hex, of the file's bytes (S3's ETag of a single-part object)


@dataclass(frozen=True, slots=True)
class SyntheticRun:
    root: Path
    files: tuple[FastqFile, ...]
    concatenated_md5: dict[str, str]  # "SAMPLE/R1" -> md5 hex of the sample's lanes of R1, in lane order

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def samples(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.sample for f in self.files))

    def lanes_of(self, sample: str, read: str) -> list[FastqFile]:
        """The lane files of one sample's read, in lane order (the concatenation order)."""
        return sorted((f for f in self.files if f.sample == sample and f.read == read), key=lambda f: f.lane)


def sample_name(index: int) -> str:
    return f"BENCH{index:02d}"  # no "_": the gencove map file forbids it in client ids


def file_name(sample_index: int, lane: int, read: str) -> str:
    return f"{sample_name(sample_index)}_S{sample_index}_L{lane:03d}_{read}_001.fastq.gz"


def fastq_records(seed: int, plain_bytes: int, lane: int = 1) -> bytes:
    """Uncompressed FASTQ text of about `plain_bytes`, deterministic in `seed`."""
    rng = random.Random(seed)
    out: list[bytes] = []
    size = 0
    tile = 1101 + seed % 50
    while size < plain_bytes:
        seq = rng.randbytes(READ_LENGTH).translate(_BASE_TABLE)
        qual = rng.randbytes(READ_LENGTH).translate(_QUALITY_TABLE)
        x, y = rng.randrange(1000, 32000), rng.randrange(1000, 37000)
        index = rng.randbytes(8).translate(_BASE_TABLE).replace(b"N", b"A")
        head = b"@A00953:%d:HBENCHDSX:%d:%d:%d:%d 1:N:0:%s" % (seed, lane, tile, x, y, index)
        record = b"%s\n%s\n+\n%s\n" % (head, seq, qual)
        out.append(record)
        size += len(record)
    return b"".join(out)


def gzip_members(count: int = MEMBERS, plain_bytes: int = MEMBER_PLAIN_BYTES, seed: int = 0) -> list[bytes]:
    """`count` distinct gzip members of varied records (mtime 0, so the output is reproducible)."""
    return [gzip.compress(fastq_records(seed * 1000 + i, plain_bytes), compresslevel=6, mtime=0) for i in range(count)]


def _member_order(members: list[bytes], file_index: int) -> Iterator[bytes]:
    """An endless, file-specific sequence of members (rotated and shuffled per pass)."""
    rng = random.Random(file_index)
    order = list(range(len(members)))
    while True:
        rng.shuffle(order)
        for i in order:
            yield members[i]


def write_fastq(
    path: Path, members: list[bytes], file_index: int, target_bytes: int, also: Any = None
) -> tuple[int, str]:
    """Write whole members until the file reaches `target_bytes` (at least one member); (size, md5 hex).
    `also` (a hashlib object), when given, is fed the same bytes."""
    size = 0
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "wb") as fh:
        for member in _member_order(members, file_index):
            fh.write(member)
            md5.update(member)
            if also is not None:
                also.update(member)
            size += len(member)
            if size >= target_bytes:
                break
    return size, md5.hexdigest()


def _manifest_key(total_bytes: int, seed: int, member_plain_bytes: int, samples: int, lanes: int) -> dict[str, int]:
    return {
        "format": FORMAT_VERSION,
        "target_bytes": total_bytes,
        "seed": seed,
        "samples": samples,
        "lanes": lanes,
        "member_plain_bytes": member_plain_bytes,
    }


def _load_cached(root: Path, key: dict[str, int]) -> SyntheticRun | None:
    manifest = root / MANIFEST
    if not manifest.exists():
        return None
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("key") != key:
        return None
    files = tuple(
        FastqFile(
            path=root / f["name"], sample=f["sample"], lane=f["lane"], read=f["read"], size=f["size"], md5=f["md5"]
        )
        for f in doc["files"]
    )
    if not all(f.path.exists() and f.path.stat().st_size == f.size for f in files):
        return None
    return SyntheticRun(root=root, files=files, concatenated_md5=dict(doc["concatenated_md5"]))


def ensure_run(
    root: Path,
    total_bytes: int,
    seed: int = 1,
    member_plain_bytes: int = MEMBER_PLAIN_BYTES,
    samples: int = SAMPLES,
    lanes: int = LANES,
) -> SyntheticRun:
    """Build (or reuse) a run of `samples` x `lanes` x R1/R2 gzip FASTQs totalling at least `total_bytes`.

    Each file overshoots its share by less than one gzip member (~0.45 MB by default)."""
    key = _manifest_key(total_bytes, seed, member_plain_bytes, samples, lanes)
    cached = _load_cached(root, key)
    if cached is not None:
        return cached
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.fastq.gz"):
        stale.unlink()
    (root / MANIFEST).unlink(missing_ok=True)
    members = gzip_members(seed=seed, plain_bytes=member_plain_bytes)
    per_file = max(1, total_bytes // (samples * lanes * len(READS)))
    files: list[FastqFile] = []
    concatenated: dict[str, str] = {}
    index = 0
    for s in range(1, samples + 1):
        joined = {read: hashlib.md5(usedforsecurity=False) for read in READS}  # lanes are written in order
        for lane in range(1, lanes + 1):
            for read in READS:
                path = root / file_name(s, lane, read)
                size, md5 = write_fastq(path, members, seed * 10_000 + index, per_file, also=joined[read])
                files.append(FastqFile(path=path, sample=sample_name(s), lane=lane, read=read, size=size, md5=md5))
                index += 1
        concatenated.update({f"{sample_name(s)}/{read}": h.hexdigest() for read, h in joined.items()})
    for marker in COMPLETION_MARKERS:
        (root / marker).write_text("bench\n")
    doc = {
        "key": key,
        "files": [
            {"name": f.path.name, "sample": f.sample, "lane": f.lane, "read": f.read, "size": f.size, "md5": f.md5}
            for f in files
        ],
        "concatenated_md5": concatenated,
    }
    (root / (MANIFEST + ".tmp")).write_text(json.dumps(doc, indent=1))
    os.replace(root / (MANIFEST + ".tmp"), root / MANIFEST)
    return SyntheticRun(root=root, files=tuple(files), concatenated_md5=concatenated)


def lowpass_member_plain_bytes(file_bytes: int) -> int:
    """Gzip members small enough that a low-pass file of `file_bytes` holds a few of them (compression ~3.3x),
    so files stay close to the requested size and still vary."""
    return max(4_000, min(MEMBER_PLAIN_BYTES, file_bytes * 3 // 4))


def ensure_lowpass_run(root: Path, samples: int, file_bytes: int, seed: int = 2) -> SyntheticRun:
    """A low-pass run: `samples` x 1 lane x R1/R2, each file about `file_bytes`."""
    total = samples * len(READS) * file_bytes
    return ensure_run(
        root, total, seed=seed, member_plain_bytes=lowpass_member_plain_bytes(file_bytes), samples=samples, lanes=1
    )


def warm_page_cache(run: SyntheticRun, chunk: int = 8 * 1024 * 1024) -> None:
    """Read every file once so each contender starts from the same (warm) page cache."""
    buf = bytearray(chunk)
    for f in run.files:
        with open(f.path, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
