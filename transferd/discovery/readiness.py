"""The clock-dependent half of a scan: is the unit complete, is each file settled, is each gzip whole.

A ``PreparedUnit`` holds everything that depends only on the files (grouping, layout, problems); it is reused
while a run folder is unchanged. ``finish_unit`` turns it into a ``Run`` for a given ``now``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transferd.discovery import completion
from transferd.discovery.grouping import SampleDraft
from transferd.discovery.gzipcheck import check_gzip_file, is_io_error
from transferd.discovery.models import Run, Sample, SourceFile, escaped
from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.stability import StabilityTracker, UnitKey


@dataclass(frozen=True, slots=True)
class PreparedUnit:
    key: UnitKey
    run_path: Path
    run_name: str
    analysis: str | None
    unit_dir: Path
    layout: str
    requirements: tuple[completion.Requirement, ...]
    also_quiet: bool
    drafts: tuple[SampleDraft, ...]
    files: tuple[SourceFile, ...]  # every FASTQ-like file of the unit: they all count for the quiet period
    ignored: tuple[Path, ...]
    problems: tuple[str, ...]
    manifests: tuple[Path, ...]
    fastq_dirs: tuple[Path, ...]
    newest_mtime: float | None  # of ``files``


@dataclass(frozen=True, slots=True)
class UnitScan:
    run: Run
    key: UnitKey  # the unit's key in the StabilityTracker
    hint_dirs: tuple[Path, ...]  # folders where the next change would show (empty once complete)


def _age(seconds: float) -> str:
    return f"{max(seconds, 0.0):.0f}s"


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def finish_unit(
    prep: PreparedUnit,
    rules: DiscoveryRules,
    now: float,
    stability: StabilityTracker | None,
    since: Sequence[float] | None,
    verdicts: dict[int, tuple[str, ...]] | None = None,
) -> UnitScan:
    """``since``: per file of ``prep.files``, since when the tracker has seen it unchanged (daemon mode).
    ``verdicts``: gzip problems by id(SampleDraft), kept with a reused PreparedUnit (its files are unchanged)."""
    changes = [m for m in map(_mtime, prep.manifests) if m is not None]
    if prep.newest_mtime is not None:
        changes.append(prep.newest_mtime)
    if since:
        changes.append(max(since))
    wanted = [m for alternatives in prep.requirements for m in alternatives]
    # A root-level manifest's unit is the manifest file itself (its Run.path): markers live in its folder.
    folder = prep.unit_dir if prep.run_path in prep.manifests else prep.run_path
    present = {m for m in wanted if (folder / m).exists()}
    verdict = completion.judge(
        prep.layout,
        prep.requirements,
        present,
        also_quiet=prep.also_quiet,
        has_files=bool(prep.files),
        last_change=max(changes, default=None),
        now=now,
        rules=rules,
    )
    seen_since = dict(zip(map(id, prep.files), since, strict=True)) if since is not None else None
    samples = tuple(
        _sample(prep, d, rules, now, verdict.complete, stability, seen_since, verdicts) for d in prep.drafts
    )
    run = Run(
        path=prep.run_path,
        name=prep.run_name,
        analysis=prep.analysis,
        layout=prep.layout,
        complete=verdict.complete,
        reasons=verdict.reasons,
        samples=samples,
        problems=prep.problems,
        ignored=prep.ignored,
    )
    hints: tuple[Path, ...] = ()
    if not verdict.complete:
        # Most telling first (watches are capped): the unit's folders, where its markers will appear, its FASTQs.
        markers = [(folder / m).parent for m in wanted]
        hints = tuple(dict.fromkeys([folder, prep.unit_dir, *markers, *prep.fastq_dirs]))
    return UnitScan(run=run, key=prep.key, hint_dirs=hints)


def _sample(
    prep: PreparedUnit,
    d: SampleDraft,
    rules: DiscoveryRules,
    now: float,
    complete: bool,
    stability: StabilityTracker | None,
    seen_since: dict[int, float] | None,  # id(SourceFile) -> unchanged since
    verdicts: dict[int, tuple[str, ...]] | None,
) -> Sample:
    problems = list(d.problems)
    lasting = bool(problems)  # problems that waiting will not cure
    settle = rules.settle_seconds
    unsettled = 0
    newest: tuple[float, SourceFile] | None = None  # the most recently changed file that has not settled
    for f in d.files:
        unchanged = now - f.mtime_ns / 1e9
        if seen_since is not None:
            unchanged = min(unchanged, now - seen_since.get(id(f), now))
        if unchanged < settle:
            unsettled += 1
            if newest is None or unchanged < newest[0]:
                newest = (unchanged, f)
    if newest is not None:
        more = f" and {unsettled - 1} more" if unsettled > 1 else ""
        name = escaped(newest[1].path.name)
        problems.append(f"not settled: {name}{more} changed {_age(newest[0])} ago (settle {settle:g}s)")
    if complete and not problems and rules.verify_gzip:
        # Last, and only for otherwise ready samples: this is the one step that reads file contents.
        gzip_problems = verdicts.get(id(d)) if verdicts is not None else None
        if gzip_problems is None:
            found = _gzip_problems(prep, d, stability)
            gzip_problems = tuple(p for p, _ in found)
            if verdicts is not None and not any(io for _, io in found):
                verdicts[id(d)] = gzip_problems  # an unreadable file is checked again next scan
        problems.extend(gzip_problems)
    return Sample(
        run_path=prep.run_path,
        run_name=prep.run_name,
        analysis=prep.analysis,
        client_id=d.client_id,
        sample_name=d.sample_name,
        r1=d.r1,
        r2=d.r2,
        ready=complete and not problems,
        problems=tuple(problems),
        project_folder=d.project_folder,
        s_number=d.s_number,
        origin=d.origin,
        i1=d.i1,
        i2=d.i2,
        manifest=d.manifest,
        settling=unsettled > 0 and not lasting,
    )


def _gzip_problems(prep: PreparedUnit, d: SampleDraft, stability: StabilityTracker | None) -> list[tuple[str, bool]]:
    """(problem, is an I/O error) per file that is not a whole gzip stream."""
    problems = []
    for f in d.files:
        if stability is not None:
            verdict = stability.gzip_verdict(prep.key, f, check_gzip_file)
        else:
            verdict = check_gzip_file(f.path)
        if verdict:
            problems.append((f"{escaped(f.path.name)}: {verdict}", is_io_error(verdict)))
    return problems
