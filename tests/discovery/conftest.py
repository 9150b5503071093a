"""Builders for real (small) FASTQ files and run folders in each producer's layout."""

from __future__ import annotations

import asyncio
import gzip
import struct
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
LATER = 3600.0  # scanning "an hour from now" makes every file old enough to have settled


def fastq_text(reads: int = 4, seed: int = 0) -> bytes:
    bases = "ACGT"
    out = []
    for i in range(reads):
        seq = "".join(bases[(i * 7 + j * 3 + seed) % 4] for j in range(50))
        out.append(f"@read{seed}_{i}\n{seq}\n+\n{'I' * 50}\n")
    return "".join(out).encode()


def bgzf_compress(data: bytes, block: int = 65280) -> bytes:
    """BGZF as htslib writes it: deflate blocks with a 'BC' extra subfield, then the 28-byte EOF block."""
    out = []
    for i in range(0, max(len(data), 1), block):
        chunk = data[i : i + block]
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = comp.compress(chunk) + comp.flush()
        header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + struct.pack("<H", 6) + b"BC"
        header += struct.pack("<HH", 2, 25 + len(body))  # BSIZE = total block size - 1
        out += [header, body, struct.pack("<II", zlib.crc32(chunk), len(chunk))]
    out.append(BGZF_EOF)
    return b"".join(out)


def write_fastq(path: Path, kind: str = "gzip", reads: int = 4, seed: int = 0) -> Path:
    """kind: gzip, bgzf, truncated, bgzf-truncated, empty, plain (uncompressed), ora (fake ORA bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = fastq_text(reads, seed)
    if kind == "gzip":
        payload = gzip.compress(data, mtime=0)
    elif kind == "bgzf":
        payload = bgzf_compress(data)
    elif kind == "truncated":
        payload = gzip.compress(data, mtime=0)[:-7]
    elif kind == "bgzf-truncated":
        payload = bgzf_compress(data)[: -len(BGZF_EOF)]
    elif kind == "empty":
        payload = b""
    elif kind == "plain":
        payload = data
    elif kind == "ora":
        payload = b"ORA\x00" + data[:20]
    else:
        raise ValueError(kind)
    path.write_bytes(payload)
    return path


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def illumina_files(
    folder: Path,
    sample: str,
    s: int,
    lanes: Iterable[int | None] = (1,),
    reads: Iterable[str] = ("R1", "R2"),
    chunks: Iterable[int] = (1,),
    ext: str = "fastq.gz",
    kind: str = "gzip",
) -> list[Path]:
    out = []
    for lane in lanes:
        for read in reads:
            for chunk in chunks:
                lane_part = f"_L{lane:03d}" if lane is not None else ""
                name = f"{sample}_S{s}{lane_part}_{read}_{chunk:03d}.{ext}"
                out.append(write_fastq(folder / name, kind, seed=s + (lane or 0) + chunk))
    return out


def bcl_tree(run: Path, lanes: int = 2, cycles: int = 3, tiles: int = 3) -> None:
    """A token BCL tree; a FASTQ-named trap inside must never be seen (those folders are pruned)."""
    base = run / "Data" / "Intensities" / "BaseCalls"
    for lane in range(1, lanes + 1):
        for cycle in range(1, cycles + 1):
            for tile in range(tiles):
                touch(base / f"L{lane:03d}" / f"C{cycle}.1" / f"s_{lane}_{1101 + tile}.cbcl")
    write_fastq(base / "L001" / "C1.1" / "trap_S99_L001_R1_001.fastq.gz")
    write_fastq(base / "L001" / "trap_S98_L001_R1_001.fastq.gz")
    touch(run / "Thumbnail_Images" / "L001" / "C1.1" / "s_1_1101_a.jpg")
    touch(run / "InterOp" / "ExtractionMetricsOut.bin")


class Layouts:
    """Run folders as each producer writes them (small but real gzip FASTQs)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def novaseq6000_bcl2fastq(self, name: str = "230101_A00123_0001_AHXXXXXXX") -> Path:
        run = self.root / name
        for marker in ("RunInfo.xml", "RunParameters.xml", "RTAComplete.txt", "CopyComplete.txt"):
            touch(run / marker)
        touch(run / "Logs" / "230101_A00123_0001_Run.log")  # RTA's logs, not BCL Convert's
        bcl_tree(run)
        out = run / "Data" / "Intensities" / "BaseCalls"  # bcl2fastq's default output folder
        illumina_files(out / "ProjA" / "SampleA", "SampleA", 1, lanes=(1, 2))  # Sample_ID != Sample_Name
        illumina_files(out / "ProjA", "SampleB", 2, lanes=(1, 2))
        illumina_files(out / "ProjB", "tumor_L001", 3, lanes=(1, 2))
        illumina_files(out, "Undetermined", 0, lanes=(1, 2))
        touch(out / "Stats" / "Stats.json", "{}")
        touch(out / "Reports" / "html" / "index.html")
        return run

    def bclconvert(self, name: str = "bclconvert_out", complete: bool = True) -> Path:
        run = self.root / name
        illumina_files(run, "S1", 1, lanes=(1, 2), reads=("R1", "R2", "I1", "I2"), chunks=(1, 2))
        illumina_files(run / "ProjX", "my_sample_R1_x", 2, lanes=(1,), reads=("R1", "R2", "I1"))
        illumina_files(run, "Undetermined", 0, lanes=(1, 2))
        touch(run / "Reports" / "fastq_list.csv", "RGID,RGSM,RGLB,Lane,Read1File,Read2File\n")
        touch(run / "Logs" / "Info.log")
        if complete:
            touch(run / "Logs" / "FastqComplete.txt")
        return run

    def novaseqx(self, name: str = "20240101_LH00123_0042_A22ABCDEF", analyses: dict[int, bool] | None = None) -> Path:
        """``analyses``: analysis number -> both per-analysis markers written."""
        run = self.root / name
        for marker in ("RunInfo.xml", "RTAComplete.txt", "CopyComplete.txt"):
            touch(run / marker)
        bcl_tree(run)
        for n, done in (analyses or {1: True}).items():
            base = run / "Analysis" / str(n)
            fq = base / "Data" / "BCLConvert" / "fastq"
            illumina_files(fq, "PT-001-A", 1, lanes=(1, 2))
            illumina_files(fq, "sample.v2", 2, lanes=(1, 2))
            illumina_files(fq, "Undetermined", 0, lanes=(1,))
            touch(fq / "Reports" / "fastq_list.csv")
            if done:
                touch(base / "CopyComplete.txt")
                touch(base / "Data" / "Secondary_Analysis_Complete.txt")
        return run

    def miseq(self, name: str = "240101_M00123_0001_000000000-ABCDE") -> Path:
        run = self.root / name
        touch(run / "RunInfo.xml")
        touch(run / "RTAComplete.txt")
        touch(run / "Logs" / "RTALogs.txt")
        bcl_tree(run, lanes=1)
        calls = run / "Data" / "Intensities" / "BaseCalls"
        illumina_files(calls, "Amplicon-1", 1, lanes=(1,))
        illumina_files(calls, "Amplicon-2", 2, lanes=(1,))
        illumina_files(calls, "SingleEnd", 3, lanes=(1,), reads=("R1",))
        illumina_files(calls, "Undetermined", 0, lanes=(1,))
        return run

    def plain(self, name: str = "manual_drop") -> Path:
        run = self.root / name
        illumina_files(run, "NA10931", 12, lanes=(None,))  # --no-lane-splitting
        illumina_files(run, "NA12878", 13, lanes=(None,), chunks=(1, 2))
        write_fastq(run / "SAMPLE3_R1.fastq.gz")
        write_fastq(run / "SAMPLE3_R2.fastq.gz", "bgzf")
        return run

    def manifest_drop(self, name: str = "manifest_drop", rows: str | None = None) -> Path:
        run = self.root / name
        fq = run / "fastq"
        for lane in (1, 2):
            for read in ("R1", "R2"):
                write_fastq(fq / f"lib_7_L00{lane}_{read}.fq.gz", seed=lane)
        write_fastq(fq / "extra_S9_L001_R1_001.fastq.gz")  # not listed: must not be uploaded
        write_fastq(fq / "extra_S9_L001_R2_001.fastq.gz")
        text = rows or (
            "client_id,r_notation,path\n"
            "patient-7,R1,fastq/lib_7_L002_R1.fq.gz\n"
            "patient-7,r1,fastq/lib_7_L001_R1.fq.gz\n"
            "patient-7,R2,fastq/lib_7_L002_R2.fq.gz\n"
            "patient-7,R2,fastq/lib_7_L001_R2.fq.gz\n"
        )
        touch(run / "batch.fastq-map.csv", text)
        return run


@pytest.fixture
def layouts(tmp_path: Path) -> Layouts:
    root = tmp_path / "runs"
    root.mkdir()
    return Layouts(root)


@pytest.fixture
def later() -> float:
    return time.time() + LATER


async def _wait_for(cond: Callable[[], object], within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """``await wait_for(lambda: ..., within=..., what=...)``: poll a condition until a deadline.

    An async twin of tests/helpers.py's wait_for, which sleeps the thread and would stall the watcher's loop.
    """
    return _wait_for


class Files:
    """The file builders, for tests that need them directly (conftest modules are not imported by name)."""

    write_fastq = staticmethod(write_fastq)
    bgzf_compress = staticmethod(bgzf_compress)
    fastq_text = staticmethod(fastq_text)
    illumina_files = staticmethod(illumina_files)
    touch = staticmethod(touch)
    bcl_tree = staticmethod(bcl_tree)


@pytest.fixture
def files() -> type[Files]:
    return Files
