"""Child processes that never outlive the benchmark.

Every child starts in its own process group (so a terminal Ctrl-C reaches only us, and we stop the whole group,
grandchildren included) and with PR_SET_PDEATHSIG=SIGTERM (so even a SIGKILLed benchmark takes its children with it).
`ProcessGroup.stop()` sends SIGTERM to the group, waits, then SIGKILLs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent() -> None:
    """Runs in the child between fork and exec: die with the parent."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, deadline: float, alive: Callable[[], bool]) -> None:
    """Wait until something accepts TCP connections on host:port (or raise)."""
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if not alive():
            raise RuntimeError(f"process exited before listening on {host}:{port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port}")
        time.sleep(0.05)


def read_line(stream: IO[bytes], deadline: float, alive: Callable[[], bool]) -> str:
    """The first line a child prints on `stream` (a pipe), waiting until `deadline` (time.monotonic)."""
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no output line in time")
            if not selector.select(timeout=min(remaining, 0.5)):
                if not alive():
                    raise RuntimeError("process exited before printing a line")
                continue
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                raise RuntimeError("process closed its output before printing a line")
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode(errors="replace").strip()


class ProcessGroup:
    """One child (and its descendants) in a process group of its own."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = subprocess.STDOUT,
    ) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 5.0) -> None:
        """Terminate the whole group; kill it if it lingers."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Descendants may outlive the leader: always sweep the group.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def raise_on_termination() -> None:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt, so `with` blocks clean up exactly as on Ctrl-C.

    SIGINT is set explicitly: a shell starts background jobs with SIGINT ignored, and Python keeps that."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


_LISTENING = re.compile(r"listening (\S+):(\d+)")


class ListeningServer:
    """A child server that prints `listening <host>:<port>` first; `start()` returns once it accepts.

    Subclasses give `name` and `argv()` (and `env()` if needed); the process group is stopped on exit.
    """

    name = "server"

    def __init__(self, log_path: Path, host: str = "127.0.0.1") -> None:
        self.log_path = log_path
        self.host = host
        self.port = 0
        self._group: ProcessGroup | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> Mapping[str, str] | None:
        return None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._group is not None, f"{self.name} not started"
        return self._group.pid

    def start(self, timeout: float = 30.0) -> None:
        argv = self.argv()
        with open(self.log_path, "ab") as log:
            self._group = ProcessGroup(argv, name=self.name, env=self.env(), stdout=subprocess.PIPE, stderr=log)
        assert self._group.proc.stdout is not None
        deadline = time.monotonic() + timeout
        try:
            line = read_line(self._group.proc.stdout, deadline, self._group.alive)
            match = _LISTENING.search(line)
            if match is None:
                raise RuntimeError(f"unexpected {self.name} output {line!r}")
            self.port = int(match.group(2))
            wait_for_port(self.host, self.port, deadline, self._group.alive)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError(f"{self.name} did not start: {exc}; see {self.log_path}") from exc
            raise

    def stop(self) -> None:
        if self._group is not None:
            self._group.stop()
            self._group = None

    def __enter__(self) -> ListeningServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
