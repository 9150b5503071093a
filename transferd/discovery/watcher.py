"""The async watcher: periodic full rescans of each watch root (the truth) plus early, debounced rescans
when watchdog reports a change (a hint; network shares report nothing, so hints are optional).

Watches are non-recursive and limited to the root and the folders of runs that are not complete yet, so the
BCL tree never costs inotify watches. A root that cannot be listed (unmounted share, moved, no permission)
is reported, retried every interval, and its runs are simply not reported until it is back: a vanished root
never looks like deleted files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from watchdog.events import EVENT_TYPE_CLOSED_NO_WRITE, EVENT_TYPE_OPENED, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from transferd.discovery.models import Run
from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.scanner import RootScan, RootUnavailableError, scan_root_detailed
from transferd.discovery.stability import ALL_UNITS, AllUnits, StabilityTracker
from transferd.log import event
from transferd.stats import STATS

log = logging.getLogger(__name__)

OnRuns = Callable[[Path, list[Run]], Awaitable[None]]
# Our own reads (the gzip check) produce these; reacting to them would rescan forever.
_IGNORED_EVENTS = frozenset({EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE})


FAILING_SCANS = 3  # consecutive failed scans after which readiness reports the root


class _Hints(FileSystemEventHandler):
    """Runs in the observer thread; only forwards 'something changed under this root'."""

    def __init__(self, root: Path, notify: Callable[[Path], None]) -> None:
        self._root = root
        self._notify = notify

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type not in _IGNORED_EVENTS:
            self._notify(self._root)


class _RootState:
    __slots__ = ("failures", "handler", "rules", "scans", "up", "wake", "was_mount", "watches")

    def __init__(self, rules: DiscoveryRules, handler: _Hints) -> None:
        self.rules = rules
        self.handler = handler
        self.wake = asyncio.Event()
        self.up = False  # unknown until the first scan
        self.was_mount: bool | None = None
        self.watches: dict[Path, ObservedWatch] = {}
        self.scans = 0
        self.failures = 0  # scans (or their hand-off) that failed in a row


class Watcher:
    """Calls ``on_runs(root, runs)`` after every successful scan of a root.

    ``rescan_interval``: seconds between full rescans. ``debounce``: how long an event waits for more events
    before the early rescan. ``max_watches``: watched folders over all roots (watchdog runs one thread per
    watch). The tracker is shared with the daemon, which calls ``forget`` once a run is handed off.
    """

    def __init__(
        self,
        roots: Sequence[tuple[Path, DiscoveryRules]],
        on_runs: OnRuns,
        rescan_interval: float,
        use_inotify: bool = True,
        *,
        debounce: float = 1.0,
        poll_interval: float = 2.0,
        max_watches: int = 64,
        stability: StabilityTracker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rescan_interval <= 0:
            raise ValueError("rescan_interval must be > 0")
        self._on_runs = on_runs
        self._interval = rescan_interval
        self._use_inotify = use_inotify
        self._debounce = debounce
        self._poll_interval = poll_interval
        self._clock = clock
        self.stability = stability if stability is not None else StabilityTracker()
        self._roots: dict[Path, _RootState] = {}
        for root, rules in roots:
            path = Path(os.path.abspath(root))
            self._roots[path] = _RootState(rules, _Hints(path, self._hint_from_thread))
        self._watch_quota = max(1, max_watches // max(1, len(self._roots)))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: BaseObserver | None = None
        self._pending: set[Path] = set()  # roots with a hint on its way to the loop (bounds the loop's queue)
        self._pending_lock = threading.Lock()
        self.hints_received = 0

    # -- public --------------------------------------------------------------------------------------------------
    def root_status(self) -> dict[Path, bool]:
        """Root -> reachable at the last attempt (False before the first scan)."""
        return {root: state.up for root, state in self._roots.items()}

    def scan_count(self, root: Path) -> int:
        return self._roots[Path(os.path.abspath(root))].scans

    def request_rescan(self, root: Path) -> None:
        """Ask for an early (debounced) rescan of ``root``; call from the event loop's thread."""
        self._roots[Path(os.path.abspath(root))].wake.set()

    def forget(self, run_path: Path, analysis: str | AllUnits | None = ALL_UNITS, name: str | None = None) -> None:
        """The daemon handed a delivery unit off: ``forget(run.path, run.analysis, run.name)`` frees what is
        remembered about it, and later scans leave it out until its files change (see StabilityTracker)."""
        self.stability.forget(run_path, analysis, name)

    async def run(self) -> None:
        """Watch until cancelled. Scans run in worker threads; the observer thread is stopped on the way out."""
        self._loop = asyncio.get_running_loop()
        observer = self._start_observer()
        self._observer = observer
        try:
            async with asyncio.TaskGroup() as tg:
                for root in self._roots:
                    tg.create_task(self._root_loop(root), name=f"watch {root}")
        finally:
            self._observer = None
            if observer is not None:
                observer.stop()
                await asyncio.to_thread(observer.join, 10)
            for state in self._roots.values():
                state.watches.clear()

    # -- observer side -------------------------------------------------------------------------------------------
    def _start_observer(self) -> BaseObserver | None:
        try:
            observer: BaseObserver = Observer() if self._use_inotify else PollingObserver(timeout=self._poll_interval)
            observer.start()
        except OSError as exc:  # e.g. the inotify instance limit: rescans still work
            event(log, "watch.observer_unavailable", logging.WARNING, error=str(exc))
            return None
        return observer

    def _hint_from_thread(self, root: Path) -> None:
        loop = self._loop
        if loop is None:
            return
        with self._pending_lock:
            if root in self._pending:
                return  # one hint per root in flight, whatever the event storm
            self._pending.add(root)
        try:
            loop.call_soon_threadsafe(self._hint_on_loop, root)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _hint_on_loop(self, root: Path) -> None:
        with self._pending_lock:
            self._pending.discard(root)
        self.hints_received += 1
        self._roots[root].wake.set()

    def _sync_watches(self, root: Path, wanted: Sequence[Path]) -> None:
        """Runs in a worker thread: make the root's watches the first ``quota`` of ``wanted``."""
        observer = self._observer
        state = self._roots[root]
        target = list(dict.fromkeys(wanted))[: self._watch_quota] if observer is not None else []
        for path in [p for p in state.watches if p not in target]:
            watch = state.watches.pop(path)
            if observer is not None:
                try:
                    observer.unschedule(watch)
                except Exception:  # the emitter may already be gone with its folder
                    pass
        if observer is None:
            return
        for path in target:
            if path in state.watches:
                continue
            try:
                state.watches[path] = observer.schedule(state.handler, str(path), recursive=False)
            except Exception as exc:  # folder vanished, watch limit reached: the rescan still covers it
                event(log, "watch.schedule_failed", logging.DEBUG, path=str(path), error=str(exc))

    # -- scanning ------------------------------------------------------------------------------------------------
    def _check_mount(self, root: Path, state: _RootState) -> None:
        is_mount = os.path.ismount(root)
        if state.was_mount is None:
            state.was_mount = is_mount
        elif state.was_mount and not is_mount:
            # An unmounted share leaves an empty mount point behind: that is not "all runs deleted".
            raise RootUnavailableError(root, "is no longer a mount point (share unmounted?)")

    def _scan_sync(self, root: Path, now: float) -> RootScan:
        state = self._roots[root]
        if not os.path.isdir(root):
            raise RootUnavailableError(root, "does not exist or is not a directory (unmounted or moved?)")
        self._check_mount(root, state)
        result = scan_root_detailed(root, state.rules, now, self.stability)
        self._sync_watches(root, result.hint_dirs)
        return result

    def _mark(self, root: Path, up: bool, reason: str = "") -> None:
        state = self._roots[root]
        if up and not state.up:
            event(log, "watch.root_up", root=str(root))
        elif not up and (state.up or state.scans == 0):
            event(log, "watch.root_down", logging.WARNING, root=str(root), reason=reason, retry_in=self._interval)
        state.up = up

    async def scan_once(self, root: Path) -> list[Run] | None:
        """One scan of ``root`` and its callback; None if the root is unavailable or the scan failed."""
        state = self._roots[root]
        try:
            result = await asyncio.to_thread(self._scan_sync, root, self._clock())
        except RootUnavailableError as exc:
            self._mark(root, False, exc.reason)
            state.scans += 1
            await asyncio.to_thread(self._sync_watches, root, [])
            return None
        except Exception as exc:
            state.scans += 1
            self._failed(root, "watch.scan_failed", exc)
            return None
        state.scans += 1
        try:
            await self._on_runs(root, result.runs)
        except Exception as exc:  # the consumer's bug must not stop the watching
            self._failed(root, "watch.callback_failed", exc)
        else:
            state.failures = 0
        if state.failures < FAILING_SCANS:
            self._mark(root, True)
        return result.runs

    def _failed(self, root: Path, name: str, exc: Exception) -> None:
        """A scan that failed for a reason other than the root being away: logged with its traceback and
        counted; after FAILING_SCANS in a row the root is reported down (readiness), not merely logged."""
        state = self._roots[root]
        state.failures += 1
        STATS.error("discovery")
        event(log, name, logging.ERROR, root=str(root), error=repr(exc), failures=state.failures, exc_info=exc)
        if state.failures >= FAILING_SCANS:
            self._mark(root, False, f"{state.failures} scans in a row failed: {exc!r}")

    async def _root_loop(self, root: Path) -> None:
        wake = self._roots[root].wake
        while True:
            await self.scan_once(root)
            try:
                async with asyncio.timeout(self._interval):
                    await wake.wait()
            except TimeoutError:
                pass  # the periodic full rescan
            else:
                if self._debounce > 0:
                    await asyncio.sleep(self._debounce)  # let a burst of events settle into one rescan
            wake.clear()
