"""The local S3 server every upload contender writes to: s3rver (Node.js, files on disk), one per benchmark run.

Started through `bench/s3rver_main.js` (s3rver's own options, plus: any access key id is accepted, since the
sandbox issues random temporary keys). Data lives in a directory of the run's temp dir; the process is stopped,
group and all, when the context exits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bench.procs import ListeningServer
from bench.tools import BENCH_DIR, ensure_s3rver, node_binary, s3rver_package_dir

ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
REGION = "us-east-1"


class S3rver(ListeningServer):
    name = "s3rver"

    def __init__(
        self, data_dir: Path, buckets: Sequence[str], log_path: Path, host: str = "127.0.0.1",
        events_url: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(log_path, host)
        self.data_dir = data_dir
        self.buckets = tuple(buckets)
        self.events_url = events_url  # where ObjectCreated events are POSTed (the sandbox's /_s3-events)

    def env(self) -> dict[str, str] | None:
        return {**os.environ, "S3RVER_EVENTS_URL": self.events_url} if self.events_url else None

    def argv(self) -> list[str]:
        ensure_s3rver()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            node_binary(),
            str(BENCH_DIR / "s3rver_main.js"),
            str(s3rver_package_dir()),
            str(self.data_dir),
            self.host,
            "0",
            *self.buckets,
        ]
