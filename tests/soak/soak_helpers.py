"""Helpers of the focused soak tests: a daemon on the session sandbox, run folders, waiting on the sandbox."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from soak_env import Daemon, free_port  # bench/ is on sys.path (conftest.py)

from transferd.synthetic import fastq_records

REPO = Path(__file__).resolve().parents[2]

__all__ = ["Daemon", "big_fastq", "start_daemon", "write_config"]


def big_fastq(path: Path, size: int, seed: int) -> bytes:
    """A valid gzip FASTQ of about `size` bytes, cheaply (stored deflate blocks); returns its bytes."""
    member = gzip.compress(fastq_records(2000, seed), compresslevel=0, mtime=0)
    data = b"".join([member] * max(1, size // len(member) + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def sha(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def write_config(work: Path, info: Any, roots: list[Path], *, download: Path | None = None,
                 extra: str = "") -> tuple[Path, int]:  # fmt: skip
    key = work / "api-key"
    key.write_text(info.api_key + "\n")
    port = free_port()
    text = f"""[gencove]
host = "{info.api_url}"
api_key_file = {json.dumps(str(key))}
s3_endpoint_url = "{info.s3_url}"

[state]
path = {json.dumps(str(work / "journal.sqlite3"))}

[upload]
part_size = "5MiB"
single_put_max = "0"
retry_deadline = "5m"
assign_deadline = "5m"

[metrics]
listen = "127.0.0.1:{port}"

[service]
shutdown_grace = "3s"
watchdog = false
"""
    for i, root in enumerate(roots):
        text += f"""
[[watch]]
path = {json.dumps(str(root))}
destination = "gncv://focus-{i}"
project_id = "{info.project_id}"
settle_seconds = "1s"
rescan_interval = "1s"
"""
    if download is not None:
        text += f"""
[download]
destination = {json.dumps(str(download))}
projects = ["{info.project_id}"]
interval = "2s"
"""
    cfg = work / "transferd.toml"
    cfg.write_text(text + extra)
    return cfg, port


def start_daemon(cfg: Path, port: int, log: Path, prefix: list[str] | None = None) -> Daemon:
    d = Daemon(cfg, port, log, prefix or [])
    d.start()
    d.wait_http()
    return d
