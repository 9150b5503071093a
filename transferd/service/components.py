"""Builds the pipeline's stages for the daemon: the one place that knows their constructors.

Imports are local so that `transferd status` (and the daemon's tests of its own machinery) do not pull in the
upload and mirror stacks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from transferd.config import Config, WatchConfig
from transferd.errors import ConfigError
from transferd.journal import Journal
from transferd.log import register_secret

OnRuns = Callable[[Path, list[Any]], Awaitable[None]]


def make_pipeline(cfg: Config, journal: Journal, client: Any) -> Any:
    from transferd.upload.pipeline import UploadPipeline

    return UploadPipeline(cfg, journal, client)


def make_watcher(watch: WatchConfig, on_runs: OnRuns, trusted: frozenset[int] = frozenset()) -> Any:
    """One watcher per [[watch]], so each keeps its own rescan interval and inotify switch. ``trusted``: file
    versions whose gzip check passed before a restart (``journal.uploads.gzip_checked_sources``)."""
    from transferd.discovery.stability import StabilityTracker
    from transferd.discovery.watcher import Watcher

    return Watcher(
        [(watch.path, watch.rules())], on_runs, rescan_interval=watch.rescan_interval, use_inotify=watch.use_inotify,
        stability=StabilityTracker(trusted=trusted),
    )  # fmt: skip


def make_mirror(cfg: Config, journal: Journal, api_key: str) -> Any:
    from transferd.mirror.loop import MirrorLoop

    return MirrorLoop(cfg, journal, api_key)


def read_webhook_secret(cfg: Config) -> str:
    path = cfg.download.webhook_secret_file
    assert path is not None
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(str(cfg.file), "download.webhook_secret_file", f"cannot read {path}: {e.strerror}") from None
    if not secret:
        raise ConfigError(str(cfg.file), "download.webhook_secret_file", f"{path} is empty")
    register_secret(secret)
    return secret


def make_webhook(cfg: Config, journal: Journal, trigger: Callable[[str | None, list[str]], Any]) -> Any:
    """Blocking (reads the secret file): call it in an executor."""
    from transferd.mirror.webhook import WebhookReceiver

    return WebhookReceiver(read_webhook_secret(cfg), cfg.download.webhook_tolerance, journal, trigger)
