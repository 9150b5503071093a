"""Secrets nowhere: an API answer that echoes our key reaches no journal row, no `status` output, no log line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers import make_fastq_gz

from transferd.journal import Journal, log_event
from transferd.log import MAX_ROTATING, mask_secrets, redact, register_secret
from transferd.sandbox import SandboxProcess


def test_redact_masks_registered_cut_and_shaped_secrets() -> None:
    key = "k3y-0123456789abcdefghij"
    register_secret(key)
    assert key not in redact(f"HTTP 400: you sent {key} twice: {key}")
    # A message cut inside the key leaves its start at the end: masked too.
    assert redact(f"detail: {key}"[:-5]) == "detail: ***"
    # Never registered (another process's key, a JWT): masked by its shape.
    assert redact("Authorization: Api-Key zzzzzz999999") == "Authorization: Api-Key ***"
    assert redact("Authorization: JWT eyJhbGciOi.eyJzdWIi.sig") == "Authorization: JWT ***"
    url = "https://s3/b/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123&part=2"
    assert redact(url) == "https://s3/b/k?X-Amz-Credential=***&X-Amz-Signature=***&part=2"
    # mask_secrets leaves shapes alone (paths and ids may look like them) but not registered values.
    assert mask_secrets("/runs/Bearer token=1") == "/runs/Bearer token=1"
    assert mask_secrets(f"/runs/{key}/x") == "/runs/***/x"


def test_journal_writes_are_redacted_whichever_module_writes(tmp_path: Path) -> None:
    key = "journal-secret-0123456789"
    register_secret(key)
    with Journal.open(tmp_path / "j.db") as j:
        j.call(log_event, "error", "upload", "gncv://x/S1", f"HTTP 403: Authorization: Api-Key {key}")
        j.call(lambda c: c.execute("INSERT INTO watermarks VALUES (?, ?, ?)", ("src", f"v {key}", 1.0)))
        j.call(lambda c: c.execute("INSERT INTO watermarks VALUES (:s, :v, 2.0)", {"s": "src2", "v": key}))
    dump = "\n".join(sqlite3.connect(tmp_path / "j.db").iterdump())
    assert key not in dump and "Api-Key ***" in dump


def test_an_api_error_echoing_the_key_is_stored_printed_and_logged_redacted(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    info = sandbox.info
    key = info.api_key
    # The API refuses every upload slot and echoes the request's Authorization header (and the bare key).
    echo = f"bad request; you sent Authorization: Api-Key {key} (key {key})"
    sandbox.control.add_fault(target="api", endpoint="uploads-post-data", status=400, message=echo, times=None)
    run = tmp_path / "runs" / "RUN1"
    for read in ("R1", "R2"):
        make_fastq_gz(run / f"S1_S1_L001_{read}_001.fastq.gz", reads=50)
    state = tmp_path / "state" / "journal.sqlite3"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[gencove]\nhost = "{info.api_url}"\ns3_endpoint_url = "{info.s3_url}"\ns3_checksums = "when_required"\n'
        f'[state]\npath = "{state}"\n[log]\nlevel = "info"\n'
    )
    env = {**os.environ, "TRANSFERD_API_KEY": key}

    def transferd(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "transferd", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90, check=False)

    up = transferd("upload", str(run), "-c", str(config), "--state", str(state), "--no-progress")
    assert up.returncode == 1, up.stderr
    assert "HTTP 400" in up.stdout + up.stderr  # the failure is reported...
    assert key not in up.stdout + up.stderr  # ...without the key
    # The engine's catch-all logs the traceback of what it turned into a failed row (issue 13), redacted too.
    failed = [line for line in up.stderr.splitlines() if "event=upload.object_failed" in line]
    assert failed and all("traceback=" in line and "engine.py" in line for line in failed)
    dump = "\n".join(sqlite3.connect(state).iterdump())
    assert "HTTP 400" in dump and "Api-Key ***" in dump
    assert key not in dump
    for args in ((), ("--json",)):
        st = transferd("status", "-c", str(config), *args)
        assert st.returncode == 0, st.stderr
        assert "HTTP 400" in st.stdout and key not in st.stdout + st.stderr
    doc = json.loads(transferd("status", "-c", str(config), "--json").stdout)
    assert any("Api-Key ***" in e["message"] for e in doc["errors"])


def test_rotating_credentials_are_bounded_and_pinned_secrets_stay() -> None:
    pinned = "pinned-api-key-0123456789"
    register_secret(pinned)
    rotating = [f"session-token-{i:04d}-abcdefgh" for i in range(MAX_ROTATING + 8)]
    for token in rotating:
        register_secret(token, rotating=True)
    assert redact(pinned) == "***"
    assert redact(rotating[-1]) == "***" and redact(rotating[-MAX_ROTATING]) == "***"
    assert redact(rotating[0]) == rotating[0]  # long replaced and expired: no longer searched for
