"""Is this file a complete gzip stream? A cheap tail check, with a full check only when the tail cannot tell.

Multi-member gzip (concatenated .fastq.gz) and BGZF are both valid. A BGZF file (first member carries the
``BC`` extra subfield) must end with the 28-byte BGZF EOF block. For plain gzip we look for the last member
start(s) in a bounded window at the end and decompress from there to EOF, requiring every member to end
cleanly (zlib checks CRC32 and ISIZE) and nothing after the last one. Single-member files whose start lies
before the window need a full streaming decompression, so the daemon memoises verdicts per file version
(see stability.StabilityTracker).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from transferd.localfile import NotRegularFile, open_regular_binary

GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1 ID2 CM=deflate
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
TAIL_WINDOW = 1 << 20  # bytes scanned back from the end for member starts
MAX_CANDIDATES = 256  # bounds the work on a window full of false "1f 8b 08" hits
_READ_SIZE = 1 << 20
_OUT_LIMIT = 1 << 20  # bounds the memory for output we throw away (zip bombs, long runs of N)
_FEXTRA = 0x04
# Verdicts that say the file could not be read (EACCES, EIO, a share gone): not about the content, so never
# memoised; the file is judged again at the next scan.
IO_ERROR_PREFIX = "cannot read: "


def is_io_error(verdict: str | None) -> bool:
    """True for a verdict of ``check_gzip_file`` that is an I/O error, not a finding about the content."""
    return verdict is not None and verdict.startswith(IO_ERROR_PREFIX)


class _StreamState:
    """Feeds bytes through consecutive gzip members; raises zlib.error on corrupt data."""

    __slots__ = ("decomp", "fed", "members")

    def __init__(self) -> None:
        self.decomp: zlib._Decompress | None = None
        self.fed = False  # the current member has received input
        self.members = 0  # members that ended with a valid trailer

    def feed(self, data: bytes) -> None:
        while data:
            if self.decomp is None:
                self.decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self.fed = False
            d = self.decomp
            self.fed = True
            d.decompress(data, _OUT_LIMIT)
            while d.unconsumed_tail and not d.eof:
                d.decompress(d.unconsumed_tail, _OUT_LIMIT)
            if not d.eof:
                return
            self.members += 1
            data = d.unused_data
            self.decomp = None

    @property
    def clean_end(self) -> bool:
        return self.members > 0 and (self.decomp is None or not self.fed)


def _verdict(state: _StreamState, err: zlib.error | None) -> str | None:
    if err is not None:
        if state.members > 0 and "header" in str(err):
            return f"trailing garbage after gzip member {state.members}"
        return f"corrupt gzip ({err}) in member {state.members + 1}"
    if not state.clean_end:
        return "truncated gzip: the stream ends inside a member (cut short or still being written)"
    return None


def check_stream(chunks: Iterable[bytes]) -> str | None:
    """Full check of a byte stream: None if it is one or more complete gzip members and nothing else."""
    state = _StreamState()
    try:
        for chunk in chunks:
            state.feed(chunk)
    except zlib.error as err:
        return _verdict(state, err)
    return _verdict(state, None)


def _decode_to_end(data: bytes) -> tuple[str | None, int]:
    """(problem or None, complete members) for ``data`` decoded as gzip members up to its very end."""
    state = _StreamState()
    try:
        state.feed(data)
    except zlib.error as err:
        return _verdict(state, err), state.members
    return _verdict(state, None), state.members


def check_tail(tail: bytes) -> tuple[bool | None, str | None]:
    """Judge a file by its last bytes: (True, None) if the window ends with complete members; (False, problem)
    if a real member start was found but what follows it is broken; (None, None) if undecided (no member start
    found, or only false "1f 8b 08" hits inside compressed data), which needs a full check."""
    tried = 0
    pos = tail.rfind(GZIP_MAGIC)
    while pos >= 0 and tried < MAX_CANDIDATES:
        tried += 1
        problem, members = _decode_to_end(tail[pos:])
        if problem is None:
            return True, None
        if members > 0:
            # A CRC-verified member starts here, so this is a real boundary and the rest is broken.
            return False, problem
        pos = tail.rfind(GZIP_MAGIC, 0, pos + len(GZIP_MAGIC) - 1)  # the previous candidate
    return None, None


def is_bgzf_header(head: bytes) -> bool:
    """BGZF: gzip with FEXTRA whose extra field holds the subfield SI1='B' SI2='C' (RFC 1952 + SAM spec)."""
    if len(head) < 18 or head[:3] != GZIP_MAGIC or not head[3] & _FEXTRA:
        return False
    xlen = int.from_bytes(head[10:12], "little")
    extra = head[12 : 12 + xlen]
    i = 0
    while i + 4 <= len(extra):
        slen = int.from_bytes(extra[i + 2 : i + 4], "little")
        if extra[i : i + 2] == b"BC":
            return True
        i += 4 + slen
    return False


def _read_chunks(fh: BinaryIO, start: int = 0) -> Iterator[bytes]:
    fh.seek(start)
    while chunk := fh.read(_READ_SIZE):
        yield chunk


def check_gzip_file(path: Path, window: int = TAIL_WINDOW) -> str | None:
    """None if ``path`` is a complete gzip/BGZF stream, else the reason it is not."""
    try:
        with open_regular_binary(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return "empty file (0 bytes) is not a gzip stream"
            head = fh.read(64)
            if head[:3] != GZIP_MAGIC:
                return "not gzip-compressed (no gzip header at the start)"
            if is_bgzf_header(head):
                fh.seek(max(0, size - len(BGZF_EOF)))
                if fh.read() != BGZF_EOF:
                    return "BGZF file does not end with the 28-byte BGZF EOF block (truncated?)"
                return None
            start = max(0, size - window)
            fh.seek(start)
            tail = fh.read()
            decided, problem = check_tail(tail)
            if decided is not None:
                return problem
            if start == 0:
                return check_stream([tail])
            return check_stream(_read_chunks(fh))
    except NotRegularFile as err:
        return str(err.strerror)  # about what the path is, not a passing I/O error: a verdict for this version
    except OSError as err:
        return f"{IO_ERROR_PREFIX}{err.strerror or err}"
