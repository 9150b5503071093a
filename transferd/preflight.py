"""What `transferd check-config` checks beyond the file itself: that the places and the key it names are usable
on this host, now. Each finding is an error (the daemon could not do its job: exit 2) or a named warning (it
could, once the host catches up: a watch root not mounted yet)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from transferd.config import Config, resolve_api_key
from transferd.errors import ConfigError


class Level(Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    key: str  # the config key it is about
    message: str

    def render(self, file: Path) -> str:
        return f"{self.level.value}: {file}: {self.key}: {self.message}"


def preflight(cfg: Config) -> list[Finding]:
    found: list[Finding] = []
    try:
        resolve_api_key(cfg)
    except ConfigError as e:
        found.append(Finding(Level.ERROR, e.key, str(e).removeprefix(f"{e.file}: ").removeprefix(f"{e.key}: ")))
    for i, w in enumerate(cfg.watches, start=1):
        found += _folder(f"watch[{i}].path", w.path, write=False, missing=Level.WARNING,
                         why="the daemon waits for it, and readiness reports it until it appears")  # fmt: skip
    dl = cfg.download
    if dl.projects and dl.destination is not None:
        found += _folder("download.destination", dl.destination, write=True, missing=Level.ERROR,
                         why="the mirror has nowhere to write")  # fmt: skip
    state_dir = cfg.state.path.parent
    if state_dir.exists():
        found += _folder("state.path", state_dir, write=True, missing=Level.ERROR, why="")
    elif not os.access(_existing_parent(state_dir), os.W_OK):
        found.append(Finding(Level.ERROR, "state.path", f"{state_dir} does not exist and cannot be created"))
    return found


def _folder(key: str, path: Path, *, write: bool, missing: Level, why: str) -> list[Finding]:
    if not path.exists():
        return [Finding(missing, key, f"{path} does not exist" + (f" ({why})" if why else ""))]
    if not path.is_dir():
        return [Finding(Level.ERROR, key, f"{path} is not a folder")]
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    if not os.access(path, mode):
        need = "readable and writable" if write else "readable"
        return [Finding(Level.ERROR, key, f"{path} is not {need} by this user (uid {os.geteuid()})")]
    return []


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
