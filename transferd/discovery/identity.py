"""A delivery's identity is its content, not its path (pure; see docs/IDENTITY.md).

A source file's version is (size, mtime_ns, inode): a folder renamed (or moved within its filesystem) keeps
every version, new data written under an old name never does. A sample's ``content_key`` is the sorted list
of its files' versions, without paths, so the same files under a new path give the same key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from transferd.discovery.models import SourceFile, escaped


class HoldReason(StrEnum):
    """Why a sample is held (the `reason` label of transferd_samples_held; a fixed set)."""

    DUPLICATE = "duplicate"  # the same files as an earlier delivery, under another path
    GROWN = "grown"  # a delivered sample's files grew, or it gained files (a manifest gained rows)
    CHANGED = "changed"  # a delivered sample's files were replaced, shrank or went


HOLD_REASONS: tuple[str, ...] = tuple(r.value for r in HoldReason)


def content_key(sources: Iterable[SourceFile]) -> str:
    return ",".join(sorted(f"{s.size}:{s.mtime_ns}:{s.inode}" for s in sources))


@dataclass(frozen=True, slots=True)
class Change:
    reason: HoldReason
    problem: str


def _size(n: int) -> str:
    return f"{n:,} bytes"


def compare(recorded: Mapping[str, Sequence[SourceFile]], seen: Mapping[str, Sequence[SourceFile]]) -> Change | None:
    """What changed between a delivered sample's recorded sources and what discovery sees now, per read
    (R1, R2); None when every file is the version that was uploaded."""
    grown: list[str] = []
    changed: list[str] = []
    for read in sorted(set(recorded) | set(seen)):
        old = {s.path: s for s in recorded.get(read, ())}
        new = {s.path: s for s in seen.get(read, ())}
        for path, o in old.items():
            n = new.get(path)
            name = escaped(str(path))
            if n is None:
                changed.append(f"{read}: {name} is gone")
            elif n.version == o.version:
                continue
            elif n.inode == o.inode and n.size > o.size:
                grown.append(f"{read}: {name} grew from {_size(o.size)} to {_size(n.size)}")
            else:
                changed.append(f"{read}: {name} was replaced or rewritten ({_size(o.size)} -> {_size(n.size)})")
        added = [escaped(str(p)) for p in new if p not in old]
        if added:
            grown.append(f"{read}: {len(added)} more file(s): {', '.join(added[:3])}")
    if changed:
        return Change(HoldReason.CHANGED, "; ".join(changed + grown))
    if grown:
        return Change(HoldReason.GROWN, "; ".join(grown))
    return None
