"""The local S3 server every upload contender writes to: s3rver (Node.js, files on disk), one per benchmark run.

Started through `bench/s3rver_main.js` (s3rver's own options, plus: any access key id is accepted, since the
sandbox issues random temporary keys). Data lives in a directory of the run's temp dir; the process is stopped,
group and all, when the context exits.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from bench.procs import ProcessGroup, read_line, wait_for_port
from bench.tools import BENCH_DIR, ensure_s3rver, node_binary, s3rver_package_dir

ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
REGION = "us-east-1"
_LISTENING = re.compile(r"listening (\S+):(\d+)")


class S3rver:
    def __init__(self, data_dir: Path, buckets: Sequence[str], log_path: Path, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.buckets = tuple(buckets)
        self.log_path = log_path
        self.host = host
        self.port = 0
        self._group: ProcessGroup | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._group is not None, "s3rver not started"
        return self._group.pid

    def start(self, timeout: float = 30.0) -> None:
        ensure_s3rver()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            node_binary(),
            str(BENCH_DIR / "s3rver_main.js"),
            str(s3rver_package_dir()),
            str(self.data_dir),
            self.host,
            "0",
            *self.buckets,
        ]
        with open(self.log_path, "ab") as log:
            self._group = ProcessGroup(argv, name="s3rver", stdout=subprocess.PIPE, stderr=log)
        deadline = time.monotonic() + timeout
        assert self._group.proc.stdout is not None
        try:
            line = read_line(self._group.proc.stdout, deadline, self._group.alive)
            match = _LISTENING.search(line)
            if match is None:
                raise RuntimeError(f"unexpected s3rver output {line!r}")
            self.port = int(match.group(2))
            wait_for_port(self.host, self.port, deadline, self._group.alive)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError(f"s3rver did not start: {exc}; see {self.log_path}") from exc
            raise

    def stop(self) -> None:
        if self._group is not None:
            self._group.stop()
            self._group = None

    def __enter__(self) -> S3rver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
