"""Fixtures of the mirror tests: a journal, a config pointing at the sandbox, finished samples.

`finished_samples(n, ...)` seeds samples in the sandbox's ready project and waits until their analysis has
`succeeded` (deliverables are real S3 objects with sha256). `mirror_config(**download)` gives a Config whose
[download] mirrors that project into `tmp_path / "mirror"`. The retry policy is shortened for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

from transferd.config import Config, DownloadConfig, GencoveConfig, ProjectSource
from transferd.sandbox import SandboxProcess


@pytest.fixture(autouse=True)
def _fresh_stats(fresh_stats: None) -> None:
    """Counts are asserted here: every test starts from zero."""


@pytest.fixture
def project(sandbox: SandboxProcess) -> ProjectSource:
    return ProjectSource(id=sandbox.info.project_id)


@pytest.fixture
def mirror_config(sandbox: SandboxProcess, tmp_path: Path, project: ProjectSource) -> Callable[..., Config]:
    def make(**download: Any) -> Config:
        base = DownloadConfig(destination=tmp_path / "mirror", projects=(project,), concurrency=4)
        return Config(
            file=tmp_path / "transferd.toml",
            gencove=GencoveConfig(host=sandbox.info.api_url),
            download=replace(base, **download),
        )

    return make


@pytest.fixture
def finished_samples(sandbox: SandboxProcess) -> Callable[..., list[dict[str, Any]]]:
    c = sandbox.control
    c.set_settings(sample_delay=0)

    def make(
        n: int = 1, *, prefix: str = "S", r1_size: int = 4096, r2_size: int = 2048, folder: str | None = None
    ) -> list[dict[str, Any]]:
        pid = sandbox.info.project_id
        path = f"/_sandbox/projects/{pid}/samples"
        ids = [
            c.api("POST", path, {"client_id": f"{prefix}{i}", "r1_size": r1_size, "r2_size": r2_size, "seed": i,
                                 "folder": folder})["id"]
            for i in range(n)
        ]  # fmt: skip

        def done() -> list[dict[str, Any]] | None:
            by_id = {s["id"]: s for s in c.samples(pid)}
            samples = [by_id[i] for i in ids]
            return samples if all(s["last_status"]["status"] != "running" for s in samples) else None

        return wait_for(done, timeout=20, message=f"{n} seeded samples to finish")

    return make
