"""`transferd run`: the daemon's lifecycle.

One process, one `asyncio.TaskGroup` owning every long-running task: a watcher per `[[watch]]`, the upload
pipeline (upload workers and assigner), the mirror loop (when projects are configured), the readiness checks,
and the ticker that feeds /healthz and the systemd watchdog. The HTTP server starts before the group and stops
after it, so /metrics keeps answering while uploads drain.

Signals: SIGTERM/SIGINT stop taking new work (watchers and mirror stop), let in-flight parts finish within
`service.shutdown_grace`, then cancel what is left (the journal holds it) and exit 0; a second SIGTERM skips
the grace. SIGHUP reloads the config (see reload.py); an invalid file is rejected and the old config kept.
If any task fails, the group cancels the others and the process exits 1, so systemd restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import io
import logging
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from transferd import __version__, eventloop
from transferd.config import Config, WatchConfig, load_config, resolve_api_key
from transferd.discovery.confine import SourceGuard
from transferd.errors import ConfigError, TransferdError, UsageError
from transferd.gencove.client import GencoveClient
from transferd.journal import Journal, log_event
from transferd.journal import uploads as jq
from transferd.log import event, setup_logging
from transferd.metrics import build_registry
from transferd.network import Network
from transferd.retry import Policy
from transferd.service import components
from transferd.service.health import Check, Health, RootProber, check_api, check_journal
from transferd.service.http import HttpServer, WebhookHandler, build_app, build_webhook_app
from transferd.service.reload import plan_reload
from transferd.service.sdnotify import notify, reloading, status_line, watchdog_interval
from transferd.service.summary import summary
from transferd.stats import STATS

log = logging.getLogger("transferd.service")

TICK = 1.0  # liveness tick; /healthz fails after HEALTH_STALE seconds without one
HEALTH_STALE = 10.0
LOCAL_CHECK_INTERVAL = 2.0  # journal + watch roots
API_CHECK_OK, API_CHECK_FAILING = 30.0, 5.0
STATUS_INTERVAL = 5.0
CANCEL_REPORT = 3.0  # a cancelled task still running after this is logged with its stack (it holds up the stop)
PROBE_POLICY = Policy(deadline=10.0, max_attempts=1)  # readiness reports; it never retries


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="path to the TOML config")
    p.add_argument(
        "--new-journal", action="store_true",
        help="accept an emptied (0-byte) journal file as a new, empty journal (forgets what was delivered)",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg.log.level, cfg.log.format)
    api_key = resolve_api_key(cfg)
    # JournalLocked names the holder's pid; JournalDamaged (exit 2) the file, the error and how to recover.
    journal = Journal.open(cfg.state.path, new=args.new_journal)
    try:
        return eventloop.run(Daemon(cfg, journal, api_key).run())
    except ExceptionGroup as group:  # a task failed: say which, exit 1 so systemd restarts us
        errors = _leaves(group)
        if len(errors) == 1 and isinstance(errors[0], TransferdError):
            raise errors[0] from None  # the CLI prints it and exits with its code
        for exc in errors:
            event(log, "service.crashed", logging.ERROR, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        return 1
    finally:
        journal.close()


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


class Daemon:
    def __init__(self, cfg: Config, journal: Journal, api_key: str) -> None:
        self.cfg = cfg
        self.journal = journal
        self.api_key = api_key
        self.health = Health(live_after=HEALTH_STALE)
        self._tg: asyncio.TaskGroup | None = None
        self._pipeline: Any = None
        self._upload: asyncio.Task[None] | None = None
        self._watchers: dict[Path, tuple[Any, asyncio.Task[None]]] = {}
        self._mirror: tuple[Any, asyncio.Task[None]] | None = None
        self._webhook: WebhookHandler | None = None
        self._helpers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop_signal: str | None = None
        self._reload_pending = False
        self._hurry = asyncio.Event()  # a second SIGTERM: skip the rest of the grace
        self._wake = asyncio.Event()
        self._trusted: frozenset[int] = frozenset()  # file versions uploaded before this start: gzip-checked

    # -- entry -------------------------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        cfg = self.cfg
        # Built before anything runs, so that a bad secret file or download section fails the start (exit 2).
        self._webhook = await self._make_webhook(cfg)
        registry = build_registry(self.journal, readiness=self.health.verdicts, roots=self.health.root_health)
        def webhook() -> WebhookHandler | None:
            return self._webhook

        own = cfg.webhook.host_port  # the webhook route on a listener of its own, else beside /metrics
        server = HttpServer(build_app(registry, self.health, None if own else webhook), *cfg.metrics.host_port)
        hooks = HttpServer(build_webhook_app(webhook), *own, key="webhook.listen") if own else None
        await server.start()
        if hooks is not None:
            try:
                await hooks.start()
            except BaseException:
                await server.stop()
                raise
        event(
            log, "service.start", version=__version__, config=str(cfg.file), journal=str(self.journal.path),
            watches=len(cfg.watches), mirrored_projects=len(cfg.download.projects),
            listen=f"{server.host}:{server.port}", webhook_listen=f"{hooks.host}:{hooks.port}" if hooks else "",
        )  # fmt: skip
        try:
            mirror = components.make_mirror(cfg, self.journal, self.api_key) if cfg.download.projects else None
            network = Network.from_config(cfg.network)
            async with (
                GencoveClient(
                    cfg.gencove.host, self.api_key, timeout=cfg.gencove.request_timeout, network=network
                ) as client,
                GencoveClient(
                    cfg.gencove.host, self.api_key, timeout=10.0, policy=PROBE_POLICY, network=network
                ) as probe,
                asyncio.TaskGroup() as tg,
            ):
                self._tg = tg
                self._pipeline = components.make_pipeline(cfg, self.journal, client)
                self._upload = self._spawn("upload", self._pipeline.run())
                self._trusted = await asyncio.to_thread(self.journal.read, jq.gzip_checked_sources)
                for watch in cfg.watches:
                    self._start_watcher(watch)
                self._start_mirror(mirror)
                self._helpers = [
                    self._spawn("ticker", self._ticker()),
                    self._spawn("readiness", self._local_checks()),
                    self._spawn("api-probe", self._api_checks(probe)),
                    self._spawn("status", self._status_loop()),
                ]
                notify("READY=1", status_line(summary(self.cfg, self.health)))
                event(log, "service.ready")
                await self._supervise()
                await self._drain()
        finally:
            if hooks is not None:
                await hooks.stop()
            await server.stop()
        event(log, "service.stopped", signal=self._stop_signal)
        return 0

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._tg is not None
        return self._tg.create_task(self._essential(name, coro), name=name)

    async def _essential(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Long-running tasks end only by cancellation; returning early is a bug that must not go unnoticed."""
        await coro
        if not self._stopping:
            raise RuntimeError(f"task {name} ended on its own")

    # -- signals -----------------------------------------------------------------------------------------------
    def _on_stop_signal(self, name: str) -> None:
        if self._stop_signal is not None:
            event(log, "service.stop_hurried", signal=name)
            self._hurry.set()
            return
        self._stop_signal = name
        self._wake.set()

    def _on_reload_signal(self) -> None:
        notify(*reloading(), status_line("reloading the config"))  # systemd holds `systemctl reload` until READY=1
        self._reload_pending = True
        self._wake.set()

    async def _supervise(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stop_signal is not None:
                return
            if self._reload_pending:
                self._reload_pending = False
                await self._reload()

    # -- shutdown ----------------------------------------------------------------------------------------------
    async def _drain(self) -> None:
        grace = self.cfg.service.shutdown_grace
        self._stopping = True
        in_flight: dict[str, int] = STATS.snapshot()["in_flight_objects"]  # type: ignore[assignment]
        # EXTEND_TIMEOUT_USEC keeps systemd's TimeoutStopSec from killing a drain that is within its grace.
        notify("STOPPING=1", f"EXTEND_TIMEOUT_USEC={int((grace + 30) * 1e6)}", status_line("stopping: draining"))
        event(log, "service.stopping", signal=self._stop_signal, grace=grace,
              uploading=in_flight.get("upload", 0), downloading=in_flight.get("download", 0))  # fmt: skip
        started = time.monotonic()
        # 1. No new work: stop discovery and mirroring (downloads resume from their .part files).
        await self._cancel([t for _, t in self._watchers.values()] + ([self._mirror[1]] if self._mirror else []))
        self._watchers.clear()
        self._mirror = None
        # 2. In-flight parts get the grace; then the pipeline is cancelled and the journal holds the rest.
        # The pipeline cancels its own leftovers at the grace; our timeout is only a backstop.
        assert self._tg is not None  # inside the task tree, like every task the daemon starts
        drain = self._tg.create_task(self._pipeline.stop(grace), name="drain")
        hurry = self._tg.create_task(self._hurry.wait(), name="hurry")
        await asyncio.wait({drain, hurry}, timeout=grace + 2, return_when=asyncio.FIRST_COMPLETED)
        await self._cancel([drain, hurry, *([self._upload] if self._upload else [])])
        await self._cancel(self._helpers)
        event(log, "service.drained", seconds=round(time.monotonic() - started, 3))

    @staticmethod
    async def _cancel(tasks: list[asyncio.Future[Any]] | list[asyncio.Task[None]]) -> None:
        for t in tasks:
            t.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=CANCEL_REPORT)
        for t in pending:  # a task that does not end when cancelled holds up the stop: say where it waits
            stack = io.StringIO()
            if isinstance(t, asyncio.Task):
                t.print_stack(limit=12, file=stack)
            event(log, "service.task_slow_to_cancel", logging.WARNING, task=getattr(t, "get_name", str)(),
                  seconds=CANCEL_REPORT, stack=stack.getvalue())  # fmt: skip
        if pending:
            await asyncio.wait(pending)

    # -- components --------------------------------------------------------------------------------------------
    def _start_watcher(self, watch: WatchConfig) -> None:
        guard = SourceGuard(watch.path, trusted=self._trusted)

        async def on_runs(root: Path, runs: list[Any]) -> None:
            current = next((w for w in self.cfg.watches if w.path == watch.path), watch)
            # Sources outside the root (unless allowed) and files that are not FASTQ become sample problems.
            guard.allow_outside_root = current.allow_outside_root
            runs = await asyncio.to_thread(guard.check, runs)
            await self._pipeline.submit(current, runs)

        watcher = components.make_watcher(watch, on_runs, self._trusted)
        self._watchers[watch.path] = (watcher, self._spawn(f"watch:{watch.path}", watcher.run()))

    def _start_mirror(self, mirror: Any) -> None:
        if mirror is not None:
            self._mirror = (mirror, self._spawn("mirror", mirror.run()))

    async def _make_webhook(self, cfg: Config) -> WebhookHandler | None:
        if cfg.download.webhook_secret_file is None:
            return None
        receiver = await asyncio.get_running_loop().run_in_executor(
            None, components.make_webhook, cfg, self.journal, self._trigger
        )
        return receiver.handle  # type: ignore[no-any-return]

    def _trigger(self, project_id: str | None, sample_ids: list[str]) -> Any:
        # Webhooks reach whichever mirror loop is current (a reload may have replaced it).
        if self._mirror is None:
            return None
        return self._mirror[0].trigger(project_id, sample_ids)

    # -- reload ------------------------------------------------------------------------------------------------
    async def _reload(self) -> None:
        file = self.cfg.file
        loop = asyncio.get_running_loop()
        mirror: Any = None
        try:
            new = await loop.run_in_executor(None, load_config, file)
            download_changed = new.download != self.cfg.download
            webhook = await self._make_webhook(new) if download_changed else self._webhook
            if download_changed and new.download.projects:
                mirror = components.make_mirror(new, self.journal, self.api_key)
        except UsageError as e:  # ConfigError included
            key = e.key if isinstance(e, ConfigError) else ""
            event(log, "service.reload_rejected", logging.ERROR, file=str(file), key=key, error=str(e),
                  action="keeping the running config")  # fmt: skip
            await self.journal.run(log_event, "error", "service", str(file), f"reload rejected: {e}")
            notify(f"ERRNO={errno.EINVAL}", status_line(f"reload rejected, running config kept: {e}"), "READY=1")
            return
        plan = plan_reload(self.cfg, new)
        if plan.needs_restart:
            event(log, "service.reload_needs_restart", logging.WARNING, sections=list(plan.needs_restart),
                  action="these changes take effect at the next restart")  # fmt: skip
        old_tasks = [self._watchers.pop(p)[1] for p in plan.stop_watches if p in self._watchers]
        if plan.restart_mirror and self._mirror is not None:
            old_tasks.append(self._mirror[1])
            self._mirror = None
        await self._cancel(old_tasks)
        self.cfg = plan.config
        if plan.relog:
            setup_logging(self.cfg.log.level, self.cfg.log.format)
        for path in plan.start_watches:
            self._start_watcher(next(w for w in self.cfg.watches if w.path == path))
        if plan.restart_mirror:
            self._webhook = webhook
            self._start_mirror(mirror)
        event(
            log, "service.reloaded", config=str(file), changed=plan.changed,
            watches_stopped=[str(p) for p in plan.stop_watches], watches_started=[str(p) for p in plan.start_watches],
            mirror_restarted=plan.restart_mirror, log_level=self.cfg.log.level,
        )  # fmt: skip
        notify("READY=1", status_line(summary(self.cfg, self.health)))

    # -- helpers on the loop -----------------------------------------------------------------------------------
    async def _ticker(self) -> None:
        """Feeds /healthz and, from the event loop itself, systemd's watchdog: a hung loop stops both."""
        wd = watchdog_interval() if self.cfg.service.watchdog else None
        period = min(TICK, wd) if wd else TICK
        next_ping = 0.0
        while True:
            before = time.monotonic()
            await asyncio.sleep(period)
            now = time.monotonic()
            self.health.tick(lag=max(now - before - period, 0.0))
            if wd and now >= next_ping:
                notify("WATCHDOG=1")
                next_ping = now + wd

    async def _local_checks(self) -> None:
        prober = RootProber()
        try:
            while True:
                self.health.set("journal", await check_journal(self.journal))
                # A root is up when it is a readable directory *and* the watcher's last scan reached it.
                view: dict[Path, bool] = {}
                for watcher, _ in self._watchers.values():
                    view.update(watcher.root_status())
                check, roots = await prober.probe([w.path for w in self.cfg.watches], view)
                self.health.roots = roots
                self.health.set("roots", check)
                if self._mirror is not None:  # the mirror probes its destination itself (a hung mount cannot hang us)
                    self.health.set("destination", Check(*self._mirror[0].destination_check()))
                else:
                    self.health.checks.pop("destination", None)
                await asyncio.sleep(LOCAL_CHECK_INTERVAL)
        finally:
            prober.close()

    async def _api_checks(self, probe: GencoveClient) -> None:
        async def call() -> Any:
            return await probe.request("GET", "/api/v2/projects/", "projects", params={"limit": 1, "offset": 0})

        while True:
            check = await check_api(call, probe.base)
            self.health.set("api", check)
            await asyncio.sleep(API_CHECK_OK if check.ok else API_CHECK_FAILING)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            notify(status_line(summary(self.cfg, self.health)))
