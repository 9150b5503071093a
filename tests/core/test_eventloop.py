"""`TRANSFERD_EVENT_LOOP` picks the event loop of every command; a bad value is a usage error naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from transferd import eventloop
from transferd.errors import UsageError


def test_default_is_asyncio_and_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_factory() is None
    monkeypatch.setenv(eventloop.ENV, "trio")
    with pytest.raises(UsageError, match="TRANSFERD_EVENT_LOOP='trio': expected 'asyncio' or 'uvloop'"):
        eventloop.loop_factory()


def test_uvloop_runs_the_command() -> None:
    pytest.importorskip("uvloop")
    code = (
        "import asyncio; from transferd import eventloop\n"
        "async def main(): return type(asyncio.get_running_loop()).__module__\n"
        "print(eventloop.run(main()))"
    )
    env = {"TRANSFERD_EVENT_LOOP": "uvloop", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("uvloop")


def test_a_stuck_worker_thread_does_not_hold_up_the_exit() -> None:
    """A call stuck in a worker thread (a stat on a hung share) must not turn an exit into a hang: the pool waits
    its grace, names the thread in a warning and the process exits with the command's own code."""
    code = (
        "import asyncio, sys, threading\n"
        "from transferd import eventloop\n"
        "from transferd.log import setup_logging\n"
        "setup_logging('info', 'kv', sys.stderr)\n"
        "forever = threading.Event()\n"
        "async def main():\n"
        "    try:\n"
        "        await asyncio.wait_for(asyncio.to_thread(forever.wait), 0.2)\n"
        "    except TimeoutError:\n"
        "        return 7\n"
        "sys.exit(eventloop.run(main()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 7, out.stderr
    assert "service.threads_left_behind" in out.stderr and "transferd-0" in out.stderr


def test_the_worker_pool_is_bounded_and_reuses_its_threads() -> None:
    from concurrent.futures import wait
    from threading import Event, current_thread

    from transferd.threads import DaemonPool

    pool = DaemonPool(3, exit_grace=5)
    gate = Event()
    blocked = [pool.submit(gate.wait, 10) for _ in range(10)]  # more calls than workers: the rest queue
    assert len(pool.stuck()) == 3
    gate.set()
    wait(blocked, timeout=10)
    assert all(f.result() for f in blocked)
    names = {pool.submit(lambda: current_thread().name).result(timeout=10) for _ in range(20)}
    assert names <= {"transferd-0", "transferd-1", "transferd-2"}
    pool.shutdown(wait=True)
    assert pool.stuck() == []
