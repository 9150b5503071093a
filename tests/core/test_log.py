"""Log lines: whole tracebacks (chained causes too), redacted, one line per event in kv format."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest

from transferd.log import event, register_secret, setup_logging

SECRET = "tb-secret-0123456789abcdef"


def _inner() -> None:
    raise KeyError(f"lookup with {SECRET}")


def _outer() -> None:
    try:
        _inner()
    except KeyError as e:
        raise RuntimeError("the object could not be planned") from e


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_event_with_exc_info_keeps_the_whole_redacted_traceback(fmt: str) -> None:
    register_secret(SECRET)
    out = io.StringIO()
    setup_logging("info", fmt, stream=out)
    log = logging.getLogger("test.log")
    try:
        _outer()
    except RuntimeError as e:
        event(log, "upload.object_failed", logging.ERROR, exc_info=e, object="gncv://f/S1_R1.fastq.gz")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1  # one event, one line: newlines of the traceback are escaped
    if fmt == "json":
        doc = json.loads(lines[0])
        tb, exc = doc["traceback"], doc["exc"]
    else:
        assert lines[0].startswith("ts=") and " traceback=" in lines[0]
        tb = json.loads(lines[0].split(" traceback=", 1)[1])
        exc = "RuntimeError: the object could not be planned"
    assert exc == "RuntimeError: the object could not be planned"
    # Every frame of both exceptions, and the link between them: where it broke, not only what.
    for needle in ("Traceback (most recent call last)", "in _inner", "in _outer", "KeyError", "direct cause"):
        assert needle in tb
    assert SECRET not in lines[0] and "***" in tb


def test_event_without_exc_info_has_no_traceback() -> None:
    out = io.StringIO()
    setup_logging("info", "kv", stream=out)
    event(logging.getLogger("test.log"), "upload.part_done", part=7)
    assert "traceback" not in out.getvalue() and "part=7" in out.getvalue()


def test_lines_carry_journald_priorities_only_on_the_journal_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd names its stream socket in JOURNAL_STREAM (device:inode); then each line starts with `<N>`, so
    `journalctl -p warning` shows warnings and errors. Anywhere else (a terminal, a file) lines stay plain."""
    log = logging.getLogger("transferd.test.journald")
    for journal in (True, False):
        path = tmp_path / f"stderr-{journal}.log"
        with open(path, "w") as stream:
            st = os.fstat(stream.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}" if journal else "1:2")
            setup_logging("debug", "kv", stream=stream)
            for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
                event(log, "test.line", level, n=level)
        setup_logging("info", "kv", stream=io.StringIO())
        heads = [line[:3] for line in path.read_text().splitlines()]
        assert heads == (["<7>", "<6>", "<4>", "<3>", "<2>"] if journal else ["ts="] * 5)
