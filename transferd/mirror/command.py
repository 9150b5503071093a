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
import json
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
from transferd.journal import downloads as dq
from transferd.log import register_secret, setup_logging
from transferd.mirror import confined
from transferd.mirror.loop import MirrorLoop, SampleReport
from transferd.mirror.platform import InvalidId, SampleDetail, SampleNotFound, SampleSummary, make_platform
from transferd.mirror.template import DEFAULT_TEMPLATE, TemplateError, validate_template
from transferd.mirror.transfer import scrub
from transferd.retry import ONE_SHOT, ApiError

DEFAULT_STATE = Path("~/.local/state/transferd/download.sqlite3")
FETCH_CONCURRENCY = 8
LIST_BATCH = 200  # samples listed, fetched and mirrored together by a project download


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("destination", metavar="DEST", help="local folder to mirror into ('-' with --download-urls)")
    p.add_argument("--project-id", help="mirror every finished sample of this project")
    p.add_argument("--sample-ids", help="mirror these samples (comma-separated ids)")
    p.add_argument(
        "--file-types",
        help="only these file types (comma-separated keys; as with gencove download, a key also takes the types it "
        "begins: impute-vcf takes impute-vcf-csi); default: all",
    )
    p.add_argument(
        "--download-urls", action="store_true",
        help="write the samples' files and signed download URLs as JSON to DEST (a file, or - for stdout) instead of "
        "downloading (as gencove download does)",
    )  # fmt: skip
    p.add_argument("--checksums", action="store_true", help="write <file>.sha256 (sha256sum format) beside each file")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON (one object) instead of text")
    p.add_argument(
        "--download-template", help=f"path of each file under DEST (default {DEFAULT_TEMPLATE.replace('%', '%%')})"
    )
    p.add_argument(
        "--skip-existing", action=argparse.BooleanOptionalAction, default=True,
        help="skip files already mirrored and verified (default); --no-skip-existing downloads them again",
    )  # fmt: skip
    p.add_argument("-c", "--config", help="transferd config (API key, host, journal, [download] settings)")
    p.add_argument(
        "--host", help="Gencove API host (default: the config's, else $GENCOVE_HOST, else https://api.gencove.com)"
    )
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
    if args.destination == "-" and not args.download_urls:
        raise UsageError("DEST must be a folder ('-' means stdout, with --download-urls only)")
    if args.config:
        base = load_config(args.config)
        api_key = base.api_key()
        state = Path(args.state).expanduser() if args.state else base.state.path
    else:
        base = Config(file=Path("(command line)"))
        host = os.environ.get("GENCOVE_HOST", "").strip()  # as the gencove CLI reads it
        if host:
            base = replace(base, gencove=replace(base.gencove, host=host))
        api_key = os.environ.get(API_KEY_ENV, "").strip() or os.environ.get("GENCOVE_API_KEY", "").strip()
        if not api_key:
            raise UsageError(f"no API key: set ${API_KEY_ENV} (or $GENCOVE_API_KEY), or give -c CONFIG")
        register_secret(api_key)
        state = Path(args.state or DEFAULT_STATE).expanduser()
    template = args.download_template or (base.download.template if args.config else DEFAULT_TEMPLATE)
    try:
        validate_template(template)
    except TemplateError as e:
        raise UsageError(f"--download-template: {e}") from None
    host = (args.host or base.gencove.host).rstrip("/")
    download = DownloadConfig(
        destination=None if args.destination == "-" else Path(args.destination).expanduser().resolve(),
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


def _chosen(args: argparse.Namespace, configured: tuple[ProjectSource, ...]) -> ProjectSource:
    """The project of `--project-id` (with `--api`), or none for `--sample-ids` (only `sample()` is used)."""
    if not args.project_id:
        return ProjectSource(id="")
    source = _source(configured, args.project_id)
    return replace(source, api=args.api) if getattr(args, "api", None) else source


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
    if cfg.download.file_types:  # gencove's semantics: exact keys, each also taking the types it begins
        lookup = make_platform(_chosen(args, configured), cfg, api_key, ONE_SHOT)
        try:
            types = await _check_file_types(lookup, cfg.download.file_types)
        finally:
            await lookup.aclose()
        cfg = replace(cfg, download=replace(cfg.download, file_types=types))
    if args.download_urls:
        return await _download_urls(args, cfg, configured, api_key)
    with _progress(not args.no_progress and not args.json) as progress:
        run = _Run(cfg, api_key, journal, progress, args.skip_existing)
        if args.project_id:
            reports = await run.project(_chosen(args, configured))
            strict = False  # a project's samples that are still running have no deliverables yet: not a failure
        else:
            reports = await run.samples(list(_split(args.sample_ids)), configured)
            strict = True  # a named sample that is not mirrored is a failure
    if args.checksums and cfg.download.destination is not None:
        await asyncio.to_thread(_write_checksums, journal, cfg.download.destination, reports)
    return _summarise(reports, cfg.download.destination, strict, as_json=args.json)


class _Run:
    def __init__(self, cfg: Config, key: str, journal: Journal, progress: _Progress, skip_existing: bool) -> None:
        self.cfg, self.key, self.journal, self.progress, self.skip_existing = cfg, key, journal, progress, skip_existing

    def _loop(self, sources: tuple[ProjectSource, ...]) -> MirrorLoop:
        cfg = replace(self.cfg, download=replace(self.cfg.download, projects=sources))
        return MirrorLoop(cfg, self.journal, self.key, skip_existing=self.skip_existing, on_bytes=self.progress.advance,
                          policy=ONE_SHOT)  # fmt: skip

    async def project(self, source: ProjectSource) -> list[SampleReport]:
        async with self._loop((source,)) as loop:
            platform = loop.platform(source)
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
                if e.status == 401:
                    raise UsageError(f"{self.cfg.gencove.host}: the API key was refused (HTTP 401)") from None
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
        lookup = make_platform(ProjectSource(id=""), self.cfg, self.key, ONE_SHOT)  # only `sample()`: no project
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


async def _check_file_types(platform: Any, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """The file types to mirror: each requested key must exist, and also takes the keys it begins, as `gencove
    download` matches (`impute-vcf` takes `impute-vcf-csi`). Unchecked (as given) when the API cannot say."""
    if not wanted or not hasattr(platform, "file_types"):
        return wanted
    try:
        known = set(await platform.file_types())
    except ApiError as e:
        print(f"warning: could not check --file-types ({e})", file=sys.stderr)
        return wanted
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise UsageError(f"Invalid file types: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    prefixes = tuple(t.lower() for t in wanted)
    return tuple(sorted(k for k in known if k.lower().startswith(prefixes)))


async def _download_urls(
    args: argparse.Namespace, cfg: Config, configured: tuple[ProjectSource, ...], api_key: str
) -> int:
    """`--download-urls`: the samples' files with fresh signed URLs, as JSON (gencove download's shape)."""
    if args.project_id:
        platform = make_platform(_chosen(args, configured), cfg, api_key, ONE_SHOT)
        try:
            ids = [s.id async for s in platform.changed_since(None)
                   if s.status.lower().startswith(("succeeded", "failed")) and s.downloadable]  # fmt: skip
            details = await _fetch(platform, ids)
        finally:
            await platform.aclose()
    else:
        lookup = make_platform(ProjectSource(id=""), cfg, api_key, ONE_SHOT)
        try:
            details = await _fetch(lookup, list(_split(args.sample_ids)))
        finally:
            await lookup.aclose()
    types = cfg.download.file_types
    doc = [
        {
            "gencove_id": d.id, "client_id": d.summary.client_id,
            "last_status": {"status": d.summary.status, "created": _iso(d.summary.status_time)},
            "archive_last_status": {"status": d.summary.archive_status},
            "files": {f.file_type: {"id": f.file_id, "download_url": f.url, "checksum_sha256": f.sha256}
                      for f in d.deliverables if not types or f.file_type in types},
        }
        for d in details if isinstance(d, SampleDetail)
    ]  # fmt: skip
    text = json.dumps(doc, indent=2) + "\n"
    if args.destination == "-":
        sys.stdout.write(text)
    else:
        await asyncio.to_thread(_write_text, args.destination, text)
    failed = [d for d in details if isinstance(d, SampleReport)]
    for r in failed:
        print(f"  failed: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def _write_text(destination: str, text: str) -> None:
    Path(destination).expanduser().write_text(text)


def _iso(when: Any) -> str | None:
    return when.isoformat() if when is not None else None


def _write_checksums(journal: Journal, destination: Path, reports: list[SampleReport]) -> None:
    """`--checksums`: `<file>.sha256` beside each mirrored file, in sha256sum's binary-mode format (as gencove
    download writes them), from the checksums the files were verified against; written through the same
    confinement as the files."""
    done = [r.sample_id for r in reports if r.state == "done"]
    for path, sha256 in journal.call(dq.done_files, done):
        relative = Path(path).relative_to(destination)
        line = f"{sha256} *{relative.name}\n".encode()
        confined.write_atomic(destination, relative.with_name(relative.name + ".sha256"), line, "sha256")


def _summarise(reports: list[SampleReport], destination: Path | None, strict: bool, as_json: bool = False) -> int:
    def n(state: str) -> int:
        return sum(1 for r in reports if r.state == state)

    files = sum(r.downloaded for r in reports)
    present = sum(r.present for r in reports)
    nbytes = sum(r.nbytes for r in reports)
    bad = [r for r in reports
           if r.state in ("failed", "archived", "restoring", "paused") or (strict and r.state != "done")]  # fmt: skip
    for r in bad:
        print(f"  {r.state}: {r.error or f'sample {r.sample_id} ({r.client_id}) is {r.state}'}", file=sys.stderr)
    if as_json:
        doc = {
            "destination": str(destination), "ok": not bad, "files_downloaded": files, "files_present": present,
            "bytes": nbytes, "samples": {state: n(state) for state in sorted({r.state for r in reports})},
            "reports": [{"sample_id": r.sample_id, "client_id": r.client_id, "state": r.state,
                         "downloaded": r.downloaded, "present": r.present, "bytes": r.nbytes, "error": r.error}
                        for r in reports],
        }  # fmt: skip
        print(json.dumps(doc, indent=2))
        return 1 if bad else 0
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
