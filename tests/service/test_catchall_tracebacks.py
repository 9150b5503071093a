"""Issue 13: the mirror's catch-all logs the whole (redacted) traceback of what it turns into a failed row
(the upload engine's is covered by tests/core/test_secrets.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from helpers import wait_for

from transferd.config import Config, DownloadConfig, GencoveConfig, ProjectSource
from transferd.journal import Journal
from transferd.log import setup_logging
from transferd.mirror.loop import MirrorLoop
from transferd.retry import Policy
from transferd.sandbox import SandboxProcess

FAST = Policy(deadline=2.0, max_attempts=2, initial=0.01, max_wait=0.05)


async def test_a_failed_mirror_sample_logs_its_traceback(
    sandbox: SandboxProcess, journal: Journal, tmp_path: Path
) -> None:
    c, info = sandbox.control, sandbox.info
    c.set_settings(sample_delay=0)
    sid = c.api("POST", f"/_sandbox/projects/{info.project_id}/samples", {"client_id": "TB1", "r1_size": 1024})["id"]
    wait_for(lambda: c.sample(sid)["last_status"]["status"] != "running", message="the seeded sample to finish")
    # Every sample detail is refused, echoing the key: the catch-all records a failed row.
    echo = f"no: Api-Key {info.api_key}"
    c.add_fault(target="api", endpoint=r"^/api/v2/samples/", status=400, message=echo, times=None)
    project = ProjectSource(id=info.project_id)
    cfg = Config(
        file=tmp_path / "t.toml", gencove=GencoveConfig(host=info.api_url),
        download=DownloadConfig(destination=tmp_path / "mirror", projects=(project,)),
    )  # fmt: skip
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    try:
        async with MirrorLoop(cfg, journal, info.api_key, policy=FAST) as loop:
            report = await loop.cycle(project)
    finally:
        setup_logging("info", "kv")
    assert not report.ok
    failed = [json.loads(line) for line in out.getvalue().splitlines() if '"mirror.sample_failed"' in line]
    assert failed and failed[0]["sample"] == sid
    tb = failed[0]["traceback"]
    assert tb.startswith("Traceback (most recent call last)") and "mirror/loop.py" in tb and "ApiError" in tb
    assert info.api_key not in out.getvalue() and "Api-Key ***" in tb
