"""Value types handed from discovery to the upload stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One FASTQ on disk as seen by one scan; (size, mtime_ns, inode) is its version."""

    path: Path
    size: int
    mtime_ns: int
    inode: int

    @property
    def version(self) -> tuple[int, int, int]:
        return (self.size, self.mtime_ns, self.inode)

    def fingerprint(self) -> int:
        """This path at this version, as one int (valid within one process: str hashes are salted)."""
        return version_fingerprint(str(self.path), self.size, self.mtime_ns, self.inode)


def escaped(text: str) -> str:
    """``text`` with the bytes of a name that is not valid UTF-8 shown as ``\\xNN`` (os.fsdecode keeps such
    bytes as lone surrogates, which SQLite, JSON consumers and a UTF-8 terminal all refuse)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def version_fingerprint(path: str, size: int, mtime_ns: int, inode: int) -> int:
    return hash((path, size, mtime_ns, inode))


@dataclass(frozen=True, slots=True)
class Sample:
    """The files of one sample of one delivery unit, in concatenation order.

    ``ready`` means: the run is complete, every file is stable and a whole gzip stream, and there are no
    ``problems``. ``key`` is unique per watch and names the uploaded objects.
    """

    run_path: Path
    run_name: str
    analysis: str | None
    client_id: str
    sample_name: str
    r1: tuple[SourceFile, ...]
    r2: tuple[SourceFile, ...]
    ready: bool
    problems: tuple[str, ...]
    project_folder: str = ""  # folder holding the files, relative to the delivery unit ("" = its top)
    s_number: int | None = None  # Illumina S number (None for the simple convention and manifests)
    origin: str = "illumina"  # "illumina", "casava", "simple" or "manifest"
    i1: tuple[SourceFile, ...] = ()  # index reads, only when DiscoveryRules.include_index_reads
    i2: tuple[SourceFile, ...] = ()
    manifest: Path | None = None  # the .fastq-map.csv that defined this sample
    # Not ready only because files are still settling: a reason to wait, not a problem to report as a failure.
    settling: bool = False

    @property
    def key(self) -> tuple[str, str | None, str]:
        return (self.run_name, self.analysis, self.client_id)

    @property
    def files(self) -> tuple[SourceFile, ...]:
        return self.r1 + self.r2 + self.i1 + self.i2

    @property
    def paired(self) -> bool:
        return bool(self.r2)


@dataclass(frozen=True, slots=True)
class Run:
    """A delivery unit: a run folder, or one ``Analysis/<n>`` of a NovaSeq X / NextSeq 2000 run folder.

    ``reasons`` says why the unit is complete or what it still waits for. ``problems`` are unit-level findings
    (manifest errors, unreadable folders, FASTQ-like names that were not understood). ``ignored`` lists FASTQ
    files deliberately left out (index reads, Undetermined, files under a manifest's folder that it does not
    name, unrecognised names).
    """

    path: Path
    name: str
    analysis: str | None
    layout: str
    complete: bool
    reasons: tuple[str, ...]
    samples: tuple[Sample, ...]
    problems: tuple[str, ...]
    ignored: tuple[Path, ...] = ()

    @property
    def unit_path(self) -> Path:
        """The folder the unit's files live in (``Analysis/<n>`` for NovaSeq X)."""
        return self.path / "Analysis" / self.analysis if self.analysis is not None else self.path
