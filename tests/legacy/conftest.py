"""Fixtures of the legacy-API tests: a journal, and `legacy` (see `legacy_support.Legacy`) over a reset sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from legacy_support import Legacy

from transferd.journal import Journal
from transferd.sandbox import SandboxProcess
from transferd.stats import STATS


@pytest.fixture(autouse=True)
def _fresh_stats() -> None:
    STATS.reset()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.open(tmp_path / "state" / "journal.sqlite3")
    yield j
    j.close()


@pytest.fixture
def legacy(sandbox: SandboxProcess, tmp_path: Path) -> Legacy:
    return Legacy(sandbox, tmp_path)
