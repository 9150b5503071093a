"""Run the sandbox as a subprocess: `with SandboxProcess("--sample-delay", "0.5") as sb: sb.info, sb.control`.

The child runs `python -m transferd.sandbox --json ...` in its own session (process group); its one JSON
line on stdout says it is ready. Stopping sends SIGTERM (the sandbox stops moto itself), waits, then
kills the whole group so no process outlives the context.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from transferd.sandbox.control_client import SandboxControl
from transferd.sandbox.info import SandboxInfo
from transferd.sandbox.spawn import child_env

STDERR_TAIL = 4000


class SandboxStartError(RuntimeError):
    pass


class SandboxProcess:
    def __init__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        python: str = sys.executable,
    ) -> None:
        self.args: Sequence[str] = args
        self._env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._info: SandboxInfo | None = None
        self._control: SandboxControl | None = None

    @property
    def info(self) -> SandboxInfo:
        if self._info is None:
            raise RuntimeError("sandbox not started")
        return self._info

    @property
    def control(self) -> SandboxControl:
        if self._control is None:
            raise RuntimeError("sandbox not started")
        return self._control

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def stderr_path(self) -> Path | None:
        """The file collecting the sandbox's stderr (removed by close())."""
        return Path(self._stderr.name) if self._stderr is not None else None

    def stderr_tail(self, limit: int = STDERR_TAIL) -> str:
        path = self.stderr_path
        try:
            return path.read_text(errors="replace")[-limit:] if path else ""
        except OSError:
            return ""

    def start(self) -> SandboxInfo:
        if self._stderr is None:
            self._stderr = tempfile.NamedTemporaryFile(prefix="sandbox-", suffix=".stderr", delete=False)  # noqa: SIM115
        command = [self._python, "-m", "transferd.sandbox", "--json", "--watch-pid", str(os.getpid()), *self.args]
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env(self._env),
            start_new_session=True,  # its own process group: stop() can kill moto with it
        )
        try:
            line = self._read_line(self._proc)
            self._info = SandboxInfo.from_dict(json.loads(line))
        except BaseException:
            self.stop()
            raise
        self._control = SandboxControl(self._info.api_url, self._info.api_key, ca_file=self._info.ca_file or None)
        return self._info

    def _read_line(self, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        deadline = time.monotonic() + self._startup_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxStartError(
                        f"sandbox not ready after {self._startup_timeout}s; stderr:\n{self.stderr_tail()}"
                    )
                if not selector.select(timeout=min(remaining, 0.5)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    code = proc.wait(timeout=5)
                    raise SandboxStartError(f"sandbox exited with code {code} before it was ready; stderr:\n"
                                            f"{self.stderr_tail()}")  # fmt: skip
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode()
        if not line.startswith("{"):
            raise SandboxStartError(f"unexpected sandbox output {line!r}; stderr:\n{self.stderr_tail()}")
        return line

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL the whole process group. Returns the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (moto, if the sandbox hung)
        except (ProcessLookupError, PermissionError):
            pass
        code = proc.wait(timeout=timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        return code

    def close(self) -> None:
        self.stop()
        if self._stderr is not None:
            self._stderr.close()
            with contextlib.suppress(OSError):
                os.unlink(self._stderr.name)
            self._stderr = None

    def __enter__(self) -> SandboxProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
