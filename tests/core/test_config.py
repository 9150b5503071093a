"""Config loading: typed values, human units, and errors that name the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from transferd.config import load_config, resolve_api_key
from transferd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = """
[state]
path = "state/journal.sqlite3"

[[watch]]
path = "/data/seq"
destination = "gncv://seq/"
settle_seconds = "90s"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_example_config_loads_with_every_section() -> None:
    cfg = load_config(ROOT / "config.example.toml")
    assert cfg.gencove.host == "https://api.gencove.com"
    assert cfg.upload.max_bytes_in_flight == 96 * 1024**2
    assert cfg.watches[0].settle_seconds == 120.0
    assert cfg.download.interval == 300.0
    assert cfg.metrics.host_port == ("127.0.0.1", 9464)


def test_minimal_config_resolves_units_paths_and_destination(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.state.path == tmp_path / "state" / "journal.sqlite3"
    watch = cfg.watches[0]
    assert watch.destination == "gncv://seq"
    assert watch.settle_seconds == 90.0
    assert watch.project_id is None


@pytest.mark.parametrize(
    ("snippet", "key", "expected"),
    [
        ("[upload]\nconcurency = 4\n", "upload.concurency", "unknown key"),
        ("[upload]\nretry_deadline = \"ten minutes\"\n", "upload.retry_deadline", "duration"),
        ("[upload]\npart_size = \"1MiB\"\n", "upload.part_size", "at least"),
        ("[upload]\nmax_bytes_in_flight = \"lots\"\n", "upload.max_bytes_in_flight", "size"),
        ("[download]\ntemplate = \"{client}/{default_filename}\"\n", "download.template", "unknown token"),
        # the daemon would fail every sample with it: one validator for check-config, start and `download`
        ("[download]\ntemplate = \"../{client_id}/{default_filename}\"\n", "download.template", "'..' path segment"),
        ("[download]\nprojects = [\"p1\"]\n", "download.destination", "required"),
        ("[log]\nformat = \"xml\"\n", "log.format", "one of"),
        ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen", "host:port"),
        ("[gencove]\nhost = \"api.gencove.com\"\n", "gencove.host", "URL"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, snippet: str, key: str, expected: str) -> None:
    p = write(tmp_path, MINIMAL + snippet)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert err.value.key == key
    assert str(p) in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[[watch]]\npath = \"/x\"\ndestination = \"gncv://x\"\n", "state"),
        ("[state]\npath = \"j.db\"\n[[watch]]\ndestination = \"gncv://x\"\n", "watch[1].path"),
        ("[state]\npath = \"j.db\"\n[[watch]]\npath = \"/x\"\n", "watch[1].destination"),
        ("[state]\npath = \"j.db\"\n[[watch]]\npath = \"/x\"\ndestination = \"s3://x\"\n", "watch[1].destination"),
        ("[state]\npath = \"j.db\"\n[[watch]]\npath = \"/x\"\ndestination = \"gncv://x\"\nsetle_seconds = 3\n",
         "watch[1].setle_seconds"),
    ],
)
def test_missing_or_misspelt_watch_keys(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert err.value.key == key


def test_unknown_top_level_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "typo_section = 1\n" + MINIMAL))
    assert err.value.key == "typo_section" and "unknown key" in str(err.value)


def test_legacy_project_tables(tmp_path: Path) -> None:
    text = MINIMAL + """
[download]
destination = "results"
projects = ["uuid-1", { id = 42, api = "legacy-projects", host = "https://rest.example.org" }]
"""
    cfg = load_config(write(tmp_path, text))
    assert [p.api for p in cfg.download.projects] == ["v2", "legacy-projects"]
    assert cfg.download.projects[1].id == "42"
    bad = MINIMAL + '[download]\ndestination = "r"\nprojects = [{ id = 1, api = "v1" }]\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, bad))
    assert err.value.key == "download.projects[1].api"


def test_api_key_from_file_env_and_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSFERD_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError) as err:
        resolve_api_key(cfg)
    assert "TRANSFERD_API_KEY" in str(err.value)
    monkeypatch.setenv("TRANSFERD_API_KEY", "from-env-123")
    assert resolve_api_key(cfg) == "from-env-123"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gencove-api-key").write_text("from-credential-456\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve_api_key(cfg) == "from-credential-456"
    (tmp_path / "key").write_text("from-file-789\n")
    cfg2 = load_config(write(tmp_path, MINIMAL.replace("[state]", '[gencove]\napi_key_file = "key"\n[state]')))
    assert resolve_api_key(cfg2) == "from-file-789"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transferd", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_check_config_cli_exit_codes_and_masking(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "TRANSFERD_API_KEY": "super-secret-key-value"}
    ok = run_cli("check-config", "-c", str(ROOT / "config.example.toml"), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "super-secret-key-value" not in ok.stdout + ok.stderr
    assert "***" in ok.stdout

    bad = write(tmp_path, MINIMAL + "[upload]\nconcurency = 4\n")
    res = run_cli("check-config", "-c", str(bad), env=env)
    assert res.returncode == 2
    assert "upload.concurency" in res.stderr

    res = run_cli("check-config", "-c", str(write(tmp_path, MINIMAL + '[service]\nshutdown_grace = "soon"\n')))
    assert res.returncode == 2 and "service.shutdown_grace" in res.stderr

    res = run_cli("check-config", "-c", str(write(tmp_path, "[[watch]]\npath='/x'\n")))
    assert res.returncode == 2 and "watch[1].destination" in res.stderr


def test_allow_outside_root_is_off_unless_a_watch_opts_in(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).watches[0].allow_outside_root is False
    cfg = load_config(write(tmp_path, MINIMAL + "allow_outside_root = true\n"))
    assert cfg.watches[0].allow_outside_root is True
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, MINIMAL + 'allow_outside_root = "yes"\n'))
    assert e.value.key.endswith("allow_outside_root")
