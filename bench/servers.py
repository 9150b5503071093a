"""The Python servers a benchmark run starts: the Gencove sandbox, the discarding S3 sink, the WAN delay proxy.

Both run as children in process groups of their own that die with the benchmark (`bench.procs.ProcessGroup`);
each announces readiness with one line on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from bench.procs import ListeningServer, ProcessGroup, read_line
from bench.tools import REPO_DIR
from transferd.sandbox import SandboxControl, SandboxInfo


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_DIR)  # `bench` and `transferd` from this tree
    return env


class SandboxServer:
    """`python -m transferd.sandbox --json --s3-endpoint URL ...`, with its control client."""

    def __init__(self, s3_endpoint: str, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.s3_endpoint = s3_endpoint
        self.log_path = log_path
        self.extra_args = tuple(extra_args)
        self._group: ProcessGroup | None = None
        self._info: SandboxInfo | None = None

    @property
    def info(self) -> SandboxInfo:
        assert self._info is not None, "sandbox not started"
        return self._info

    @property
    def pid(self) -> int:
        assert self._group is not None, "sandbox not started"
        return self._group.pid

    def control(self) -> SandboxControl:
        return SandboxControl(self.info.api_url, self.info.api_key, timeout=120.0)

    def start(self, timeout: float = 60.0) -> SandboxInfo:
        argv = [
            sys.executable,
            "-m",
            "transferd.sandbox",
            "--json",
            "--s3-endpoint",
            self.s3_endpoint,
            # No background HEADs on objects being written (s3rver hashes them); the API still checks on demand.
            "--upload-poll-interval",
            "0",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self._group = ProcessGroup(argv, name="sandbox", env=_python_env(), stdout=subprocess.PIPE, stderr=log)
        assert self._group.proc.stdout is not None
        try:
            line = read_line(self._group.proc.stdout, time.monotonic() + timeout, self._group.alive)
            self._info = SandboxInfo.from_dict(json.loads(line))
        except BaseException as exc:
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError(f"sandbox did not start: {exc}; see {self.log_path}") from exc
            raise
        return self._info

    def stop(self) -> None:
        if self._group is not None:
            self._group.stop()
            self._group = None

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SinkServer(ListeningServer):
    """`python -m bench.sink`: an S3 endpoint that reads and discards every body."""

    name = "sink"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.sink", "--host", self.host, "--port", "0"]

    def env(self) -> dict[str, str]:
        return _python_env()


class WanProxy(ListeningServer):
    """`python -m bench.wan_proxy`: a TCP proxy adding `delay_ms` each way in front of `upstream_url`."""

    name = "wan-proxy"

    def __init__(self, upstream_url: str, delay_ms: float, log_path: Path) -> None:
        super().__init__(log_path)
        self.upstream = urlsplit(upstream_url).netloc
        self.delay_ms = delay_ms

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "bench.wan_proxy", "--upstream", self.upstream,
            "--delay-ms", f"{self.delay_ms:g}", "--host", self.host, "--port", "0",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return _python_env()
