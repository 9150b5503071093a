"""Liveness and readiness for /healthz and /readyz.

Liveness is a tick written by a task on the event loop: if the loop hangs, the tick ages and /healthz (and the
systemd watchdog, fed by the same task) notices. Readiness is a set of cached checks refreshed in the
background, never on a probe, so a probe is cheap and cannot hang on a dead NFS mount or a slow API:
the journal commits, the API answers an authorised call with our key, and every watch root is mounted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from transferd.journal import Journal
from transferd.log import event
from transferd.retry import ApiError

log = logging.getLogger(__name__)

CHECKS = ("journal", "api", "roots")
ROOT_PROBE_TIMEOUT = 5.0  # a stat() slower than this means a hung mount


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str
    checked: float = field(default_factory=time.time)  # unix time of the check

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "checked": round(self.checked, 3)}


class Health:
    """The service's current health; written by the loop's own tasks, read by HTTP handlers and metrics."""

    def __init__(self, live_after: float = 10.0) -> None:
        self.live_after = live_after
        self.last_tick = time.monotonic()
        self.loop_lag = 0.0
        self.checks: dict[str, Check] = {c: Check(False, "not checked yet") for c in CHECKS}
        self.roots: dict[str, bool] = {}

    def tick(self, lag: float = 0.0) -> None:
        self.last_tick = time.monotonic()
        self.loop_lag = lag

    def alive(self) -> tuple[bool, float]:
        age = time.monotonic() - self.last_tick
        return age < self.live_after, age

    def ready(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def verdicts(self) -> dict[str, bool]:
        return {name: c.ok for name, c in self.checks.items()}

    def root_health(self) -> dict[str, bool]:
        return dict(self.roots)

    def set(self, name: str, check: Check) -> None:
        old = self.checks.get(name)
        if old is None or old.ok != check.ok:  # log transitions only, not every refresh
            level = logging.INFO if check.ok else logging.WARNING
            event(log, "service.readiness", level, check=name, ok=check.ok, detail=check.detail)
        self.checks[name] = check


# -- checks -----------------------------------------------------------------------------------------------------
async def check_journal(journal: Journal) -> Check:
    problem = await asyncio.get_running_loop().run_in_executor(None, journal.problem)
    return Check(problem is None, problem or f"{journal.path} readable and writable")


def _root_up(root: Path) -> bool:
    return root.is_dir() and os.access(root, os.R_OK | os.X_OK)


class RootProber:
    """Stats the watch roots on one dedicated thread; a probe that hangs (dead NFS) marks the roots down
    instead of piling up threads, and the next probe waits for the stuck one to come back."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="root-probe")
        self._pending: Future[dict[str, bool]] | None = None

    async def probe(self, roots: Sequence[Path], watcher_view: Mapping[Path, bool]) -> tuple[Check, dict[str, bool]]:
        if self._pending is None or self._pending.done():
            self._pending = self._pool.submit(lambda: {str(r): _root_up(r) for r in roots})
        try:
            seen = await asyncio.wait_for(asyncio.wrap_future(self._pending), ROOT_PROBE_TIMEOUT)
        except TimeoutError:
            status = dict.fromkeys(map(str, roots), False)
            return Check(False, f"stat() of the watch roots hangs for more than {ROOT_PROBE_TIMEOUT:g}s"), status
        status = {str(r): seen.get(str(r), False) and watcher_view.get(r, True) for r in roots}
        down = [r for r, up in status.items() if not up]
        if down:
            return Check(False, "watch root down: " + ", ".join(down)), status
        return Check(True, f"{len(roots)} watch root(s) up"), status

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def check_api(call: Callable[[], Any], host: str) -> Check:
    """`call` is a cheap authorised request (e.g. list one project)."""
    try:
        await call()
    except ApiError as e:
        if e.status in (401, 403):
            return Check(False, f"{host} rejected the API key (HTTP {e.status})")
        return Check(False, f"{host} answered HTTP {e.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return Check(False, f"{host} unreachable: {type(e).__name__}: {e}")
    return Check(True, f"{host} reachable, key accepted")
