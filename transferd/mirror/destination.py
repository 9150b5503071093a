"""The download destination, checked like a watch root before anything is written into it.

An unmounted share leaves a bare mount point behind: writing the deliverables there would fill the local disk
and hide them from the lab, and a later mount would cover them. So the destination is usable only when it
exists, is still a mount point if it ever was one, and holds `[download] marker` when one is configured.
While it is not, the mirror pauses (no listing, no downloads, the watermark stays), readiness goes red,
`transferd_download_destination_up` is 0 and a WARNING is logged (and kept in the journal for `status`).
The probe runs on its own thread with a deadline: a hung NFS mount reads as down instead of hanging the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from transferd.journal import Journal
from transferd.journal import downloads as jd
from transferd.log import event
from transferd.mirror.confined import RootCheck
from transferd.stats import STATS

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0  # a stat() slower than this means a hung mount
NOT_CHECKED = "not checked yet"


@dataclass(frozen=True, slots=True)
class DestinationState:
    up: bool
    reason: str  # why not, or what was checked
    check: RootCheck | None = None  # what every write verifies while up
    root: Path | None = None  # the absolute path, while up


class Destination:
    def __init__(self, path: Path, marker: str, journal: Journal | None = None) -> None:
        self.path, self.marker, self.journal = path, marker, journal
        self.state = DestinationState(False, NOT_CHECKED)
        self._was_mount = False
        self._seen = False  # it existed once: from now on a missing destination is an unmounted one
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="destination-probe")
        self._pending: Future[DestinationState] | None = None

    async def refresh(self) -> DestinationState:
        """Probe now; log and count a change of state. Never raises."""
        if self._pending is None or self._pending.done():
            self._pending = self._pool.submit(self._probe)
        try:
            state = await asyncio.wait_for(asyncio.wrap_future(self._pending), PROBE_TIMEOUT)
        except TimeoutError:
            state = DestinationState(False, f"stat() of {self.path} hangs for more than {PROBE_TIMEOUT:g}s")
        except OSError as e:
            state = DestinationState(False, f"{self.path}: {e.strerror or e}")
        old, self.state = self.state, state
        STATS.set_destination_up(str(self.path), state.up)
        first = old.reason == NOT_CHECKED
        if (state.up != old.up and not first) or (first and not state.up):  # a start while down is news too
            level = logging.INFO if state.up else logging.WARNING
            event(log, "mirror.destination_up" if state.up else "mirror.destination_down", level,
                  destination=str(self.path), reason=state.reason)  # fmt: skip
            if self.journal is not None:
                now = "usable again" if state.up else "unusable, mirror paused"
                msg = f"download destination {now}: {state.reason}"
                await self.journal.run(jd.note, "info" if state.up else "warning", str(self.path), msg)
        return state

    def _probe(self) -> DestinationState:
        p = self.path
        try:
            st = os.stat(p)
        except FileNotFoundError:
            if self._seen or self.marker:
                return DestinationState(False, f"{p} does not exist (unmounted or moved?)")
            # A fresh install: the first file placed makes it (confined.made_root).
            return DestinationState(True, f"{p} not made yet", None, Path(os.path.abspath(p)))
        if not stat.S_ISDIR(st.st_mode):
            return DestinationState(False, f"{p} is not a folder")
        if os.path.ismount(p):
            self._was_mount = True
        elif self._was_mount:
            return DestinationState(False, f"{p} is no longer a mount point (share unmounted?)")
        if self.marker:
            try:
                marker = os.stat(p / self.marker, follow_symlinks=False)
            except FileNotFoundError:
                return DestinationState(False, f"{p / self.marker} is missing (share not mounted?)")
            if not stat.S_ISREG(marker.st_mode):
                return DestinationState(False, f"{p / self.marker} is not a regular file")
        self._seen = True
        return DestinationState(True, f"{p} usable", RootCheck(st.st_dev, self.marker), Path(os.path.abspath(p)))

    @property
    def checked(self) -> bool:
        return self.state.reason != NOT_CHECKED

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
