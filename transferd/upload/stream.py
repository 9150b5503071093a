"""A sample's source files read as one byte stream and cut into multipart parts, with hashing.

Pure planning (`part_size_for`, `plan_parts`, `segments`) plus one blocking reader (`SourceReader`) meant to
run in an executor thread: it reads each part with `os.pread` straight from the files (no temp files, no
whole-file buffering) and hashes it there, so the event loop never reads or hashes a large buffer. hashlib and
zlib release the GIL for big buffers, so reads and hashes of several objects overlap.
"""

from __future__ import annotations

import base64
import hashlib
import mmap
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferd.discovery.models import SourceFile
from transferd.localfile import open_regular

MiB = 1024**2
MIN_PART_SIZE = 5 * MiB  # S3: every part but the last is at least 5 MiB
MAX_PART_SIZE = 5 * 1024**3  # S3: at most 5 GiB per part
MAX_PARTS = 10_000  # S3: part numbers 1..10,000


class SourceChanged(Exception):
    """A source file is not the version the upload started from (size, mtime_ns or inode differ)."""


@dataclass(frozen=True, slots=True)
class PartSpec:
    """Part `number` (1-based) covers bytes [offset, offset + size) of the concatenated stream."""

    number: int
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True, slots=True)
class Segment:
    """The slice of one source file that falls into a part."""

    source: int  # index into the object's sources
    file_offset: int
    length: int


@dataclass(frozen=True, slots=True)
class PartData:
    """A part's bytes, read and hashed. `md5` (hex) is S3's ETag of a part; `crc32` is base64, as S3 wants it."""

    spec: PartSpec
    body: bytes | memoryview  # immutable: bytes, or a read-only view of a pooled buffer or fresh mapping
    md5: str | None
    crc32: str | None


def part_size_for(total: int, minimum: int = MIN_PART_SIZE) -> int:
    """The part size for an object of `total` bytes: `minimum` (at least 5 MiB), grown in whole MiB just
    enough that the object never needs more than 10,000 parts."""
    if total < 0:
        raise ValueError(f"object size must be >= 0, not {total}")
    size = max(minimum, MIN_PART_SIZE)
    needed = -(-total // MAX_PARTS)
    if needed > size:
        size = -(-needed // MiB) * MiB
    if size > MAX_PART_SIZE:
        raise ValueError(f"object of {total} bytes exceeds S3's limit of {MAX_PARTS} parts of 5 GiB")
    return size


def plan_parts(total: int, part_size: int) -> tuple[PartSpec, ...]:
    """Equal parts, the last one shorter. An empty object is one empty part (S3 accepts that)."""
    if part_size <= 0:
        raise ValueError(f"part size must be > 0, not {part_size}")
    if total == 0:
        return (PartSpec(1, 0, 0),)
    parts = tuple(
        PartSpec(n, off, min(part_size, total - off)) for n, off in enumerate(range(0, total, part_size), start=1)
    )
    if len(parts) > MAX_PARTS:
        raise ValueError(f"{len(parts)} parts of {part_size} bytes exceed S3's limit of {MAX_PARTS}")
    return parts


def segments(sizes: Sequence[int], offset: int, length: int) -> list[Segment]:
    """Which slices of the sources (of these sizes, concatenated in order) make up [offset, offset+length).
    Empty files contribute nothing and never appear."""
    out: list[Segment] = []
    start = 0
    end = offset + length
    for i, size in enumerate(sizes):
        stop = start + size
        if size and stop > offset and start < end:
            lo = max(offset, start)
            hi = min(end, stop)
            out.append(Segment(i, lo - start, hi - lo))
        if stop >= end:
            break
        start = stop
    if sum(s.length for s in out) != length:
        raise ValueError(f"range [{offset}, {end}) lies beyond the sources' {sum(sizes)} bytes")
    return out


def stat_changes(sources: Sequence[SourceFile]) -> list[str]:
    """What differs between the recorded versions and the files on disk now (empty when all unchanged)."""
    problems = []
    for src in sources:
        try:
            st = os.stat(src.path)
        except OSError as e:
            problems.append(f"{src.path}: {e.strerror or e}")
            continue
        now = (st.st_size, st.st_mtime_ns, st.st_ino)
        if now != src.version:
            problems.append(
                f"{src.path}: changed (size {src.size} -> {st.st_size}, mtime_ns {src.mtime_ns} -> "
                f"{st.st_mtime_ns}, inode {src.inode} -> {st.st_ino})"
            )
    return problems


def restat(sources: Sequence[SourceFile]) -> tuple[SourceFile, ...]:
    """The sources' current versions (for starting an object again after a change)."""
    out = []
    for src in sources:
        st = os.stat(src.path)
        out.append(SourceFile(Path(src.path), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


class PartBuffers:
    """Reused part buffers: reading into a fresh buffer costs a page fault and a zeroed page per 4 KiB
    (measured: ~0.5 CPU-s per GiB more than reading into a warm buffer), so full-size parts are read into
    buffers taken from here and given back once their part is done (acknowledged, reused or dropped).

    Event-loop only (not thread-safe). Free buffers never exceed what the byte budget leaves unused, so
    buffers in flight plus free ones stay within `max_bytes_in_flight`; `clear()` (called when nothing is in
    flight) hands everything back to the system.
    """

    def __init__(self) -> None:
        self._free: list[bytearray] = []
        self._size = 0

    @property
    def free_bytes(self) -> int:
        return len(self._free) * self._size

    def take(self, size: int) -> bytearray:
        if size == self._size and self._free:
            return self._free.pop()
        return bytearray(size)

    def give(self, buf: bytearray, room: int) -> None:
        """Keep `buf` for reuse if `room` (bytes of budget not in flight) leaves space for it."""
        if len(buf) != self._size:  # another part size (objects over ~80 GB have bigger parts): switch to it
            self._free.clear()
            self._size = len(buf)
        if self.free_bytes + len(buf) <= room:
            self._free.append(buf)

    def trim(self, room: int) -> None:
        """Drop free buffers until they take at most `room` bytes."""
        while self._free and self.free_bytes > room:
            self._free.pop()

    def clear(self) -> None:
        self._free.clear()


class SourceReader:
    """Reads parts of the concatenated sources; blocking, for an executor thread. Not thread-safe: one object's
    parts are read one after another (that order also feeds the whole-object SHA-256).

    Files are opened once and checked against their recorded inode and size, so a file replaced by a rename or
    truncated under us raises `SourceChanged` instead of sending other bytes.
    """

    def __init__(self, sources: Sequence[SourceFile], *, md5: bool, crc32: bool) -> None:
        self.sources = tuple(sources)
        self._sizes = [s.size for s in self.sources]
        self._fds: dict[int, int] = {}
        self._md5 = md5
        self._crc32 = crc32
        self.sha256: Any = hashlib.sha256()
        self.hashed = 0  # bytes fed to sha256 so far; parts must come in order

    def _fd(self, i: int) -> int:
        fd = self._fds.get(i)
        if fd is None:
            src = self.sources[i]
            try:
                fd = open_regular(src.path)
            except OSError as e:
                raise SourceChanged(f"{src.path}: cannot open: {e.strerror or e}") from None
            st = os.fstat(fd)
            if (st.st_size, st.st_mtime_ns, st.st_ino) != src.version:
                os.close(fd)
                raise SourceChanged(f"{src.path}: changed since it was recorded (size/mtime/inode differ)")
            self._fds[i] = fd
        return fd

    def read(self, spec: PartSpec, *, md5: bool | None = None, into: bytearray | None = None) -> PartData:
        """Read part `spec` and hash it. `md5` overrides the reader's default for this part. With `into` (a
        buffer of at least `spec.size` bytes, from `PartBuffers`) the bytes are read into it and the body is
        a read-only view of it; the caller owns the buffer and must not reuse it while the body is in use."""
        if spec.offset != self.hashed:
            raise ValueError(f"parts must be read in order: expected offset {self.hashed}, got {spec.offset}")
        segs = segments(self._sizes, spec.offset, spec.size)
        body: bytes | memoryview
        if into is not None:
            body = self._read_into(segs, memoryview(into)[: spec.size])
        elif len(segs) == 1:
            body = self._read_one(segs[0])  # the very bytes object pread returned: one copy
        else:
            body = self._read_into(segs, memoryview(mmap.mmap(-1, spec.size)))
        self.sha256.update(body)
        self.hashed += spec.size
        want_md5 = self._md5 if md5 is None else md5
        digest = hashlib.md5(body, usedforsecurity=False).hexdigest() if want_md5 else None
        crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode() if self._crc32 else None
        return PartData(spec, body, digest, crc)

    def _read_one(self, seg: Segment) -> bytes:
        fd = self._fd(seg.source)
        chunk = os.pread(fd, seg.length, seg.file_offset)
        if len(chunk) == seg.length:
            return chunk
        chunks = [chunk]
        done = len(chunk)
        while done < seg.length:  # a short read (rare for regular files): gather the rest
            chunk = os.pread(fd, seg.length - done, seg.file_offset + done)
            if not chunk:
                raise SourceChanged(f"{self.sources[seg.source].path}: shorter than its recorded size")
            chunks.append(chunk)
            done += len(chunk)
        return b"".join(chunks)

    def _read_into(self, segs: Sequence[Segment], view: memoryview) -> memoryview:
        """Read the segments one after another into `view` (a reused buffer, or for a part across file
        boundaries without one a fresh anonymous mapping: no join, no zero fill, unmapped when the last view
        of it goes) and return a read-only view, so the body stays immutable for retries."""
        pos = 0
        for seg in segs:
            fd = self._fd(seg.source)
            done = 0
            while done < seg.length:
                n = os.preadv(fd, [view[pos : pos + seg.length - done]], seg.file_offset + done)
                if n <= 0:
                    raise SourceChanged(f"{self.sources[seg.source].path}: shorter than its recorded size")
                done += n
                pos += n
        ro = view.toreadonly()
        view.release()
        return ro

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PREHASH_CHUNK = 8 * MiB


def prehash(sources: Sequence[SourceFile]) -> str:
    """SHA-256 (hex) of the concatenated sources, for a single PutObject whose checksum header must be known
    before its body is sent. Blocking, for a thread; one buffer of PREHASH_CHUNK bytes."""
    total = sum(s.size for s in sources)
    buf = bytearray(min(PREHASH_CHUNK, max(total, 1)))
    with SourceReader(sources, md5=False, crc32=False) as reader:
        for offset in range(0, total, len(buf)):
            body = reader.read(PartSpec(1, offset, min(len(buf), total - offset)), into=buf).body
            if isinstance(body, memoryview):
                body.release()
        return reader.sha256.hexdigest()
