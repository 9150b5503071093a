"""One file, downloaded safely: ranged, resumable, verified, then atomically placed.

The bytes go to `.<name>.<file id>.part` beside the destination (a name no deliverable takes), written through
`confined` (no symlink below the destination root is followed; a temp file is continued only when the journal
says it is ours). Every attempt first hashes what the `.part` already holds (in a thread) and asks
for the rest with `Range: bytes=<have>-`; a 200 instead of 206 restarts from 0. Size and sha256 are checked
before `fsync`, `os.replace` and an fsync of the directory, so a file under its final name is always complete
and verified. A mismatch deletes the `.part` and retries (the retry policy's "integrity" reason); a 403 means
the signed URL expired and is answered at once with a fresh URL from the platform. A full disk fails the file
(removing the `.part` to give the space back) without stopping anything else.

No total timeout (a large BAM takes longer than aiohttp's default 300 s) and no automatic decompression (a
`.gz` labelled `Content-Encoding: gzip` would otherwise be written decompressed): tech-notes §10.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp

from transferd import __version__
from transferd.journal import Journal
from transferd.journal import downloads as jd
from transferd.log import event
from transferd.mirror import confined
from transferd.mirror.platform import Deliverable
from transferd.network import DIRECT, Network
from transferd.retry import DEFAULT_POLICY, ApiError, Policy, TransferIntegrityError, retrying
from transferd.stats import STATS

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
IOV_MAX = 1024  # Linux's limit of buffers per writev
MAX_BUFFER = 4 * 1024**2  # bytes gathered before one write (and hash) in a thread
PROGRESS_EVERY = 64 * 1024**2  # journal bytes_done this often
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Whole-file re-downloads after a checksum mismatch, per fetch; then the file fails until the next cycle.
MAX_INTEGRITY_FAILURES = 3

T = TypeVar("T")


class UrlSource(Protocol):
    """Where a file's signed URL comes from: the freshest one known, and a way to get a new one after a 403."""

    def current(self) -> str | None: ...

    async def refresh(self) -> Deliverable: ...


class UrlExpired(Exception):
    """The signed URL was refused (403): fetch the sample again for a fresh one."""


class DownloadError(Exception):
    """A failure that retrying will not fix; the message names the file."""


@dataclass(frozen=True, slots=True)
class FileJob:
    source: str
    project_id: str
    sample_id: str
    client_id: str
    deliverable: Deliverable
    dest: Path  # inside `root`
    verify: str  # "sha256" | "size"
    root: Path  # the destination root: nothing below it is reached through a symlink
    check: confined.RootCheck | None = None  # the destination as last found usable, verified at every write

    @property
    def part(self) -> Path:
        return self.dest.with_name(confined.part_name(self.dest.name, self.deliverable.file_id))

    @property
    def folders(self) -> tuple[str, ...]:
        """The components of the dest's folder below the root."""
        return self.dest.relative_to(self.root).parts[:-1]


@dataclass(frozen=True, slots=True)
class FileResult:
    job: FileJob
    outcome: str  # "downloaded" | "present" (already mirrored) | "failed"
    nbytes: int = 0  # bytes transferred by this call
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


def url_for_log(url: str) -> str:
    """A signed URL without its query (the signature) for logs and errors."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{p.path}"


_URL_QUERY = re.compile(r"(https?://[^\s?'\"<>]+)\?[^\s'\"<>]*")


def scrub(text: str) -> str:
    """Error text with the query (signature) of every URL in it removed."""
    return _URL_QUERY.sub(r"\1?...", text)


class Transfer:
    """Downloads files, at most `concurrency` at a time and within `max_bytes_in_flight` of buffers."""

    def __init__(
        self,
        journal: Journal,
        *,
        concurrency: int = 8,
        max_bytes_in_flight: int = 64 * 1024**2,
        policy: Policy = DEFAULT_POLICY,
        skip_existing: bool = True,
        on_bytes: Callable[[int], None] | None = None,
        network: Network = DIRECT,
    ) -> None:
        self.journal = journal
        self._network = network
        self.policy = policy
        self.skip_existing = skip_existing
        self.on_bytes = on_bytes
        self.buffer = min(MAX_BUFFER, max_bytes_in_flight)
        # Each running download holds one buffer, so the byte budget caps the file count too.
        self._slots = asyncio.Semaphore(max(1, min(concurrency, max_bytes_in_flight // self.buffer)))
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._network.session(
                timeout=TIMEOUT,
                auto_decompress=False,
                headers={"User-Agent": f"transferd/{__version__}", "Accept-Encoding": "identity"},
            )
        return self._session

    # -- one file --------------------------------------------------------------------------------------------
    async def fetch(self, job: FileJob, urls: UrlSource) -> FileResult:
        """Mirror one file. Never raises except on cancellation: failures are journalled and returned."""
        d = job.deliverable
        if len(job.dest.name.encode()) > confined.NAME_MAX:  # would download in full, then fail to be renamed
            return await self.refuse(job, f"{job.dest}: File name too long ({len(job.dest.name.encode())} bytes, "
                                          f"the limit is {confined.NAME_MAX}); use a shorter template")  # fmt: skip
        try:
            prior = await self.journal.run(jd.file_row, job.source, d.file_id)
            claim = await self.journal.run(
                jd.claim_file, job.source, project_id=job.project_id, sample_id=job.sample_id,
                client_id=job.client_id, file_id=d.file_id, file_type=d.file_type, dest_path=str(job.dest),
                size=d.size, sha256=d.sha256,
            )  # fmt: skip
            if claim is not None:
                msg = (
                    f"{job.dest}: file {d.file_id} ({d.file_type}) of sample {job.sample_id} collides with file "
                    f"{claim.file_id} of sample {claim.sample_id}, which already owns this path; change the template"
                )
                return await self._failed(job, msg, 0)
            if self.skip_existing and await self._already_there(job):
                if self.on_bytes is not None and d.size:
                    self.on_bytes(d.size)  # progress counts work already done
                return FileResult(job, "present")
        except OSError as e:  # a name over NAME_MAX, an unreadable or symlinked folder: this file fails alone
            return await self._failed(job, f"{job.dest}: {e.strerror or e}", 0)
        except Exception as e:  # never an exception that would cancel the sample's other files
            return await self._failed(job, f"{job.dest}: {type(e).__name__}: {e}", 0)
        # A temp file left by an earlier pass is continued only when the journal says this file wrote it.
        ours = prior is not None and prior.state != "done" and (prior.dest_path, prior.size, prior.sha256) == (
            str(job.dest), d.size, d.sha256
        )
        moved = 0
        async with self._slots:
            STATS.in_flight("download", objects=1, nbytes=self.buffer)
            live = _Live(url=urls.current(), moved=0, ours=ours)  # a sibling may have refreshed while we queued
            try:
                async for attempt in retrying(f"download.{job.verify}", self.policy):
                    with attempt:
                        await self._attempt_with_refresh(job, live, urls)
                moved = live.moved
            except asyncio.CancelledError:
                raise  # the .part stays for the next run; the journal says `partial`
            except OSError as e:
                if e.errno in DISK_FULL:
                    await asyncio.to_thread(_remove_part, job)  # give the space back
                    msg = f"{job.dest}: disk full ({os.strerror(e.errno)}); removed the .part"
                    return await self._failed(job, msg, 0)
                return await self._failed(job, f"{job.dest}: {e.strerror or e}", await _size(job.part))
            except (DownloadError, UrlExpired) as e:
                return await self._failed(job, str(e), await _size(job.part))
            except TransferIntegrityError as e:
                return await self._failed(job, f"{job.dest}: {e} (gave up)", 0)
            except Exception as e:  # ApiError and anything the retry policy gave up on
                return await self._failed(job, f"{job.dest}: {type(e).__name__}: {e}", await _size(job.part))
            finally:
                STATS.in_flight("download", objects=-1, nbytes=-self.buffer)
        STATS.file_done("download")
        STATS.object_done("download")
        if ours:
            await self._drop_old_part(job)
        return FileResult(job, "downloaded", nbytes=moved)

    async def _drop_old_part(self, job: FileJob) -> None:
        """Earlier versions wrote `<name>.part`: once the file is placed, remove the one it left, unless a
        deliverable owns that path (`x.bam.part` is a valid name)."""
        old = job.dest.with_name(job.dest.name + ".part")
        if await self.journal.run(jd.path_owned, str(old)):
            return
        with contextlib.suppress(OSError):
            await asyncio.to_thread(_unlink_plain, job, old.name)

    async def refuse(self, job: FileJob, msg: str) -> FileResult:
        """Fail a file without touching the disk or the network (its path is refused)."""
        return await self._failed(job, msg, 0)

    async def _failed(self, job: FileJob, msg: str, bytes_done: int) -> FileResult:
        msg = scrub(msg)
        STATS.error("mirror")
        event(log, "mirror.file_failed", logging.ERROR, sample=job.sample_id, file=str(job.dest), error=msg)
        await self.journal.run(jd.file_failed, job.source, job.deliverable.file_id, msg, bytes_done=bytes_done)
        return FileResult(job, "failed", error=msg)

    async def _already_there(self, job: FileJob) -> bool:
        """Recognise a placed file from the journal (size, mtime, checksum), hashing only a file we never saw."""
        d = job.deliverable
        row = await self.journal.run(jd.file_row, job.source, d.file_id)
        st = await asyncio.to_thread(_stat_placed, job)
        if row is None or st is None:
            return False
        if row.state == "done":
            return (
                row.dest_path == str(job.dest) and st.st_size == row.size and st.st_mtime_ns == row.mtime_ns
                and (d.size is None or d.size == row.size) and (d.sha256 is None or d.sha256 == row.sha256)
            )  # fmt: skip
        # A file we did not place (another client, or a lost journal): adopt it once if it verifies.
        if d.size is None or st.st_size != d.size:
            return False
        if d.sha256 is not None:
            if await asyncio.to_thread(_hash_placed, job) != d.sha256:
                return False
        elif job.verify != "size":
            return False
        await self.journal.run(
            jd.file_done, job.source, d.file_id, size=st.st_size, sha256=d.sha256, verified=job.verify,
            mtime_ns=st.st_mtime_ns,
        )  # fmt: skip
        event(log, "mirror.file_adopted", sample=job.sample_id, file=str(job.dest))
        return True

    async def _attempt_with_refresh(self, job: FileJob, live: _Live, urls: UrlSource) -> None:
        try:
            await self._attempt(job, live)
        except UrlExpired:
            # No backoff: an expired signature is cured by a new URL, not by waiting.
            fresh = await urls.refresh()
            d = job.deliverable
            if (fresh.sha256, fresh.size) != (d.sha256, d.size):
                raise DownloadError(f"{job.dest}: the file changed on the platform while downloading") from None
            if fresh.url is None:
                raise DownloadError(f"{job.dest}: the sample no longer has a download URL (archived?)") from None
            event(log, "mirror.url_refreshed", sample=job.sample_id, file=str(job.dest))
            live.url = fresh.url
            try:
                await self._attempt(job, live)
            except UrlExpired:
                raise DownloadError(f"{job.dest}: download refused (HTTP 403) even with a fresh URL") from None

    async def _attempt(self, job: FileJob, live: _Live) -> None:
        d = job.deliverable
        if live.url is None:
            raise DownloadError(f"{job.dest}: no download URL")
        part = await _open_part(job, live.ours)
        live.ours = True  # made or continued by this fetch
        try:
            await self._fill(job, live, part)
            size, digest = part.size, part.hasher.hexdigest()
            expected_size = d.size if d.size is not None else live.total
            problem = None
            if expected_size is not None and size != expected_size:
                problem = f"size {size} != expected {expected_size}"
            elif job.verify == "sha256" and d.sha256 is not None and digest != d.sha256:
                problem = f"sha256 {digest} != expected {d.sha256}"
            if problem:
                await part.op(part.discard)
                STATS.error("mirror")
                event(log, "mirror.integrity", logging.WARNING, file=str(job.dest), problem=problem)
                live.integrity_failures += 1
                if live.integrity_failures >= MAX_INTEGRITY_FAILURES:
                    raise DownloadError(f"{job.dest}: {problem}, {live.integrity_failures} times in a row; giving up")
                raise TransferIntegrityError(f"{job.dest}: {problem}; deleted the .part")
            mtime_ns = await part.op(part.place, job.dest.name)
        finally:
            await part.aclose()
        await self.journal.run(
            jd.file_done, job.source, d.file_id, size=size, sha256=digest if job.verify == "sha256" else d.sha256,
            verified=job.verify, mtime_ns=mtime_ns,
        )  # fmt: skip
        event(log, "mirror.file_done", sample=job.sample_id, file=str(job.dest), bytes=size, verified=job.verify)

    async def _fill(self, job: FileJob, live: _Live, part: _PartFile) -> None:
        """Bring the `.part` to its full length, continuing what is there."""
        d = job.deliverable
        if d.size is not None and part.size > d.size:
            await part.op(part.truncate)
        await part.op(part.hash_existing)
        if d.size is not None and part.size == d.size:
            return  # complete already (interrupted between the last byte and the rename): verify it
        have = part.size
        if d.size is not None:
            await part.op(part.check_space, d.size - have)
        headers = {"Range": f"bytes={have}-"} if have else {}
        assert live.url is not None
        async with _no_url_in_errors(live.url), self._http().get(
            live.url, headers=headers, proxy=self._network.proxy_for(live.url)
        ) as resp:
            if resp.status == 403:
                await resp.read()
                raise UrlExpired(f"{job.dest}: HTTP 403 from {url_for_log(live.url)}")
            if resp.status == 416 and have:
                await part.op(part.truncate)  # our .part is longer than the object: start over
                raise TransferIntegrityError(f"{job.dest}: range {have}- not satisfiable; restarting")
            if resp.status >= 400:
                body = (await resp.content.read(300)).decode(errors="replace")
                raise ApiError(resp.status, f"download {url_for_log(live.url)}", body)
            if have and resp.status == 200:
                event(log, "mirror.range_ignored", logging.WARNING, file=str(job.dest), had=have)
                await part.op(part.truncate)
                have = 0
            elif have and resp.status == 206:
                start = _content_range_start(resp.headers.get("Content-Range"))
                if start != have:
                    raise TransferIntegrityError(f"{job.dest}: asked for bytes {have}-, got Content-Range {start}")
            live.total = _total_size(resp, have)
            if have:
                event(log, "mirror.resume", file=str(job.dest), offset=have)
                if self.on_bytes is not None and not live.resumed:
                    self.on_bytes(have)
                live.resumed = True
            await self.journal.run(jd.file_progress, job.source, d.file_id, have)
            # The chunks aiohttp hands over are kept as they are (no copy on the event loop) and written with
            # one writev, and hashed, in the file's thread once `self.buffer` bytes are gathered.
            chunks: list[bytes] = []
            held = 0
            next_progress = have + PROGRESS_EVERY
            on_bytes = self.on_bytes
            # Never more than the declared size (else the Content-Length): a body that does not end stops here.
            limit = d.size if d.size is not None else live.total
            try:
                async for chunk in resp.content.iter_any():
                    n = len(chunk)
                    if limit is not None and part.size + held + n > limit:
                        chunks, held = [], 0  # nothing past the limit is written, and nothing of this body kept
                        await part.op(part.discard)
                        raise DownloadError(
                            f"{job.dest}: the server sent more than the declared {limit} bytes; stopped reading and "
                            "removed the .part"
                        )
                    chunks.append(chunk)
                    held += n
                    live.moved += n
                    STATS.add_bytes("download", n)
                    if on_bytes is not None:
                        on_bytes(n)
                    if held >= self.buffer:
                        data, chunks, held = chunks, [], 0  # handed over before the write: never written twice
                        await part.op(part.write, data)
                        if part.size >= next_progress:
                            next_progress = part.size + PROGRESS_EVERY
                            await self.journal.run(jd.file_progress, job.source, d.file_id, part.size)
            except BaseException:
                # Interrupted (reset, timeout, shutdown): keep the prefix we hold, so the next attempt or
                # run resumes after it. It is verified with the rest of the file.
                if chunks:
                    with contextlib.suppress(OSError):
                        await part.op(part.write, chunks)
                raise
            if chunks:
                await part.op(part.write, chunks)


@dataclass(slots=True)
class _Live:
    """Per-file mutable state across attempts: the current URL and what was moved."""

    url: str | None
    moved: int
    total: int | None = None
    resumed: bool = False  # a resumed offset was counted for progress
    integrity_failures: int = 0
    ours: bool = False  # an existing temp file may be continued (the journal or this fetch made it)


class _PartFile:
    """An open, exclusively locked `.part` file with the running sha256 of its content.

    Every operation on the fd runs on the file's own single thread, in order, and is shielded: a cancelled
    download never drops a queued write (which would leave a gap), never writes a buffer twice, and the fd is
    closed only after the operations before it, so no thread ever touches a closed or reused fd.
    """

    def __init__(self, path: Path, dir_fd: int, fd: int) -> None:
        self.path, self.dir_fd, self.fd = path, dir_fd, fd
        self.size = os.fstat(fd).st_size
        self.hasher = hashlib.sha256()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="part")
        self._closed = False

    @classmethod
    def open(cls, job: FileJob, ours: bool) -> _PartFile:
        path = job.part
        dir_fd = confined.open_dir(job.root, job.folders, create=True, check=job.check)
        assert dir_fd is not None
        try:
            fd = confined.open_part(dir_fd, path.name, path, ours=ours)
        except BaseException:
            os.close(dir_fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            os.close(dir_fd)
            raise DownloadError(f"{path} is being written by another transferd process") from None
        return cls(path, dir_fd, fd)

    async def op(self, fn: Callable[..., T], *args: Any) -> T:
        fut = asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        fut.add_done_callback(_retrieve)  # a cancelled caller never reads it
        return await asyncio.shield(fut)

    def hash_existing(self) -> None:
        self.hasher = hashlib.sha256()
        os.lseek(self.fd, 0, os.SEEK_SET)
        left = self.size
        while left > 0:
            block = os.read(self.fd, min(MAX_BUFFER, left))
            if not block:
                break
            self.hasher.update(block)
            left -= len(block)
        if left:  # shorter than fstat said: trust what we could read
            os.ftruncate(self.fd, self.size - left)
            self.size -= left

    def truncate(self) -> None:
        os.ftruncate(self.fd, 0)
        self.size = 0
        self.hasher = hashlib.sha256()

    def write(self, chunks: Sequence[bytes]) -> None:
        """Append `chunks` (one `writev` per up to IOV_MAX of them, partial writes continued) and hash them."""
        views = [memoryview(c) for c in chunks if len(c)]
        i = 0
        while i < len(views):
            n = os.writev(self.fd, views[i : i + IOV_MAX])
            while n:
                if n >= len(views[i]):
                    n -= len(views[i])
                    i += 1
                else:
                    views[i] = views[i][n:]
                    n = 0
        update = self.hasher.update
        for c in chunks:
            update(c)
            self.size += len(c)

    def discard(self) -> None:
        if confined.same_file(self.fd, self.dir_fd, self.path.name):
            os.unlink(self.path.name, dir_fd=self.dir_fd)
        self.truncate()

    def place(self, dest_name: str) -> int:
        """fsync, rename over `dest_name` in the same folder, fsync the folder; the placed file's mtime_ns."""
        return confined.place(self.fd, self.dir_fd, self.path.name, dest_name, self.path.with_name(dest_name))

    def check_space(self, needed: int) -> None:
        """Fail before writing when the disk cannot hold the rest of the file."""
        st = os.fstatvfs(self.dir_fd)
        if st.f_bavail * st.f_frsize < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path.parent))

    def close_soon(self) -> asyncio.Future[None] | None:
        """Queue the close (and unlock) behind the pending operations."""
        if self._closed:
            return None
        self._closed = True
        fut = asyncio.get_running_loop().run_in_executor(self._thread, _close_both, self.fd, self.dir_fd)
        fut.add_done_callback(_retrieve)
        self._thread.shutdown(wait=False)
        return fut

    async def aclose(self) -> None:
        fut = self.close_soon()
        if fut is not None:
            await asyncio.shield(fut)  # closed (and unlocked) before a retry opens the file again


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _close_both(fd: int, dir_fd: int) -> None:
    try:
        os.close(fd)
    finally:
        os.close(dir_fd)


async def _open_part(job: FileJob, ours: bool) -> _PartFile:
    fut = asyncio.get_running_loop().run_in_executor(None, _PartFile.open, job, ours)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        # Cancelled while the thread opens it: close (and unlock) whatever it opens.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception() or f.result().close_soon())
        raise


@contextlib.asynccontextmanager
async def _no_url_in_errors(url: str) -> AsyncIterator[None]:
    """aiohttp puts the full (signed) URL into some exceptions; re-raise those without it."""
    try:
        yield
    except aiohttp.ClientResponseError as e:  # TooManyRedirects, ContentTypeError, ...
        raise ApiError(e.status or 502, f"download {url_for_log(url)}", f"{type(e).__name__}: {e.message}") from None
    except aiohttp.InvalidURL:
        raise DownloadError(f"invalid download URL {url_for_log(url)}") from None


def _remove_part(job: FileJob) -> None:
    with contextlib.suppress(OSError):
        dir_fd = confined.open_dir(job.root, job.folders, create=False)
        if dir_fd is not None:
            try:
                if (st := confined.lstat_in(dir_fd, job.part.name)) is not None and stat.S_ISREG(st.st_mode):
                    os.unlink(job.part.name, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)


def _unlink_plain(job: FileJob, name: str) -> None:
    """Remove `name` beside the file when it is a regular file with one link (never through a symlink)."""
    dir_fd = confined.open_dir(job.root, job.folders, create=False, check=job.check)
    if dir_fd is None:
        return
    try:
        st = confined.lstat_in(dir_fd, name)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            os.unlink(name, dir_fd=dir_fd)
            event(log, "mirror.old_part_removed", file=str(job.dest.with_name(name)))
    finally:
        os.close(dir_fd)


def _stat_placed(job: FileJob) -> os.stat_result | None:
    """The placed file's stat, reached without following symlinks; None unless it is a regular file."""
    dir_fd = confined.open_dir(job.root, job.folders, create=False, check=job.check)
    if dir_fd is None:
        return None
    try:
        st = confined.lstat_in(dir_fd, job.dest.name)
    finally:
        os.close(dir_fd)
    return st if st is not None and stat.S_ISREG(st.st_mode) else None


async def _size(path: Path) -> int:
    try:
        st = await asyncio.to_thread(os.lstat, path)
    except OSError:
        return 0
    return st.st_size


def _hash_placed(job: FileJob) -> str:
    dir_fd = confined.open_dir(job.root, job.folders, create=False)
    if dir_fd is None:
        return ""
    try:
        fd = os.open(job.dest.name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        while block := f.read(MAX_BUFFER):
            h.update(block)
    return h.hexdigest()


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def _total_size(resp: aiohttp.ClientResponse, have: int) -> int | None:
    cr = resp.headers.get("Content-Range")
    if cr and "/" in cr:
        total = cr.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    if resp.content_length is not None:
        return resp.content_length + (have if resp.status == 206 else 0)
    return None
