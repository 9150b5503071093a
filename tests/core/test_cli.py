import subprocess
import sys
from pathlib import Path

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


CRASH = """
import sys
from transferd import cli
from transferd.log import register_secret
from transferd.service import status

register_secret("cli-secret-0123456789")

def collect(path, runs=20):
    raise RuntimeError("journal row 7 is odd: cli-secret-0123456789\\nsecond line")

status.collect = collect
sys.exit(cli.main(["status", "-c", sys.argv[1]]))
"""


def test_an_unexpected_error_prints_one_redacted_line_and_logs_the_traceback(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "j.sqlite3"}"\n')
    res = subprocess.run(
        [sys.executable, "-c", CRASH, str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert not any(line.startswith(("Traceback", "  File")) for line in lines)  # no raw traceback...
    said = [line for line in lines if line.startswith("transferd status: internal error:")]
    assert said == [
        "transferd status: internal error: RuntimeError: journal row 7 is odd: *** (a bug; the traceback is in the log)"
    ]
    logged = [line for line in lines if "event=cli.crashed" in line]
    assert len(logged) == 1 and "traceback=" in logged[0] and "in collect" in logged[0]  # ...but in the log
    assert "cli-secret-0123456789" not in res.stderr + res.stdout


def test_a_transferd_error_keeps_its_exit_code_and_is_redacted(tmp_path: Path) -> None:
    res = run("status", "-c", str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_a_closed_pipe_ends_a_command_quietly(tmp_path: Path) -> None:
    """`transferd scan ... | head`: the reader stops reading; no traceback, no 'internal error'."""
    from helpers import make_fastq_gz

    for n in range(1, 200):
        make_fastq_gz(tmp_path / "RUN" / f"S{n}_S{n}_L001_R1_001.fastq.gz", reads=1, seed=n)
    done = subprocess.run(f"{sys.executable} -m transferd scan {tmp_path / 'RUN'} --json | head -c 10 >/dev/null; "
                          "echo ${PIPESTATUS[0]} >&2", shell=True, executable="/bin/bash", capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.stderr.strip() == "141", done.stderr
