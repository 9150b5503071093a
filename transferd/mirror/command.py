"""`transferd download DEST`: mirror a project's (or some samples') deliverables once, like `gencove download`.

Flags follow the reference client (`--project-id` xor `--sample-ids`, comma-separated `--file-types`,
`--download-template`, `--no-skip-existing`, `--no-progress`), with transferd's guarantees: files land
verified (sha256) and atomically, an interrupted run resumes from its `.part` files, and the journal
remembers what is mirrored so a second run costs no downloads. Unlike the reference client, `--file-types`
is an exact match, and a client id never places a file outside DEST.

Without `-c` the API key comes from $TRANSFERD_API_KEY and the journal from `--state` (default
~/.local/state/transferd/download.sqlite3). Exit codes: 0 everything requested is mirrored and verified,
1 something is not (a summary says what), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from transferd import eventloop
from transferd.config import API_KEY_ENV, API_KINDS, Config, DownloadConfig, ProjectSource, load_config
from transferd.errors import TransferdError, UsageError
from transferd.journal import Journal
from transferd.log import register_secret, setup_logging
from transferd.mirror.loop import MirrorLoop, SampleReport
from transferd.mirror.platform import InvalidId, SampleDetail, SampleNotFound, SampleSummary, make_platform
from transferd.mirror.template import DEFAULT_TEMPLATE, TemplateError, validate_template
from transferd.mirror.transfer import scrub
from transferd.retry import ApiError

DEFAULT_STATE = Path("~/.local/state/transferd/download.sqlite3")
FETCH_CONCURRENCY = 8
LIST_BATCH = 200  # samples listed, fetched and mirrored together by a project download


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("destination", metavar="DEST", help="local folder to mirror into")
    p.add_argument("--project-id", help="mirror every finished sample of this project")
    p.add_argument("--sample-ids", help="mirror these samples (comma-separated ids)")
    p.add_argument("--file-types", help="only these file types (comma-separated, exact keys); default: all")
    p.add_argument(
        "--download-template", help=f"path of each file under DEST (default {DEFAULT_TEMPLATE.replace('%', '%%')})"
    )
    p.add_argument(
        "--skip-existing", action=argparse.BooleanOptionalAction, default=True,
        help="skip files already mirrored and verified (default); --no-skip-existing downloads them again",
    )  # fmt: skip
    p.add_argument("-c", "--config", help="transferd config (API key, host, journal, [download] settings)")
    p.add_argument("--host", help="Gencove API host (default: the config's, else https://api.gencove.com)")
    p.add_argument("--api", choices=API_KINDS, help="API generation of --project-id (default: the config's, else v2)")
    p.add_argument("--state", help=f"journal file (default: the config's, else {DEFAULT_STATE})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    cfg, configured, api_key, state = _settings(args)
    setup_logging("warning", cfg.log.format)  # warnings and errors only: the bar and the summary say the rest
    journal = Journal.open(state)
    try:
        return eventloop.run(_download(args, cfg, configured, api_key, journal))
    except (TransferdError, KeyboardInterrupt):
        raise
    except Exception as e:  # one line for the user, never a raw traceback (the journal has the details)
        raise TransferdError(scrub(f"{type(e).__name__}: {e}")) from None
    finally:
        journal.close()


# -- settings -----------------------------------------------------------------------------------------------------
def _split(value: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (value or "").split(",") if x.strip())


def _settings(args: argparse.Namespace) -> tuple[Config, tuple[ProjectSource, ...], str, Path]:
    """(config for this run, the config file's project entries, API key, journal path)."""
    if args.project_id and args.sample_ids:
        raise UsageError("Must specify only one of: --project-id, --sample-ids")
    if not args.project_id and not args.sample_ids:
        raise UsageError("Must specify one of: --project-id, --sample-ids")
    if getattr(args, "api", None) in ("legacy-projects", "legacy-apps") and args.sample_ids:
        raise UsageError(f"--api {args.api}: use --project-id (legacy sample ids only exist within a project)")
    if args.destination == "-":
        raise UsageError("DEST must be a folder ('-' is not supported)")
    if args.config:
        base = load_config(args.config)
        api_key = base.api_key()
        state = Path(args.state).expanduser() if args.state else base.state.path
    else:
        base = Config(file=Path("(command line)"))
        api_key = os.environ.get(API_KEY_ENV, "").strip()
        if not api_key:
            raise UsageError(f"no API key: set ${API_KEY_ENV} or give -c CONFIG")
        register_secret(api_key)
        state = Path(args.state or DEFAULT_STATE).expanduser()
    template = args.download_template or (base.download.template if args.config else DEFAULT_TEMPLATE)
    try:
        validate_template(template)
    except TemplateError as e:
        raise UsageError(f"--download-template: {e}") from None
    host = (args.host or base.gencove.host).rstrip("/")
    download = DownloadConfig(
        destination=Path(args.destination).expanduser().resolve(),
        template=template,
        file_types=_split(args.file_types) if args.file_types else base.download.file_types,
        # Like `gencove download`, a one-shot run takes failed samples' deliverables unless the config says no.
        include_failed=base.download.include_failed if args.config else True,
        auto_restore=base.download.auto_restore,
        concurrency=base.download.concurrency,
        max_bytes_in_flight=base.download.max_bytes_in_flight,
    )
    cfg = replace(base, gencove=replace(base.gencove, host=host), download=download)
    return cfg, base.download.projects, api_key, state


def _source(base_sources: tuple[ProjectSource, ...], project_id: str) -> ProjectSource:
    """The config's entry for this project when there is one (its api, host, key), else a v2 project."""
    for s in base_sources:
        if s.id == project_id:
            return s
    return ProjectSource(id=project_id)


# -- the run ------------------------------------------------------------------------------------------------------
async def _download(
    args: argparse.Namespace, cfg: Config, configured: tuple[ProjectSource, ...], api_key: str, journal: Journal
) -> int:
    with _progress(not args.no_progress) as progress:
        run = _Run(cfg, api_key, journal, progress, args.skip_existing)
        if args.project_id:
            source = _source(configured, args.project_id)
            if getattr(args, "api", None):
                source = replace(source, api=args.api)
            reports = await run.project(source)
            strict = False  # a project's samples that are still running have no deliverables yet: not a failure
        else:
            reports = await run.samples(list(_split(args.sample_ids)), configured)
            strict = True  # a named sample that is not mirrored is a failure
    return _summarise(reports, cfg.download.destination, strict)


class _Run:
    def __init__(self, cfg: Config, key: str, journal: Journal, progress: _Progress, skip_existing: bool) -> None:
        self.cfg, self.key, self.journal, self.progress, self.skip_existing = cfg, key, journal, progress, skip_existing

    def _loop(self, sources: tuple[ProjectSource, ...]) -> MirrorLoop:
        cfg = replace(self.cfg, download=replace(self.cfg.download, projects=sources))
        return MirrorLoop(cfg, self.journal, self.key, skip_existing=self.skip_existing, on_bytes=self.progress.advance)

    async def project(self, source: ProjectSource) -> list[SampleReport]:
        async with self._loop((source,)) as loop:
            platform = loop.platform(source)
            await _check_file_types(platform, self.cfg.download.file_types)
            # The listing is mirrored LIST_BATCH samples at a time: never held whole, and URLs are fresh when used.
            reports: list[SampleReport] = []
            batch: list[SampleSummary] = []
            try:
                async with contextlib.aclosing(platform.changed_since(None)) as rows:
                    async for s in rows:
                        batch.append(s)
                        if len(batch) >= LIST_BATCH:
                            reports += await self._batch(loop, source, batch)
                            batch = []
            except ApiError as e:
                if 400 <= e.status < 500 and not reports:
                    raise TransferdError(f"project {source.id} not found (HTTP {e.status})") from None
                raise
            return reports + await self._batch(loop, source, batch)

    async def _batch(self, loop: MirrorLoop, source: ProjectSource, listed: list[SampleSummary]) -> list[SampleReport]:
        # Fetch the samples with deliverables first, so the bar knows its total; the rest are only reported.
        ready = [s for s in listed if s.status.lower().startswith(("succeeded", "failed")) and s.downloadable]
        details = await _fetch(loop.platform(source), [s.id for s in ready])  # a sample that fails, fails alone
        found = [d for d in details if isinstance(d, SampleDetail)]
        ready_ids = {s.id for s in ready}
        others: list[str | SampleSummary | SampleDetail] = [s for s in listed if s.id not in ready_ids]
        self.progress.add(sum(f.size or 0 for d in found for f in loop.wanted(d)), f"project {source.id}")
        return _unfetched(details) + await loop.mirror(source, [*found, *others])

    async def samples(self, ids: list[str], configured: tuple[ProjectSource, ...]) -> list[SampleReport]:
        lookup = make_platform(ProjectSource(id=""), self.cfg, self.key)  # only `sample()`, which needs no project
        try:
            details = await _fetch(lookup, ids)
        finally:
            await lookup.aclose()
        by_project: dict[str, list[SampleDetail]] = {}
        for d in details:
            if isinstance(d, SampleDetail):
                by_project.setdefault(d.project_id or "", []).append(d)
        sources = tuple(_source(configured, pid) for pid in by_project)
        reports = _unfetched(details)
        async with self._loop(sources) as loop:
            found = [d for ds in by_project.values() for d in ds]
            self.progress.start(sum(f.size or 0 for d in found for f in loop.wanted(d)), f"{len(ids)} sample(s)")
            for source in sources:
                reports += await loop.mirror(source, by_project[source.id])
        return reports


def _unfetched(details: list[SampleDetail | SampleReport]) -> list[SampleReport]:
    return [x for x in details if isinstance(x, SampleReport)]


async def _fetch(platform: Any, ids: list[str]) -> list[SampleDetail | SampleReport]:
    """Every sample's detail (fresh URLs), a few at a time. A sample that cannot be fetched (not found, a 4xx,
    an answer without its fields) is returned as a failed report: it fails alone, the others go on."""
    slots = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(sample_id: str) -> SampleDetail | SampleReport:
        async with slots:
            try:
                return await platform.sample(sample_id)
            except InvalidId as e:
                return SampleReport(sample_id, "", "failed", error=str(e))
            except SampleNotFound:
                return SampleReport(sample_id, "", "failed", error=f"sample {sample_id} not found")
            except Exception as e:  # ApiError past its retries, MalformedResponse, ...
                msg = scrub(f"sample {sample_id}: {type(e).__name__}: {e}")
                return SampleReport(sample_id, "", "failed", error=msg)

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(i)) for i in ids]
    return [t.result() for t in tasks]


async def _check_file_types(platform: Any, wanted: tuple[str, ...]) -> None:
    if not wanted or not hasattr(platform, "file_types"):
        return
    try:
        known = set(await platform.file_types())
    except ApiError as e:
        print(f"warning: could not check --file-types ({e})", file=sys.stderr)
        return
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise UsageError(f"Invalid file types: {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _summarise(reports: list[SampleReport], destination: Path | None, strict: bool) -> int:
    def n(state: str) -> int:
        return sum(1 for r in reports if r.state == state)

    files = sum(r.downloaded for r in reports)
    present = sum(r.present for r in reports)
    nbytes = sum(r.nbytes for r in reports)
    bad = [r for r in reports
           if r.state in ("failed", "archived", "restoring", "paused") or (strict and r.state != "done")]  # fmt: skip
    for r in bad:
        print(f"  {r.state}: {r.error or f'sample {r.sample_id} ({r.client_id}) is {r.state}'}", file=sys.stderr)
    parts = [f"{n('done')} sample(s) mirrored to {destination}: {files} file(s) downloaded ({nbytes} bytes)",
             f"{present} already present"]  # fmt: skip
    for state in ("not_ready", "skipped", "archived", "restoring", "paused", "failed"):
        if n(state):
            parts.append(f"{n(state)} {state.replace('_', ' ')}")
    print("; ".join(parts))
    return 1 if bad else 0


# -- progress -------------------------------------------------------------------------------------------------------
class _Progress:
    """Feeds `transferd.progress.Progress` once the total is known; a no-op without a bar."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._total = 0

    def start(self, total: int, label: str) -> None:
        if not self.enabled or total <= 0:
            return
        factory = _progress_factory()
        if factory is not None:
            self._bar = factory(total, label)
            self._total = total

    def add(self, more: int, label: str) -> None:
        """Grow the total as the next batch of samples is known (the first call starts the bar)."""
        if self._bar is None:
            self.start(more, label)
        elif more > 0:
            self._total += more
            self._bar.set_total(self._total)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _progress_factory() -> Callable[[int, str], Any] | None:
    try:
        from transferd.progress import Progress
    except ImportError:  # the bar is optional: never fail a download for it
        return None
    return Progress


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[_Progress]:
    p = _Progress(enabled)
    try:
        yield p
    finally:
        p.close()
