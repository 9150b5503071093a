"""From discovery's runs to what the journal records: gncv paths and object plans (pure).

Object names: `gncv://<watch destination>/<run name>[/<analysis n>]/<client_id>_<R1|R2>.fastq.gz`. The server
pairs uploads by the text before the first `_` of the file name and reads `_R2` as read 2, so a client_id
must hold neither `_` nor `/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from transferd.discovery.models import Run, Sample, SourceFile, escaped, is_utf8


@dataclass(frozen=True, slots=True)
class ObjectPlan:
    """One object to upload: a read of a sample, the concatenation of `sources` in order."""

    read: str  # "R1" | "R2"
    destination_path: str
    sources: tuple[SourceFile, ...]

    @property
    def size(self) -> int:
        return sum(s.size for s in self.sources)


@dataclass(frozen=True, slots=True)
class SamplePlan:
    client_id: str
    sample_name: str
    folder: str  # gncv://<destination>/<run>[/<analysis>]
    project_id: str | None
    metadata: str | None  # JSON text for the assignment
    objects: tuple[ObjectPlan, ...]
    problems: tuple[str, ...]  # non-empty: recorded as failed, never uploaded


@dataclass(frozen=True, slots=True)
class RunPlan:
    watch: str
    path: str
    analysis: str  # "" = none
    name: str
    layout: str
    completed_at: float
    samples: tuple[SamplePlan, ...]
    problems: tuple[str, ...]


def folder_for(destination: str, run_name: str, analysis: str | None) -> str:
    folder = f"{destination.rstrip('/')}/{run_name}"
    return f"{folder}/{analysis}" if analysis else folder


def destination_path(folder: str, client_id: str, read: str) -> str:
    return f"{folder}/{client_id}_{read}.fastq.gz"


def _client_id_problems(client_id: str) -> list[str]:
    if not client_id:
        return ["empty client_id"]
    bad = [c for c in ("_", "/") if c in client_id]
    return [f"client_id {client_id!r} contains {' and '.join(repr(c) for c in bad)}"] if bad else []


def plan_sample(sample: Sample, folder: str, project_id: str | None, metadata: Any) -> SamplePlan | None:
    """The plan for a sample, or None while it is merely not ready yet (it will be submitted again)."""
    problems = [escaped(p) for p in sample.problems]  # every text here goes into the journal (UTF-8 only)
    if not sample.ready and (not problems or sample.settling):
        return None
    problems += [f"{escaped(str(f.path))}: file name is not valid UTF-8; rename the file"
                 for f in sample.files if not is_utf8(str(f.path))]  # fmt: skip
    problems += _client_id_problems(escaped(sample.client_id))
    if not sample.r1:
        problems.append("no R1 files")
    objects: list[ObjectPlan] = []
    if not problems:
        for read, files in (("R1", sample.r1), ("R2", sample.r2)):
            if files:
                objects.append(ObjectPlan(read, destination_path(folder, sample.client_id, read), tuple(files)))
    return SamplePlan(
        client_id=escaped(sample.client_id),
        sample_name=escaped(sample.sample_name),
        folder=folder,
        project_id=project_id,
        metadata=json.dumps(metadata) if metadata is not None else None,
        objects=tuple(objects),
        problems=tuple(problems),
    )


def plan_run(
    run: Run, *, watch: str, destination: str, project_id: str | None, metadata: Any, now: float
) -> RunPlan | None:
    """The plan for a complete run (None while it is incomplete)."""
    if not run.complete:
        return None
    folder = folder_for(destination, escaped(run.name), run.analysis)
    samples = tuple(p for s in run.samples if (p := plan_sample(s, folder, project_id, metadata)) is not None)
    problems = [escaped(p) for p in run.problems]
    if not is_utf8(str(run.path)):
        problems.append(f"{escaped(str(run.path))}: folder name is not valid UTF-8; rename the folder")
        samples = tuple(replace(s, objects=(), problems=(*s.problems, problems[-1])) for s in samples)
    return RunPlan(
        watch=escaped(watch),
        path=escaped(str(run.path)),
        analysis=run.analysis or "",
        name=escaped(run.name),
        layout=run.layout,
        completed_at=now,
        samples=samples,
        problems=tuple(problems),
    )


def as_new_delivery(plan: RunPlan, suffix: str) -> RunPlan:
    """The plan with every folder (and so every object name) given ``suffix``: a reused run path whose files
    are new goes to Gencove under a folder that cannot collide with the earlier delivery's (docs/IDENTITY.md)."""

    def moved(s: SamplePlan) -> SamplePlan:
        folder = s.folder + suffix
        objects = tuple(replace(o, destination_path=destination_path(folder, s.client_id, o.read)) for o in s.objects)
        return replace(s, folder=folder, objects=objects)

    return replace(plan, samples=tuple(moved(s) for s in plan.samples))
