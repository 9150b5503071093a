"""The journal: schema versioning, one-writer lock, transactions that roll back whole."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from transferd.journal import Journal, JournalLocked
from transferd.journal.schema import SCHEMA_VERSION


def test_creates_schema_in_wal_mode(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "sub" / "j.db") as j:
        assert j.call(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION
        assert j.call(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
        tables = {r[0] for r in j.read(lambda c: c.execute("SELECT name FROM sqlite_master WHERE type='table'"))}
        assert {"runs", "samples", "objects", "parts", "assignments", "downloads"} <= tables
        assert j.writable()


def test_a_second_process_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Journal.open(db):
        code = f"from transferd.journal import Journal\nJournal.open({str(db)!r})"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode != 0
        assert "in use by another transferd" in res.stderr and str(db) in res.stderr
    with Journal.open(db):  # released on close
        pass


def test_same_process_second_open_is_refused(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db"), pytest.raises(JournalLocked):
        Journal.open(tmp_path / "j.db")


def test_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    def insert_then_fail(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO watermarks (source, value, updated) VALUES ('a', 'x', 0)")
        raise RuntimeError("crash inside the transaction")

    with Journal.open(tmp_path / "j.db") as j:
        with pytest.raises(RuntimeError):
            j.call(insert_then_fail)
        assert j.read(lambda c: c.execute("SELECT COUNT(*) FROM watermarks").fetchone()[0]) == 0


async def test_async_run_uses_the_journal_thread(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db") as j:
        await j.run(lambda c, v: c.execute("INSERT INTO watermarks VALUES ('s', ?, 0)", (v,)), "w1")
        assert j.read(lambda c: c.execute("SELECT value FROM watermarks").fetchone()[0]) == "w1"


def test_survives_kill_during_writes(tmp_path: Path) -> None:
    """A process killed mid-stream of commits leaves a journal that opens and holds only whole transactions."""
    db = tmp_path / "j.db"
    code = f"""
import os, sys
from transferd.journal import Journal
j = Journal.open({str(db)!r})
for i in range(100000):
    j.call(lambda c: (c.execute("INSERT INTO events (ts, level, stage, message) VALUES (?, 'info', 'x', 'a')", (i,)),
                      c.execute("INSERT INTO events (ts, level, stage, message) VALUES (?, 'info', 'x', 'b')", (i,))))
    if i == 500:
        print("ready", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait(timeout=30)
    with Journal.open(db) as j:
        counts = j.read(lambda c: c.execute("SELECT message, COUNT(*) FROM events GROUP BY message").fetchall())
        got = {m: n for m, n in counts}
        assert got["a"] == got["b"]  # never half a transaction
