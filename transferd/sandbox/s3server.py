"""The moto S3 server subprocess: start on a free port, wait until it answers, reset, stop.

No orphan is ever left: `stop()` terminates then kills; an atexit hook does the same if the sandbox
exits without stopping it; and the child watches our pid and exits if we die (see moto_child.py).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping

import aiohttp

from transferd.sandbox.spawn import child_env, free_port

START_ATTEMPTS = 3


class S3ServerError(RuntimeError):
    pass


class MotoServer:
    def __init__(
        self, host: str = "127.0.0.1", env: Mapping[str, str] | None = None, startup_timeout: float = 20.0
    ) -> None:
        self.host = host
        self._env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        last_error = "no attempt made"
        for _ in range(START_ATTEMPTS):
            self.port = free_port(self.host)
            # A plain Popen (it does not block) so stop() can run from atexit without a loop.
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                [
                    sys.executable, "-m", "transferd.sandbox.moto_child",
                    "--parent-pid", str(os.getpid()), "-H", self.host, "-p", str(self.port),
                ],
                env=child_env(self._env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            atexit.register(self.stop)
            try:
                await self._wait_ready()
                return
            except S3ServerError as exc:
                last_error = str(exc)
                self.stop()  # e.g. the port was taken between free_port() and bind(): try another
        raise S3ServerError(f"moto S3 server did not start: {last_error}")

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise S3ServerError(f"moto exited with code {code} on port {self.port}")
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with session.get(f"{self.url}/moto-api/data.json") as response:
                        await response.read()
                        return
                if time.monotonic() > deadline:
                    raise S3ServerError(f"moto did not answer on {self.url} within {self._startup_timeout}s")
                await asyncio.sleep(0.05)

    async def reset(self) -> None:
        """Drop every bucket and object (moto's own reset endpoint)."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(f"{self.url}/moto-api/reset") as response,
        ):
            response.raise_for_status()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
