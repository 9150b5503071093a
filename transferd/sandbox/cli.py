"""`transferd sandbox` / `python -m transferd.sandbox`: run the Gencove-compatible sandbox until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import uuid
from typing import TYPE_CHECKING

from transferd.log import event, setup_logging
from transferd.sandbox.extra import missing_extra_message
from transferd.sandbox.info import SandboxInfo

if TYPE_CHECKING:
    from transferd.sandbox.runtime import SandboxConfig

# The server modules (aiohttp, aiobotocore) are imported inside the functions that need them:
# `transferd --help` builds every command's parser and must stay fast.

log = logging.getLogger("transferd.sandbox")


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind the API and S3 proxy (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=0, help="API port; 0 picks a free one (default)")
    parser.add_argument("--s3-port", type=int, default=0, help="S3 proxy port; 0 picks a free one (default)")
    parser.add_argument("--api-key", default="", help="the API key clients must send (default: random, printed)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with the URLs once ready")
    parser.add_argument("--s3-endpoint", metavar="URL", help="use this S3 server (e.g. s3rver) instead of moto")
    parser.add_argument("--s3-access-key", default="S3RVER", help="key for the sandbox's own calls to --s3-endpoint")
    parser.add_argument("--s3-secret-key", default="S3RVER", help="secret for --s3-endpoint")
    parser.add_argument(
        "--s3-env", metavar="NAME=VALUE", type=_env_pair, action="append", default=[],
        help="environment for the moto server, e.g. S3_UPLOAD_PART_MIN_SIZE=256 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--bucket", default="gencove-sandbox-uploads", help="upload bucket (default: %(default)s)")
    parser.add_argument(
        "--deliverables-bucket",
        default="gencove-sandbox-deliverables",
        help="deliverables bucket (default: %(default)s)",
    )
    parser.add_argument("--project-id", type=_uuid, help="id of the ready project (default: random)")
    parser.add_argument(
        "--sample-delay", type=_seconds, default=2.0, help="seconds a sample runs (default: %(default)s)"
    )
    parser.add_argument(
        "--restore-delay", type=_seconds, default=2.0, help="seconds a restore takes (default: %(default)s)"
    )
    parser.add_argument(
        "--url-ttl", type=_seconds, default=3600.0, help="download URL lifetime, s (default: %(default)s)"
    )
    parser.add_argument(
        "--credentials-ttl", type=_seconds, default=3600.0, help="upload credential lifetime, s (default: %(default)s)"
    )
    parser.add_argument(
        "--upload-poll-interval",
        type=_seconds,
        default=0.5,
        help="check started uploads with HeadObject this often; 0 = only when asked (default: %(default)s)",
    )
    parser.add_argument(
        "--direct-download-urls",
        action="store_true",
        help="hand out presigned GET URLs of the S3 server itself (as the real service does) instead of the "
        "sandbox's /_dl route; download faults then do not apply (benchmarks)",
    )
    parser.add_argument(
        "--s3-events",
        action="store_true",
        help="the S3 server POSTs its event notifications to /_s3-events (as S3 notifies the real service); "
        "uploads are then never checked with HeadObject",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve the API and the S3 proxy over HTTPS, signed by a CA made at start (its PEM path is printed "
        "as ca_file)",
    )
    parser.add_argument("--tls-dir", metavar="DIR", help="where --tls writes its CA and certificate (default: temp)")
    parser.add_argument(
        "--watch-pid",
        type=int,
        metavar="PID",
        help="exit when this process is gone (SandboxProcess passes its own pid)",
    )
    parser.add_argument("--log-level", default="WARNING", help="sandbox log level on stderr (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    from transferd.sandbox.runtime import SandboxConfig
    from transferd.sandbox.state import Settings

    return SandboxConfig(
        host=args.host,
        port=args.port,
        s3_port=args.s3_port,
        api_key=args.api_key,
        s3_endpoint=args.s3_endpoint,
        s3_access_key=args.s3_access_key,
        s3_secret_key=args.s3_secret_key,
        s3_env=tuple(args.s3_env),
        bucket=args.bucket,
        deliverables_bucket=args.deliverables_bucket,
        project_id=args.project_id,
        upload_poll_interval=args.upload_poll_interval,
        direct_download_urls=args.direct_download_urls,
        s3_events=args.s3_events,
        tls=args.tls,
        tls_dir=args.tls_dir,
        settings=Settings(
            sample_delay=args.sample_delay,
            restore_delay=args.restore_delay,
            url_ttl=args.url_ttl,
            credentials_ttl=args.credentials_ttl,
        ),
    )


def _announce(info: SandboxInfo, as_json: bool) -> None:
    if as_json:
        print(info.to_json(), flush=True)
        return
    print(
        "transferd sandbox is ready\n"
        f"  API URL:      {info.api_url}\n"
        f"  S3 URL:       {info.s3_url}\n"
        f"  API key:      {info.api_key}\n"
        f"  project id:   {info.project_id}\n"
        f"  buckets:      {info.bucket} (uploads), {info.deliverables_bucket} (deliverables)\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _watch(pid: int, stop: asyncio.Event) -> None:
    """Stop when the watched process (our user) is gone, so a killed test run leaves nothing behind."""
    while True:
        await asyncio.sleep(0.5)
        if not _pid_alive(pid):
            break
    event(log, "sandbox.watched_process_gone", logging.WARNING, pid=pid)
    stop.set()


async def _serve(config: SandboxConfig, as_json: bool, watch_pid: int | None) -> int:
    from transferd.sandbox.runtime import Sandbox

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch(watch_pid, stop)) if watch_pid else None
    try:
        async with Sandbox(config) as sandbox:
            _announce(sandbox.info, as_json)
            await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    return 0


def main(args: argparse.Namespace) -> int:
    if (missing := missing_extra_message("sandbox")) is not None:
        print(missing, file=sys.stderr)
        return 2
    setup_logging(level=str(args.log_level), stream=sys.stderr)
    try:
        return asyncio.run(_serve(config_from_args(args), args.json, args.watch_pid))
    except Exception as exc:
        event(log, "sandbox.failed", logging.ERROR, error=f"{type(exc).__name__}: {exc}")
        print(f"error: sandbox failed: {exc}", file=sys.stderr)
        return 1
