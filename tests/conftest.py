"""Shared fixtures. Every test talks to real parts over HTTP: the sandbox runs as a subprocess.

Fixtures (names are stable; other test packages rely on them):

- `sandbox_proc` (session): one `transferd.sandbox.SandboxProcess` for the whole run, started with
  `--sample-delay 0.5 --restore-delay 0.5` (moto's default 5 MiB minimum part size is kept). Use it
  directly only when a test must not reset the sandbox.
- `sandbox` (function): the same process, reset first (no uploads, samples, faults, log entries or
  webhook subscriptions; buckets and the ready project recreated; settings back to the start-up values).
  It has:
    - `.info`: `SandboxInfo` with `api_url`, `s3_url` (the logging/fault proxy: give this to clients),
      `api_key`, `project_id` (exists from the start), `bucket`, `deliverables_bucket`, `pid`,
      `s3_upstream_url` (moto itself; reads there are neither logged nor faulted).
    - `.control`: `SandboxControl`, a sync client of the control API: `reset`, `create_project`,
      `seed_sample`, `add_fault`/`add_faults`/`faults`/`clear_faults`/`mark_path_deleted`, `log`/`clear_log`,
      `settings`/`set_settings`, `fail_qc`, `archive`, `set_webhook`/`clear_webhook`/`webhook_deliveries`,
      `uploads`, `assignments`, `samples`, `sample`, `set_sample_status`, and `api(method, path, ...)`
      for any Gencove endpoint with the sandbox's key.

- `journal` (function): a fresh `Journal` under `tmp_path / "state"`, closed after the test.
- `fresh_stats` (function): resets the process-wide `STATS`; request it (or `usefixtures`) where counts are
  asserted.

Helpers for polling and test data live in `tests/helpers.py` (`wait_for`, `make_fastq_gz`, `sha256_file`).

`TRANSFERD_EVENT_LOOP=uvloop` runs every async test on uvloop (and the daemons and commands they start inherit
it): transports that keep views of the caller's memory are where body-buffer reuse goes wrong.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so tests can `from helpers import ...`

from transferd.eventloop import loop_factory
from transferd.journal import Journal
from transferd.sandbox import SandboxProcess
from transferd.stats import STATS

_LOOP = loop_factory()
if _LOOP is not None:

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        assert _LOOP is not None
        return {"uvloop": _LOOP}

SANDBOX_ARGS = ("--sample-delay", "0.5", "--restore-delay", "0.5")


@pytest.fixture(scope="session")
def sandbox_proc() -> Iterator[SandboxProcess]:
    with SandboxProcess(*SANDBOX_ARGS) as proc:
        yield proc


@pytest.fixture
def sandbox(sandbox_proc: SandboxProcess) -> SandboxProcess:
    sandbox_proc.control.reset()
    return sandbox_proc


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.open(tmp_path / "state" / "journal.sqlite3")
    yield j
    j.close()


@pytest.fixture
def fresh_stats() -> None:
    STATS.reset()
