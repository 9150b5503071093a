import subprocess
import sys

from transferd import __version__


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "transferd", *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_command() -> None:
    res = run("--help")
    assert res.returncode == 0
    for cmd in ("run", "check-config", "scan", "upload", "download", "status", "sandbox", "demo"):
        assert cmd in res.stdout


def test_version() -> None:
    res = run("--version")
    assert res.returncode == 0 and __version__ in res.stdout


def test_usage_errors_exit_2() -> None:
    assert run().returncode == 2
    assert run("no-such-command").returncode == 2
    assert run("check-config").returncode == 2  # missing -c
    res = run("check-config", "-c", "/nonexistent/config.toml")
    assert res.returncode == 2 and "not found" in res.stderr
