"""When is a delivery unit complete? Producer markers per layout, else a quiet period. Pure.

Layouts (``Run.layout``):
  novaseqx    ``Analysis/<n>/`` of a NovaSeq X / NextSeq 1000-2000 run: ``Analysis/<n>/CopyComplete.txt`` and
              ``Analysis/<n>/Data/Secondary_Analysis_Complete.txt``; each ``Analysis/<n>`` is its own unit.
  bclconvert  a BCL Convert output folder: ``<out>/Logs/FastqComplete.txt``.
  instrument  a MiSeq/NextSeq/NovaSeq 6000 run folder whose FASTQs come from the instrument: ``CopyComplete.txt``
              or ``RTAComplete.txt|xml``, and a quiet period, since RTAComplete can precede the FASTQs.
  bcl2fastq   bcl2fastq output: no marker, quiet period.
  plain       a folder of FASTQs (manual drop): quiet period.
  manifest    a folder defined by a ``*.fastq-map.csv``: quiet period.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from transferd.discovery.rules import DiscoveryRules

Requirement = tuple[str, ...]  # alternatives: any one of these paths (relative to the run folder) will do

INSTRUMENT_MARKERS: Requirement = ("CopyComplete.txt", "RTAComplete.txt", "RTAComplete.xml")


@dataclass(frozen=True, slots=True)
class Completion:
    complete: bool
    reasons: tuple[str, ...]


def join(folder: str, rel: str) -> str:
    return f"{folder}/{rel}" if folder else rel


def default_markers(layout: str, analysis: str | None, output_dirs: Sequence[str] = ("",)) -> list[Requirement]:
    """The producer's markers for a layout; ``output_dirs`` are BCL Convert output folders in the run folder."""
    if layout == "novaseqx" and analysis is not None:
        base = f"Analysis/{analysis}"
        return [(f"{base}/CopyComplete.txt",), (f"{base}/Data/Secondary_Analysis_Complete.txt",)]
    if layout == "bclconvert":
        return [(join(d, "Logs/FastqComplete.txt"),) for d in output_dirs or ("",)]
    if layout == "instrument":
        return [INSTRUMENT_MARKERS]
    return []


def required_markers(
    layout: str, analysis: str | None, rules: DiscoveryRules, output_dirs: Sequence[str] = ("",)
) -> tuple[list[Requirement], bool]:
    """(requirements, also_quiet): the watch's own markers replace the layout's defaults when given."""
    if rules.markers:
        return [(m.replace("{analysis}", analysis or ""),) for m in rules.markers], False
    return default_markers(layout, analysis, output_dirs), layout == "instrument"


def judge(
    layout: str,
    requirements: Sequence[Requirement],
    present: Container[str],
    *,
    also_quiet: bool,
    has_files: bool,
    last_change: float | None,
    now: float,
    rules: DiscoveryRules,
) -> Completion:
    """``present``: which marker paths exist; ``last_change``: newest mtime/observed change of the unit's files."""
    if not has_files:
        return Completion(False, ("no FASTQ files yet",))
    mode = rules.completion
    reasons: list[str] = []
    ok = True
    use_markers = mode == "markers" or (mode == "auto" and bool(requirements))
    if use_markers:
        if not requirements:
            return Completion(
                False, (f"completion = 'markers' but layout {layout!r} has no markers; set markers for this watch",)
            )
        for alternatives in requirements:
            found = next((m for m in alternatives if m in present), None)
            if found:
                reasons.append(f"{found} present")
            else:
                ok = False
                reasons.append(f"waiting for {' or '.join(alternatives)}")
    if mode == "quiet" or not use_markers or (mode == "auto" and also_quiet):
        quiet = rules.effective_quiet_seconds
        age = now - last_change if last_change is not None else 0.0
        if age >= quiet:
            reasons.append(f"quiet for {age:.0f}s (quiet period {quiet:g}s)")
        else:
            ok = False
            reasons.append(f"last change {max(age, 0):.0f}s ago; waiting for a quiet period of {quiet:g}s")
    return Completion(ok, tuple(reasons))
