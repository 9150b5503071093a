"""Fixtures of the upload tests; plain helpers live in `upload_support.py` (test modules import them from there,
never from a conftest, so that several test folders can run in one session)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def small_parts_config(tmp_path: Path) -> Iterator[Path]:
    """A config file for the CLI: multipart always, 5 MiB parts, two requests at a time, one object at a time."""
    path = tmp_path / "upload.toml"
    path.write_text(
        f'[state]\npath = "{tmp_path / "daemon.sqlite3"}"\n'
        '[upload]\npart_size = "5MiB"\nsingle_put_max = "0"\nconcurrency = 2\nmax_objects = 1\n'
        'max_bytes_in_flight = "15MiB"\n'
        'retry_deadline = "60s"\nassign_deadline = "60s"\n'
    )
    yield path


# The daemon tests of this folder drive `transferd run` through the service tests' harness.
_SERVICE = Path(__file__).resolve().parents[1] / "service"
if str(_SERVICE) not in sys.path:
    sys.path.insert(0, str(_SERVICE))
