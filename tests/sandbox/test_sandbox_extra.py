"""`transferd sandbox` and `transferd demo` without the `sandbox` extra: one line naming it, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from transferd.sandbox.extra import SANDBOX_MODULES, missing_sandbox_modules

# Each entry point, run in a fresh interpreter where `blocked` cannot be imported (None in sys.modules).
ENTRY_POINTS = {
    "transferd sandbox": "from transferd.cli import main; raise SystemExit(main(['sandbox', '--json']))",
    "transferd demo": "from transferd.cli import main; raise SystemExit(main(['demo', '--timeout', '5']))",
    "python -m transferd.sandbox": "import runpy; sys.argv = ['x']; runpy.run_module('transferd.sandbox', "
    "run_name='__main__')",
}


def _run_without(blocked: str, code: str) -> subprocess.CompletedProcess[str]:
    prelude = f"import sys; sys.modules[{blocked!r}] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("blocked", ["moto", "awscrt", "cryptography"])
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_missing_extra_names_it_in_one_line_and_exits_2(entry: str, blocked: str) -> None:
    res = _run_without(blocked, ENTRY_POINTS[entry])
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"({blocked} not installed)" in lines[0] and "pip install 'transferd[sandbox]'" in lines[0]
    assert "sandbox is ready" not in res.stdout and '"api_url"' not in res.stdout  # nothing was started


def test_the_test_environment_has_the_whole_extra() -> None:
    """The check itself finds an installed module (else the test above would pass on a check that always fails)."""
    assert missing_sandbox_modules() == []
    assert set(SANDBOX_MODULES) >= {"moto", "awscrt", "cryptography"}
