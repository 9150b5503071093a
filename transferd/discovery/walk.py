"""One pass over a run folder: FASTQ files with their stat, manifests, and the entries that tell the layout.

The BCL tree (lane and cycle folders, images, InterOp) is pruned by name, so a walk costs about one ``stat``
per FASTQ. A listing carries a 64-bit signature of everything the later stages depend on, so that an unchanged
run folder can reuse the previous scan's grouping (see scanner.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transferd.discovery import completion
from transferd.discovery.manifest import is_manifest_name
from transferd.discovery.naming import looks_like_fastq

# Folders that never hold FASTQs but may hold very many files.
_PRUNE_NAMES = frozenset(
    {"Thumbnail_Images", "InterOp", "Images", "Recipe", "Config", "PeriodicSaveRates", "Calibration", "Autocenter"}
)
_CYCLE_DIR = re.compile(r"C\d+\.\d+")
_LANE_DIR = re.compile(r"L\d{3}")
_BCL_PARENTS = frozenset({"BaseCalls", "Intensities"})
# Entries whose presence the layout and completion rules ask about.
NOTABLE = frozenset(
    {
        "RunInfo.xml",
        "RunParameters.xml",
        "RTAComplete.txt",
        "RTAComplete.xml",
        "CopyComplete.txt",
        "SequenceComplete.txt",
        "FastqComplete.txt",
        "Secondary_Analysis_Complete.txt",
        "Logs",
        "Stats",
        "Reports",
        "Analysis",
    }
)
RUN_HINTS = NOTABLE | {"Data", "SampleSheet.csv"}  # a folder holding any of these is a run folder
_FASTQ_ENDINGS = (".gz", ".bgz", ".ora", ".bz2", ".xz", ".zst", ".fastq", ".fq", ".GZ", ".FASTQ", ".FQ")

FastqEntry = tuple[str, str, os.stat_result]  # (folder relative to the run folder, name, stat)


@dataclass(slots=True)
class Listing:
    """What one walk of a run folder found; relative paths use '/' and "" is the run folder itself."""

    fastqs: list[FastqEntry] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    notable: set[str] = field(default_factory=set)
    analyses: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    signature: int = 0


@dataclass(slots=True)
class UnitListing:
    """The slice of a listing that forms one delivery unit."""

    analysis: str | None
    base: str  # "" or "Analysis/<n>"
    fastqs: list[FastqEntry] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    signature: int = 0  # of the unit's files and manifests (order-independent)


def _pruned(name: str, parent_name: str) -> bool:
    return (
        name.startswith(".")
        or name in _PRUNE_NAMES
        or _CYCLE_DIR.fullmatch(name) is not None
        or (parent_name in _BCL_PARENTS and _LANE_DIR.fullmatch(name) is not None)
    )


def walk_run_folder(run_dir: Path) -> tuple[Listing, list[UnitListing]]:
    """The listing of a run folder and its delivery units, each with a signature of what it holds."""
    listing = _Walker(run_dir).walk()
    listing.analyses.sort(key=int)
    units = _split_units(listing)
    # Order-independent signatures: directory order may differ between two listings of the same folder.
    for unit in units:
        unit.signature = hash(
            (
                frozenset((rel, name, st.st_size, st.st_mtime_ns, st.st_ino) for rel, name, st in unit.fastqs),
                frozenset(unit.manifests),
            )
        )
    listing.signature = hash(
        (
            tuple(u.signature for u in units),
            frozenset(listing.notable),
            tuple(listing.analyses),
            tuple(listing.errors),
        )
    )
    return listing, units


class _Walker:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = str(run_dir)
        self.listing = Listing()

    def walk(self) -> Listing:
        listing = self.listing
        stack: list[str] = [""]
        while stack:
            rel = stack.pop()
            self._visit(rel, stack)
        return listing

    def _visit(self, rel: str, stack: list[str]) -> None:
        listing = self.listing
        parent_name = rel.rpartition("/")[2]
        folder = f"{self.run_dir}/{rel}" if rel else self.run_dir
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            listing.errors.append(f"{folder}: cannot list: {exc.strerror or exc}")
            return
        notable, fastqs = listing.notable, listing.fastqs
        for entry in entries:
            name = entry.name
            if name in NOTABLE:
                notable.add(f"{rel}/{name}" if rel else name)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if not _pruned(name, parent_name):
                    stack.append(f"{rel}/{name}" if rel else name)
                    if rel == "Analysis" and name.isdigit():
                        listing.analyses.append(name)
            elif name.endswith(".fastq.gz") or (name.endswith(_FASTQ_ENDINGS) and looks_like_fastq(name)):
                try:
                    st = entry.stat()  # follows symlinks: linked FASTQs are fine
                except OSError:
                    continue  # vanished, or a dangling link
                fastqs.append((rel, name, st))
            elif is_manifest_name(name):
                listing.manifests.append(f"{rel}/{name}" if rel else name)


def _split_units(listing: Listing) -> list[UnitListing]:
    """One unit per ``Analysis/<n>``, plus one for everything else (when it has files, or nothing else exists)."""
    units = {n: UnitListing(analysis=n, base=f"Analysis/{n}") for n in listing.analyses}
    rest = UnitListing(analysis=None, base="")

    def unit_of(rel: str) -> UnitListing:
        parts = rel.split("/", 2)
        if len(parts) >= 2 and parts[0] == "Analysis" and parts[1] in units:
            return units[parts[1]]
        return rest

    for item in listing.fastqs:
        unit_of(item[0]).fastqs.append(item)
    for rel in listing.manifests:
        unit_of(rel).manifests.append(rel)
    out = list(units.values())
    if rest.fastqs or rest.manifests or not out:
        out.append(rest)
    return out


def within(rel: str, folder: str) -> bool:
    return not folder or rel == folder or rel.startswith(folder + "/")


def detect_layout(unit: UnitListing, notable: set[str], covered: Sequence[str]) -> tuple[str, list[str]]:
    """(layout, BCL Convert output folders). Layouts with markers win over manifest, bcl2fastq and plain.

    ``covered``: folders of the unit's manifests, relative to the run folder ("" = the run folder).
    """
    if unit.analysis is not None:
        return "novaseqx", []
    fastq_dirs = {rel for rel, _, _ in unit.fastqs}

    def holds_fastqs(folder: str) -> bool:
        return any(within(d, folder) for d in fastq_dirs)

    bclconvert: list[str] = []
    bcl2fastq = False
    for rel in sorted(notable):
        folder, _, name = rel.rpartition("/")
        if name == "Logs" and holds_fastqs(folder):
            # An instrument's run folder has Logs/ too (RTA logs), beside RunInfo.xml.
            has_marker = f"{rel}/FastqComplete.txt" in notable
            is_instrument_logs = completion.join(folder, "RunInfo.xml") in notable
            if has_marker or not is_instrument_logs:
                bclconvert.append(folder)
        elif name == "Stats" and holds_fastqs(folder):
            bcl2fastq = True
    if bclconvert:
        return "bclconvert", bclconvert
    uncovered = [d for d in fastq_dirs if not any(within(d, m) for m in covered)]
    if covered and not uncovered:
        return "manifest", []
    if not bcl2fastq and any(m in notable for m in (*completion.INSTRUMENT_MARKERS, "RunInfo.xml")):
        return "instrument", []
    return ("bcl2fastq" if bcl2fastq else "plain"), []


def looks_like_run_folder(path: Path) -> bool:
    """A folder with producer files, FASTQs or a manifest at its top is a run folder, not a watch root."""
    try:
        with os.scandir(path) as it:
            return any(e.name in RUN_HINTS or is_manifest_name(e.name) or looks_like_fastq(e.name) for e in it)
    except OSError:
        return False
