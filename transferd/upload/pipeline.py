"""Samples -> objects -> assignment: the upload side of the daemon, and of the one-shot `transferd upload`.

    pipeline = UploadPipeline(config, journal, client)
    await pipeline.submit(watch, runs)     # record complete runs' samples (idempotent); wakes run()
    await pipeline.run()                   # until cancelled or stop(): uploads and assigns what the journal holds
    await pipeline.stop(grace)             # drain: in-flight parts may finish within `grace`, nothing new starts
    pipeline.in_flight()                   # live numbers for status

Work is always taken from the journal, so what a previous process left (pending objects, half-done multipart
uploads, `requested` assignments) is picked up exactly like new work. Concurrency is bounded three ways, all
shared by every object: `upload.max_objects` objects streaming parts, `upload.concurrency` part requests and
`upload.max_bytes_in_flight` bytes of part buffers. An object gives its streaming slot back as soon as its
last part is handed off, so the next object's parts flow while it waits for its last acknowledgements,
CompleteMultipartUpload (which S3 servers may take a while over) and the HeadObject check; at most
`upload.max_objects` more objects may be finishing like that. One S3 client (one credential set) serves them all.

Stopping: `stop(grace)` drains (no new objects, parts or assignment POSTs start; in-flight parts and a POST in
flight may finish and be journaled) for at most `grace` seconds, then cancels what is left and returns once
`run()` has returned. Cancelling `run()` instead stops at once. Either way everything done is checkpointed:
a part row exists only for a part S3 acknowledged, and ListParts reconciles the rest on the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from transferd.config import Config, WatchConfig
from transferd.discovery.models import Run, escaped
from transferd.gencove.client import GencoveClient
from transferd.journal import Journal
from transferd.journal import holds as jh
from transferd.journal import uploads as jq
from transferd.log import event
from transferd.network import Network
from transferd.retry import Policy
from transferd.stats import STATS
from transferd.upload.assign import Assigner
from transferd.upload.budget import ByteBudget
from transferd.upload.engine import ObjectEngine, UploadResult
from transferd.upload.memory import pin_mmap_threshold
from transferd.upload.plan import RunPlan, as_new_delivery, plan_run
from transferd.upload.s3 import S3Backend

log = logging.getLogger(__name__)
RESCAN_INTERVAL = 60.0  # the scheduler looks at the journal at least this often, even when not woken
SMALL_OBJECT = 4 * 1024**2  # up to one single-PUT body chunk
SMALL_OBJECTS_PER_REQUEST = 4  # small objects in flight per request slot (most wait on a round trip, not a slot)


class _Stop(Exception):
    """Raised inside run()'s task group to end it after a drain."""


@dataclass(frozen=True, slots=True)
class UploadReport:
    """What the one-shot command reports: per-sample outcomes plus what discovery held back."""

    samples: tuple[jq.SampleOutcome, ...]
    not_ready: tuple[str, ...]  # "<run>/<client_id>: reasons" of samples not ready (not uploaded)
    incomplete_runs: tuple[str, ...]  # "<run path>: reasons"
    run_problems: tuple[str, ...]
    held: tuple[str, ...] = ()  # "<folder>/<client_id> [reason]: problem" (docs/IDENTITY.md)

    @property
    def ok(self) -> bool:
        return (
            bool(self.samples)
            and all(s.ok for s in self.samples)
            and not self.not_ready
            and not self.incomplete_runs
            and not self.run_problems
            and not self.held
        )


class UploadPipeline:
    def __init__(
        self,
        config: Config,
        journal: Journal,
        client: GencoveClient,
        *,
        on_progress: Callable[[int], None] | None = None,
        s3_policy: Policy | None = None,
    ) -> None:
        pin_mmap_threshold()  # part buffers must not linger in malloc arenas (see transferd/upload/memory.py)
        self.config = config
        self.journal = journal
        self.client = client
        up = config.upload
        self._s3_policy = s3_policy or Policy(deadline=up.retry_deadline)
        self._budget = ByteBudget(up.max_bytes_in_flight)
        self._requests = asyncio.Semaphore(up.concurrency)
        self._draining = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._wake = asyncio.Event()  # new work in the journal, or an object slot came free
        self._changed = asyncio.Event()  # some object or sample changed state
        self._grace = config.service.shutdown_grace
        self._running = False
        self._active: set[int] = set()  # every object with a task (streaming or finishing)
        self._streaming: set[int] = set()  # objects whose parts are still being read and handed off
        self._small: set[int] = set()  # active objects of at most SMALL_OBJECT bytes (bounded by requests, bytes)
        self._stack: AsyncExitStack | None = None
        self._s3: S3Backend | None = None
        self._s3_lock = asyncio.Lock()
        self.engine = ObjectEngine(
            journal, client, self._get_s3, self._budget, self._requests, up.part_size, self._draining, on_progress,
            single_put_max=up.single_put_max,
        )  # fmt: skip
        self.assigner = Assigner(
            journal, client, up.assign_deadline, self._draining, self._changed.set,
            request_timeout=config.gencove.request_timeout,
        )  # fmt: skip

    # -- public API ---------------------------------------------------------------------------------------------
    async def submit(self, watch: WatchConfig, runs: list[Run], adopt_project: bool = False) -> None:
        """Record complete runs and their ready samples (samples with problems as `failed`, with the problem
        text); a run or sample already known is not added again. Incomplete runs are ignored for now.
        What is newly recorded as a problem (a run's problems, a failed sample) is logged as a WARNING each."""
        now = time.time()
        for run in runs:
            try:
                plan = plan_run(
                    run,
                    watch=str(watch.path),
                    destination=watch.destination,
                    project_id=watch.project_id,
                    metadata=watch.metadata,
                    now=now,
                )
                if plan is not None:
                    await self._submit_plan(plan, adopt_project)
            except Exception as exc:  # one run we cannot handle must not stop the other runs of its root
                STATS.error("discovery")
                event(
                    log, "upload.run_failed", logging.ERROR, run=escaped(str(run.path)), error=escaped(repr(exc)),
                    exc_info=exc,
                )  # fmt: skip
        self._wake.set()
        self._changed.set()

    async def _submit_plan(self, plan: RunPlan, adopt_project: bool) -> None:
        since = time.time()  # samples record_run inserts are created at or after this
        result = await self.journal.run(jq.record_run, plan, adopt_project, as_new_delivery)
        if result.replaced is not None:
            event(
                log, "upload.path_reused", logging.WARNING, run=plan.path,
                folder=plan.samples[0].folder if plan.samples else None,
                action="new files under a known run path: uploading them as a new delivery",
            )  # fmt: skip
        for h in result.held:
            event(
                log, "upload.sample_held", logging.WARNING, run=plan.path, sample=f"{h.folder}/{h.client_id}",
                reason=h.reason, problem=h.problem, action="transferd requeue (--as-new) once decided",
            )  # fmt: skip
        if result.new_run:
            for problem in plan.problems:
                event(log, "upload.run_problem", logging.WARNING, run=plan.path, problem=problem)
        if result.failed_samples:
            for client_id, problem in await self.journal.run(jq.failed_since, result.run_id, since):
                event(
                    log, "upload.sample_rejected", logging.WARNING, run=plan.path, client_id=client_id,
                    problem=problem,
                )  # fmt: skip
        if result.new_run or result.new_samples:
            event(
                log, "upload.run_submitted", run=plan.path, analysis=plan.analysis or None, new=result.new_run,
                samples=result.new_samples, failed=result.failed_samples,
            )  # fmt: skip

    async def run(self) -> None:
        """Upload and assign whatever the journal holds, until cancelled or `stop()`."""
        await self._serve(None)

    async def stop(self, grace: float) -> None:
        """Drain for at most `grace` seconds (see the module doc), then return once `run()` has ended."""
        self._grace = grace
        self._stop_requested.set()
        if self._running:
            await self._stopped.wait()

    def in_flight(self) -> dict[str, Any]:
        now = time.time()
        objects = [
            {
                "destination_path": p.destination_path,
                "size": p.size,
                "bytes_done": p.bytes_done,
                "parts_done": p.parts_done,
                "parts_total": p.parts_total,
                "parts_in_flight": p.parts_in_flight,
                "seconds": round(now - p.started, 1),
            }
            for p in self.engine.active.values()
        ]
        return {
            "objects": objects,
            "bytes_in_flight": self._budget.used,
            "max_bytes_in_flight": self._budget.capacity,
            "assigning": self.assigner.busy,
            "draining": self._draining.is_set(),
        }

    async def upload_once(
        self, watch: WatchConfig, runs: list[Run], on_start: Callable[[int], None] | None = None
    ) -> UploadReport:
        """Submit `runs` and work until every sample of them is final (uploaded and, with a project, assigned;
        or failed), or until `stop()`. Work left in the journal by an earlier attempt is finished on the way.
        `on_start` receives the number of bytes left to upload (for a progress bar)."""
        await self.submit(watch, runs, adopt_project=True)
        complete = [r for r in runs if r.complete]
        run_ids = await self.journal.run(jq.run_ids_for, [(escaped(str(r.path)), r.analysis or "") for r in complete])
        if on_start is not None:
            on_start(await self.journal.run(jq.remaining_bytes, run_ids))
        if await self.journal.run(jq.unfinished_samples, run_ids) and not self._stop_requested.is_set():
            await self._serve(run_ids)
        samples = await self.journal.run(jq.outcomes, run_ids)
        known = {(s.run_name, s.client_id) for s in samples}
        not_ready = tuple(
            f"{r.name}/{s.client_id}: " + ("; ".join(s.problems) or "not ready")
            for r in complete
            for s in r.samples
            if not s.ready and (r.name, s.client_id) not in known
        )
        incomplete = tuple(
            f"{r.unit_path}: " + ("; ".join(r.reasons) or "not complete") for r in runs if not r.complete
        )
        problems = tuple(f"{escaped(str(r.unit_path))}: {escaped(p)}" for r in runs for p in r.problems)
        recorded = {(o.run_path, o.analysis) for o in await self.journal.run(jq.runs_by_id, run_ids)}
        lost = tuple(
            f"{escaped(str(r.unit_path))}: could not be recorded; nothing of it was uploaded (see the log)"
            for r in complete
            if (escaped(str(r.path)), r.analysis or "") not in recorded
        )
        holds = await self.journal.run(jh.open_holds, run_ids)
        held = tuple(f"{h.folder}/{h.client_id} [{h.reason}]: {h.problem}" for h in holds)
        return UploadReport(tuple(samples), not_ready, incomplete, problems + lost, held)

    # -- the loop -------------------------------------------------------------------------------------------------
    async def _serve(self, until_done: Sequence[int] | None) -> None:
        self._running = True
        self._stopped.clear()
        try:
            async with AsyncExitStack() as stack:
                self._stack = stack
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._schedule(tg))
                    tg.create_task(self.assigner.loop())
                    tg.create_task(self._drain_on_stop())
                    if until_done is not None:
                        tg.create_task(self._until_done(until_done))
        except* _Stop:
            pass
        finally:
            self._stack = None
            self._s3 = None
            self._running = False
            self._draining.clear()
            self._stop_requested.clear()
            self._stopped.set()

    async def _schedule(self, tg: asyncio.TaskGroup) -> None:
        max_objects = self.config.upload.max_objects
        while not self._draining.is_set():
            self._wake.clear()
            # Streaming slots bound reads and part buffers; finishing objects (parts handed off, waiting for
            # acknowledgements, Complete and Head) hold no buffer and are bounded separately.
            # Small objects (a low-pass run's FASTQs) hold one small buffer and one request each: they take no
            # streaming slot and are bounded by the request semaphore, the byte budget and `small_cap` tasks, so a
            # run of hundreds of them is not paced by round trips four at a time.
            small_cap = max(2 * max_objects, SMALL_OBJECTS_PER_REQUEST * self.config.upload.concurrency)
            free = min(max_objects - len(self._streaming), 2 * max_objects - (len(self._active) - len(self._small)),
                       small_cap - len(self._active))  # fmt: skip
            if free > 0:
                for obj in await self.journal.run(jq.next_objects, sorted(self._active), free):
                    self._active.add(obj.id)
                    self._streaming.add(obj.id)
                    tg.create_task(self._object(obj))
            queued = await self.journal.run(jq.count_pending_objects)
            STATS.set_queued("upload", max(0, queued - len(self._active)))
            if self._draining.is_set():
                return
            try:
                await asyncio.wait_for(self._wake.wait(), RESCAN_INTERVAL)
            except TimeoutError:
                pass

    async def _object(self, obj: jq.ObjectRow) -> None:
        def streamed() -> None:
            if obj.id in self._streaming:
                self._streaming.discard(obj.id)
                self._wake.set()

        if obj.size <= SMALL_OBJECT:
            self._small.add(obj.id)
            streamed()  # its slot is free at once: what bounds it is its request and its bytes
        try:
            result: UploadResult = await self.engine.upload(obj, streamed)
            p = result.sample
            if p is not None and p.state == "uploaded":
                STATS.sample_done("uploaded")
                if p.final_ok:
                    STATS.observe_e2e("upload", max(0.0, time.time() - p.completed_at))
                else:
                    self.assigner.wake.set()
            if result.outcome in ("uploaded", "skipped"):
                STATS.success("upload")
        finally:
            self._active.discard(obj.id)
            self._streaming.discard(obj.id)
            self._small.discard(obj.id)
            self._wake.set()
            self._changed.set()

    async def _get_s3(self) -> S3Backend:
        """The one S3 client, created on first need (so nothing is asked for when nothing is to be sent)."""
        async with self._s3_lock:
            if self._s3 is None:
                assert self._stack is not None, "S3 is only available while run() is running"
                backend = S3Backend(self.config.gencove, self.config.upload, self.client, self._s3_policy,
                                    Network.from_config(self.config.network))  # fmt: skip
                self._s3 = await self._stack.enter_async_context(backend)
            return self._s3

    async def _drain_on_stop(self) -> None:
        await self._stop_requested.wait()
        self._draining.set()
        self._wake.set()
        self.assigner.wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        event(log, "upload.draining", objects=len(self._active), grace=self._grace)
        while (self._active or self.assigner.busy) and loop.time() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
        event(log, "upload.stopped", unfinished=len(self._active))
        raise _Stop

    async def _until_done(self, run_ids: Sequence[int]) -> None:
        while True:
            self._changed.clear()
            if not await self.journal.run(jq.unfinished_samples, run_ids):
                self._stop_requested.set()
                self._grace = 0.0
                return
            try:
                await asyncio.wait_for(self._changed.wait(), 5.0)
            except TimeoutError:
                pass
