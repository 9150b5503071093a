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
