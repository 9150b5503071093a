"""The event loop every command runs on: asyncio's own, or uvloop when `TRANSFERD_EVENT_LOOP=uvloop` is set (and
the `uvloop` extra installed), with `threads.DaemonPool` behind `asyncio.to_thread`. One place, so the daemon and
the one-shot commands run on the same loop and no worker thread can hold up their exit."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from transferd.errors import UsageError
from transferd.log import event
from transferd.threads import DaemonPool

T = TypeVar("T")
ENV = "TRANSFERD_EVENT_LOOP"
log = logging.getLogger("transferd.eventloop")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """None for asyncio's default loop; raises UsageError naming the variable for a loop that cannot be had."""
    choice = os.environ.get(ENV, "asyncio").strip().lower() or "asyncio"
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        raise UsageError(f"{ENV}={choice!r}: expected 'asyncio' or 'uvloop'")
    try:
        import uvloop
    except ModuleNotFoundError:
        raise UsageError(f"{ENV}=uvloop, but uvloop is not installed (pip install 'transferd[uvloop]')") from None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run(main: Coroutine[Any, Any, T]) -> T:
    pool = DaemonPool()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.get_loop().set_default_executor(pool)
        result = runner.run(main)
    if left := pool.stuck():  # daemon threads: they end with the process
        event(log, "service.threads_left_behind", logging.WARNING, threads=left,
              why="calls still running (a hung file system?) after the exit grace")  # fmt: skip
    return result
