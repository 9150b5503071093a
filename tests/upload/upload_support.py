"""Builders for the upload tests: run folders of real FASTQs, configs pointing at the sandbox, S3 reads."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import botocore.session
from helpers import make_fastq_gz

from transferd.config import Config, GencoveConfig, UploadConfig, WatchConfig
from transferd.discovery.models import Run
from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.scanner import scan_paths
from transferd.retry import Policy
from transferd.sandbox import SandboxProcess

MiB = 1024**2
REPO = Path(__file__).resolve().parents[2]
FAST = Policy(deadline=60.0, initial=0.05, max_wait=0.5)  # fast retries for tests
READ_BYTES = 225  # about one FASTQ record of make_fastq_gz(read_length=100) at compresslevel 0


def make_run(run_dir: Path, samples: Mapping[str, int], *, mib_per_file: float = 0.05, paired: bool = True) -> Path:
    """A bcl2fastq-style run folder: `{sample}_S{n}_L00{lane}_R{r}_001.fastq.gz`, `samples` maps name -> lanes.
    Files are stored gzip (compresslevel 0), so their size is about `mib_per_file`."""
    reads = max(1, int(mib_per_file * MiB / READ_BYTES))
    for n, (name, lanes) in enumerate(samples.items(), start=1):
        for lane in range(1, lanes + 1):
            for r in (1, 2) if paired else (1,):
                make_fastq_gz(
                    run_dir / f"{name}_S{n}_L{lane:03d}_R{r}_001.fastq.gz",
                    reads=reads, seed=n * 100 + lane * 10 + r, compresslevel=0,
                )  # fmt: skip
    return run_dir


def sources_of(run_dir: Path, name: str, read: str) -> list[Path]:
    return sorted(run_dir.glob(f"{name}_S*_L*_{read}_001.fastq.gz"))


def sha256_concat(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def journal_rows(state: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Read-only query of a journal file (safe beside the process that writes it)."""
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5) as db:
        return db.execute(sql, params).fetchall()


def scan(path: Path, single_end: bool = False) -> list[Run]:
    rules = DiscoveryRules(settle_seconds=0, completion="quiet", quiet_seconds=0, single_end=single_end)
    return scan_paths([path], rules)


def make_config(sb: SandboxProcess, tmp_path: Path, **upload: Any) -> Config:
    """Multipart for every object unless `single_put_max` is given (these tests are about parts)."""
    settings = {
        "part_size": 5 * MiB, "single_put_max": 0, "concurrency": 4, "max_objects": 2, "max_bytes_in_flight": 40 * MiB,
        "retry_deadline": 60.0, "assign_deadline": 30.0, **upload,
    }  # fmt: skip
    return Config(
        file=tmp_path / "test.toml",
        gencove=GencoveConfig(host=sb.info.api_url, s3_endpoint_url=sb.info.s3_url, request_timeout=30.0),
        upload=UploadConfig(**settings),
    )


def make_watch(root: Path, project_id: str | None, destination: str = "gncv://seq1") -> WatchConfig:
    return WatchConfig(path=root, destination=destination, project_id=project_id)


def s3_client(sb: SandboxProcess) -> Any:
    session = botocore.session.get_session()
    return session.create_client(
        "s3", endpoint_url=sb.info.s3_url, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )  # fmt: skip


def s3_sha256(sb: SandboxProcess, bucket: str, key: str) -> str:
    body = s3_client(sb).get_object(Bucket=bucket, Key=key)["Body"]
    h = hashlib.sha256()
    for chunk in iter(lambda: body.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def uploads_by_path(sb: SandboxProcess) -> dict[str, dict[str, Any]]:
    return {u["destination_path"]: u for u in sb.control.uploads()}


def cli_env(sb: SandboxProcess, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRANSFERD_"))}
    env.update(TRANSFERD_API_KEY=sb.info.api_key, PYTHONPATH=str(REPO), **extra)
    return env


def cli_args(sb: SandboxProcess, source: Path, state: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "transferd", "upload", str(source), "--host", sb.info.api_url,
        "--s3-endpoint-url", sb.info.s3_url, "--state", str(state), "--no-progress", *extra,
    ]  # fmt: skip


def run_cli(sb: SandboxProcess, source: Path, state: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_args(sb, source, state, *extra), env=cli_env(sb, **env), capture_output=True, text=True, timeout=120
    )
