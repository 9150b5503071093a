"""Test helpers shared by every test package.

- `wait_for(predicate, timeout=10, interval=0.05, message=...)`: poll until `predicate()` returns a truthy
  value and return that value; on timeout raise `WaitTimeout` naming what was awaited and the last value
  seen (or the last exception the predicate raised). Use it instead of sleeps.
- `make_fastq_gz(path, reads=100, seed=0, read_length=100, compresslevel=6)`: write a small valid gzip
  FASTQ file (deterministic for a seed); returns the path. `compresslevel=0` makes a big file fast.
- `sha256_file(path)`: hex digest, read in chunks.
- `s3_client(endpoint, access_key, secret_key, token=None, max_attempts=3)`: an aiobotocore S3 client
  (async context manager) with path-style addressing, region us-east-1 and checksums only when required.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from transferd.synthetic import write_fastq_gz

T = TypeVar("T")

_BASES = bytes.maketrans(bytes(range(256)), b"ACGT" * 64)
_QUALS = bytes.maketrans(bytes(range(256)), bytes(33 + (i % 41) for i in range(256)))


class WaitTimeout(AssertionError):
    pass


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | None = None,
) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    last_error: BaseException | None = None
    while True:
        try:
            last = predicate()
            last_error = None
            if last:
                return last  # type: ignore[return-value]
        except Exception as exc:  # the condition may not be checkable yet
            last_error = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            detail = f"last error: {last_error!r}" if last_error is not None else f"last value: {last!r}"
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}; {detail}")
        time.sleep(interval)


def make_fastq_gz(
    path: str | Path,
    reads: int = 100,
    seed: int = 0,
    read_length: int = 100,
    compresslevel: int = 6,
) -> Path:
    return write_fastq_gz(Path(path), reads, seed, compresslevel, read_length)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@asynccontextmanager
async def s3_client(
    endpoint: str, access_key: str, secret_key: str, token: str | None = None, max_attempts: int = 3
) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": max_attempts, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    async with get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
        config=config,
    ) as client:
        yield client
