"""The daemon's memory between scans: when each file version was first seen, gzip verdicts, and the grouping
of run folders that did not change.

A file is stable when its (size, mtime_ns, inode) has not changed for ``settle_seconds`` of observation (and its
mtime is that old). Per file the tracker keeps a reference to the scan's SourceFile, one float and, once checked,
a 64-bit fingerprint of the gzip verdict. Memory is bounded: the total
number of tracked files is capped by evicting the least recently scanned run folders, which only restarts their
observation, and ``forget`` drops a run once the daemon has handed it off.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from transferd.discovery.gzipcheck import is_io_error
from transferd.discovery.models import SourceFile
from transferd.stats import STATS

UnitKey = tuple[str, str | None, str]  # (run folder, analysis, run name): one delivery unit


class AllUnits:
    """The type of ALL_UNITS."""

    def __repr__(self) -> str:
        return "ALL_UNITS"


ALL_UNITS = AllUnits()  # forget(): every unit of the run folder
MAX_TOMBSTONES = 100_000
RunKey = tuple[str, str]  # (run folder, run name)


def unit_key(run_path: Path, analysis: str | None, name: str) -> UnitKey:
    return (str(run_path), analysis, name)


def run_key_of(key: UnitKey) -> RunKey:
    return (key[0], key[2])


class _Unit:
    """One unit's files as last seen. A file is recognised by its version (size, mtime_ns, inode), not its
    path: nothing per path is stored, and a file renamed in place (same inode) keeps its history."""

    __slots__ = ("files", "gzip_bad", "gzip_ok", "signature", "since")

    def __init__(self) -> None:
        self.signature: int | None = None  # of the unit's listing when last observed
        self.files: tuple[SourceFile, ...] = ()
        self.since: list[float] = []  # per file: seen unchanged since
        self.gzip_ok: set[int] = set()  # hash(version) of files whose gzip check passed
        self.gzip_bad: dict[int, str] = {}  # hash(version) -> why the check failed


class _RunMemory:
    __slots__ = ("prepared", "signature", "units")

    def __init__(self) -> None:
        self.units: dict[UnitKey, _Unit] = {}
        self.signature: int | None = None  # of the listing the prepared grouping was made from
        self.prepared: object | None = None  # the scanner's clock-independent result for that listing

    def file_count(self) -> int:
        return sum(len(u.files) for u in self.units.values())


class StabilityTracker:
    """Thread-safe: scans run in worker threads while the daemon calls ``forget`` from the event loop."""

    def __init__(self, max_files: int = 500_000, trusted: frozenset[int] = frozenset()) -> None:
        """``trusted``: ``SourceFile.fingerprint()`` of file versions known to be whole gzip streams (from the
        journal: uploaded before a restart); they are never read again while unchanged."""
        self._max_files = max_files
        self._trusted = trusted
        self._runs: OrderedDict[RunKey, _RunMemory] = OrderedDict()
        self._count = 0
        # Handed-off units: key -> signature of their listing then (None: take the next one seen). A forgotten
        # unit is left out of scans until its files change.
        self._forgotten: OrderedDict[UnitKey, int | None] = OrderedDict()
        self._lock = threading.Lock()
        self.gzip_checks_run = 0  # files actually read by the gzip check (tests, benchmark)

    def __len__(self) -> int:
        """Files tracked."""
        return self._count

    @property
    def unit_count(self) -> int:
        return sum(len(r.units) for r in self._runs.values())

    def _run(self, rkey: RunKey) -> _RunMemory:
        run = self._runs.get(rkey)
        if run is None:
            run = self._runs[rkey] = _RunMemory()
        self._runs.move_to_end(rkey)
        return run

    def _evict(self, keep: RunKey) -> None:
        while self._count > self._max_files and len(self._runs) > 1:
            oldest = next(iter(self._runs))
            if oldest == keep:
                self._runs.move_to_end(oldest)
                oldest = next(iter(self._runs))
            self._count -= self._runs.pop(oldest).file_count()

    # -- grouping memo ---------------------------------------------------------------------------------------
    def recall(self, rkey: RunKey, signature: int) -> object | None:
        """The prepared result remembered for this run folder if its listing is unchanged."""
        with self._lock:
            run = self._runs.get(rkey)
            if run is None or run.signature != signature:
                return None
            self._runs.move_to_end(rkey)
            return run.prepared

    def remember(self, rkey: RunKey, signature: int, prepared: object) -> None:
        with self._lock:
            run = self._runs.get(rkey)
            if run is not None:
                run.signature, run.prepared = signature, prepared

    # -- stability -------------------------------------------------------------------------------------------
    def observe(
        self, key: UnitKey, files: Sequence[SourceFile], now: float, signature: int | None = None
    ) -> list[float]:
        """Record this scan's view of a unit; returns, per file, since when it has been seen unchanged."""
        rkey = run_key_of(key)
        with self._lock:
            run = self._run(rkey)
            unit = run.units.get(key)
            if unit is None:
                unit = run.units[key] = _Unit()
            previous = {f.version: since for f, since in zip(unit.files, unit.since, strict=True)}
            since_list = [previous.get(f.version, now) for f in files]
            self._count += len(files) - len(unit.files)
            unit.files, unit.since, unit.signature = tuple(files), since_list, signature
            if unit.gzip_ok or unit.gzip_bad:
                current = {hash(f.version) for f in files}
                unit.gzip_ok &= current
                unit.gzip_bad = {h: why for h, why in unit.gzip_bad.items() if h in current}
            self._evict(keep=rkey)
            return since_list

    def gzip_verdict(self, key: UnitKey, f: SourceFile, check: Callable[[Path], str | None]) -> str | None:
        """``check(f.path)``, memoised per file version, so the (possibly full) check runs once per file. An I/O
        error (``cannot read: ...``: permissions, a share gone) is not a verdict about the content: it is never
        memoised, so fixing it (which changes no part of the file's version) is seen at the next scan."""
        if self._trusted and f.fingerprint() in self._trusted:
            return None
        vkey = hash(f.version)
        with self._lock:
            unit = self._unit(key)
            if unit is not None:
                if vkey in unit.gzip_ok:
                    return None
                if vkey in unit.gzip_bad:
                    return unit.gzip_bad[vkey]
        verdict = check(f.path)
        self.gzip_checks_run += 1
        STATS.gzip_checked("whole" if verdict is None else "unreadable" if is_io_error(verdict) else "broken")
        if not _unchanged(f) or is_io_error(verdict):
            return verdict  # rewritten while we read it, or unreadable: judge it afresh next time
        with self._lock:
            unit = self._unit(key)
            if unit is not None:
                if verdict is None:
                    unit.gzip_ok.add(vkey)
                else:
                    unit.gzip_bad[vkey] = verdict
        return verdict

    def _unit(self, key: UnitKey) -> _Unit | None:
        run = self._runs.get(run_key_of(key))
        return run.units.get(key) if run is not None else None

    # -- forgetting ------------------------------------------------------------------------------------------
    def forget(self, run_path: Path, analysis: str | AllUnits | None = ALL_UNITS, name: str | None = None) -> None:
        """The daemon handed a delivery unit off: ``forget(run.path, run.analysis, run.name)``; by default every
        unit of the run folder known now. Drops what is remembered about it and leaves it out of later scans
        until its files change, so memory then holds only a small tombstone per unit."""
        path = str(run_path)
        with self._lock:
            known = False
            for rkey in [k for k in self._runs if k[0] == path and (name is None or k[1] == name)]:
                run = self._runs[rkey]
                for key in [k for k in run.units if isinstance(analysis, AllUnits) or k[1] == analysis]:
                    unit = run.units.pop(key)
                    self._count -= len(unit.files)
                    self._tombstone(key, unit.signature)
                    known = True
                run.signature = run.prepared = None
                if not run.units:
                    del self._runs[rkey]
            if not known:  # not in memory (evicted or never seen): judge by the next listing
                only = None if isinstance(analysis, AllUnits) else analysis
                self._tombstone((path, only, name or os.path.basename(path)), None)

    def _tombstone(self, key: UnitKey, signature: int | None) -> None:
        self._forgotten[key] = signature
        self._forgotten.move_to_end(key)
        while len(self._forgotten) > MAX_TOMBSTONES:
            self._forgotten.popitem(last=False)

    def is_forgotten(self, key: UnitKey, signature: int) -> bool:
        """True if the unit was handed off and its listing has not changed since (then it is skipped)."""
        with self._lock:
            if key not in self._forgotten:
                return False
            then = self._forgotten[key]
            if then is None:
                self._forgotten[key] = signature
                return True
            if then == signature:
                return True
            del self._forgotten[key]  # its files changed after the hand-off: report it again
            return False

    @property
    def forgotten_count(self) -> int:
        return len(self._forgotten)

    def retain(self, root: Path, run_paths: Iterable[Path], live: Iterable[UnitKey]) -> None:
        """After a successful scan of ``root``: drop what it no longer holds. ``run_paths``: the run folders
        (and, for root-level manifests, the root) that were walked; ``live``: the units reported."""
        walked = {str(p) for p in run_paths}
        live_units = set(live)
        live_runs = {run_key_of(k) for k in live_units}
        root_s = str(root)

        def under_root(path: str) -> bool:
            return path == root_s or os.path.dirname(path) == root_s

        with self._lock:
            for rkey in [k for k in self._runs if under_root(k[0])]:
                run = self._runs[rkey]
                if rkey not in live_runs:
                    self._count -= run.file_count()
                    del self._runs[rkey]
                    continue
                for key in [k for k in run.units if k not in live_units]:
                    self._count -= len(run.units.pop(key).files)
            for key in [k for k in self._forgotten if under_root(k[0]) and k[0] not in walked]:
                del self._forgotten[key]


def _unchanged(f: SourceFile) -> bool:
    try:
        st = os.stat(f.path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns, st.st_ino) == f.version
