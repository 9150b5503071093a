"""Synthetic sequencer output for the demo and the soak: real gzip FASTQ files in real run-folder layouts.

Files are written the way instruments write them: FASTQs first, the completion marker last, so a watcher
never sees a complete-looking run with missing files.
"""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass
from pathlib import Path

_BASES = bytes.maketrans(bytes(range(256)), b"ACGT" * 64)
_QUALS = bytes.maketrans(bytes(range(256)), bytes(33 + (i % 41) for i in range(256)))


def fastq_records(reads: int, seed: int, read_length: int = 100) -> bytes:
    rng = random.Random(seed)
    out = []
    for i in range(reads):
        seq = rng.randbytes(read_length).translate(_BASES)
        qual = rng.randbytes(read_length).translate(_QUALS)
        out.append(b"@SYN:%d:%d 1:N:0\n%s\n+\n%s\n" % (seed, i, seq, qual))
    return b"".join(out)


def write_fastq_gz(
    path: Path, reads: int = 1000, seed: int = 0, compresslevel: int = 1, read_length: int = 100
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(fastq_records(reads, seed, read_length), compresslevel=compresslevel, mtime=0)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)  # appear whole, as a copy tool with a temp name would
    return path


@dataclass(frozen=True, slots=True)
class SyntheticSample:
    name: str  # Illumina sample name (may contain "_")
    r1: tuple[Path, ...]
    r2: tuple[Path, ...]


def make_bclconvert_run(
    root: Path,
    run_name: str,
    samples: list[str],
    lanes: int = 2,
    reads: int = 1000,
    seed: int = 0,
    undetermined: bool = True,
    complete: bool = True,
) -> list[SyntheticSample]:
    """A BCL Convert output folder: `<sample>_S<n>_L00<l>_R<r>_001.fastq.gz`, then `Logs/FastqComplete.txt`."""
    run = root / run_name
    made: list[SyntheticSample] = []
    for s_num, name in enumerate(samples, start=1):
        reads_of: dict[int, list[Path]] = {1: [], 2: []}
        for lane in range(1, lanes + 1):
            for r in (1, 2):
                p = run / f"{name}_S{s_num}_L{lane:03d}_R{r}_001.fastq.gz"
                write_fastq_gz(p, reads, seed=hash((seed, s_num, lane, r)) & 0xFFFFFFFF)
                reads_of[r].append(p)
        made.append(SyntheticSample(name, tuple(reads_of[1]), tuple(reads_of[2])))
    if undetermined:
        for lane in range(1, lanes + 1):
            for r in (1, 2):
                write_fastq_gz(run / f"Undetermined_S0_L{lane:03d}_R{r}_001.fastq.gz", reads // 10, seed=lane * 10 + r)
    (run / "Reports").mkdir(parents=True, exist_ok=True)
    (run / "Reports" / "Demultiplex_Stats.csv").write_text("Lane,SampleID\n")
    if complete:
        mark_complete(run)
    return made


def mark_complete(run: Path) -> None:
    (run / "Logs").mkdir(parents=True, exist_ok=True)
    (run / "Logs" / "FastqComplete.txt").write_text("done\n")


def make_manifest_drop(
    root: Path, folder: str, samples: dict[str, int], reads: int = 1000, seed: int = 100
) -> list[SyntheticSample]:
    """A manual drop described by a Gencove `.fastq-map.csv`: client_id -> number of chunks per read."""
    drop = root / folder
    rows = ["client_id,r_notation,path"]
    made = []
    for i, (client_id, chunks) in enumerate(samples.items()):
        reads_of: dict[str, list[Path]] = {"R1": [], "R2": []}
        for c in range(chunks):
            for r in ("R1", "R2"):
                rel = Path("fastq") / f"{client_id.lower()}-part{c + 1}-{r.lower()}.fq.gz"
                write_fastq_gz(drop / rel, reads, seed=seed + i * 100 + c * 10 + (r == "R2"))
                reads_of[r].append(drop / rel)
                rows.append(f"{client_id},{r},{rel}")
        made.append(SyntheticSample(client_id, tuple(reads_of["R1"]), tuple(reads_of["R2"])))
    (drop / "samples.fastq-map.csv").write_text("\n".join(rows) + "\n")
    return made
