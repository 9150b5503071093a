"""Gencove ``*.fastq-map.csv`` manifests: header ``client_id,r_notation,path``, one row per file.

Rows with the same client_id and r_notation are concatenated in row order. Unlike the Gencove CLI, paths are
resolved against the manifest's own folder, and every bad row is reported at once as ``<file>:<line>: ...``.
A manifest with any error uploads nothing.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transferd.localfile import read_regular_bytes

MANIFEST_SUFFIX = ".fastq-map.csv"
HEADER = ("client_id", "r_notation", "path")
ACCEPTED_ENDINGS = (".fastq.gz", ".fastq.bgz", ".fq.gz", ".fq.bgz")  # the Gencove CLI's list, any case
READS = ("R1", "R2")


class ManifestError(Exception):
    """A manifest that cannot be used; ``problems`` holds every ``<file>:<line>: <message>``."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ManifestRow:
    line: int
    client_id: str
    read: str  # "R1" or "R2"
    path: Path  # absolute, normalised


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    rows: tuple[ManifestRow, ...]  # the rows that parsed, in file order
    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def folder(self) -> Path:
        return self.path.parent

    def samples(self) -> dict[str, dict[str, list[ManifestRow]]]:
        """client_id -> read -> rows in concatenation (row) order; client_ids in first-seen order."""
        out: dict[str, dict[str, list[ManifestRow]]] = {}
        for row in self.rows:
            out.setdefault(row.client_id, {"R1": [], "R2": []})[row.read].append(row)
        return out

    def raise_if_bad(self) -> Manifest:
        if self.errors:
            raise ManifestError(self.errors)
        return self


def is_manifest_name(name: str) -> bool:
    return name.lower().endswith(MANIFEST_SUFFIX)


def _is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://", "s3://", "gs://", "ftp://"))


def parse_manifest(
    text: str,
    manifest_path: Path,
    *,
    is_file: Callable[[Path], bool],
    single_end: bool = False,
) -> Manifest:
    """Parse and validate manifest text. Pure apart from ``is_file`` (the caller's existence check)."""
    folder = manifest_path.parent
    problems: list[tuple[int, str]] = []
    rows: list[ManifestRow] = []
    first_line_of_path: dict[Path, int] = {}

    def err(line: int, message: str) -> None:
        problems.append((line, message))

    reader = csv.reader(io.StringIO(text))
    header_seen = False
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # a field over the csv module's limit, a NUL byte: this line is bad, not the root
            err(reader.line_num, f"not a CSV line: {e}")
            continue
        line = reader.line_num
        if not record or all(not cell.strip() for cell in record):
            continue
        if not header_seen:
            header_seen = True
            got = tuple(cell.strip().lower() for cell in record)
            if got != HEADER:
                err(line, f"bad header {','.join(record)!r}: expected {','.join(HEADER)!r}")
            continue
        if len(record) != len(HEADER):
            err(line, f"expected 3 columns ({','.join(HEADER)}), got {len(record)}")
            continue
        client_id, r_notation, raw_path = (cell.strip() for cell in record)
        bad = False
        if not client_id:
            err(line, "empty client_id")
            bad = True
        elif "_" in client_id:
            err(line, f"client_id {client_id!r} contains '_', which Gencove does not allow (use '-')")
            bad = True
        read = r_notation.upper()
        if read not in READS:
            err(line, f"bad r_notation {r_notation!r}: expected R1 or R2")
            bad = True
        if not raw_path:
            err(line, "empty path")
            continue
        if _is_url(raw_path):
            err(line, f"{raw_path!r} is a URL; transferd uploads local files only")
            continue
        path = Path(os.path.normpath(folder / raw_path))  # absolute paths stay absolute
        if not raw_path.lower().endswith(ACCEPTED_ENDINGS):
            err(line, f"bad file ending in {raw_path!r}: expected one of {', '.join(ACCEPTED_ENDINGS)}")
            bad = True
        elif not is_file(path):
            err(line, f"file not found: {raw_path!r} ({path})")
            bad = True
        if path in first_line_of_path:
            err(line, f"duplicate path {raw_path!r} (first listed on line {first_line_of_path[path]})")
            bad = True
        else:
            first_line_of_path[path] = line
        if not bad:
            rows.append(ManifestRow(line=line, client_id=client_id, read=read, path=path))

    if not header_seen:
        err(1, f"empty manifest: expected the header {','.join(HEADER)!r}")
    manifest = Manifest(path=manifest_path, rows=tuple(rows), errors=())
    for client_id, reads in manifest.samples().items():
        if reads["R2"] and not reads["R1"]:
            err(reads["R2"][0].line, f"client_id {client_id!r} has R2 rows but no R1 row")
        elif reads["R1"] and not reads["R2"] and not single_end:
            err(reads["R1"][0].line, f"client_id {client_id!r} has no R2 row (single-end is not allowed here)")
    problems.sort(key=lambda p: p[0])  # stable: a line's problems keep their order
    errors = tuple(f"{manifest_path}:{line}: {message}" for line, message in problems)
    return Manifest(path=manifest_path, rows=tuple(rows), errors=errors)


def load_manifest(path: Path, *, single_end: bool = False) -> Manifest:
    """Read and validate a manifest file; problems (including an unreadable file) are in ``errors``."""
    path = Path(os.path.abspath(path))
    try:
        text = read_regular_bytes(path).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Manifest(path=path, rows=(), errors=(f"{path}:1: cannot read manifest: {reason}",))
    return parse_manifest(text, path, is_file=os.path.isfile, single_end=single_end)
