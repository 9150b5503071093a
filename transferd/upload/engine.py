"""One object, uploaded resumably: Gencove slot -> S3 multipart -> verified completion.

Per attempt: check the sources against their recorded versions; reconcile the journal with ListParts; read the
concatenated sources once, in order, part by part (feeding the whole-object SHA-256), sending the parts S3 does
not have yet (several at once, under the global byte budget and request semaphore) and only re-hashing the ones
it has (their md5 must equal S3's ETag, else they are sent again); re-stat the sources; complete; check the
size with HeadObject unless S3's answer named the checksum it verified (then it holds exactly our bytes; a
first PUT is not preceded by a HeadObject either: in the common case an object costs its registration and its
PUT, or its parts and the Complete). A changed source or a vanished multipart upload starts the object again (bounded);
anything not retryable fails the object, with the reason in the journal. Sources that cannot be found (a share
away, a folder renamed) are waited for (SOURCE_GRACE) and then fail the object revivably (SourceUnavailable):
it keeps its multipart upload and `record_run` revives it when discovery reports the sample ready again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from transferd.discovery.gzipcheck import check_gzip_file, is_io_error
from transferd.discovery.models import SourceFile
from transferd.gencove.client import GencoveClient
from transferd.journal import Journal
from transferd.journal import uploads as jq
from transferd.localfile import open_regular_binary
from transferd.log import event
from transferd.retry import ApiError
from transferd.stats import STATS
from transferd.upload.budget import ByteBudget
from transferd.upload.s3 import MultipartGone, RemotePart, S3Backend, Stored, TrailersRefused
from transferd.upload.stream import (
    PartBuffers,
    PartData,
    PartSpec,
    SourceChanged,
    SourceReader,
    part_size_for,
    plan_parts,
    prehash,
    restat,
    stat_changes,
)

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5  # starts of one object (source changes, lost multipart uploads) before it fails
# Sources that cannot be found (their share unmounted, their folder renamed) are waited for this long before
# the object fails, revivably (SourceUnavailable: record_run revives it once discovery sees it ready again).
SOURCE_GRACE = 20.0
SOURCE_POLL = 1.0
HASH_CHUNK = 4 * 1024**2


@dataclass(frozen=True, slots=True)
class UploadResult:
    object_id: int
    destination_path: str
    outcome: str  # uploaded | skipped (Gencove already has it) | failed | interrupted (stopping)
    size: int
    sha256: str | None = None
    parts_sent: int = 0
    parts_reused: int = 0
    error: str | None = None
    sample: jq.SampleProgress | None = None  # the sample's state afterwards, when this object changed it


@dataclass
class ObjectProgress:
    """Live numbers of one object in flight (for `in_flight()` / status)."""

    destination_path: str
    size: int
    bytes_done: int = 0
    parts_total: int = 0
    parts_done: int = 0
    parts_in_flight: int = 0
    started: float = field(default_factory=time.time)


class _Restart(Exception):
    """Start the object again from nothing; `sources` are the versions to use."""

    def __init__(self, reason: str, sources: tuple[SourceFile, ...] | None = None) -> None:
        super().__init__(reason)
        self.sources = sources


class ObjectEngine:
    def __init__(
        self,
        journal: Journal,
        api: GencoveClient,
        s3: Callable[[], Awaitable[S3Backend]],
        budget: ByteBudget,
        requests: asyncio.Semaphore,
        min_part_size: int,
        draining: asyncio.Event,
        on_progress: Callable[[int], None] | None = None,
        single_put_max: int = 0,
    ) -> None:
        self._journal = journal
        self._api = api
        self._s3 = s3
        self._budget = budget
        self._requests = requests
        self._min_part_size = min_part_size
        self._draining = draining
        self._on_progress = on_progress
        self._single_put_max = single_put_max
        self.active: dict[int, ObjectProgress] = {}
        self._buffers = PartBuffers()

    # -- entry point ----------------------------------------------------------------------------------------
    async def upload(self, obj: jq.ObjectRow, streamed: Callable[[], None] | None = None) -> UploadResult:
        """Upload one object; never raises except on cancellation (failures are journaled and returned).

        `streamed` is called (at most once per attempt) as soon as the object's last part has been read and
        handed to its send task: from then on the object only waits for its parts' acknowledgements, the
        Complete and the Head check, and its caller may start streaming the next object meanwhile."""
        progress = ObjectProgress(obj.destination_path, obj.size)
        self.active[obj.id] = progress
        STATS.in_flight("upload", objects=1)
        resumes = 0
        try:
            while True:
                try:
                    return await self._attempt(obj, progress, streamed)
                except _Restart as r:
                    current = await self._journal.run(jq.get_object, obj.id)
                    if r.sources is not None and r.sources == current.sources and resumes < MAX_ATTEMPTS:
                        # The sources were out of reach for a moment and are back unchanged: resume (ListParts).
                        resumes += 1
                        event(log, "upload.object_resume", logging.WARNING, object=obj.destination_path, reason=str(r))
                        obj = current
                        progress.bytes_done = progress.parts_done = 0
                        continue
                    obj = await self._restart(obj, str(r), r.sources)
                    if obj.attempts >= MAX_ATTEMPTS:
                        return await self._fail(obj, f"gave up after {obj.attempts} starts; last: {r}")
                    progress.bytes_done = progress.parts_done = 0
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except SourceUnavailable as e:
            # Not deleted as far as we can tell (a share unmounted, a folder renamed): the failure keeps the
            # multipart upload and its reason marks it revivable (record_run, when discovery sees it ready).
            return await self._fail(obj, str(e))
        except Exception as e:  # every other failure is this object's, recorded, and the rest goes on
            return await self._fail(obj, _describe(e), e)
        finally:
            STATS.in_flight("upload", objects=-1)
            self.active.pop(obj.id, None)

    async def _fail(self, obj: jq.ObjectRow, error: str, exc: BaseException | None = None) -> UploadResult:
        STATS.error("upload")
        # The catch-all's failures carry their traceback: the one line of `error` rarely says where it broke.
        event(log, "upload.object_failed", logging.ERROR, exc_info=exc, object=obj.destination_path, error=error)
        await self._journal.run(jq.fail_object, obj.id, error)
        return UploadResult(obj.id, obj.destination_path, "failed", obj.size, error=error)

    async def _restart(self, obj: jq.ObjectRow, reason: str, sources: tuple[SourceFile, ...] | None) -> jq.ObjectRow:
        event(log, "upload.object_restart", logging.WARNING, object=obj.destination_path, reason=reason)
        obj = await self._journal.run(jq.get_object, obj.id)  # the attempt may have started a multipart upload
        if obj.s3_upload_id and obj.bucket and obj.key:
            s3 = await self._s3()
            await s3.abort(obj.bucket, obj.key, obj.s3_upload_id)
        await self._journal.run(jq.reset_object, obj.id, reason, sources)
        return await self._journal.run(jq.get_object, obj.id)

    # -- one attempt ------------------------------------------------------------------------------------------
    async def _attempt(
        self, obj: jq.ObjectRow, progress: ObjectProgress, streamed: Callable[[], None] | None = None
    ) -> UploadResult:
        # An earlier attempt that got a slot may have sent a PUT whose outcome the journal does not know (it died,
        # or the object failed and was revived or requeued since): S3 is asked before anything is sent again.
        may_have_landed = obj.bucket is not None or obj.state != "pending"
        slot = await self._api.upload_slot(obj.destination_path)
        if obj.bucket and (slot.bucket, slot.key) != (obj.bucket, obj.key) and obj.s3_upload_id:
            raise _Restart(f"Gencove moved the upload to s3://{slot.bucket}/{slot.key}")
        await self._journal.run(jq.set_slot, obj.id, slot.id, slot.bucket, slot.key)
        obj = await self._journal.run(jq.get_object, obj.id)
        if slot.succeeded and not await self._landed_stale(obj):
            # Gencove already has these bytes (an earlier run, or our completion before a crash): never resend.
            sha256 = None
            if obj.s3_upload_id and not obj.sha256 and not await asyncio.to_thread(stat_changes, obj.sources):
                sha256 = await asyncio.to_thread(hash_sources, obj.sources)  # we sent them: keep the record whole
            state = await self._journal.run(jq.finish_object, obj.id, sha256, None)
            self._advance(progress, obj.size)
            event(log, "upload.object_skipped", object=obj.destination_path, reason="already succeeded on Gencove")
            return UploadResult(obj.id, obj.destination_path, "skipped", obj.size, sha256 or obj.sha256, sample=state)

        await self._check_sources(obj)
        s3 = await self._s3()
        assert obj.bucket and obj.key
        if not obj.s3_upload_id and obj.size <= self._single_put_max:
            return await self._put_whole(s3, obj, progress, streamed, may_have_landed)
        remote: dict[int, RemotePart] = {}
        if obj.s3_upload_id:
            try:
                remote = await s3.list_parts(obj.bucket, obj.key, obj.s3_upload_id)
            except MultipartGone:
                if obj.state == "completing":
                    done = await self._completed_before(s3, obj)
                    if done is not None:
                        return done
                raise _Restart(f"multipart upload {obj.s3_upload_id} no longer exists") from None
        if not obj.s3_upload_id:
            part_size = part_size_for(obj.size, self._min_part_size)
            upload_id = await s3.create(obj.bucket, obj.key)
            await self._journal.run(jq.start_multipart, obj.id, upload_id, part_size)
            obj = await self._journal.run(jq.get_object, obj.id)
        assert obj.s3_upload_id and obj.part_size and obj.bucket and obj.key
        plan = plan_parts(obj.size, obj.part_size)
        progress.parts_total = len(plan)
        # S3 is the truth for which parts exist; journal rows S3 does not have are dropped (resent below).
        journaled = await self._journal.run(jq.parts_of, obj.id)
        candidates = {n: rp for n, rp in remote.items() if n <= len(plan) and rp.size == plan[n - 1].size}
        keep = [p for n, p in journaled.items() if n in candidates and candidates[n].etag == p.etag]
        await self._journal.run(jq.replace_parts, obj.id, keep)
        parts = {p.number: p for p in keep}

        sent, reused, interrupted, sha256 = await self._stream(s3, obj, plan, candidates, parts, progress, streamed)
        if interrupted:
            event(log, "upload.object_interrupted", object=obj.destination_path, parts_done=len(parts))
            return UploadResult(obj.id, obj.destination_path, "interrupted", obj.size, None, sent, reused)

        changes = await asyncio.to_thread(stat_changes, obj.sources)
        if changes:
            raise _Restart("source changed during the upload: " + "; ".join(changes), await self._new_sources(obj))
        await self._journal.run(jq.set_completing, obj.id)
        try:
            stored = await s3.complete(obj.bucket, obj.key, obj.s3_upload_id, list(parts.values()))
        except MultipartGone:
            head = await s3.head(obj.bucket, obj.key)
            if head is None or head[0] != obj.size or not head[1].endswith(f"-{len(plan)}"):
                raise _Restart(f"multipart upload {obj.s3_upload_id} vanished before completion") from None
            stored = Stored(head[1], verified=True)  # an earlier Complete went through; its answer was lost
        return await self._finish(s3, obj, sha256, stored, len(plan), sent, reused)

    async def _finish(
        self, s3: S3Backend, obj: jq.ObjectRow, sha256: str, stored: Stored, parts: int, sent: int, reused: int
    ) -> UploadResult:
        """S3 holds the object: check its size (unless S3's answer named the checksum it verified over exactly
        our bytes, which fixes the size too), record it done, account for it."""
        assert obj.bucket and obj.key
        etag = stored.etag
        if not stored.verified:
            head = await s3.head(obj.bucket, obj.key)
            if head is None or head[0] != obj.size:
                got = "no object" if head is None else f"{head[0]} bytes"
                raise _Restart(f"after the upload S3 holds {got}, expected {obj.size} bytes (sum of the sources)")
        state = await self._journal.run(jq.finish_object, obj.id, sha256, etag)
        STATS.object_done("upload")
        STATS.file_done("upload", len(obj.sources))
        event(log, "upload.object_done", object=obj.destination_path, size=obj.size, sha256=sha256, parts=parts,
              sent=sent, reused=reused)  # fmt: skip
        return UploadResult(obj.id, obj.destination_path, "uploaded", obj.size, sha256, sent, reused, None, state)

    async def _put_whole(
        self,
        s3: S3Backend,
        obj: jq.ObjectRow,
        progress: ObjectProgress,
        streamed: Callable[[], None] | None,
        may_have_landed: bool,
    ) -> UploadResult:
        """The object as one streamed PutObject: no Complete, and no request per part. The pass that reads the
        sources computes the SHA-256, which S3 verifies (a trailer of the aws-chunked body) and keeps as the
        object's checksum; so each byte is read and hashed once. S3 keeps a PUT whole or not at all; after a
        crash, an object S3 already holds with our SHA-256 is not sent again: the journal says when a PUT of this
        object may have been sent before (an earlier attempt had a slot), and only then are the sources hashed
        first and S3 asked (a HeadObject); a first PUT goes straight out. Without checksums (S3-compatible
        servers) the SHA-256 goes as metadata, so it is computed by a first pass."""
        assert obj.bucket and obj.key
        await self._journal.run(jq.start_put, obj.id)
        try:
            sha256: str | None = None
            if may_have_landed or not s3.trailers:
                sha256 = await asyncio.to_thread(prehash, obj.sources)
            found = await s3.head_object(obj.bucket, obj.key) if may_have_landed else None
            stored: Stored | None
            if found is not None and found.size == obj.size and found.sha256 == sha256:
                stored, sent = Stored(found.etag, verified=True), 0  # our PUT landed before we died, answer lost
                self._advance(progress, obj.size)
            else:
                try:
                    stored, sha256 = await self._send_whole(s3, obj, progress, sha256)
                    sent = 1
                except TrailersRefused as e:
                    raise _Restart(str(e)) from None
                except (SourceChanged, asyncio.CancelledError):
                    raise
                except Exception:
                    # A source rewritten under the body makes S3 refuse it (its CRC32 no longer matches): that is
                    # a reason to start again, not a failure of the object.
                    changes = await asyncio.to_thread(stat_changes, obj.sources)
                    if changes:
                        raise SourceChanged("; ".join(changes)) from None
                    raise
                if stored is None:
                    event(log, "upload.object_interrupted", object=obj.destination_path, parts_done=0)
                    return UploadResult(obj.id, obj.destination_path, "interrupted", obj.size)
        except SourceChanged as e:
            raise _Restart(str(e), await self._new_sources(obj)) from None
        if streamed is not None:
            streamed()
        changes = await asyncio.to_thread(stat_changes, obj.sources)
        if changes:
            raise _Restart("source changed during the upload: " + "; ".join(changes), await self._new_sources(obj))
        assert sha256 is not None
        if not stored.verified and s3.trailers:
            await self._check_trailer_understood(s3, obj)
            stored = Stored(stored.etag, verified=True)  # its size is checked
        return await self._finish(s3, obj, sha256, stored, 0, sent, 1 - sent)

    async def _check_trailer_understood(self, s3: S3Backend, obj: jq.ObjectRow) -> None:
        """S3 names the checksum of a trailer it verified; a server that did not may have stored the aws-chunked
        framing as the object's bytes. Then every later single PUT sends its SHA-256 up front (a first pass) and
        this object starts again."""
        assert obj.bucket and obj.key
        head = await s3.head(obj.bucket, obj.key)
        if head is not None and head[0] != obj.size:
            if s3.trailers:  # said once, by the first object that finds out
                s3.trailers = False
                event(log, "upload.s3_no_aws_chunked", logging.WARNING, object=obj.destination_path,
                      stored=head[0], expected=obj.size, hint="the S3 server stores aws-chunked bodies undecoded; "
                      "single PUTs now hash their sources first (set s3_checksums = \"when_required\" for such "
                      "servers)")  # fmt: skip
            raise _Restart(f"the S3 server stored {head[0]} bytes for {obj.size}: it does not decode aws-chunked")

    async def _send_whole(
        self, s3: S3Backend, obj: jq.ObjectRow, progress: ObjectProgress, sha256: str | None
    ) -> tuple[Stored | None, str | None]:
        """One PutObject of the whole object: S3's answer (None when stopping kept it from starting) and the
        SHA-256 of what was sent."""
        assert obj.bucket and obj.key

        def sent(n: int) -> None:
            STATS.add_bytes("upload", n)
            self._advance(progress, n)

        body = s3.body(obj.sources, self._budget, sent)
        async with self._requests:
            if self._draining.is_set():
                return None, sha256
            progress.parts_total = progress.parts_in_flight = 1
            started = time.monotonic()
            try:
                stored = await s3.put(obj.bucket, obj.key, body, sha256)
            finally:
                progress.parts_in_flight = 0
            STATS.observe_part(time.monotonic() - started)
        return stored, sha256 or body.sha256

    async def _stream(
        self,
        s3: S3Backend,
        obj: jq.ObjectRow,
        plan: tuple[PartSpec, ...],
        candidates: dict[int, RemotePart],
        parts: dict[int, jq.PartRow],
        progress: ObjectProgress,
        streamed: Callable[[], None] | None = None,
    ) -> tuple[int, int, bool, str]:
        """Read every part in order (one pass feeds the SHA-256); send those S3 lacks. Returns (sent, reused,
        interrupted, sha256 hex). `streamed()` is called once every part has been read and handed off, before
        waiting for the sends to finish."""
        assert obj.bucket and obj.key and obj.s3_upload_id
        sent = reused = 0
        interrupted = False
        reader = SourceReader(obj.sources, md5=not s3.checksums, crc32=s3.checksums)
        try:
            async with asyncio.TaskGroup() as tg:
                for spec in plan:
                    if self._draining.is_set():
                        interrupted = True
                        break
                    await self._budget.acquire(spec.size)
                    STATS.in_flight("upload", nbytes=spec.size)
                    handed_off = False
                    # Full-size parts are read into a reused buffer. It goes back to the pool only once nothing
                    # can touch it any more: never after a cancelled read (the thread may still be writing).
                    buf = self._buffers.take(spec.size) if spec.size == obj.part_size else None
                    if buf is None:  # a short last part: free buffers must leave room for its own buffer
                        self._buffers.trim(self._budget.capacity - self._budget.used)
                    reusable = False
                    try:
                        have = candidates.get(spec.number)
                        try:
                            data = await asyncio.to_thread(reader.read, spec, md5=True if have else None, into=buf)
                        except SourceChanged as e:
                            reusable = True
                            raise _Restart(str(e), await self._new_sources(obj)) from None
                        reusable = True
                        if have is not None and have.etag == data.md5:
                            # S3 has this part already (journaled, or acknowledged just before a crash).
                            if spec.number not in parts:
                                row = jq.PartRow(spec.number, spec.offset, spec.size, have.etag, data.crc32)
                                await self._journal.run(jq.record_part, obj.id, row)
                                parts[spec.number] = row
                            reused += 1
                            self._advance(progress, spec.size, part=True)
                            del data
                            continue
                        if self._draining.is_set():
                            interrupted = True
                            break
                        if have is not None:
                            event(log, "upload.part_mismatch", logging.WARNING, object=obj.destination_path,
                                  part=spec.number, etag=have.etag, md5=data.md5)  # fmt: skip
                        sent += 1
                        progress.parts_in_flight += 1
                        tg.create_task(self._send(s3, obj, data, parts, progress, buf))
                        handed_off = True  # _send releases the budget (and the buffer) when the part is done
                        del data  # the send task holds the only reference: freed when the part is done
                    finally:
                        if not handed_off:
                            self._release(spec.size, buf if reusable else None)
                reader.close()  # every part is read: the files are not needed while the last sends finish
                if streamed is not None:
                    streamed()
        except BaseExceptionGroup as eg:
            raise _first_error(eg) from None
        finally:
            reader.close()
        interrupted = interrupted or len(parts) < len(plan)  # parts skipped because we are stopping
        return sent, reused, interrupted, reader.sha256.hexdigest()

    async def _send(
        self,
        s3: S3Backend,
        obj: jq.ObjectRow,
        data: PartData,
        parts: dict[int, jq.PartRow],
        progress: ObjectProgress,
        buf: bytearray | None = None,
    ) -> None:
        assert obj.bucket and obj.key and obj.s3_upload_id
        size = data.spec.size
        reusable = False  # `buf` goes back to the pool only when the request is over (not when cancelled)
        try:
            async with self._requests:
                if self._draining.is_set():
                    reusable = True
                    return  # stopping: a part that has not started yet is not started now
                started = time.monotonic()
                try:
                    row = await s3.upload_part(obj.bucket, obj.key, obj.s3_upload_id, data)
                except MultipartGone as e:
                    reusable = True
                    raise _Restart(str(e)) from None
                except Exception:
                    reusable = True
                    raise
                finally:
                    del data  # S3 has the bytes (or will get them again later): free them before the journal write
                reusable = True
                STATS.observe_part(time.monotonic() - started)
            await self._journal.run(jq.record_part, obj.id, row)
            parts[row.number] = row
            STATS.add_bytes("upload", size)
            self._advance(progress, size, part=True)
            event(log, "upload.part_done", logging.DEBUG, object=obj.destination_path, part=row.number, size=size)
        finally:
            progress.parts_in_flight -= 1
            self._release(size, buf if reusable else None)

    def _release(self, n: int, buf: bytearray | None = None) -> None:
        if buf is not None:
            # Before the release: a part waiting for these bytes of budget takes this very buffer. Free buffers
            # plus the other parts' bytes stay within the budget.
            self._buffers.give(buf, self._budget.capacity - self._budget.used + n)
        self._budget.release(n)
        STATS.in_flight("upload", nbytes=-n)
        if self._budget.used == 0:
            self._buffers.clear()  # nothing in flight: give the memory back

    def _advance(self, progress: ObjectProgress, n: int, part: bool = False) -> None:
        progress.bytes_done += n
        if part:
            progress.parts_done += 1
        if self._on_progress is not None:
            self._on_progress(n)

    async def _landed_stale(self, obj: jq.ObjectRow) -> bool:
        """True if S3 holds a PUT of ours with other bytes than the sources now: a PUT lands before the sources
        can be re-checked, so a source rewritten during it (caught after, the object started again) leaves its
        old or mixed bytes there, and Gencove calls the upload succeeded. Those are sent again, never kept."""
        if obj.attempts == 0 or not obj.bucket or not obj.key:
            return False  # not started again by us: a succeeded upload is Gencove's word (an earlier run)
        s3 = await self._s3()
        found = await s3.head_object(obj.bucket, obj.key)
        if found is None:
            return False
        if found.size != obj.size:
            return True  # e.g. a server that stored an aws-chunked body with its framing
        if found.sha256 is None:
            return False  # not a PUT of ours (multipart objects are only completed from unchanged sources)
        try:
            current = await asyncio.to_thread(prehash, obj.sources)
        except SourceChanged:
            return True  # changed again: the upload path below starts it over
        return found.sha256 != current

    # -- sources ------------------------------------------------------------------------------------------------
    async def _check_sources(self, obj: jq.ObjectRow) -> None:
        changes = await asyncio.to_thread(stat_changes, obj.sources)
        if changes:
            raise _Restart("source changed since it was recorded: " + "; ".join(changes), await self._new_sources(obj))

    async def _new_sources(self, obj: jq.ObjectRow) -> tuple[SourceFile, ...]:
        """The changed sources' current versions, only if each is still a whole gzip stream: a file being
        rewritten must never be sent half-written (the object fails instead, with the reason)."""
        fresh = await self._settled(obj, await self._restat_waiting(obj))
        for old, new in zip(obj.sources, fresh, strict=True):
            if old.version != new.version:
                problem = await asyncio.to_thread(check_gzip_file, new.path)
                if is_io_error(problem):
                    raise SourceUnavailable(f"{jq.SOURCE_UNAVAILABLE}{new.path}: {problem}")
                if problem:
                    raise SourceGone(f"{new.path} changed and is no longer a complete gzip stream: {problem}")
        return fresh

    async def _settled(self, obj: jq.ObjectRow, fresh: tuple[SourceFile, ...]) -> tuple[SourceFile, ...]:
        """Wait (up to SOURCE_GRACE) until the sources stop changing: a file caught in the middle of being
        rewritten is judged once its writer is done, not while it is half-written."""
        deadline = time.monotonic() + SOURCE_GRACE
        while time.monotonic() < deadline and not self._draining.is_set():
            try:  # a condition with a deadline, not a retry: look again after a moment
                await asyncio.wait_for(self._draining.wait(), SOURCE_POLL)
            except TimeoutError:
                pass
            again = await self._restat_waiting(obj)
            if again == fresh:
                return fresh
            fresh = again
        return fresh

    async def _restat_waiting(self, obj: jq.ObjectRow) -> tuple[SourceFile, ...]:
        """The sources' current versions. A source that cannot be stat'ed may be on a share that is away for a
        moment (as the watcher treats a vanished root): wait up to SOURCE_GRACE for it, then fail revivably."""
        deadline = time.monotonic() + SOURCE_GRACE
        waiting = False
        while True:
            try:
                return await asyncio.to_thread(restat, obj.sources)
            except OSError as e:
                reason = f"{e.filename}: {e.strerror or e}"
                if time.monotonic() >= deadline or self._draining.is_set():
                    raise SourceUnavailable(f"{jq.SOURCE_UNAVAILABLE}{reason}") from None
                if not waiting:
                    waiting = True
                    event(log, "upload.source_unavailable", logging.WARNING, object=obj.destination_path,
                          error=reason, wait=SOURCE_GRACE)  # fmt: skip
            try:  # a condition with a deadline, not a retry of an operation: poll until back or stopping
                await asyncio.wait_for(self._draining.wait(), SOURCE_POLL)
            except TimeoutError:
                pass

    async def _completed_before(self, s3: S3Backend, obj: jq.ObjectRow) -> UploadResult | None:
        """A crash during completion: if the object is in S3 with the right size, finish it (hashing locally)."""
        assert obj.bucket and obj.key
        head = await s3.head(obj.bucket, obj.key)
        if head is None or head[0] != obj.size:
            return None
        if await asyncio.to_thread(stat_changes, obj.sources):
            return None
        sha256 = await asyncio.to_thread(hash_sources, obj.sources)
        state = await self._journal.run(jq.finish_object, obj.id, sha256, head[1])
        STATS.object_done("upload")
        return UploadResult(obj.id, obj.destination_path, "uploaded", obj.size, sha256, sample=state)


class SourceGone(Exception):
    """A source vanished or is being rewritten: the object fails (not retried)."""


class SourceUnavailable(SourceGone):
    """A source cannot be found or stat'ed (its folder or share is away, or really deleted). The object fails
    with a reason starting with ``jq.SOURCE_UNAVAILABLE`` and keeps its multipart upload: if discovery reports
    the sample ready again, ``record_run`` revives it and the engine resumes (after checking the sources)."""


def hash_sources(sources: tuple[SourceFile, ...]) -> str:
    h = hashlib.sha256()
    for src in sources:
        with open_regular_binary(src.path) as fh:
            while chunk := fh.read(HASH_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _first_error(eg: BaseExceptionGroup) -> BaseException:
    """The first real error of a task group (a _Restart wins: it is the planned way out)."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(eg)
    for e in leaves:
        if isinstance(e, _Restart):
            return e
    for e in leaves:
        if not isinstance(e, asyncio.CancelledError):
            return e
    return leaves[0] if leaves else eg


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiError):
        return f"Gencove API {e.operation}: HTTP {e.status}: {_body_text(e.body)}"
    from botocore.exceptions import ClientError

    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        op = getattr(e, "operation_name", "S3")
        return f"S3 {op}: {err.get('Code', '?')}: {err.get('Message', '')}".rstrip(": ")
    return f"{type(e).__name__}: {e}"


def _body_text(body: object) -> str:
    if isinstance(body, dict):
        msgs = []
        for k, v in body.items():
            text = "; ".join(str(x) for x in v) if isinstance(v, list) else str(v)
            msgs.append(text if k in ("detail", "non_field_errors") else f"{k}: {text}")
        return "; ".join(msgs)
    return str(body)
