"""The daemon as a real process: a download destination whose marker disappears (the share is not mounted)
turns readiness red with the reason, sets transferd_download_destination_up to 0, logs a WARNING, shows in
`transferd status`, and comes back by itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from mirror_support import assert_mirrored
from service.daemon_harness import Daemon, free_port, write_config

from transferd.cli import main
from transferd.sandbox import SandboxProcess

Seeder = Callable[..., list[dict[str, Any]]]
MARKER = ".transferd-destination"


def test_a_missing_marker_turns_readiness_red_and_the_mirror_resumes_when_it_is_back(
    sandbox: SandboxProcess, finished_samples: Seeder, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    info = sandbox.info
    results = tmp_path / "results"
    results.mkdir()
    (results / MARKER).touch()
    port = free_port()
    config = write_config(
        tmp_path / "config.toml", api_url=info.api_url, s3_url=info.s3_url, state=tmp_path / "journal.sqlite3",
        port=port, download={"destination": results, "projects": [info.project_id], "interval": "1s",
                             "marker": MARKER},
    )  # fmt: skip
    daemon = Daemon(config, port, {"TRANSFERD_API_KEY": info.api_key}, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        assert daemon.value("transferd_download_destination_up", destination=str(results)) == 1
        (results / MARKER).unlink()  # what an unmounted share looks like
        _, doc = wait_for(lambda: (r := daemon.get_json("/readyz"))[0] == 503 and r, timeout=15, message="unready")
        assert doc["failed"] == ["destination"]
        assert doc["checks"]["destination"]["detail"] == f"{results / MARKER} is missing (share not mounted?)"
        assert daemon.value("transferd_download_destination_up", destination=str(results)) == 0
        (line,) = daemon.events("mirror.destination_down")
        assert "level=warning" in line and MARKER in line
        samples = finished_samples(1)
        assert main(["status", "-c", str(config)]) == 0
        assert "unusable, mirror paused" in capsys.readouterr().out
        assert [p.name for p in results.iterdir()] == []  # nothing mirrored while paused

        (results / MARKER).touch()
        wait_for(lambda: daemon.get("/readyz")[0] == 200, timeout=15, message="ready again")
        wait_for(lambda: daemon.value("transferd_mirror_samples", state="done") == 1, timeout=20,
                 message="the sample mirrored once the destination is back")  # fmt: skip
    finally:
        daemon.stop()
    assert_mirrored(results, samples)
