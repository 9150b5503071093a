"""Helpers of the mirror tests (imported as `from mirror_support import ...`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from helpers import sha256_file

from transferd.mirror.confined import part_name
from transferd.retry import Policy

T = TypeVar("T")

FAST = Policy(deadline=20, initial=0.02, max_wait=0.2)  # fast retries for tests


def default_path(root: Path, sample: dict[str, Any], f: dict[str, Any]) -> Path:
    """Where the default template puts a file: {client_id}/{gencove_id}/{default_filename}."""
    return root / sample["client_id"] / sample["id"] / f["filename"]


def part_of(final: Path, f: dict[str, Any]) -> Path:
    """Where file `f` is written while it downloads (`.<name>.<file id>.part`)."""
    return final.with_name(part_name(final.name, f["id"]))


def assert_mirrored(root: Path, samples: list[dict[str, Any]]) -> int:
    """Every file of every sample is at its default path with the platform's sha256; returns the file count."""
    n = 0
    for s in samples:
        for f in s["files"]:
            path = default_path(root, s, f)
            assert path.is_file(), f"missing {path}"
            assert path.stat().st_size == f["size"], path
            assert sha256_file(path) == f["checksum_sha256"], path
            n += 1
    assert not list(root.rglob(".*.part")), "a .part file was left behind"
    return n


def file_of(sample: dict[str, Any], file_type: str) -> dict[str, Any]:
    return next(f for f in sample["files"] if f["file_type"] == file_type)


async def eventually(predicate: Callable[[], T], within: float = 10.0, interval: float = 0.02) -> T:
    """`wait_for` for async tests: polls without blocking the event loop the code under test runs on."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s; last value {value!r}")
        await asyncio.sleep(interval)
