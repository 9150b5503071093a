"""What a watch may upload: files inside its root, whose first record is FASTQ.

Whoever can write into a watch root (a sequencer PC, a lab member) can place a symlink or a manifest row that
points anywhere the daemon can read (/etc, another lab's share, the daemon's own state). By default a source
file must resolve (symlinks followed) to a path inside the real watch root; `allow_outside_root = true` in a
`[[watch]]` is the opt-in for sites that link on purpose. And a `.fastq.gz` name does not make a FASTQ: the
first record of each file is read and checked, so a gzip of anything else is a problem, not an upload.

Both are per-sample problems naming the path (the rest of the run goes on). Verdicts are remembered per file
version, so a rescan of unchanged runs costs no reads.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from transferd.discovery.models import Run, Sample, SourceFile
from transferd.localfile import open_regular_binary

HEAD = 64 * 1024  # decompressed bytes read for the first record (a longer record is judged on its start)
_REMEMBERED = 100_000  # verdicts kept (per file version); forgotten all at once past this


class SourceGuard:
    """One per watch: `check(runs)` returns the runs with offending samples marked not ready."""

    def __init__(self, root: Path, allow_outside_root: bool = False, trusted: frozenset[int] = frozenset()) -> None:
        """``trusted``: ``SourceFile.fingerprint()`` of file versions already recorded for upload (the journal
        knows their samples, so a restart does not read every FASTQ still lying in the root again)."""
        self.root = root
        self.allow_outside_root = allow_outside_root
        self._trusted = trusted
        self._verdicts: dict[tuple[str, int, int, int, bool], str | None] = {}

    def check(self, runs: Iterable[Run]) -> list[Run]:
        real_root = os.path.realpath(self.root)
        out = []
        for run in runs:
            samples = tuple(self._sample(s, real_root) for s in run.samples)
            out.append(replace(run, samples=samples) if samples != run.samples else run)
        return out

    def _sample(self, sample: Sample, real_root: str) -> Sample:
        if not sample.ready:
            return sample  # judged again when it is: no reads for files still being written
        problems = [p for f in (*sample.r1, *sample.r2, *sample.i1, *sample.i2) if (p := self._file(f, real_root))]
        if not problems:
            return sample
        return replace(sample, ready=False, settling=False, problems=(*sample.problems, *problems))

    def _file(self, f: SourceFile, real_root: str) -> str | None:
        if self._trusted and f.fingerprint() in self._trusted:
            return None
        key = (str(f.path), f.size, f.mtime_ns, f.inode, self.allow_outside_root)
        if key not in self._verdicts:
            if len(self._verdicts) >= _REMEMBERED:
                self._verdicts.clear()
            self._verdicts[key] = outside_root(f.path, real_root, self.allow_outside_root) or first_record_problem(
                f.path
            )
        return self._verdicts[key]


def outside_root(path: Path, real_root: str, allowed: bool) -> str | None:
    """A problem when `path` resolves outside `real_root` (already resolved) and that is not allowed."""
    if allowed:
        return None
    real = os.path.realpath(path)
    if real == real_root or real.startswith(real_root.rstrip("/") + "/"):
        return None
    return (
        f"{path}: resolves to {real}, outside the watch root {real_root}; not uploaded "
        "(set allow_outside_root = true in this [[watch]] if files are linked from elsewhere on purpose)"
    )


def first_record_problem(path: Path) -> str | None:
    """A problem when the decompressed start of `path` is not a FASTQ record (@id / sequence / + / quality).
    A file that is not gzip at all is left to the gzip check, which reports that already."""
    try:
        with open_regular_binary(path) as fh:
            if fh.read(2) != b"\x1f\x8b":
                return None
            fh.seek(0)
            with gzip.GzipFile(fileobj=fh) as gz:
                head = gz.read(HEAD)
    except (OSError, EOFError, zlib.error):
        return None  # unreadable or a broken stream: the gzip check names it (and looks again next scan)
    why = _not_fastq(head)
    return f"{path}: not FASTQ: {why}; not uploaded" if why else None


def _not_fastq(head: bytes) -> str | None:
    if not head:
        return "the file holds no reads (empty after decompression)"
    lines = head.split(b"\n", 4)
    complete = len(lines) == 5 or (len(lines) == 4 and len(head) < HEAD)  # 4 whole lines were read
    name = lines[0]
    if not name.startswith(b"@"):
        return f"the first line does not start with '@': {_show(name)}"
    if len(lines) < 2:
        return None if len(head) >= HEAD else "the file ends inside the first record"
    seq = lines[1].rstrip(b"\r")
    if seq and not seq.isalpha() and set(seq) - set(b"ACGTNacgtn.-"):  # empty: a read trimmed to nothing
        return f"the second line is not a sequence: {_show(seq)}"
    if not complete:
        return None if len(head) >= HEAD else "the file ends inside the first record"
    plus, qual = lines[2].rstrip(b"\r"), lines[3].rstrip(b"\r")
    if not plus.startswith(b"+"):
        return f"the third line does not start with '+': {_show(plus)}"
    if len(qual) != len(seq):
        return f"the first record has {len(seq)} bases but {len(qual)} quality values"
    if any(c < 33 or c > 126 for c in qual):
        return "the first record's quality line has characters outside '!'..'~'"
    return None


def _show(line: bytes) -> str:
    return repr(line[:40].decode("ascii", "replace")) + ("..." if len(line) > 40 else "")
