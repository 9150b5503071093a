"""Filesystem -> delivery units (``Run``) with their samples. Synchronous: the daemon runs it in a thread.

Layout of a watch root: each direct subfolder is a run folder; FASTQs may sit anywhere inside it (bcl2fastq
project/sample subfolders, ``Analysis/<n>/Data/BCLConvert/fastq``, MiSeq ``Data/Intensities/BaseCalls``). A
``*.fastq-map.csv`` directly in the root is a delivery unit of its own, named after the manifest.

A scan is walk (walk.py) -> prepare (names, manifests, grouping, layout: depends only on the files) -> finish
(completion, settling, gzip: depends on the clock; readiness.py). In daemon mode the prepared result of an
unchanged run folder is reused, so a rescan costs little more than one ``stat`` per FASTQ.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from transferd.discovery import completion
from transferd.discovery.grouping import (
    NamedFile,
    group_named_files,
    manifest_samples,
    mark_collisions,
    mark_undecodable,
)
from transferd.discovery.manifest import MANIFEST_SUFFIX, Manifest, is_manifest_name, load_manifest
from transferd.discovery.models import Run, SourceFile, escaped
from transferd.discovery.naming import looks_like_fastq, parse_fastq_name
from transferd.discovery.readiness import PreparedUnit, UnitScan, finish_unit
from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.stability import StabilityTracker, unit_key
from transferd.discovery.walk import (
    UnitListing,
    detect_layout,
    looks_like_run_folder,
    walk_run_folder,
    within,
)

__all__ = [
    "RootScan",
    "RootUnavailableError",
    "StabilityTracker",
    "UnitScan",
    "scan_manifest",
    "scan_paths",
    "scan_root",
    "scan_root_detailed",
    "scan_run_folder",
]

MAX_LISTED_PROBLEMS = 20
# What the tracker keeps per unit of an unchanged run folder: the grouping, when each file was first seen
# unchanged, and gzip problems by id(SampleDraft).
_Remembered = tuple[PreparedUnit, list[float] | None, dict[int, tuple[str, ...]]]


class RootUnavailableError(OSError):
    """A watch root that cannot be listed (missing, unmounted, no permission): not the same as 'empty'."""

    def __init__(self, root: Path, reason: str) -> None:
        super().__init__(f"{root}: {reason}")
        self.root = root
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RootScan:
    runs: list[Run]
    hint_dirs: list[Path]  # the root, then the folders of incomplete units where changes would show


def _limited(items: Sequence[str]) -> list[str]:
    if len(items) <= MAX_LISTED_PROBLEMS:
        return list(items)
    return [*items[:MAX_LISTED_PROBLEMS], f"... and {len(items) - MAX_LISTED_PROBLEMS} more"]


def _stat_source(path: Path) -> SourceFile | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return SourceFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


def _prepare(
    *,
    run_dir: Path,
    run_name: str,
    analysis: str | None,
    unit_dir: Path,
    files: list[SourceFile],
    named: list[NamedFile],
    covered: list[SourceFile],
    unrecognised: list[Path],
    manifests: list[Manifest],
    layout: str,
    output_dirs: Sequence[str],
    problems: list[str],
    rules: DiscoveryRules,
    fastq_dirs: Iterable[Path] = (),
) -> PreparedUnit:
    """Group a unit's files into samples. ``covered``: files under a manifest's folder (used only if listed)."""
    drafts, ignored = group_named_files(named, rules)
    listed: set[Path] = set()
    if manifests:
        known = {f.path: f for f in files}
        for manifest in manifests:
            problems.extend(manifest.errors)
            rows: dict[Path, SourceFile] = {}
            for row in manifest.rows:
                sf = known.get(row.path) or _stat_source(row.path)  # listed files may live elsewhere
                if sf is not None:
                    known[row.path] = rows[row.path] = sf
            listed.update(rows)
            drafts.extend(manifest_samples(manifest, unit_dir, rows))
        files = list(known.values())
    ignored += [f.path for f in covered if f.path not in listed]
    ignored += unrecognised
    problems.extend(_limited([f"{escaped(str(p))}: not a recognised FASTQ name; ignored" for p in unrecognised]))
    requirements, also_quiet = completion.required_markers(layout, analysis, rules, output_dirs)
    return PreparedUnit(
        key=unit_key(run_dir, analysis, run_name),
        run_path=run_dir,
        run_name=run_name,
        analysis=analysis,
        unit_dir=unit_dir,
        layout=layout,
        requirements=tuple(requirements),
        also_quiet=also_quiet,
        drafts=tuple(mark_collisions(mark_undecodable(drafts))),
        files=tuple(files),
        ignored=tuple(sorted(ignored)),
        problems=tuple(problems),
        manifests=tuple(m.path for m in manifests),
        fastq_dirs=tuple(sorted(fastq_dirs)),
        newest_mtime=max(f.mtime_ns for f in files) / 1e9 if files else None,
    )


def _prepare_listed_unit(
    run_dir: Path, unit: UnitListing, notable: set[str], errors: list[str], rules: DiscoveryRules
) -> PreparedUnit:
    run_s = str(run_dir)
    base_len = len(unit.base) + 1 if unit.base else 0
    manifest_dirs = sorted(rel.rpartition("/")[0] for rel in unit.manifests)  # "" = the run folder itself
    manifests = [load_manifest(Path(f"{run_s}/{rel}"), single_end=rules.single_end) for rel in sorted(unit.manifests)]
    listed = {row.path for m in manifests for row in m.rows}  # never also grouped by name (no double upload)
    files: list[SourceFile] = []
    named: list[NamedFile] = []
    covered: list[SourceFile] = []
    unrecognised: list[Path] = []
    dirs: dict[str, Path] = {}
    for rel, name, st in unit.fastqs:
        folder = dirs.get(rel)
        if folder is None:
            folder = dirs[rel] = Path(f"{run_s}/{rel}") if rel else run_dir
        sf = SourceFile(folder / name, st.st_size, st.st_mtime_ns, st.st_ino)  # a child is cheaper than a parse
        files.append(sf)
        if manifest_dirs and (any(within(rel, m) for m in manifest_dirs) or sf.path in listed):
            covered.append(sf)  # a manifest defines this folder's samples
            continue
        parsed = parse_fastq_name(name)
        if parsed is None:
            unrecognised.append(sf.path)
        else:
            named.append(NamedFile(file=sf, name=parsed, folder=rel[base_len:]))
    layout, output_dirs = detect_layout(unit, notable, manifest_dirs)
    return _prepare(
        run_dir=run_dir,
        run_name=run_dir.name,
        analysis=unit.analysis,
        unit_dir=Path(f"{run_s}/{unit.base}") if unit.base else run_dir,
        files=files,
        named=named,
        covered=covered,
        unrecognised=unrecognised,
        manifests=manifests,
        layout=layout,
        output_dirs=output_dirs,
        problems=list(errors),
        rules=rules,
        fastq_dirs=dirs.values(),
    )


def scan_run_folder(
    run_dir: Path, rules: DiscoveryRules, now: float, stability: StabilityTracker | None = None
) -> list[UnitScan]:
    """All delivery units of one run folder (one per ``Analysis/<n>``, plus FASTQs outside ``Analysis``)."""
    run_dir = Path(os.path.abspath(run_dir))
    listing, units = walk_run_folder(run_dir)
    if stability is not None:
        units = [
            u for u in units if not stability.is_forgotten(unit_key(run_dir, u.analysis, run_dir.name), u.signature)
        ]
    rkey = (str(run_dir), run_dir.name)
    # Manifests can list files outside the folder, which the signature does not cover: never reuse those.
    signature = hash((listing.signature, rules)) if not listing.manifests else None
    memo = stability.recall(rkey, signature) if stability is not None and signature is not None else None
    if memo is not None:
        prepared = cast(list[_Remembered], memo)
    else:
        prepared = []
        for unit in units:
            prep = _prepare_listed_unit(run_dir, unit, listing.notable, listing.errors, rules)
            since = stability.observe(prep.key, prep.files, now, unit.signature) if stability is not None else None
            prepared.append((prep, since, {}))
        if stability is not None and signature is not None:
            stability.remember(rkey, signature, prepared)
    return [finish_unit(prep, rules, now, stability, since, verdicts) for prep, since, verdicts in prepared]


def scan_manifest(
    manifest_path: Path,
    rules: DiscoveryRules,
    now: float,
    stability: StabilityTracker | None = None,
    *,
    run_name: str | None = None,
    signature: int | None = None,
) -> UnitScan:
    """A delivery unit defined by one manifest; FASTQs beside it that it does not list are ignored.

    The unit's ``Run.path`` (and its key in the tracker and the journal) is the manifest file itself: several
    manifests in one folder (a watch root) are separate units, never one run."""
    manifest_path = Path(os.path.abspath(manifest_path))
    folder = manifest_path.parent
    manifest = load_manifest(manifest_path, single_end=rules.single_end)
    listed = {row.path for row in manifest.rows}
    beside: list[SourceFile] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                path = Path(entry.path)
                if path not in listed and looks_like_fastq(entry.name) and entry.is_file():
                    sf = _stat_source(path)
                    if sf is not None:
                        beside.append(sf)
    except OSError:
        pass
    prep = _prepare(
        run_dir=manifest_path,
        run_name=run_name or folder.name,
        analysis=None,
        unit_dir=folder,
        files=[],
        named=[],
        covered=beside,
        unrecognised=[],
        manifests=[manifest],
        layout="manifest",
        output_dirs=(),
        problems=[],
        rules=rules,
    )
    since = stability.observe(prep.key, prep.files, now, signature) if stability is not None else None
    return finish_unit(prep, rules, now, stability, since)


def _list_root(root: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(root) as it:
            return sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        raise RootUnavailableError(root, "does not exist (unmounted or moved?)") from None
    except NotADirectoryError:
        raise RootUnavailableError(root, "is not a directory") from None
    except OSError as exc:
        raise RootUnavailableError(root, f"cannot list: {exc.strerror or exc}") from None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows a symlinked run folder at this level only
    except OSError:
        return False


def _manifest_signature(entry: os.DirEntry[str]) -> int:
    """A root-level manifest unit changes when its manifest does (the files it lists are stat'ed anyway)."""
    try:
        st = entry.stat()
    except OSError:
        return 0
    return hash((entry.name, st.st_size, st.st_mtime_ns, st.st_ino))


def _name_clash(unit: UnitScan, problem: str) -> UnitScan:
    run = unit.run
    samples = tuple(replace(s, ready=False, problems=(*s.problems, problem)) for s in run.samples)
    return replace(unit, run=replace(run, problems=(*run.problems, problem), samples=samples))


def scan_root_detailed(
    root: Path, rules: DiscoveryRules, now: float, stability: StabilityTracker | None = None
) -> RootScan:
    """Like scan_root, plus the folders worth watching for an early rescan."""
    root = Path(os.path.abspath(root))
    entries = [e for e in _list_root(root) if not e.name.startswith(".")]
    run_names = {e.name for e in entries if _is_dir(e)}
    units: list[UnitScan] = []
    walked: list[Path] = [root]
    for entry in entries:
        if _is_dir(entry):
            walked.append(Path(entry.path))
            units.extend(scan_run_folder(Path(entry.path), rules, now, stability))
        elif is_manifest_name(entry.name):
            stem = entry.name[: -len(MANIFEST_SUFFIX)] or "manifest"
            signature = _manifest_signature(entry)
            walked.append(Path(entry.path))
            if stability is not None and stability.is_forgotten(unit_key(Path(entry.path), None, stem), signature):
                continue
            unit = scan_manifest(Path(entry.path), rules, now, stability, run_name=stem, signature=signature)
            if stem in run_names:
                unit = _name_clash(unit, f"{entry.path}: run name {stem!r} is also a run folder here; rename one")
            units.append(unit)
    if stability is not None:
        stability.retain(root, walked, [u.key for u in units])
    hints = dict.fromkeys([root, *(d for u in units for d in u.hint_dirs)])
    return RootScan(runs=[u.run for u in units], hint_dirs=list(hints))


def scan_root(root: Path, rules: DiscoveryRules, now: float, stability: StabilityTracker | None = None) -> list[Run]:
    """Every delivery unit under a watch root. Raises RootUnavailableError if the root cannot be listed."""
    return scan_root_detailed(root, rules, now, stability).runs


def scan_paths(paths: Iterable[str | Path], rules: DiscoveryRules, now: float | None = None) -> list[Run]:
    """For ``transferd scan``/``upload``: each PATH is a watch root, a run folder or a ``.fastq-map.csv``.

    Raises FileNotFoundError for a PATH that does not exist, ValueError for any other kind of file, and
    RootUnavailableError for a folder that cannot be listed.
    """
    now = time.time() if now is None else now
    runs: list[Run] = []
    for raw in paths:
        path = Path(os.path.abspath(raw))
        if path.is_file():
            if not is_manifest_name(path.name):
                raise ValueError(f"{path}: not a folder or a '*{MANIFEST_SUFFIX}' manifest")
            runs.append(scan_manifest(path, rules, now).run)
        elif path.is_dir():
            if looks_like_run_folder(path):
                runs.extend(u.run for u in scan_run_folder(path, rules, now))
            else:
                runs.extend(scan_root(path, rules, now))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return runs
