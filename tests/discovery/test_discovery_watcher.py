"""The async watcher: events trigger early rescans; a vanished root is reported, retried, never 'deleted'."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from pathlib import Path

import pytest
from watchdog.utils import BaseThread

from transferd.discovery import watcher as watcher_mod
from transferd.discovery.models import Run
from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.watcher import Watcher

RULES = DiscoveryRules(settle_seconds=60)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Path, list[Run]]] = []

    async def __call__(self, root: Path, runs: list[Run]) -> None:
        self.calls.append((root, runs))

    @property
    def last(self) -> list[Run]:
        return self.calls[-1][1]


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, BaseThread) and t.is_alive()]


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
async def test_an_event_triggers_an_early_rescan(tmp_path: Path, files, wait_for, use_inotify: bool) -> None:
    root = tmp_path / "root"
    root.mkdir()
    rec = Recorder()
    # A full rescan only every hour: any rescan seen below was triggered by an event.
    w = Watcher([(root, RULES)], rec, rescan_interval=3600, use_inotify=use_inotify, debounce=0.05,
                poll_interval=0.1)  # fmt: skip
    task = asyncio.create_task(w.run())
    try:
        await wait_for(lambda: rec.calls, what="the initial scan")
        assert rec.last == [] and w.root_status() == {root: True}
        counter = itertools.count()

        def poke() -> bool:  # watches start in observer threads; poke until the first hint arrives
            (root / f".poke-{next(counter)}").touch()
            return w.hints_received > 0

        await wait_for(poke, what="a first hint")
        scans = w.scan_count(root)
        staging = tmp_path / "staging" / "run1"
        files.write_fastq(staging / "x_R1.fastq.gz")
        os.rename(staging, root / "run1")  # a run folder appears atomically
        await wait_for(lambda: [r.name for r in rec.last] == ["run1"], what="the event-driven rescan")
        assert w.scan_count(root) > scans
        # The run is incomplete, so its folder is watched too: a mate appearing inside it is seen early.
        files.write_fastq(root / "run1" / "x_R2.fastq.gz")
        await wait_for(lambda: rec.last and rec.last[0].samples[0].r2, what="the rescan after R2 appeared")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await wait_for(lambda: not watchdog_threads(), what="observer threads to stop")


async def test_a_vanished_root_is_reported_retried_and_never_empty(
    tmp_path: Path, files, wait_for, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "share"
    files.illumina_files(root / "run1", "A", 1)
    rec = Recorder()
    w = Watcher([(root, RULES)], rec, rescan_interval=0.05, debounce=0)
    caplog.set_level(logging.INFO, logger="transferd.discovery.watcher")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(w.run())
        await wait_for(lambda: rec.calls, what="the first scan")
        away = tmp_path / "share-unmounted"
        os.rename(root, away)
        await wait_for(lambda: w.root_status()[root] is False, what="the root to be reported down")
        reported = len(rec.calls)
        down_at = w.scan_count(root)
        await wait_for(lambda: w.scan_count(root) >= down_at + 3, what="retries")
        assert len(rec.calls) == reported  # no callback while down: its runs are not "deleted"
        os.rename(away, root)
        await wait_for(lambda: w.root_status()[root] and len(rec.calls) > reported, what="recovery")
        task.cancel()
    assert all([r.name for r in runs] == ["run1"] for _, runs in rec.calls)
    events = [r.getMessage() for r in caplog.records]
    assert events.count("watch.root_down") == 1 and events.count("watch.root_up") == 2
    down = next(r for r in caplog.records if r.getMessage() == "watch.root_down")
    assert down.fields["root"] == str(root) and "does not exist" in down.fields["reason"]


async def test_a_root_missing_at_start_comes_up_later(tmp_path: Path, files, wait_for) -> None:
    root = tmp_path / "later"
    rec = Recorder()
    w = Watcher([(root, RULES)], rec, rescan_interval=0.05, use_inotify=False, debounce=0)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(w.run())
        await wait_for(lambda: w.scan_count(root) >= 2, what="a few attempts")
        assert w.root_status() == {root: False} and rec.calls == []
        files.illumina_files(root / "run1", "A", 1)
        await wait_for(lambda: rec.calls and rec.last, what="the root to come up")
        assert w.root_status() == {root: True}
        task.cancel()


async def test_an_unmounted_share_is_not_an_empty_root(tmp_path: Path, files, wait_for, monkeypatch) -> None:
    root = tmp_path / "mnt"
    files.illumina_files(root / "run1", "A", 1)
    mounted = {"yes": True}
    monkeypatch.setattr(watcher_mod.os.path, "ismount", lambda p: mounted["yes"] if Path(p) == root else False)
    rec = Recorder()
    w = Watcher([(root, RULES)], rec, rescan_interval=0.05, use_inotify=False, debounce=0)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(w.run())
        await wait_for(lambda: rec.calls, what="the first scan")
        mounted["yes"] = False  # the mount point is now a plain (here: still full) folder
        await wait_for(lambda: not w.root_status()[root], what="the unmount to be noticed")
        reported = len(rec.calls)
        down_at = w.scan_count(root)
        await wait_for(lambda: w.scan_count(root) >= down_at + 2, what="retries")
        assert len(rec.calls) == reported
        mounted["yes"] = True
        await wait_for(lambda: w.root_status()[root], what="the remount")
        task.cancel()


async def test_request_rescan_and_callback_errors(tmp_path: Path, wait_for) -> None:
    root = tmp_path / "root"
    root.mkdir()
    calls = 0

    async def flaky(root: Path, runs: list[Run]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("consumer bug")

    w = Watcher([(root, RULES)], flaky, rescan_interval=3600, use_inotify=False, debounce=0)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(w.run())
        await wait_for(lambda: calls == 1, what="the first scan")
        w.request_rescan(root)
        await wait_for(lambda: calls == 2, what="the requested rescan")  # the consumer's error did not stop it
        task.cancel()


async def test_a_root_whose_hand_off_keeps_failing_is_reported_down(tmp_path: Path, caplog) -> None:
    root = tmp_path / "root"
    root.mkdir()
    calls = []

    async def broken(root: Path, runs: list[Run]) -> None:
        calls.append(root)
        raise RuntimeError("journal says no")

    w = Watcher([(root, RULES)], broken, rescan_interval=3600)
    with caplog.at_level(logging.WARNING):
        for n in range(1, watcher_mod.FAILING_SCANS + 1):
            assert await w.scan_once(root) == []
            assert w.root_status() == {root: n < watcher_mod.FAILING_SCANS}, n
    failed = [r for r in caplog.records if r.getMessage() == "watch.callback_failed"]
    assert len(failed) == watcher_mod.FAILING_SCANS
    assert failed[-1].exc_info and "journal says no" in str(failed[-1].exc_info[1])  # logged with its traceback
    assert any(r.getMessage() == "watch.root_down" for r in caplog.records)

    async def fixed(root: Path, runs: list[Run]) -> None:
        pass

    w._on_runs = fixed
    await w.scan_once(root)
    assert w.root_status() == {root: True}
