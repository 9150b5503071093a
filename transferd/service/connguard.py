"""Connection limits for the HTTP listener, below aiohttp (which has neither a header timeout nor a cap).

`ConnectionGuard` wraps aiohttp's protocol factory: a connection that has not sent a whole request header
(the blank line ending it) within `header_timeout` is closed, and at `limit` open connections a new one is let
in by closing the oldest connection still waiting for its header (or, when none is, the oldest of all). A flood
of half-open or slowly written connections therefore costs the daemon at most `limit` file descriptors and
cannot lock Prometheus and the probes out: a client that sends its request at once is always served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from transferd.log import event

log = logging.getLogger(__name__)
REPORT_EVERY = 60.0  # at most one WARNING a minute about dropped connections: an attack must not flood the log


class ConnectionGuard:
    def __init__(self, factory: Callable[[], asyncio.Protocol], limit: int, header_timeout: float) -> None:
        self._factory = factory
        self.limit = limit
        self.header_timeout = header_timeout
        self._open: dict[_Guarded, None] = {}  # insertion order: oldest first
        self.dropped = 0  # connections closed by the guard, for the log and tests
        self._reported = (0.0, 0)  # (when, dropped) at the last report

    @property
    def open(self) -> int:
        return len(self._open)

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self, self._factory())

    def _admit(self, conn: _Guarded) -> None:
        if len(self._open) >= self.limit:
            victim = next((c for c in self._open if not c.header_seen), None) or next(iter(self._open))
            victim.drop("connection limit reached")
        self._open[conn] = None

    def _dropped(self, why: str) -> None:
        self.dropped += 1
        now = time.monotonic()
        last, before = self._reported
        if now - last >= REPORT_EVERY:
            self._reported = (now, self.dropped)
            event(
                log, "service.http_connections_dropped", logging.WARNING, reason=why, dropped=self.dropped - before,
                limit=self.limit, header_timeout=self.header_timeout,
            )  # fmt: skip


class _Guarded(asyncio.Protocol):
    """Delegates every callback to aiohttp's protocol; watches only for the end of the first request header."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self.header_seen = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._guard._admit(self)
        self._timer = asyncio.get_running_loop().call_later(self._guard.header_timeout, self._late)
        self._inner.connection_made(transport)

    def _late(self) -> None:
        if not self.header_seen:
            self.drop(f"no request header within {self._guard.header_timeout:g}s")

    def drop(self, why: str) -> None:
        self._forget()
        if self._transport is not None and not self._transport.is_closing():
            self._guard._dropped(why)
            self._transport.abort()  # type: ignore[attr-defined]

    def _forget(self) -> None:
        self._guard._open.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if not self.header_seen:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self.header_seen = True
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def __getattr__(self, name: str) -> Any:  # anything else aiohttp may ask its protocol
        return getattr(self._inner, name)
