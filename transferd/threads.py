"""The worker threads behind `asyncio.to_thread`: a bounded pool of daemon threads that never holds up an exit.

`concurrent.futures.ThreadPoolExecutor` joins its threads at interpreter exit without a bound, and asyncio joins
the default executor when its loop closes (without a bound before Python 3.12). One call stuck in the kernel (a
stat on a hung network share, a read of a wedged mount) would turn a graceful stop into a hang that systemd ends
with SIGKILL. This pool runs at most `workers` threads, all daemon threads; at shutdown it waits up to
`exit_grace` for the calls in progress and then leaves the stuck ones behind. Calls run here only read files or
write `.part` files that a later start resumes; the journal's writes have an executor of their own, joined at
close.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

EXIT_GRACE = 2.0  # seconds a shutdown waits for calls in progress before leaving them behind


def default_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's own default


class DaemonPool(ThreadPoolExecutor):
    # A ThreadPoolExecutor only by type (asyncio's set_default_executor insists on one before Python 3.12):
    # submit and shutdown are this class's own, and none of the parent's state is set up or used.
    def __init__(self, workers: int | None = None, *, name: str = "transferd", exit_grace: float = EXIT_GRACE):
        self._workers = workers or default_workers()
        self._name = name
        self._exit_grace = exit_grace
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None]
        self._queue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # released by a worker each time it finishes a call
        self._lock = threading.Lock()
        self._workers_started: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._workers_started) < self._workers:
                t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._workers_started)}", daemon=True)
                t.start()
                self._workers_started.append(t)
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs  # drop references before waiting for the next call
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._workers_started)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            deadline = time.monotonic() + self._exit_grace
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))

    def stuck(self) -> list[str]:
        """Names of the threads still running a call (after a shutdown: the ones left behind)."""
        with self._lock:
            return [t.name for t in self._workers_started if t.is_alive()]
