"""The recheck: a cheap stat() sweep over every mirrored file, so a file deleted or changed by hand is noticed
and fetched again (the journal remembers each placed file's size and mtime_ns; nothing is read or hashed).

The sweep walks the journal's done files a page at a time and reaches each file without following symlinks
(confined.py). A sample with a missing or changed file is reopened (owed again); the next cycle fetches just
that file. It runs only while the destination is usable, and its findings are dropped if the destination went
away meanwhile (an unmounted share would otherwise look like every file deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from transferd.journal import Journal
from transferd.journal import downloads as jd
from transferd.log import event
from transferd.mirror import confined
from transferd.stats import STATS

log = logging.getLogger(__name__)

PAGE = 1000  # journal rows stat()ed per thread hop


@dataclass(frozen=True, slots=True)
class RecheckReport:
    files: int  # files looked at
    missing: int
    changed: int
    reopened: int  # samples made owed again


def _look(root: Path, check: confined.RootCheck | None, files: list[jd.PlacedFile]) -> dict[int, str]:
    """file id -> "missing" | "changed" for the files that are not as placed."""
    found: dict[int, str] = {}
    folders: dict[Path, int | None] = {}  # one descriptor per folder of this page
    try:
        for f in files:
            dest = Path(f.dest_path)
            try:
                rel = dest.relative_to(root)
            except ValueError:
                continue  # placed under another destination (the config changed): not ours to judge
            folder = dest.parent
            if folder not in folders:
                try:
                    folders[folder] = confined.open_dir(root, rel.parts[:-1], create=False, check=check)
                except confined.DestinationDown:
                    raise
                except OSError:
                    folders[folder] = None
            fd = folders[folder]
            st = confined.lstat_in(fd, dest.name) if fd is not None else None
            if st is None or not stat.S_ISREG(st.st_mode):
                found[f.id] = "missing"
            elif st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
                found[f.id] = "changed"
    finally:
        for fd in folders.values():
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
    return found


async def recheck(journal: Journal, source: str, root: Path, check: confined.RootCheck | None) -> RecheckReport:
    """Sweep one project's mirrored files. Raises confined.DestinationDown when the destination goes away."""
    after, files = 0, 0
    kinds: Counter[str] = Counter()
    problems: dict[str, str] = {}
    while True:
        page = await journal.run(jd.placed_files, source, after, PAGE)
        if not page:
            break
        after = page[-1].id
        files += len(page)
        found = await asyncio.to_thread(_look, root, check, page)
        for f in page:
            kind = found.get(f.id)
            if kind is not None:
                kinds[kind] += 1
                problems.setdefault(f.sample_id, f"{f.dest_path} is {kind} on disk; fetching it again")
    reopened = 0
    if problems:
        # The destination is verified once more: findings from a share that went away mid-sweep are dropped.
        await asyncio.to_thread(_verify, root, check)
        reopened = await journal.run(jd.reopen_samples, source, problems)
        for kind, n in kinds.items():
            STATS.mirror_repair(kind, n)
        event(log, "mirror.recheck_found", logging.WARNING, source=source, missing=kinds["missing"],
              changed=kinds["changed"], samples=reopened, first=next(iter(problems.values())))  # fmt: skip
    return RecheckReport(files, kinds["missing"], kinds["changed"], reopened)


def _verify(root: Path, check: confined.RootCheck | None) -> None:
    fd = confined.open_dir(root, (), create=False, check=check)
    if fd is not None:
        os.close(fd)
