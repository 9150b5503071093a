"""`[webhook] listen`: the webhook receiver on a listener of its own, so a site can open it to Gencove without
exposing /metrics and the probes; the metrics listener then no longer takes webhooks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from daemon_harness import Daemon, free_port, write_config

from transferd.mirror.webhook import SIGNATURE_HEADER
from transferd.sandbox import SandboxProcess
from transferd.sandbox.webhooks import sample_event, sign_webhook

SECRET = "whsec-listener-test-0123456789"


def _request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_webhooks_on_their_own_listener(sandbox: SandboxProcess, tmp_path: Path) -> None:
    info = sandbox.info
    port, hooks = free_port(), free_port()
    (tmp_path / "secret").write_text(SECRET + "\n")
    (tmp_path / "results").mkdir()
    config = write_config(
        tmp_path / "c.toml", api_url=info.api_url, s3_url=info.s3_url, state=tmp_path / "j.sqlite3", port=port,
        download={"destination": tmp_path / "results", "projects": [info.project_id], "interval": "1h",
                  "webhook_secret_file": tmp_path / "secret"},
        extra=f'[webhook]\nlisten = "127.0.0.1:{hooks}"\n',
    )  # fmt: skip
    daemon = Daemon(config, port, {"TRANSFERD_API_KEY": info.api_key}, tmp_path / "daemon.log")
    try:
        daemon.wait_http()
        body = json.dumps([sample_event("analysis_complete_v2", info.project_id, [])]).encode()
        signed = {SIGNATURE_HEADER: sign_webhook(SECRET, body, int(time.time())), "Content-Type": "application/json"}
        webhook_url = f"http://127.0.0.1:{hooks}/webhooks/gencove"
        assert _request(webhook_url, body, signed) == 200
        assert _request(webhook_url, body, {SIGNATURE_HEADER: "t=1,v1=00"}) == 401
        assert _request(f"http://127.0.0.1:{hooks}/metrics") == 404  # nothing else is exposed there
        assert _request(f"http://127.0.0.1:{hooks}/healthz") == 404
        assert _request(daemon.url("/webhooks/gencove"), body, signed) in (404, 405)  # no longer beside /metrics
        assert daemon.get("/metrics")[0] == 200
        assert daemon.value("transferd_webhook_requests_total", outcome="accepted") == 1
    finally:
        assert daemon.stop() == 0, daemon.log_text()[-2000:]
