"""Exactly-once assignment of uploaded samples to their project.

A sample is assigned once both reads succeeded *and* the sample sheet lists them (`search=<gncv folder>/`,
`status=all`) with our upload ids; the server needs a few seconds after the object lands. Rounds poll with
growing intervals (never a fixed sleep), and a sample waits at most `upload.assign_deadline`.

Exactly once: the assignment row is written `requested` BEFORE the POST and `done` (with the Gencove sample id)
after it. A `requested` row found later means the outcome is unknown (crash, or the answer was lost), so the
sheet is asked first (`status=assigned`): listed there -> record it as done, never POST again. Not listed there
yet is no proof: the earlier POST may still be in flight (the server, or a proxy in front of it, carries out a
request whose client died). So the sample is not POSTed again until that request can no longer be in flight:
`gencove.request_timeout` plus IN_FLIGHT_MARGIN after its last attempt could have started (for a row left by an
earlier process: no later than this process started, nor than the API retry deadline after the row was
written). Until then the sheet is polled with growing intervals; assigned there -> recorded as done.
A 400 is handled the same way: re-check the sheet; what is assigned there is recorded as done; the others of a
batch are POSTed again one sample at a time (so one bad sample cannot fail 199 good ones), and only a
single-sample request refused with 400 and not assigned in the sheet fails that sample with the server's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transferd.gencove.client import ASSIGN_BATCH, GencoveClient
from transferd.journal import Journal
from transferd.journal import uploads as jq
from transferd.log import event
from transferd.retry import ApiError, classify
from transferd.stats import STATS

log = logging.getLogger(__name__)

# Fault-injection hook for tests and the soak: with TRANSFERD_CRASH_AT=after_assign_request the process dies
# (os._exit(137), like SIGKILL) right after the assignment POST returned and before the journal records it.
CRASH_ENV = "TRANSFERD_CRASH_AT"
CRASH_AFTER_ASSIGN = "after_assign_request"

FIRST_INTERVAL = 0.5  # seconds between sample-sheet polls, doubling up to MAX_INTERVAL
# Samples that finish uploading one after another are gathered into one round (one sample-sheet read and one
# POST for up to ASSIGN_BATCH of them): a round starts once no sample has finished for GATHER_QUIET seconds, and
# at most GATHER_MAX seconds after the first one. Low-pass runs finish hundreds of small samples in seconds.
GATHER_QUIET = 0.3
GATHER_MAX = 2.0
MAX_INTERVAL = 30.0
IN_FLIGHT_MARGIN = 15.0  # seconds beyond the request timeout before an unanswered POST counts as over


@dataclass(frozen=True, slots=True)
class _Ready:
    """A candidate matched to its sample-sheet entry."""

    candidate: jq.AssignCandidate
    entry: dict[str, Any]


def _upload_of(entry: dict[str, Any], read: str) -> str | None:
    fastq = entry.get("fastq") or {}
    item = fastq.get(read.lower())
    return item.get("upload") if isinstance(item, dict) else None


def matches(entry: dict[str, Any], cand: jq.AssignCandidate) -> bool:
    """The sheet entry is this sample: same client_id and exactly our upload ids for R1 (and R2)."""
    return (
        entry.get("client_id") == cand.client_id
        and _upload_of(entry, "R1") == cand.uploads.get("R1")
        and _upload_of(entry, "R2") == cand.uploads.get("R2")
    )


def batches(items: list[_Ready], size: int = ASSIGN_BATCH) -> list[list[_Ready]]:
    """Chunks of at most `size`, never an empty one."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def _message(e: ApiError) -> str:
    body = e.body
    if isinstance(body, dict):
        parts = []
        for k, v in body.items():
            text = "; ".join(str(x) for x in v) if isinstance(v, list) else str(v)
            parts.append(text if k in ("detail", "non_field_errors") else f"{k}: {text}")
        return f"HTTP {e.status}: " + "; ".join(parts)
    return f"HTTP {e.status}: {body}"


class Assigner:
    def __init__(
        self,
        journal: Journal,
        api: GencoveClient,
        deadline: float,
        draining: asyncio.Event,
        on_change: Callable[[], None] = lambda: None,
        *,
        request_timeout: float = 120.0,
        gather: tuple[float, float] = (GATHER_QUIET, GATHER_MAX),
    ) -> None:
        self._journal = journal
        self._gather_quiet, self._gather_max = gather
        self._api = api
        self._deadline = deadline
        self._draining = draining
        self._on_change = on_change
        self._in_flight_for = request_timeout + IN_FLIGHT_MARGIN
        self._started = time.time()  # a request of an earlier process was sent before this
        self._first_seen: dict[int, float] = {}  # sample id -> monotonic time it became a candidate
        # sample id -> monotonic time after which its unanswered POST can no longer be in flight
        self._hold_until: dict[int, float] = {}
        self._next_due: float | None = None  # the earliest of those among the samples held in the last round
        self.busy = False  # a POST is in flight (stop() lets it finish)
        self.wake = asyncio.Event()

    async def loop(self) -> None:
        """Rounds until cancelled: right away when woken (a sample finished uploading), else with growing
        intervals while samples wait for the sheet."""
        interval = FIRST_INTERVAL
        while not self._draining.is_set():
            self.wake.clear()
            waiting = await self.round()
            if self._draining.is_set():
                return
            timeout = interval if waiting else MAX_INTERVAL * 2
            if self._next_due is not None:  # re-POST soon after a held request can no longer be in flight
                timeout = min(timeout, max(self._next_due - time.monotonic(), 0.05))
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
                interval = FIRST_INTERVAL
                await self._gather()
            except TimeoutError:
                interval = min(interval * 2, MAX_INTERVAL)

    async def _gather(self) -> None:
        """After a wake: let the samples finishing right after it join the same round (bounded)."""
        until = time.monotonic() + self._gather_max
        while not self._draining.is_set():
            self.wake.clear()
            left = until - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self.wake.wait(), min(self._gather_quiet, left))
            except TimeoutError:
                return  # quiet: go

    async def round(self) -> int:
        """One pass over every candidate; returns how many still wait."""
        cands = await self._journal.run(jq.assign_candidates)
        live = {c.sample_id for c in cands}
        for sid in list(self._first_seen):
            if sid not in live:
                del self._first_seen[sid]
        for sid in list(self._hold_until):
            if sid not in live:
                del self._hold_until[sid]
        self._next_due = None
        by_folder: dict[str, list[jq.AssignCandidate]] = defaultdict(list)
        for c in cands:
            self._first_seen.setdefault(c.sample_id, time.monotonic())
            by_folder[c.folder].append(c)
        waiting = 0
        for folder, group in by_folder.items():
            if self._draining.is_set():
                break
            try:
                waiting += await self._folder(folder, group)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as e:  # the API is down beyond the retry deadline: try again next round
                STATS.error("assign")
                event(log, "assign.round_failed", logging.WARNING, folder=folder, error=str(e))
                waiting += await self._expire(group, f"sample sheet unavailable: {e}")
        self._on_change()
        return waiting

    async def _folder(self, folder: str, group: list[jq.AssignCandidate]) -> int:
        sheet = await self._api.sample_sheet(f"{folder}/", "all")
        assigned: list[dict[str, Any]] | None = None
        ready: list[_Ready] = []
        not_listed: list[jq.AssignCandidate] = []
        held: list[_Ready] = []  # `requested`, listed, not assigned (yet)
        for c in group:
            entry = next((e for e in sheet if matches(e, c)), None)
            if entry is None:
                not_listed.append(c)
                continue
            if c.assignment == "requested":
                # Unknown outcome of an earlier POST: the sheet decides, never a second POST blindly.
                if assigned is None:
                    assigned = await self._api.sample_sheet(f"{folder}/", "assigned")
                if any(matches(e, c) for e in assigned):
                    await self._record([(c, None)], recovered=True)
                    continue
                held.append(_Ready(c, entry))
                continue
            ready.append(_Ready(c, entry))
        waiting = await self._expire(not_listed, "its uploads did not appear in the sample sheet")
        over = await self._in_flight_over(held)
        ready += over
        waiting += len(held) - len(over)
        by_target: dict[tuple[str, str | None], list[_Ready]] = defaultdict(list)
        for r in ready:
            by_target[(r.candidate.project_id, r.candidate.metadata)].append(r)
        for (project_id, metadata), items in by_target.items():
            for batch in batches(items):
                if self._draining.is_set():
                    return waiting
                await self._assign(folder, project_id, metadata, batch)
        return waiting

    async def _in_flight_over(self, held: list[_Ready]) -> list[_Ready]:
        """The held samples whose earlier POST can no longer be in flight (they may be POSTed again); the others
        wait, and the earliest time one of them is due is kept for the loop."""
        new = [r.candidate.sample_id for r in held if r.candidate.sample_id not in self._hold_until]
        if new:
            requested = await self._journal.run(jq.requested_at, new)
            policy = getattr(self._api, "policy", None)
            # The retry loop starts no attempt later than its deadline (plus one backoff) after the first one.
            retry_window = policy.deadline + policy.max_wait if policy is not None else float("inf")
            wall, mono = time.time(), time.monotonic()
            for sid in new:
                at = requested.get(sid, wall)
                # An earlier process sent its last attempt before this one started; this process (a POST cut
                # short by a stop) before now.
                latest = self._started if at < self._started else wall
                last_start = max(at, min(latest, at + retry_window))
                self._hold_until[sid] = mono + max(0.0, last_start + self._in_flight_for - wall)
        now = time.monotonic()
        over: list[_Ready] = []
        for r in held:
            sample = f"{r.candidate.folder}/{r.candidate.client_id}"
            until = self._hold_until[r.candidate.sample_id]
            if now >= until:
                over.append(r)
                self._hold_until.pop(r.candidate.sample_id, None)
                event(log, "assign.request_unanswered", logging.WARNING, sample=sample, action="posting again")
            else:
                self._next_due = until if self._next_due is None else min(self._next_due, until)
                event(log, "assign.awaiting_unanswered", logging.DEBUG, sample=sample, seconds=round(until - now, 1))
        return over

    async def _expire(self, cands: list[jq.AssignCandidate], why: str) -> int:
        """Fail the candidates that waited longer than the deadline; returns how many still wait."""
        waiting = 0
        now = time.monotonic()
        for c in cands:
            if now - self._first_seen.get(c.sample_id, now) > self._deadline:
                await self._fail([c], f"not assigned within {self._deadline:g}s: {why}")
            else:
                waiting += 1
        return waiting

    async def _assign(self, folder: str, project_id: str, metadata: str | None, batch: list[_Ready]) -> None:
        ids = [r.candidate.sample_id for r in batch]
        await self._journal.run(jq.mark_requested, ids, project_id)
        self.busy = True
        try:
            answer = await self._api.assign(
                project_id, [r.entry for r in batch], json.loads(metadata) if metadata else None
            )
        except Exception as e:  # sorted below: a refusal, an unknown outcome, or a bug (re-raised)
            if not isinstance(e, ApiError) and classify(e) is None:
                raise
            if isinstance(e, ApiError) and e.status == 400:
                await self._after_400(folder, project_id, metadata, batch, e)
            elif isinstance(e, ApiError) and classify(e) is None:
                # A definite refusal (404 project, 403): nothing was assigned.
                await self._journal.run(jq.clear_requested, ids)
                await self._fail([r.candidate for r in batch], f"assignment to project {project_id}: {_message(e)}")
            else:
                # A timeout, a reset or a 5xx (the POST is not retried blindly: it may have been carried out):
                # the outcome is unknown; the rows stay `requested` and the sheet decides later.
                STATS.error("assign")
                event(log, "assign.unknown_outcome", logging.WARNING, folder=folder, samples=len(batch), error=str(e))
                until = time.monotonic() + self._in_flight_for  # its last attempt may still be in flight
                for sid in ids:
                    self._hold_until[sid] = until
                self._next_due = until if self._next_due is None else min(self._next_due, until)
            return
        finally:
            self.busy = False
        if os.environ.get(CRASH_ENV) == CRASH_AFTER_ASSIGN:
            os._exit(137)  # test-only fault injection (see CRASH_ENV above)
        by_r1 = {_upload_of(u, "R1"): u.get("sample") for u in answer}
        await self._record([(r.candidate, by_r1.get(r.candidate.uploads.get("R1"))) for r in batch])
        event(log, "assign.done", folder=folder, project=project_id, samples=len(batch))

    async def _after_400(
        self, folder: str, project_id: str, metadata: str | None, batch: list[_Ready], e: ApiError
    ) -> None:
        assigned = await self._api.sample_sheet(f"{folder}/", "assigned")
        done = [r for r in batch if any(matches(a, r.candidate) for a in assigned)]
        if done:
            await self._record([(r.candidate, None) for r in done], recovered=True)
        rest = [r for r in batch if r not in done]
        await self._journal.run(jq.clear_requested, [r.candidate.sample_id for r in rest])
        if len(batch) > 1:
            # The 400 may be about any sample of the batch (one already assigned, one refused): POST each of the
            # rest on its own, so that only a sample the server refuses by itself fails.
            for r in rest:
                if self._draining.is_set():
                    return
                await self._assign(folder, project_id, metadata, [r])
        elif rest:  # a single-sample request refused, and the sheet confirms it is not assigned
            await self._fail([rest[0].candidate], f"assignment to project {project_id} refused: {_message(e)}")

    async def _record(self, done: list[tuple[jq.AssignCandidate, str | None]], recovered: bool = False) -> None:
        progress = await self._journal.run(jq.mark_assigned_many, [(c.sample_id, sid) for c, sid in done])
        now = time.time()
        for (c, sid), p in zip(done, progress, strict=True):
            STATS.sample_done("assigned")
            STATS.observe_e2e("upload", max(0.0, now - p.completed_at))
            self._first_seen.pop(c.sample_id, None)
            self._hold_until.pop(c.sample_id, None)
            event(
                log, "assign.sample_assigned", sample=f"{c.folder}/{c.client_id}", project=c.project_id,
                gencove_sample=sid, recovered=recovered,
            )  # fmt: skip
        STATS.success("assign")
        self._on_change()

    async def _fail(self, cands: list[jq.AssignCandidate], error: str) -> None:
        for c in cands:
            STATS.error("assign")
            event(log, "assign.sample_failed", logging.ERROR, sample=f"{c.folder}/{c.client_id}", error=error)
            await self._journal.run(jq.fail_sample, c.sample_id, error)
            self._first_seen.pop(c.sample_id, None)
            self._hold_until.pop(c.sample_id, None)
        self._on_change()
