"""Named FASTQ files -> samples: grouping, ordering, consistency, client_ids and their collisions. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from transferd.discovery.manifest import Manifest
from transferd.discovery.models import SourceFile, escaped, is_utf8
from transferd.discovery.naming import FastqName, client_id_for
from transferd.discovery.rules import DiscoveryRules


@dataclass(frozen=True, slots=True)
class NamedFile:
    file: SourceFile
    name: FastqName
    folder: str  # folder relative to the delivery unit, "" for its top


@dataclass(frozen=True, slots=True)
class SampleDraft:
    """A sample before readiness (stability, gzip, completion) is judged."""

    client_id: str
    sample_name: str
    project_folder: str
    s_number: int | None
    origin: str
    r1: tuple[SourceFile, ...]
    r2: tuple[SourceFile, ...]
    i1: tuple[SourceFile, ...] = ()
    i2: tuple[SourceFile, ...] = ()
    problems: tuple[str, ...] = ()
    manifest: Path | None = None

    @property
    def files(self) -> tuple[SourceFile, ...]:
        return self.r1 + self.r2 + self.i1 + self.i2

    @property
    def label(self) -> str:
        where = f"{self.project_folder}/" if self.project_folder else ""
        snum = f" (S{self.s_number})" if self.s_number is not None else ""
        return f"{where}{self.sample_name}{snum}"


def _slot(nf: NamedFile) -> tuple[int, int]:
    return (nf.name.lane or 0, nf.name.chunk)


def _slot_text(slot: tuple[int, int]) -> str:
    lane, chunk = slot
    return f"L{lane:03d}/{chunk:03d}" if lane else f"{chunk:03d}"


def _read_problems(read: str, files: Sequence[NamedFile]) -> list[str]:
    problems: list[str] = []
    seen: dict[tuple[int, int], NamedFile] = {}
    for nf in files:
        slot = _slot(nf)
        if slot in seen:
            problems.append(f"{read}: {nf.file.path.name} and {seen[slot].file.path.name} are both {_slot_text(slot)}")
        seen[slot] = nf
        if not nf.name.is_gzip:
            kind = f".{nf.name.compression}" if nf.name.compression else "uncompressed"
            problems.append(f"{nf.file.path.name}: {kind} is not gzip; only gzip FASTQs are concatenated/uploaded")
    lanes = {nf.name.lane for nf in files}
    if None in lanes and len(lanes) > 1:
        problems.append(f"{read}: mixes files with and without a lane number (merged and per-lane copies?)")
    chunks_by_lane: dict[int, set[int]] = {}
    for lane, chunk in seen:
        chunks_by_lane.setdefault(lane, set()).add(chunk)
    for lane, chunks in sorted(chunks_by_lane.items()):
        missing = sorted(set(range(1, max(chunks) + 1)) - chunks)
        if missing:
            where = f" of lane {lane}" if lane else ""
            problems.append(f"{read}: missing chunk(s) {', '.join(f'{c:03d}' for c in missing)}{where}")
    return problems


def _mate_problems(reads: dict[str, list[NamedFile]], rules: DiscoveryRules) -> list[str]:
    problems: list[str] = []
    r1, r2 = reads.get("R1", []), reads.get("R2", [])
    if not r1:
        problems.append("no R1 file (R2 only)" if r2 else "no R1 file")
    elif not r2 and not rules.single_end:
        problems.append("no R2 file: missing mate (single-end is not allowed for this watch)")
    slots1 = {_slot(nf) for nf in r1}
    for read in ("R2", "I1", "I2"):
        files = reads.get(read, [])
        if not files or not r1:
            continue
        slots = {_slot(nf) for nf in files}
        if slots != slots1:
            only1 = ", ".join(_slot_text(s) for s in sorted(slots1 - slots)) or "-"
            only2 = ", ".join(_slot_text(s) for s in sorted(slots - slots1)) or "-"
            problems.append(f"R1 and {read} differ in lanes/chunks (only in R1: {only1}; only in {read}: {only2})")
    return problems


def group_named_files(files: Iterable[NamedFile], rules: DiscoveryRules) -> tuple[list[SampleDraft], list[Path]]:
    """Group by (folder, sample, S number): returns (samples, files left out by the rules)."""
    groups: dict[tuple[str, str, str, str], dict[str, list[NamedFile]]] = {}
    ignored: list[Path] = []
    for nf in files:
        if (nf.name.is_index and not rules.include_index_reads) or (
            nf.name.is_undetermined and not rules.include_undetermined
        ):
            ignored.append(nf.file.path)
            continue
        sample, tag = nf.name.group_id
        key = (nf.folder, sample, tag, nf.name.convention)
        groups.setdefault(key, {}).setdefault(nf.name.read, []).append(nf)

    drafts: list[SampleDraft] = []
    for (folder, sample, _tag, convention), reads in sorted(groups.items()):
        problems: list[str] = []
        for read in ("R1", "R2", "I1", "I2"):
            reads.get(read, []).sort(key=lambda nf: (_slot(nf), nf.file.path.name))
            problems += _read_problems(read, reads.get(read, []))
        problems += _mate_problems(reads, rules)
        client_id, id_problem = client_id_for(sample, rules.client_id_policy)
        if id_problem:
            problems.append(id_problem)
        first = next(iter(reads.values()))[0].name
        drafts.append(
            SampleDraft(
                client_id=client_id,
                sample_name=sample,
                project_folder=folder,
                s_number=first.s_number,
                origin=convention,
                r1=tuple(nf.file for nf in reads.get("R1", [])),
                r2=tuple(nf.file for nf in reads.get("R2", [])),
                i1=tuple(nf.file for nf in reads.get("I1", [])),
                i2=tuple(nf.file for nf in reads.get("I2", [])),
                problems=tuple(problems),
            )
        )
    return drafts, ignored


def manifest_samples(manifest: Manifest, unit_path: Path, files: dict[Path, SourceFile]) -> list[SampleDraft]:
    """Samples a manifest defines. ``files`` holds the stat of each listed path (absent = vanished)."""
    folder = manifest.folder
    try:
        project_folder = folder.relative_to(unit_path).as_posix()
    except ValueError:
        project_folder = folder.as_posix()
    project_folder = "" if project_folder == "." else project_folder
    shared: list[str] = []
    if manifest.errors:
        shared.append(f"{manifest.path.name} has {len(manifest.errors)} error(s); nothing in it is uploaded")
    drafts: list[SampleDraft] = []
    for client_id, reads in manifest.samples().items():
        problems = list(shared)
        by_read: dict[str, tuple[SourceFile, ...]] = {}
        for read, rows in reads.items():
            present = []
            for row in rows:
                sf = files.get(row.path)
                if sf is None:
                    problems.append(f"{manifest.path.name}:{row.line}: {row.path} vanished")
                else:
                    present.append(sf)
            by_read[read] = tuple(present)
        drafts.append(
            SampleDraft(
                client_id=client_id,
                sample_name=client_id,
                project_folder=project_folder,
                s_number=None,
                origin="manifest",
                r1=by_read["R1"],
                r2=by_read["R2"],
                problems=tuple(problems),
                manifest=manifest.path,
            )
        )
    return drafts


def mark_collisions(drafts: Sequence[SampleDraft]) -> list[SampleDraft]:
    """Two samples of one delivery unit with the same client_id would overwrite each other: fail both."""
    by_id: dict[str, list[int]] = {}
    for i, d in enumerate(drafts):
        by_id.setdefault(d.client_id, []).append(i)
    out = list(drafts)
    for client_id, idxs in by_id.items():
        if len(idxs) < 2:
            continue
        for i in idxs:
            others = "; ".join(drafts[j].label for j in idxs if j != i)
            problem = f"client_id {client_id!r} is also produced by {others}; neither is uploaded"
            out[i] = replace(out[i], problems=(*out[i].problems, problem))
    return out


def mark_undecodable(drafts: Sequence[SampleDraft]) -> list[SampleDraft]:
    """A file whose name is not valid UTF-8 cannot be named in the journal, a log line or on Gencove: its sample
    is never uploaded, with a problem naming the file (bytes escaped); the other samples go on."""
    out = []
    for d in drafts:
        bad = [f.path for f in d.files if not is_utf8(str(f.path))]
        if not bad and is_utf8(d.client_id) and is_utf8(d.sample_name):
            out.append(d)
            continue
        problems = [f"{escaped(str(p))}: file name is not valid UTF-8; rename the file" for p in bad]
        out.append(
            replace(
                d,
                client_id=escaped(d.client_id),
                sample_name=escaped(d.sample_name),
                project_folder=escaped(d.project_folder),
                problems=(*(escaped(p) for p in d.problems), *(problems or ["sample name is not valid UTF-8"])),
            )
        )
    return out
