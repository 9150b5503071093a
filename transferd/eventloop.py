"""The event loop every command runs on: asyncio's own, or uvloop when `TRANSFERD_EVENT_LOOP=uvloop` is set (and
the `uvloop` extra installed). One place, so the daemon and the one-shot commands run on the same loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from transferd.errors import UsageError

T = TypeVar("T")
ENV = "TRANSFERD_EVENT_LOOP"


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
    factory = loop_factory()
    if factory is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
