"""The journal defends itself: a damaged or emptied file is refused (exit 2 from `run` and `status`) with the
steps to recover, readiness reads every table, and a full disk pauses writes until space returns."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import wait_for
from prometheus_client.parser import text_string_to_metric_families

from transferd.journal import Journal, JournalDamaged, log_event
from transferd.metrics import build_registry


def _journal_with_rows(path: Path, rows: int = 400) -> None:
    with Journal.open(path) as j:
        for i in range(rows):
            j.call(log_event, "info", "test", f"subject-{i}", "x" * 200)


def _config(tmp_path: Path, journal: Path) -> Path:
    config = tmp_path / "c.toml"
    config.write_text(f'[state]\npath = "{journal}"\n[metrics]\nlisten = "127.0.0.1:0"\n')
    return config


def _transferd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRANSFERD_API_KEY": "defence-key-0123456789"}
    cmd = [sys.executable, "-m", "transferd", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_damaged_journal_is_refused_with_the_recovery_steps(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite3"
    _journal_with_rows(db)
    with open(db, "r+b") as f:  # scribble over an interior page of the events table
        f.seek(4096 * 5)
        f.write(b"\xa5" * 4096)
    with pytest.raises(JournalDamaged) as e:
        Journal.open(db)
    msg = str(e.value)
    assert msg.startswith(f"journal {db} is damaged: ") and "to recover: stop transferd" in msg and ".recover" in msg
    config = _config(tmp_path, db)
    for cmd in ("run", "status"):
        res = _transferd(cmd, "-c", str(config))
        assert res.returncode == 2, (cmd, res.stderr)
        assert f"journal {db} is damaged" in res.stderr and "Traceback" not in res.stderr


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite3"
    db.write_bytes(b"this is not a database" * 500)
    with pytest.raises(JournalDamaged, match="file is not a database; to recover"):
        Journal.open(db)
    with pytest.raises(JournalDamaged, match="file is not a database; to recover"):
        Journal.open_readonly(db)


def test_an_emptied_journal_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite3"
    _journal_with_rows(db, rows=3)
    db.write_bytes(b"")  # truncated: a bad copy, a full disk
    with pytest.raises(JournalDamaged, match=r"exists but is empty \(0 bytes\).*--new-journal"):
        Journal.open(db)
    res = _transferd("status", "-c", str(_config(tmp_path, db)))
    assert res.returncode == 2 and "exists but is empty" in res.stderr
    res = _transferd("run", "-c", str(_config(tmp_path, db)))
    assert res.returncode == 2 and "--new-journal" in res.stderr
    assert db.stat().st_size == 0  # nothing was started on it
    with Journal.open(db, new=True) as j:  # the operator said so
        assert j.writable()


def test_readiness_reads_every_table_it_uses(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite3"
    with Journal.open(db) as j:
        assert j.problem() is None
        raw = sqlite3.connect(db)
        raw.execute("DROP TABLE webhook_events")
        raw.commit()
        raw.close()
        problem = j.problem()
        assert problem is not None and "no such table: webhook_events" in problem and str(db) in problem


def _journal_full_gauge(j: Journal) -> float:
    for fam in text_string_to_metric_families(_scrape(j)):
        for s in fam.samples:
            if s.name == "transferd_journal_full":
                return s.value
    raise AssertionError("transferd_journal_full missing")


def _scrape(j: Journal) -> str:
    from prometheus_client import generate_latest

    return generate_latest(build_registry(j, process_metrics=False)).decode()


def test_a_full_disk_pauses_writes_and_they_resume_when_space_returns(tmp_path: Path) -> None:
    # SQLITE_FULL from max_page_count takes the same path as a full file system (ENOSPC on the WAL).
    db = tmp_path / "journal.sqlite3"
    with Journal.open(db) as j:
        pages = j.call(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        j.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}"))
        done = threading.Event()

        def write() -> None:
            j.call(lambda c: c.execute("INSERT INTO watermarks VALUES ('big', ?, 0)", ("x" * 200_000,)))
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        wait_for(lambda: j.full_since is not None, message="the journal to notice the full disk")
        assert not done.is_set()  # paused, not failed
        problem = j.problem()
        assert problem is not None and "disk full since" in problem and "paused" in problem
        assert _journal_full_gauge(j) == 1
        # Space returns (here: a higher page limit, set beside the paused writer on its idle connection).
        j._conn.execute("PRAGMA max_page_count = 1000000")
        assert done.wait(10), "the paused write did not resume"
        writer.join(5)
        assert j.full_since is None and j.problem() is None and _journal_full_gauge(j) == 0
        assert j.read(lambda c: c.execute("SELECT length(value) FROM watermarks WHERE source = 'big'").fetchone()[0])


def test_close_ends_a_wait_for_space(tmp_path: Path) -> None:
    j = Journal.open(tmp_path / "journal.sqlite3")
    pages = j.call(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    j.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}"))
    errors: list[BaseException] = []

    def write() -> None:
        try:
            j.call(lambda c: c.execute("INSERT INTO watermarks VALUES ('big', ?, 0)", ("x" * 200_000,)))
        except sqlite3.OperationalError as e:
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    wait_for(lambda: j.full_since is not None)
    j._closing.set()  # what close() does first; the writer gives up instead of holding shutdown
    writer.join(10)
    assert not writer.is_alive() and errors and "full" in str(errors[0])
    j.close()
