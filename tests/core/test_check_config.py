"""`transferd check-config` judges the whole file at once (every bad key, one line each, exit 2) and then what
this host makes of it: an API key that does not resolve, a destination or journal folder that cannot be written
are errors (exit 2); a watch root that does not exist yet is a named warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _check(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "TRANSFERD_API_KEY"}
    return subprocess.run([sys.executable, "-m", "transferd", "check-config", "-c", str(config)],
                          capture_output=True, text=True, env={**clean, **env}, timeout=60)  # fmt: skip


def test_every_bad_key_is_named_at_once(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[state]\npath = "j.sqlite3"\n[upload]\nconcurrency = "x"\npart_size = 1\nbogus = 1\n'
                      '[[watch]]\npath = "runs"\n[log]\nlevel = 3\n[network]\nproxy = "proxy:3128"\n')  # fmt: skip
    done = _check(config, TRANSFERD_API_KEY="k")
    assert done.returncode == 2
    for key in ("watch[1].destination: is required", "upload.concurrency: expected an integer",
                "upload.part_size: expected at least", "upload.bogus: unknown key", "log.level: expected a string",
                "network.proxy: expected an http(s) URL"):  # fmt: skip
        assert key in done.stderr, key
    assert "Traceback" not in done.stderr


def test_what_this_host_makes_of_it(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "results").write_text("a file, not a folder")
    config = tmp_path / "c.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state" / "j.sqlite3"}"\n'
                      f'[[watch]]\npath = "{tmp_path / "not-mounted"}"\ndestination = "gncv://a"\n'
                      f'[[watch]]\npath = "{tmp_path / "runs"}"\ndestination = "gncv://b"\n'
                      f'[download]\ndestination = "{tmp_path / "results"}"\nprojects = ["p1"]\n')  # fmt: skip
    done = _check(config)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error:", "warning:"))]
    assert lines == [
        f"error: {config}: gencove.api_key_file: no API key: set gencove.api_key_file or $TRANSFERD_API_KEY",
        f"warning: {config}: watch[1].path: {tmp_path / 'not-mounted'} does not exist (the daemon waits for it, "
        "and readiness reports it until it appears)",
        f"error: {config}: download.destination: {tmp_path / 'results'} is not a folder",
    ]
    (tmp_path / "results").unlink()
    (tmp_path / "results").mkdir()
    done = _check(config, TRANSFERD_API_KEY="k")
    assert done.returncode == 0, done.stderr
    assert "1 warning(s)" in done.stdout and "watch[1].path" in done.stderr
