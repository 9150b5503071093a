"""Download paths from a `gencove download`-compatible template. Pure, except `resolve_inside` (real paths).

Tokens: `{client_id}`, `{gencove_id}`, `{file_type}`, `{file_extension}`, `{default_filename}`.
Unlike the reference client we never let a value escape the destination: every token value is made a
single safe path component (a `/` in a client id does not nest, `..` cannot climb), empty segments are
dropped (Gencove 4.5.x behaviour) and the final path is checked to be inside the destination anyway.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from transferd.template_syntax import DEFAULT_TEMPLATE, check_template

__all__ = [
    "DEFAULT_TEMPLATE",
    "FileNaming",
    "TemplateCollision",
    "TemplateError",
    "default_filename",
    "file_extension",
    "plan_sample",
    "render",
    "resolve_inside",
    "safe_component",
    "validate_template",
]

# Path separators and control characters never survive into a path component.
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_FILENAME = re.compile(r"""filename\s*=\s*("(?:[^"\\]|\\.)*"|[^;]+)""", re.IGNORECASE)
_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", re.IGNORECASE)


class TemplateError(ValueError):
    """A template that cannot name files safely."""


class TemplateCollision(TemplateError):
    """Two files of one sample would be written to the same path."""


@dataclass(frozen=True, slots=True)
class FileNaming:
    """What the template can say about one deliverable."""

    client_id: str
    gencove_id: str
    file_type: str
    default_filename: str


def validate_template(template: str) -> None:
    """`template_syntax.check_template`, raising TemplateError."""
    try:
        check_template(template)
    except ValueError as e:
        raise TemplateError(str(e)) from None


def default_filename(url: str) -> str:
    """The filename of `response-content-disposition` in the signed URL, else the URL's last path segment."""
    parts = urlsplit(url)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() != "response-content-disposition":
            continue
        star = _FILENAME_STAR.search(value)
        if star:
            return unquote(star.group(2).strip(), encoding=star.group(1) or "utf-8", errors="replace")
        plain = _FILENAME.search(value)
        if plain:
            name = plain.group(1).strip()
            if len(name) >= 2 and name[0] == name[-1] == '"':
                name = re.sub(r"\\(.)", r"\1", name[1:-1])
            if name:
                return name
    return unquote(parts.path.rstrip("/").rpartition("/")[2])


def file_extension(filename: str) -> str:
    """Everything after the first `.` (`x.fastq.gz` -> `fastq.gz`), as Gencove defines it."""
    return filename.split(".", 1)[1] if "." in filename else ""


def safe_component(value: str) -> str:
    """One path component that cannot nest or climb: separators and controls become `_`, `.`/`..` too."""
    v = _UNSAFE.sub("_", value)
    return "_" * len(v) if v in (".", "..") else v


def render(template: str, naming: FileNaming) -> str:
    """The relative POSIX path for one file. Raises TemplateError when nothing is left of it."""
    values = {
        "client_id": safe_component(naming.client_id),
        "gencove_id": safe_component(naming.gencove_id),
        "file_type": safe_component(naming.file_type),
        "default_filename": safe_component(naming.default_filename),
        "file_extension": safe_component(file_extension(naming.default_filename)),
    }
    try:
        raw = template.format_map(values)
    except (KeyError, ValueError, IndexError) as e:
        raise TemplateError(f"template {template!r}: {e}") from None
    segments = []
    for seg in raw.replace("\\", "/").split("/"):
        if seg in ("", "."):
            continue  # empty segments are dropped; "." means nothing
        segments.append("__" if seg == ".." else seg)
    if not segments:
        raise TemplateError(f"template {template!r} gives an empty path for file type {naming.file_type!r}")
    return "/".join(segments)


def resolve_inside(destination: Path, relative: str) -> Path:
    """`destination/relative` (absolute, as configured), refusing anything that lands outside the destination:
    lexically, and by real path, through a symlink that exists now (this reads the file system; the writes
    themselves re-check, see confined.py). The destination itself may be a symlink (to a mount)."""
    base = os.path.abspath(destination)
    target = os.path.normpath(os.path.join(base, relative))
    if os.path.commonpath([base, target]) != base or target == base:
        raise TemplateError(f"path {relative!r} would land outside {base}")
    root, real = os.path.realpath(base), os.path.realpath(target)
    if os.path.commonpath([root, real]) != root or real == root:
        raise TemplateError(f"{target} resolves to {real}, outside {root} (a symbolic link); refusing to write there")
    return Path(target)


def plan_sample(template: str, files: Iterable[tuple[str, FileNaming]]) -> dict[str, str]:
    """`{file key: relative path}` for one sample's files; two files on one path raise TemplateCollision."""
    plan: dict[str, str] = {}
    owner: dict[str, tuple[str, FileNaming]] = {}
    for key, naming in files:
        path = render(template, naming)
        if path in owner:
            other_key, other = owner[path]
            raise TemplateCollision(
                f"sample {naming.gencove_id}: files {other_key} ({other.file_type}) and {key} ({naming.file_type}) "
                f"would both be written to {path!r}; use a template with {{default_filename}} or {{file_type}}"
            )
        owner[path] = (key, naming)
        plan[key] = path
    return plan
