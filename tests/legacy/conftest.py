"""Fixtures of the legacy-API tests: a journal, and `legacy` (see `legacy_support.Legacy`) over a reset sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from legacy_support import Legacy

from transferd.sandbox import SandboxProcess


@pytest.fixture(autouse=True)
def _fresh_stats(fresh_stats: None) -> None:
    """Counts are asserted here: every test starts from zero."""


@pytest.fixture
def legacy(sandbox: SandboxProcess, tmp_path: Path) -> Legacy:
    return Legacy(sandbox, tmp_path)
