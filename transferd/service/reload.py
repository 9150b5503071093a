"""What a SIGHUP changes: a pure diff of the running config against the newly loaded one.

Live: the watches (each watch's watcher restarts on its own), the download side (the mirror loop and the
webhook receiver restart), logging, and the shutdown grace. Everything else (API host and key file, journal
path, upload limits, the listen address, the watchdog switch) is wired into long-lived objects; a change there
is reported and takes effect at the next restart, and the running values stay in force.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from transferd.config import Config

RESTART_ONLY = ("gencove", "state", "upload", "metrics", "webhook", "network")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: Config  # what the daemon runs with from now on
    stop_watches: tuple[Path, ...]  # removed or changed: stop their watchers
    start_watches: tuple[Path, ...]  # added or changed: start watchers
    restart_mirror: bool
    relog: bool
    needs_restart: tuple[str, ...]  # changed sections that wait for the next restart

    @property
    def changed(self) -> bool:
        return bool(self.stop_watches or self.start_watches or self.restart_mirror or self.relog
                    or self.needs_restart)  # fmt: skip


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    needs_restart = tuple(k for k in RESTART_ONLY if getattr(old, k) != getattr(new, k))
    if old.service.watchdog != new.service.watchdog:
        needs_restart += ("service.watchdog",)
    effective = replace(
        new,
        **{k: getattr(old, k) for k in RESTART_ONLY},
        service=replace(new.service, watchdog=old.service.watchdog),
    )
    before = {w.path: w for w in old.watches}
    after = {w.path: w for w in new.watches}
    stop = tuple(p for p, w in before.items() if after.get(p) != w)
    start = tuple(p for p, w in after.items() if before.get(p) != w)
    return ReloadPlan(
        config=effective,
        stop_watches=stop,
        start_watches=start,
        restart_mirror=old.download != new.download,
        relog=old.log != new.log,
        needs_restart=needs_restart,
    )
