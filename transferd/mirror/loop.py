"""The mirror loop: for each `[download] projects` entry, keep the destination in step with its deliverables.

A cycle lists the project's samples newest-`modified` first and stops paging at the journal's watermark (minus a
small overlap for late commits), so a steady-state cycle over 10,000 finished samples is one listing request.
Only samples that are new or changed, plus those the journal still owes work (failed, half done, restoring),
are fetched one by one for fresh URLs. Webhook triggers mirror named samples at once; polling stays the safety
net. Everything runs in one TaskGroup: cancelling `run()` leaves `.part` files resumable and the journal
consistent (a file is `done` only after it was verified and renamed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from transferd.config import Config, DownloadConfig, ProjectSource
from transferd.errors import UsageError
from transferd.gencove.models import parse_time
from transferd.journal import Journal
from transferd.journal import downloads as jd
from transferd.log import event
from transferd.mirror.confined import DestinationDown, made_root
from transferd.mirror.destination import Destination
from transferd.mirror.platform import Deliverable, Platform, SampleDetail, SampleNotFound, SampleSummary, make_platform
from transferd.mirror.recheck import RecheckReport, recheck
from transferd.mirror.template import FileNaming, TemplateError, plan_sample, resolve_inside
from transferd.mirror.transfer import FileJob, FileResult, Transfer, UrlSource
from transferd.network import Network
from transferd.retry import DEFAULT_POLICY, Policy
from transferd.stats import STATS

log = logging.getLogger(__name__)

# Re-list this far behind the watermark: a sample committed late with an older `modified` is still seen.
OVERLAP = timedelta(minutes=2)
# The watermark never moves past our clock plus this (less than OVERLAP, so a server clock a little ahead of
# ours loses nothing); a sample dated further ahead is logged, and cannot hide every later sample from polling.
SKEW = timedelta(minutes=1)
DESTINATION_CHECK = 5.0  # seconds between probes of the destination while the daemon runs (one stat)
RESTORE_BATCH = 200
LIST_BATCH = 500  # listing rows looked up and mirrored together
TRIGGER_PASSES = 4  # webhook-triggered passes at a time, each with download.concurrency workers


@dataclass(frozen=True, slots=True)
class SampleReport:
    sample_id: str
    client_id: str
    state: str  # done | archived | restoring | skipped | not_ready | failed | paused (destination unusable)
    downloaded: int = 0  # files transferred now
    present: int = 0  # files already mirrored
    nbytes: int = 0
    error: str | None = None
    fetched: bool = False  # whether this pass asked the platform for the sample (GET samples/{id})


@dataclass(frozen=True, slots=True)
class CycleReport:
    project_id: str
    source: str
    listed: int  # samples in the listing (down to the watermark)
    samples: tuple[SampleReport, ...] = ()
    watermark: str | None = None
    paused: str | None = None  # why nothing was done: the destination is unusable

    @property
    def examined(self) -> int:
        """Samples fetched one by one (GET samples/{id})."""
        return sum(1 for s in self.samples if s.fetched)

    def count(self, state: str) -> int:
        return sum(1 for s in self.samples if s.state == state)

    @property
    def downloaded(self) -> int:
        return sum(s.downloaded for s in self.samples)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.samples)

    @property
    def failures(self) -> tuple[SampleReport, ...]:
        return tuple(s for s in self.samples if s.state == "failed")

    @property
    def ok(self) -> bool:
        return not self.failures and self.paused is None


@dataclass(frozen=True, slots=True)
class _Item:
    """One sample to look at: from the listing (summary), from the journal or a trigger (id only)."""

    sample_id: str
    summary: SampleSummary | None = None
    detail: SampleDetail | None = None
    prior: str | None = None  # its journal state before this pass


@dataclass(slots=True, eq=False)  # hashed by identity
class _Project:
    source: ProjectSource
    platform: Platform
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cycle_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MirrorLoop:
    """`run()` for the daemon, `cycle(project)` for one pass, `trigger(...)` for webhooks.

    Keyword options are for the one-shot command and tests: `skip_existing=False` downloads files again,
    `include_failed` overrides the config, `on_bytes` feeds a progress bar, `policy` is the retry policy.
    """

    def __init__(
        self,
        config: Config,
        journal: Journal,
        api_key: str,
        *,
        policy: Policy = DEFAULT_POLICY,
        skip_existing: bool = True,
        include_failed: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        dl: DownloadConfig = config.download
        if dl.projects and dl.destination is None:
            raise UsageError(f"{config.file}: download.destination: is required when projects are listed")
        self.config = config
        self.journal = journal
        self.destination = dl.destination
        self.include_failed = dl.include_failed if include_failed is None else include_failed
        self._projects = {p: _Project(p, make_platform(p, config, api_key, policy)) for p in dl.projects}
        self.transfer = Transfer(
            journal, concurrency=dl.concurrency, max_bytes_in_flight=dl.max_bytes_in_flight, policy=policy,
            skip_existing=skip_existing, on_bytes=on_bytes, network=Network.from_config(config.network),
        )  # fmt: skip
        self._pending: list[tuple[str | None, tuple[str, ...]]] = []
        self._triggered = asyncio.Event()
        self._waiting: dict[str, int] = {}  # samples queued per source, for the `queued` gauge
        self._sample_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.dest = Destination(dl.destination, dl.marker, journal) if dl.destination is not None else None
        self._future_seen: set[tuple[str, str]] = set()  # (sample, modified) dated in the future, warned once
        self._lock_users: defaultdict[tuple[str, str], int] = defaultdict(int)

    # -- the daemon's API --------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll every project each `download.interval` and serve triggers, until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                for project in self._projects.values():
                    tg.create_task(self._poll(project), name=f"mirror-poll:{project.source.id}")
                if self.dest is not None:
                    tg.create_task(self._watch_destination(), name="mirror-destination")
                tg.create_task(self._dispatch(tg), name="mirror-triggers")
        finally:
            await self.aclose()

    def trigger(self, project_id: str | None, sample_ids: list[str]) -> None:
        """Mirror these samples now (non-blocking; call it on the loop's thread). `project_id` None: look the
        samples up in any configured project. No sample ids: run a cycle of that project (or all) now."""
        self._pending.append((project_id, tuple(sample_ids)))
        self._triggered.set()

    async def cycle(self, project: ProjectSource, *, full: bool = False) -> CycleReport:
        """One pass over one project: list down to the watermark (`full`: the whole project), mirror what is new,
        changed or still owed. Nothing at all while the destination is unusable."""
        p = self._project(project)
        source = p.platform.source
        async with p.cycle_lock:
            mark = await self.journal.run(jd.get_watermark, source)
            down = await self._destination_down()
            if down is not None:
                return CycleReport(project.id, source, 0, (), mark, paused=down)
            ceiling = datetime.now(UTC) + SKEW
            since = min(_aware(parse_time(mark)), ceiling) - OVERLAP if mark and not full else None
            # The listing is handled LIST_BATCH rows at a time, never held whole (a first pass over a big project).
            reports: list[SampleReport] = []
            seen: set[str] = set()
            newest: datetime | None = None
            batch: list[SampleSummary] = []
            async with contextlib.aclosing(p.platform.changed_since(since)) as rows:
                async for s in rows:
                    seen.add(s.id)
                    modified = _aware(s.modified)
                    if modified > ceiling:
                        self._future(p, s)
                        modified = ceiling
                    newest = modified if newest is None else max(newest, modified)
                    batch.append(s)
                    if len(batch) >= LIST_BATCH:
                        reports += await self._listed(p, batch)
                        batch = []
            reports += await self._listed(p, batch)
            owed = await self.journal.run(jd.unresolved_samples, source)
            reports += await self._queue_and_process(p, [_Item(r.sample_id, prior=r.state) for r in owed
                                                         if r.sample_id not in seen])  # fmt: skip
            paused = next((r.error for r in reports if r.state == "paused"), None)
            # A watermark set from the future (before SKEW existed) is pulled back to the ceiling.
            moved = mark is None or (newest is not None and newest > _aware(parse_time(mark)))
            ahead = mark is not None and _aware(parse_time(mark)) > ceiling
            if paused is None and newest is not None and (moved or ahead):
                mark = _iso(newest)
                await self.journal.run(jd.set_watermark, source, mark)
        report = CycleReport(project.id, source, len(seen), tuple(reports), mark, paused=paused)
        if report.ok:
            STATS.success("mirror")
        if reports or not report.ok:
            event(
                log, "mirror.cycle", logging.INFO if report.ok else logging.WARNING, project=project.id,
                listed=report.listed, examined=report.examined, done=report.count("done"),
                files=report.downloaded, bytes=report.nbytes, archived=report.count("archived"),
                restoring=report.count("restoring"), failed=len(report.failures),
            )  # fmt: skip
        return report

    def _future(self, p: _Project, s: SampleSummary) -> None:
        key = (s.id, _iso(s.modified))
        if key not in self._future_seen:
            self._future_seen.add(key)
            event(log, "mirror.future_modified", logging.WARNING, project=p.source.id, sample=s.id,
                  modified=_iso(s.modified), note="the watermark stops at now; check the clocks")  # fmt: skip

    async def _destination_down(self) -> str | None:
        """Why the destination cannot be written now (probed afresh), or None when it can."""
        if self.dest is None:
            return None
        state = await self.dest.refresh()
        return None if state.up else state.reason

    async def _watch_destination(self) -> None:
        """Keep the destination's state (readiness, metric) current; wake every project when it comes back."""
        assert self.dest is not None
        was = (await self.dest.refresh()).up
        while True:
            await asyncio.sleep(DESTINATION_CHECK)
            up = (await self.dest.refresh()).up
            if up and not was:
                for p in self._projects.values():
                    p.wake.set()
            was = up

    def destination_check(self) -> tuple[bool, str]:
        """For readiness: (usable, why)."""
        if self.dest is None:
            return True, "no download destination"
        if not self.dest.checked:  # a loop just (re)started probes at once: no red flash meanwhile
            return True, "being checked"
        return self.dest.state.up, self.dest.state.reason

    async def _listed(self, p: _Project, batch: list[SampleSummary]) -> list[SampleReport]:
        """Mirror what is new or changed in one batch of listing rows."""
        if not batch:
            return []
        known = await self.journal.run(jd.sample_rows, p.platform.source, [s.id for s in batch])
        items: list[_Item] = []
        for s in batch:
            row = known.get(s.id)
            if row is not None and row.state in jd.SETTLED and row.modified == _iso(s.modified):
                continue  # seen in the overlap, nothing changed
            items.append(_Item(s.id, summary=s, prior=row.state if row else None))
        return await self._queue_and_process(p, items)

    async def _queue_and_process(self, p: _Project, items: list[_Item]) -> list[SampleReport]:
        if not items:
            return []
        self._queued(p, len(items))
        try:
            return await self._process(p, items)
        finally:
            self._queued(p, 0)

    async def mirror(
        self, project: ProjectSource, samples: Sequence[str | SampleSummary | SampleDetail]
    ) -> list[SampleReport]:
        """Mirror these samples of one project now, whatever the listing says: an id is fetched, a listing row
        is gated first (no request for a sample that is not ready or archived), a detail is used as it is."""
        items = [
            _Item(x) if isinstance(x, str)
            else _Item(x.id, summary=x) if isinstance(x, SampleSummary)
            else _Item(x.id, detail=x)
            for x in samples
        ]  # fmt: skip
        await self._destination_down()  # probed afresh: _process pauses while it is unusable
        return await self._process(self._project(project), items)

    def wanted(self, detail: SampleDetail) -> list[Deliverable]:
        """The sample's files of the configured types (exact match; none configured = all)."""
        types = self.config.download.file_types
        return [d for d in detail.deliverables if not types or d.file_type in types]

    def platform(self, project: ProjectSource) -> Platform:
        return self._project(project).platform

    async def aclose(self) -> None:
        if self.dest is not None:
            self.dest.close()
        await self.transfer.aclose()
        for p in self._projects.values():
            await p.platform.aclose()

    async def __aenter__(self) -> MirrorLoop:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- scheduling ---------------------------------------------------------------------------------------------
    def _project(self, project: ProjectSource) -> _Project:
        try:
            return self._projects[project]
        except KeyError:
            raise ValueError(f"project {project.id} is not in [download] projects") from None

    def _queued(self, p: _Project, n: int) -> None:
        self._waiting[p.platform.source] = n
        STATS.set_queued("download", sum(self._waiting.values()))

    async def _poll(self, p: _Project) -> None:
        dl = self.config.download
        # Wake for whichever comes first: the poll, the recheck, the full re-list (each is cheap when not due).
        wait = min(x for x in (dl.interval, dl.recheck_interval, dl.full_relist_interval) if x > 0)
        while True:
            p.wake.clear()
            try:
                full = await self._due(p, "full", dl.full_relist_interval, first=False)
                report = await self.cycle(p.source, full=full)
                if report.paused is None:
                    if full:
                        await self._done(p, "full")
                    if await self._due(p, "recheck", dl.recheck_interval, first=True):
                        await self._recheck(p)
                        await self._done(p, "recheck")
            except Exception as e:  # the API down past the retry deadline, the journal, ...: next cycle
                STATS.error("mirror")
                event(log, "mirror.cycle_failed", logging.ERROR, project=p.source.id, error=f"{type(e).__name__}: {e}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await p.wake.wait()

    async def _due(self, p: _Project, kind: str, interval: float, *, first: bool) -> bool:
        """Whether the periodic `kind` (full re-list, recheck) is due; the last run is kept in the journal, so
        a daemon restarted more often than `interval` still runs it. `first`: due when it never ran."""
        if interval <= 0:
            return False
        key = f"{kind}:{p.platform.source}"
        last = await self.journal.run(jd.get_watermark, key)
        if last is None:
            if not first:
                await self.journal.run(jd.set_watermark, key, repr(time.time()))
            return first
        return time.time() - float(last) >= interval

    async def _done(self, p: _Project, kind: str) -> None:
        await self.journal.run(jd.set_watermark, f"{kind}:{p.platform.source}", repr(time.time()))

    async def _recheck(self, p: _Project) -> RecheckReport | None:
        """Stat every mirrored file of the project; samples with a missing or changed file are owed again."""
        assert self.dest is not None
        state = self.dest.state
        if not state.up or state.root is None:
            return None
        try:
            report = await recheck(self.journal, p.platform.source, state.root, state.check)
        except DestinationDown:
            await self.dest.refresh()  # logs the change; the next cycle pauses
            return None
        if report.reopened:
            p.wake.set()  # fetch them now, not one interval later
        return report

    async def _dispatch(self, tg: asyncio.TaskGroup) -> None:
        """Webhook triggers, at most TRIGGER_PASSES at a time: while they are all busy, new triggers wait and are
        merged into one pass per project (a burst of webhooks never becomes a burst of tasks)."""
        slots = asyncio.Semaphore(TRIGGER_PASSES)
        while True:
            await self._triggered.wait()
            await slots.acquire()
            self._triggered.clear()
            batch, self._pending = self._pending, []
            merged: dict[str | None, list[str]] = {}
            for project_id, ids in batch:
                targets = self._targets(project_id)
                if not targets:
                    event(log, "mirror.trigger_ignored", project=project_id, reason="project not configured")
                elif not ids:
                    for p in targets:
                        p.wake.set()
                else:
                    known = merged.setdefault(project_id, [])
                    known += [i for i in ids if i not in known]
            if not merged:
                slots.release()
                continue
            tg.create_task(self._run_triggers(merged, slots), name="mirror-trigger")

    def _targets(self, project_id: str | None) -> list[_Project]:
        return [p for p in self._projects.values() if project_id is None or p.source.id == project_id]

    async def _run_triggers(self, merged: dict[str | None, list[str]], slots: asyncio.Semaphore) -> None:
        try:
            for project_id, ids in merged.items():
                await self._run_trigger(self._targets(project_id), ids, project_id is None)
        finally:
            slots.release()

    async def _run_trigger(self, targets: list[_Project], ids: list[str], search: bool) -> None:
        try:
            if await self._destination_down() is not None:
                return  # the poll after the destination is back lists these samples (the watermark waited)
            if not search:
                await self._process(targets[0], [_Item(i) for i in ids])
                return
            for p, items in (await self._locate(targets, ids)).items():
                await self._process(p, items)
        except Exception as e:  # never let one trigger take the loop down; polling will catch up
            STATS.error("mirror")
            event(log, "mirror.trigger_failed", logging.ERROR, samples=ids[:20], error=f"{type(e).__name__}: {e}")

    async def _locate(self, targets: list[_Project], ids: list[str]) -> dict[_Project, list[_Item]]:
        """Which configured project each sample belongs to (one GET per sample and platform asked)."""
        found: dict[_Project, list[_Item]] = defaultdict(list)
        for sample_id in ids:
            asked: set[tuple[str, str]] = set()
            for p in targets:
                api = (p.source.api, p.source.host)
                if api in asked:
                    continue
                asked.add(api)
                try:
                    detail = await p.platform.sample(sample_id)
                except SampleNotFound:
                    continue
                owner = next((q for q in targets if q.source.api == p.source.api and q.source.host == p.source.host
                              and q.platform.project_id == detail.project_id), None)  # fmt: skip
                if owner is not None:
                    found[owner].append(_Item(sample_id, detail=detail))
                    break
            else:
                event(log, "mirror.trigger_ignored", sample=sample_id, reason="not in a configured project")
        return found

    @contextlib.asynccontextmanager
    async def _sample_lock(self, source: str, sample_id: str) -> AsyncIterator[None]:
        """One pass per sample at a time (a poll and a webhook may name the same sample)."""
        key = (source, sample_id)
        lock = self._sample_locks.setdefault(key, asyncio.Lock())
        self._lock_users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[key] -= 1
            if not self._lock_users[key]:
                del self._lock_users[key], self._sample_locks[key]

    # -- samples --------------------------------------------------------------------------------------------------
    async def _process(self, p: _Project, items: Iterable[_Item]) -> list[SampleReport]:
        """Mirror samples with a bounded number in hand, so URLs are fetched just before they are used."""
        queue = list(items)
        if queue and self.dest is not None and not self.dest.state.up:
            # Nothing is fetched while the destination is unusable; they stay owed (or listed: no watermark move).
            return [self._paused(i) for i in queue]
        queue.reverse()
        reports: list[SampleReport] = []
        to_restore: list[SampleReport] = []

        async def worker() -> None:
            while queue:
                item = queue.pop()
                if self.dest is not None and not self.dest.state.up:  # went away during this pass
                    reports.append(self._paused(item))
                    continue
                report = await self._sample(p, item)
                reports.append(report)
                if report.state == "archived" and self._auto_restore(p):
                    to_restore.append(report)

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(len(queue), max(2, self.config.download.concurrency))):
                tg.create_task(worker())
        if to_restore:
            restored = await self._restore(p, to_restore)
            reports = [restored.get(r.sample_id, r) for r in reports]
        return reports

    def _paused(self, item: _Item) -> SampleReport:
        why = self.dest.state.reason if self.dest is not None else ""
        return SampleReport(item.sample_id, "", "paused", error=f"paused: {why}")

    def _auto_restore(self, p: _Project) -> bool:
        return self.config.download.auto_restore and p.platform.capabilities.supports_restore

    async def _sample(self, p: _Project, item: _Item) -> SampleReport:
        source = p.platform.source
        async with self._sample_lock(source, item.sample_id):
            # Re-read the state under the lock: a webhook pass may have finished this sample while we queued,
            # and a sample is counted as mirrored only on its transition to done.
            rows = await self.journal.run(jd.sample_rows, source, [item.sample_id])
            row = rows.get(item.sample_id)
            # A done sample reopened by the recheck counts as mirrored once, as before.
            prior = "done" if row and row.error and row.error.startswith(jd.REPAIR) else row.state if row else None
            item = replace(item, prior=prior)
            try:
                if item.summary is not None and item.detail is None:
                    gated = await self._gate(p, item.summary)
                    if gated is not None:
                        return gated
                fetched = item.detail is None
                detail = item.detail or await p.platform.sample(item.sample_id)
                report = await self._gate(p, detail.summary) or await self._mirror(p, detail, item.prior)
                return replace(report, fetched=fetched)
            except SampleNotFound:
                msg = f"sample {item.sample_id} is no longer visible in project {p.source.id}"
                await self.journal.run(
                    jd.mark_sample, source, item.sample_id, state="skipped", client_id=None, modified=None,
                    status=None, error=msg,
                )  # fmt: skip
                return SampleReport(item.sample_id, "", "skipped", error=msg, fetched=True)
            except Exception as e:  # an API error past its retries: the sample is owed, next cycle retries
                msg = f"sample {item.sample_id}: {type(e).__name__}: {e}"
                STATS.error("mirror")
                event(log, "mirror.sample_failed", logging.ERROR, sample=item.sample_id, error=msg, exc_info=e)
                s = item.summary
                await self.journal.run(
                    jd.mark_sample, source, item.sample_id, state="failed", client_id=s.client_id if s else None,
                    modified=_iso(s.modified) if s else None, status=s.status if s else None, error=msg,
                )  # fmt: skip
                return SampleReport(item.sample_id, s.client_id if s else "", "failed", error=msg)

    async def _gate(self, p: _Project, s: SampleSummary) -> SampleReport | None:
        """A report when the sample cannot be mirrored now (not ready, excluded, archived), else None."""
        source = p.platform.source
        status = s.status.lower()
        state, error = None, None
        if not status.startswith(("succeeded", "failed")):
            state = "not_ready"
        elif status.startswith("failed") and not self.include_failed:
            state = "skipped"
        elif not s.downloadable:
            if s.archive_status.lower().startswith("restore"):
                state = "restoring"  # restore_requested: re-checked every cycle
            else:
                state = "archived"
                error = (
                    f"sample {s.id} ({s.client_id}) is archived and was skipped; set [download] auto_restore = true "
                    "or restore it (gencove projects restore-samples)"
                )
                if not self._auto_restore(p):
                    event(log, "mirror.archived", logging.WARNING, sample=s.id, client_id=s.client_id)
        if state is None:
            return None
        await self.journal.run(
            jd.mark_sample, source, s.id, state="skipped" if state == "not_ready" else state, client_id=s.client_id,
            modified=_iso(s.modified), status=s.status, error=None if self._auto_restore(p) else error,
        )  # fmt: skip
        return SampleReport(s.id, s.client_id, state, error=error)

    async def _restore(self, p: _Project, archived: list[SampleReport]) -> dict[str, SampleReport]:
        out: dict[str, SampleReport] = {}
        source = p.platform.source
        for i in range(0, len(archived), RESTORE_BATCH):
            batch = archived[i : i + RESTORE_BATCH]
            ids = [r.sample_id for r in batch]
            try:
                await p.platform.restore(ids)
            except Exception as e:
                STATS.error("mirror")
                event(log, "mirror.restore_failed", logging.ERROR, project=p.source.id, samples=len(ids), error=str(e))
                for r in batch:
                    msg = f"sample {r.sample_id}: restore request failed: {e}"
                    await self.journal.run(
                        jd.mark_sample, source, r.sample_id, state="archived", client_id=r.client_id, modified=None,
                        status=None, error=msg,
                    )  # fmt: skip
                    out[r.sample_id] = SampleReport(r.sample_id, r.client_id, "archived", error=msg)
                continue
            event(log, "mirror.restore_requested", project=p.source.id, samples=len(ids))
            for r in batch:
                # modified None: the next listing shows a changed sample, and `restoring` is re-checked anyway.
                await self.journal.run(
                    jd.mark_sample, source, r.sample_id, state="restoring", client_id=r.client_id, modified=None,
                    status=None,
                )  # fmt: skip
                out[r.sample_id] = SampleReport(r.sample_id, r.client_id, "restoring")
        return out

    async def _mirror(self, p: _Project, detail: SampleDetail, prior: str | None) -> SampleReport:
        s = detail.summary
        source = p.platform.source
        dl = self.config.download
        assert self.destination is not None
        wanted = self.wanted(detail)
        try:
            plan = plan_sample(
                dl.template,
                ((d.file_id, FileNaming(s.client_id, s.id, d.file_type, d.default_filename)) for d in wanted),
            )
        except TemplateError as e:
            STATS.error("mirror")
            event(log, "mirror.sample_failed", logging.ERROR, sample=s.id, error=str(e))
            await self.journal.run(
                jd.mark_sample, source, s.id, state="failed", client_id=s.client_id, modified=_iso(s.modified),
                status=s.status, error=str(e), ready=True,
            )  # fmt: skip
            return SampleReport(s.id, s.client_id, "failed", error=str(e))
        ready_at = await self.journal.run(
            jd.mark_sample, source, s.id, state="pending", client_id=s.client_id, modified=_iso(s.modified),
            status=s.status, ready=True,
        )  # fmt: skip
        refresh = _Refresher(p.platform, detail)
        verify_sha = p.platform.capabilities.has_checksums
        state = self.dest.state if self.dest is not None else None
        if state is None or state.root is None:
            raise RuntimeError(f"the download destination is not usable: {state.reason if state else 'none'}")
        root = state.root if state.check is not None else await asyncio.to_thread(made_root, state.root)
        jobs: list[FileJob] = []
        refused: list[FileResult] = []
        escapes = await asyncio.to_thread(_escapes, root, plan)  # realpath() reads the disk: not on the loop
        for d in wanted:
            job = FileJob(source, p.platform.project_id, s.id, s.client_id, d, root / plan[d.file_id],
                          "sha256" if verify_sha and d.sha256 else "size", root, state.check)  # fmt: skip
            if d.file_id in escapes:  # a symlink out of the root, seen before any request
                refused.append(await self.transfer.refuse(job, escapes[d.file_id]))  # this file fails alone
                continue
            jobs.append(job)
        # fetch() returns failures instead of raising, so one bad file never cancels its siblings.
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self.transfer.fetch(job, refresh.for_file(job.deliverable.file_id))) for job in jobs
            ]
        results: list[FileResult] = [t.result() for t in tasks] + refused
        failed = [r for r in results if not r.ok]
        if failed and self.dest is not None:
            await self.dest.refresh()  # a share unmounted mid-pass pauses the samples still queued
        downloaded = sum(1 for r in results if r.outcome == "downloaded")
        present = sum(1 for r in results if r.outcome == "present")
        nbytes = sum(r.nbytes for r in results)
        if failed:
            msg = f"sample {s.id} ({s.client_id}): {len(failed)} of {len(results)} files failed: " + "; ".join(
                r.error or "" for r in failed[:5]
            )
            await self.journal.run(
                jd.mark_sample, source, s.id, state="failed", client_id=s.client_id, modified=_iso(s.modified),
                status=s.status, error=msg,
            )  # fmt: skip
            return SampleReport(s.id, s.client_id, "failed", downloaded, present, nbytes, msg)
        await self.journal.run(
            jd.mark_sample, source, s.id, state="done", client_id=s.client_id, modified=_iso(s.modified),
            status=s.status,
        )  # fmt: skip
        if prior != "done":
            STATS.sample_done("mirrored")
            began = s.status_time.timestamp() if s.status_time else ready_at
            if began is not None:
                STATS.observe_e2e("mirror", max(0.0, time.time() - began))
            event(log, "mirror.sample_done", sample=s.id, client_id=s.client_id, files=len(results), bytes=nbytes)
        return SampleReport(s.id, s.client_id, "done", downloaded, present, nbytes)


class _Refresher:
    """Fresh URLs for one sample's files: concurrent 403s on its files cost one `GET samples/{id}`, and a file
    that starts after a refresh uses the new URL straight away."""

    def __init__(self, platform: Platform, detail: SampleDetail) -> None:
        self._platform = platform
        self._id = detail.id
        self._files = {d.file_id: d for d in detail.deliverables}
        self._lock = asyncio.Lock()

    def for_file(self, file_id: str) -> UrlSource:
        return _FileUrls(self, file_id)

    async def refresh(self, file_id: str, stale: str | None) -> Deliverable:
        async with self._lock:
            current = self._files.get(file_id)
            if current is None or current.url == stale:  # nobody refreshed since our URL was issued
                detail = await self._platform.sample(self._id)
                self._files = {d.file_id: d for d in detail.deliverables}
                current = self._files.get(file_id)
            if current is None:
                raise SampleNotFound(f"file {file_id} is no longer part of sample {self._id}")
            return current


@dataclass(slots=True)
class _FileUrls:
    owner: _Refresher
    file_id: str
    used: str | None = None

    def current(self) -> str | None:
        d = self.owner._files.get(self.file_id)
        self.used = d.url if d else None
        return self.used

    async def refresh(self) -> Deliverable:
        fresh = await self.owner.refresh(self.file_id, self.used)
        self.used = fresh.url
        return fresh


def _escapes(root: Path, plan: dict[str, str]) -> dict[str, str]:
    """{file id: why} for the planned paths that lead out of the root (through a symlink that exists now)."""
    out = {}
    for fid, rel in plan.items():
        try:
            resolve_inside(root, rel)
        except TemplateError as e:
            out[fid] = str(e)
    return out


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.isoformat()
