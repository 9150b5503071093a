"""The body of a single PutObject: the concatenated sources, streamed chunk by chunk while aiohttp sends them.

Nothing is buffered beyond the chunk on its way: each chunk is read in a thread under the global byte budget
and its budget is given back once aiohttp has handed it to the socket (when it asks for the next one). The
sources are re-opened and checked against their recorded versions for every pass, so a file replaced or
truncated under us ends the body with `SourceChanged` (kept in `failed`) instead of sending other bytes.

With `trailer` (the name of a checksum trailer, `x-amz-checksum-sha256`) the body is sent aws-chunked
(`<hex size>\r\n<chunk>\r\n ... 0\r\n<trailer>:<base64>\r\n\r\n`): the SHA-256 that S3 verifies is the one the
same pass computes while it reads, so each source byte is read and hashed once per attempt. Without it the checksum
must be known before the body is sent (a first pass, `stream.prehash`).

botocore rewinds a body before retrying a request (`seek(0)`); a new pass then starts from the beginning.
`read` exists only because botocore's parameter validation wants a file-like object: our checksum is set and
payload signing is off, so nothing reads the body but aiohttp, through `__aiter__`.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Callable, Sequence

from transferd.discovery.models import SourceFile
from transferd.stats import STATS
from transferd.upload.budget import ByteBudget
from transferd.upload.stream import MiB, PartData, PartSpec, SourceChanged, SourceReader

CHUNK = 4 * MiB


class SourcesBody:
    def __init__(
        self,
        sources: Sequence[SourceFile],
        budget: ByteBudget,
        on_sent: Callable[[int], None] | None = None,
        chunk: int = CHUNK,
        trailer: str | None = None,
    ) -> None:
        self._sources = tuple(sources)
        self._size = sum(s.size for s in sources)
        self._budget = budget
        self._on_sent = on_sent
        # A small object's buffer is its own size, not a whole chunk: many small PUTs in flight stay cheap.
        self._chunk = max(1, min(chunk, budget.capacity, self._size))
        self.trailer = trailer
        self._length = self._size if trailer is None else _framed_length(self._size, self._chunk, trailer)
        self._pos = 0
        self._passes: list[_Pass] = []
        self.sha256: str | None = None  # of the last pass that read every byte
        self.failed: SourceChanged | None = None
        self.high_water = 0  # bytes handed to aiohttp at least once (progress never counts a retry twice)

    def __len__(self) -> int:
        """The bytes on the wire (with the aws-chunked framing, if any)."""
        return self._length

    @property
    def size(self) -> int:
        """The object's size: the sources' bytes."""
        return self._size

    # -- what botocore touches --------------------------------------------------------------------------------
    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, min(self._size, base + pos))
        if self.trailer is not None and self._pos != 0:
            raise OSError("an aws-chunked body is only ever sent from its start")
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        raise OSError("SourcesBody is sent by aiohttp through __aiter__; reading it whole would defeat streaming")

    # -- what aiohttp sends -----------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[memoryview | bytes]:
        p = _Pass(self, self._pos)
        self._passes.append(p)
        return p

    def close(self) -> None:
        """After the request (sent, failed or cancelled): every budget byte still held is given back."""
        for p in self._passes:
            p.close()
        self._passes.clear()

    def _sent(self, upto: int) -> None:  # upto: source bytes
        if upto > self.high_water:
            if self._on_sent is not None:
                self._on_sent(upto - self.high_water)
            self.high_water = upto


class _Pass:
    """One pass over the body, from `start` to the end: an async iterator of 1 MiB slices of one reused chunk
    buffer (a fresh buffer per chunk would cost a page fault per 4 KiB).

    The buffer is refilled only once no transport can still refer to it. A transport keeps what the socket did
    not take at once; since Python 3.12 (and in uvloop) it keeps a *view* of our memory rather than a copy.
    aiohttp drains the transport below its high-water mark (64 KiB) after each 1 MiB write, so whatever is
    still queued lies in the last slice written. The last slice of each chunk is therefore handed over as
    `bytes` of its own (a copy of a quarter of the bytes, ~0.02 CPU-s/GiB): when aiohttp asks for the next
    chunk, nothing queued refers to the buffer any more. Every other slice is a view, sent without a copy."""

    SLICE = 1024**2

    def __init__(self, body: SourcesBody, start: int) -> None:
        self._body = body
        self._reader = SourceReader(body._sources, md5=False, crc32=False)
        self._buf = bytearray(body._chunk)
        self._view: memoryview | None = None  # the chunk being sent
        self._sliced = 0  # bytes of it handed out
        self._offset = 0  # bytes of the body read (and hashed)
        self._start = start  # bytes before it are read (for the hash) but not sent
        self._held = 0  # budget of the chunk being sent
        self._lock = threading.Lock()
        self._reading = False
        self._closed = False
        self._trailed = False  # the aws-chunked end and trailer are out

    def __aiter__(self) -> _Pass:
        return self

    async def __anext__(self) -> memoryview | bytes:
        body = self._body
        if self._view is not None and self._sliced < len(self._view):
            return self._slice()
        self._give_back()  # the whole chunk is in the socket's hands
        body._sent(self._offset)
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._offset >= body._size:
                body.sha256 = self._reader.sha256.hexdigest()
                if body.trailer is not None and not self._trailed:
                    self._trailed = True
                    return _trailer(body.trailer, self._reader.sha256.digest(), after_data=body._size > 0)
                self.close()
                raise StopAsyncIteration
            n = min(body._chunk, body._size - self._offset)
            skipping = self._offset < self._start
            if not skipping:
                await body._budget.acquire(n)
                STATS.in_flight("upload", nbytes=n)
                self._held = n
            try:
                data = await asyncio.to_thread(self._read, PartSpec(1, self._offset, n))
            except SourceChanged as e:
                body.failed = e
                raise
            self._offset += n
            body._pos = self._offset
            if not skipping:
                assert isinstance(data.body, memoryview)
                self._view, self._sliced = data.body, 0
                if body.trailer is not None:  # the chunk's size line (and the end of the one before)
                    return (b"\r\n" if self._offset > n else b"") + b"%x\r\n" % n
                return self._slice()

    def _slice(self) -> memoryview | bytes:
        assert self._view is not None
        start = self._sliced
        self._sliced = min(len(self._view), start + self.SLICE)
        if self._sliced == len(self._view):
            return bytes(self._view[start:])  # the transport may hold it while the buffer is refilled
        return self._view[start : self._sliced]

    def _read(self, spec: PartSpec) -> PartData:
        with self._lock:
            if self._closed:
                raise SourceChanged("the request is over")  # never reached by a live request
            self._reading = True
        try:
            return self._reader.read(spec, into=self._buf)
        finally:
            with self._lock:
                self._reading = False
                if self._closed:
                    self._reader.close()

    def _give_back(self) -> None:
        self._view = None
        if self._held:
            self._body._budget.release(self._held)
            STATS.in_flight("upload", nbytes=-self._held)
            self._held = 0

    def close(self) -> None:
        self._give_back()
        with self._lock:
            self._closed = True
            if not self._reading:  # else the reading thread closes the files when its read returns
                self._reader.close()


def _framed_length(size: int, chunk: int, trailer: str) -> int:
    """Bytes of `size` source bytes sent aws-chunked in chunks of `chunk`, ending with a SHA-256 trailer."""
    full, rest = divmod(size, chunk)
    frames = full * (len(b"%x" % chunk) + 4 + chunk) + (len(b"%x" % rest) + 4 + rest if rest else 0)
    return frames + len(_trailer(trailer, bytes(32), after_data=False))


def _trailer(name: str, sha256: bytes, *, after_data: bool) -> bytes:
    """The end of an aws-chunked body: the last chunk's CRLF, the zero-length chunk and the checksum trailer."""
    return (b"\r\n" if after_data else b"") + b"0\r\n%s:%s\r\n\r\n" % (name.encode(), base64.b64encode(sha256))
