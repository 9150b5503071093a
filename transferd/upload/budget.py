"""An async byte semaphore: the one global budget of part buffers in flight, shared by all objects."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ByteBudget:
    """`acquire(n)` waits until `n` more bytes fit under `capacity`; first come, first served, so a big part
    is not starved by small ones. A request larger than the whole budget is let through once nothing else
    is held (parts grow with huge objects; the budget must not deadlock them)."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, not {capacity}")
        self.capacity = capacity
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, n: int) -> bool:
        return self.used + n <= self.capacity or self.used == 0

    async def acquire(self, n: int) -> None:
        if not self._waiters and self._fits(n):
            self.used += n
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except BaseException:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            self._wake()
            raise

    def release(self, n: int) -> None:
        self.used -= n
        if self.used < 0:
            raise RuntimeError("ByteBudget released more than it acquired")
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if not self._fits(n):
                return
            self._waiters.popleft()
            self.used += n
            fut.set_result(None)

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        await self.acquire(n)
        try:
            yield
        finally:
            self.release(n)
