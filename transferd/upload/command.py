"""`transferd upload SOURCE`: upload a run folder, a folder of run folders or a `.fastq-map.csv` once, then
assign the samples to a project. The same engine as the daemon, with its own journal, so a crashed or
interrupted upload resumes when the command is run again.

The user asserts that SOURCE is complete, so completion markers and settle times are not waited for; files
are still checked (a truncated gzip is refused) and samples that are not ready are reported, not uploaded.
Exit 0 only when every sample was uploaded (and assigned, with a project); 1 otherwise; 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from transferd import eventloop
from transferd.config import (
    API_KEY_ENV,
    Config,
    GencoveConfig,
    WatchConfig,
    load_config,
    normalise_destination,
    resolve_api_key,
)
from transferd.errors import TransferdError, UsageError
from transferd.log import register_secret, setup_logging

DEFAULT_HOST = "https://api.gencove.com"
STOP_GRACE = 10.0  # on SIGTERM: in-flight parts may finish within this


def default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "transferd" / "upload.sqlite3"


def journal_path(config: str | None, state: str | None) -> Path:
    """The journal `status` and `requeue` read: --state, else the config's, else the one-shot upload's."""
    if state:
        return Path(state).expanduser()
    return load_config(config).state.path if config else default_state_path()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="a run folder, a folder of run folders, or a *.fastq-map.csv")
    p.add_argument(
        "dest", metavar="gncv://DEST", nargs="?",
        help="gncv:// folder to upload into, as with gencove upload (same as --destination)",
    )  # fmt: skip
    p.add_argument(
        "--project-id", "--run-project-id", dest="project_id",
        help="assign the uploaded samples to this Gencove project (starts analysis); --run-project-id as in gencove",
    )  # fmt: skip
    p.add_argument("-c", "--config", help="TOML config: API host and key, S3 and [upload] settings, watch rules")
    p.add_argument("--destination", help="gncv:// folder to upload into (default: gncv://<source folder name>)")
    p.add_argument("--host", help=f"Gencove API host (default: the config's, else $GENCOVE_HOST, else {DEFAULT_HOST})")
    p.add_argument(
        "--allow-outside-root", action="store_true",
        help="upload files that resolve outside SOURCE's folder (symlinks, manifest rows pointing elsewhere)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the outcome as JSON (one object) instead of text")
    p.add_argument("--s3-endpoint-url", help="S3 endpoint to use instead of AWS (S3-compatible servers, tests)")
    p.add_argument("--state", help=f"journal file; running again resumes from it (default: {default_state_path()})")
    p.add_argument("--metadata", help="JSON sent with the assignment (with --project-id)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- argument resolution (pure apart from reading the config and the environment) -------------------------------
def _watch_for(cfg: Config, source: Path) -> WatchConfig | None:
    for w in cfg.watches:
        if source == w.path or source.is_relative_to(w.path):
            return w
    return None


def _config(args: argparse.Namespace) -> tuple[Config, str]:
    if args.config:
        cfg = load_config(args.config)
        key = resolve_api_key(cfg)
    else:
        host = os.environ.get("GENCOVE_HOST", "").strip() or DEFAULT_HOST  # as the gencove CLI reads it
        cfg = Config(file=Path("(command line)"), gencove=GencoveConfig(host=host))
        key = os.environ.get(API_KEY_ENV, "").strip() or os.environ.get("GENCOVE_API_KEY", "").strip()
        if not key:
            raise UsageError(
                f"no API key: set ${API_KEY_ENV} or $GENCOVE_API_KEY (or use -c CONFIG with gencove.api_key_file)"
            )
        register_secret(key)
    gencove = cfg.gencove
    if args.host:
        gencove = dataclasses.replace(gencove, host=args.host.rstrip("/"))
    if args.s3_endpoint_url:
        gencove = dataclasses.replace(gencove, s3_endpoint_url=args.s3_endpoint_url.rstrip("/"))
    return dataclasses.replace(cfg, gencove=gencove), key


def _target(args: argparse.Namespace, cfg: Config, source: Path) -> WatchConfig:
    watch = _watch_for(cfg, source)
    folder_name = source.parent.name if source.is_file() else source.name
    if args.dest and args.destination and args.dest != args.destination:
        raise UsageError(f"two destinations: {args.dest} and --destination {args.destination}")
    try:
        destination = normalise_destination(
            args.dest or args.destination or (watch.destination if watch else f"gncv://{folder_name}")
        )
    except ValueError as e:
        raise UsageError(f"--destination: {e}") from None
    project_id = args.project_id or (watch.project_id if watch else None)
    if args.project_id:
        try:
            uuid.UUID(args.project_id)
        except ValueError:
            raise UsageError(f"--project-id: {args.project_id!r} is not a project id (a UUID)") from None
    metadata: Any = watch.metadata if watch else None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except ValueError as e:
            raise UsageError(f"--metadata: not valid JSON: {e}") from None
    base = watch or WatchConfig(path=source, destination=destination)
    # The user asserts SOURCE is complete: no markers or settle time; gzip checks stay on.
    return dataclasses.replace(
        base, path=source, destination=destination, project_id=project_id, metadata=metadata,
        completion="quiet", settle_seconds=0.0, quiet_seconds=0.0,
        allow_outside_root=base.allow_outside_root or args.allow_outside_root,
    )  # fmt: skip


# -- the command ------------------------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    from transferd.discovery.confine import SourceGuard
    from transferd.discovery.scanner import scan_paths

    cfg, key = _config(args)
    setup_logging(cfg.log.level if args.config else "warning", cfg.log.format)
    source = Path(os.path.abspath(args.source))
    if not source.exists():
        raise UsageError(f"{source}: no such file or folder")
    watch = _target(args, cfg, source)
    try:
        runs = scan_paths([source], watch.rules())
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    # As in a watch root: files that resolve outside SOURCE's folder (unless allowed) and files that are not FASTQ
    # are problems of their samples, never uploads.
    root = source.parent if source.is_file() else source
    runs = SourceGuard(root, allow_outside_root=watch.allow_outside_root).check(runs)
    if not any(r.samples for r in runs):
        print(f"transferd upload: no FASTQ samples found under {source}", file=sys.stderr)
        for r in runs:
            for p in r.problems:
                print(f"  {r.unit_path}: {p}", file=sys.stderr)
        return 1
    state = Path(args.state).expanduser() if args.state else default_state_path()
    report = eventloop.run(_upload(cfg, key, watch, runs, state, progress=not args.no_progress and not args.json))
    return _print_json(report, watch) if args.json else _print_report(report, watch)


async def _upload(cfg: Config, key: str, watch: WatchConfig, runs: list[Any], state: Path, progress: bool) -> Any:
    from transferd.gencove.client import GencoveClient
    from transferd.journal import Journal
    from transferd.network import Network
    from transferd.progress import Progress
    from transferd.retry import ONE_SHOT
    from transferd.upload.pipeline import UploadPipeline

    journal = await asyncio.to_thread(Journal.open, state)
    bar = Progress(0, "upload", enabled=None if progress else False)
    try:
        # A person waits for this command: an unreachable host fails in seconds, naming it (ONE_SHOT).
        policy = dataclasses.replace(ONE_SHOT, deadline=cfg.upload.retry_deadline)
        async with GencoveClient(
            cfg.gencove.host, key, timeout=cfg.gencove.request_timeout, policy=policy,
            network=Network.from_config(cfg.network),
        ) as client:  # fmt: skip
            if watch.project_id:
                await _check_project(client, watch.project_id)
            pipeline = UploadPipeline(cfg, journal, client, on_progress=bar.advance)
            loop = asyncio.get_running_loop()
            stopping: list[asyncio.Task[None]] = []

            def on_sigterm() -> None:
                if not stopping:
                    stopping.append(loop.create_task(pipeline.stop(STOP_GRACE)))

            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
            try:
                report = await pipeline.upload_once(watch, runs, on_start=bar.set_total)
            finally:
                loop.remove_signal_handler(signal.SIGTERM)
                for t in stopping:
                    await t
            return report
    finally:
        bar.close()
        await asyncio.to_thread(journal.close)


async def _check_project(client: Any, project_id: str) -> None:
    """Before any byte is sent: a project that does not exist (or is not this key's) is a usage error."""
    import aiohttp

    from transferd.retry import ApiError

    try:
        await client.project(project_id)
    except aiohttp.ClientError as e:  # the host cannot be reached (ONE_SHOT gave up after seconds)
        raise TransferdError(f"{client.base}: cannot be reached: {e}; nothing was uploaded") from None
    except ApiError as e:
        if e.status == 401:
            raise UsageError(f"{client.base}: the API key was refused (HTTP 401); nothing was uploaded") from None
        if e.status in (400, 403, 404):
            raise UsageError(
                f"project {project_id}: not found for this API key (HTTP {e.status}); nothing was uploaded"
            ) from None
        raise TransferdError(f"project {project_id}: could not be checked: {e}; nothing was uploaded") from None


def _print_json(report: Any, watch: WatchConfig) -> int:
    """`--json`: one object with every sample's outcome (the exit code is the text report's)."""
    doc = {
        "ok": bool(report.ok), "destination": watch.destination, "project_id": watch.project_id,
        "samples": [{"client_id": s.client_id, "folder": s.folder, "state": s.state, "ok": s.ok,
                     "gencove_sample_id": s.gencove_sample_id, "project_id": s.project_id, "error": s.error}
                    for s in report.samples],
        "not_ready": list(report.not_ready), "incomplete_runs": list(report.incomplete_runs),
        "problems": list(report.run_problems), "held": list(report.held),
    }  # fmt: skip
    print(json.dumps(doc, indent=2))
    return 0 if report.ok else 1


def _print_report(report: Any, watch: WatchConfig) -> int:
    from transferd.upload.pipeline import UploadReport

    assert isinstance(report, UploadReport)
    ok = [s for s in report.samples if s.ok]
    bad = [s for s in report.samples if not s.ok]
    for s in report.samples:
        where = f"{s.folder}/{s.client_id}"
        if s.ok:
            extra = f" -> sample {s.gencove_sample_id}" if s.gencove_sample_id else ""
            print(f"ok      {where}: {s.state}{extra}")
        else:
            print(f"FAILED  {where}: {s.state}" + (f": {s.error}" if s.error else " (unfinished)"))
    for line in report.not_ready:
        print(f"SKIPPED {line}")
    for line in report.incomplete_runs:
        print(f"SKIPPED {line}")
    for line in report.run_problems:
        print(f"PROBLEM {line}")
    for line in report.held:
        print(f"HELD    {line}")
    # The closing line counts what the journal says each sample is: never "assigned" for one that is not.
    if watch.project_id:
        assigned = [s for s in report.samples if s.state == "assigned" and s.project_id == watch.project_id]
        summary = (
            f"{len(assigned)} of {len(report.samples)} samples uploaded and assigned to project {watch.project_id}"
            f" ({watch.destination})"
        )
        elsewhere = [s for s in report.samples if s.state == "assigned" and s.project_id != watch.project_id]
        if elsewhere:
            summary += f"; {len(elsewhere)} assigned earlier to another project"
    else:
        summary = f"{len(ok)} of {len(report.samples)} samples uploaded to {watch.destination} (no project)"
    if report.ok:
        print(summary)
        return 0
    reasons = []
    if bad:
        reasons.append(f"{len(bad)} failed or unfinished")
    if report.not_ready:
        reasons.append(f"{len(report.not_ready)} not ready")
    if report.incomplete_runs:
        reasons.append(f"{len(report.incomplete_runs)} incomplete run(s)")
    if report.run_problems:
        reasons.append(f"{len(report.run_problems)} problem(s) in the source")
    if report.held:
        reasons.append(f"{len(report.held)} held (see `transferd requeue --help`)")
    print(f"{summary}; " + ", ".join(reasons), file=sys.stderr)
    return 1
