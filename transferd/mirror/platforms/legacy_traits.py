"""The trait JSON of a legacy sample (`trait_values` + `trait_descriptions`), written beside its files.

The path comes from the download template like any deliverable's, with file type `traits-json` and default
filename `<gencove_id>_traits.json`. The write is atomic (temp file, fsync, rename, fsync of the folder),
confined (confined.py) and skipped when the bytes are already there. The document names its sample
(`gencove_id`), which is how a path already holding ANOTHER sample's traits is recognised: that is reported as
a collision, never overwritten (the deliverables themselves are protected the same way by the journal's path ownership).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transferd.mirror import confined
from transferd.mirror.platforms.legacy_files import TRAITS_TYPE, dumps, traits_filename
from transferd.mirror.template import FileNaming, TemplateError, render, resolve_inside


class TraitsCollision(TemplateError):
    """The template puts two samples' trait JSON on one path."""


class TraitsWriter:
    def __init__(self, destination: Path, template: str, file_types: tuple[str, ...] = (), marker: str = "") -> None:
        self.destination, self.template, self.file_types = destination, template, file_types
        # The [download] marker is checked on the destination's descriptor at the write, as for deliverables.
        self.check = confined.RootCheck(None, marker) if marker else None
        self._lock = asyncio.Lock()  # check-then-write must not interleave between two samples

    @property
    def wanted(self) -> bool:
        return not self.file_types or TRAITS_TYPE in self.file_types

    def path(self, client_id: str, gencove_id: str) -> Path:
        naming = FileNaming(client_id, gencove_id, TRAITS_TYPE, traits_filename(gencove_id))
        return resolve_inside(self.destination, render(self.template, naming))

    async def write(self, client_id: str, gencove_id: str, doc: Mapping[str, Any]) -> Path | None:
        """Place the document; None when trait JSON is not among the wanted file types."""
        if not self.wanted:
            return None
        # With a marker, a missing destination is an unmounted one: never made here.
        make = confined.made_root if self.check is None else _absolute
        root = await asyncio.to_thread(make, self.destination)
        path = await asyncio.to_thread(self.path, client_id, gencove_id)
        async with self._lock:
            await asyncio.to_thread(_place, root, path.relative_to(root), dumps(doc), gencove_id, self.check)
        return path


def _absolute(destination: Path) -> Path:
    return Path(os.path.abspath(destination))


def _owner(raw: bytes) -> str | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return str(doc.get("gencove_id")) if isinstance(doc, dict) else None


def _place(root: Path, relative: Path, data: bytes, gencove_id: str, check: confined.RootCheck | None) -> None:
    """Through `confined`: no symlink below the destination is followed, for the read as for the write."""
    current = confined.read_in(root, relative)
    if current == data:
        return
    if current is not None and _owner(current) != gencove_id:
        raise TraitsCollision(
            f"{root / relative}: the trait JSON of sample {gencove_id} collides with a file that is not this "
            f"sample's (sample {_owner(current) or 'unknown'}); use a template with {{gencove_id}} or "
            "{default_filename}"
        )
    confined.write_atomic(root, relative, data, f"{gencove_id}.traits", check)
