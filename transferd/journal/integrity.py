"""The journal's defences: a damaged file is refused with the steps to recover it, an emptied one is not taken
for a fresh start, readiness reads every table the daemon uses, and a full disk is told apart from a bug.

The journal is the only record of what was delivered and assigned; starting afresh by accident would upload
every run still in the watch roots again, so each of these stops and asks the operator instead.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from transferd.errors import TransferdError

# Every table the daemon reads or writes (schema.py); readiness reads each, so a damaged one turns it red.
TABLES = (
    "runs", "samples", "objects", "parts", "assignments", "downloads", "mirror_samples", "watermarks",
    "webhook_events", "events", "holds",
)  # fmt: skip


class JournalDamaged(TransferdError):
    """The journal cannot be trusted as it is; the operator must decide (exit 2, as for a config error)."""

    exit_code = 2


def recovery(p: Path) -> str:
    return (
        f"to recover: stop transferd; keep a copy (cp -a {p} {p}.damaged); restore the journal from a backup, "
        f"or rebuild what SQLite can read (sqlite3 {p}.damaged .recover | sqlite3 {p}.recovered, then move "
        f"{p}.recovered to {p}); only as a last resort move it away and start with an empty journal "
        "(runs still in the watch roots may then be uploaded again)"
    )


def refuse_emptied(p: Path, new: bool) -> None:
    """A 0-byte journal file existed before us: it was truncated (a full disk, a bad copy), not never used.
    SQLite would quietly start a new one on it; `new` (`--new-journal`) says that is what the operator wants."""
    try:
        emptied = p.stat().st_size == 0
    except FileNotFoundError:
        return
    if emptied and not new:
        raise JournalDamaged(
            f"journal {p} exists but is empty (0 bytes): it was truncated or replaced, and starting afresh would "
            f"forget every delivery; {recovery(p)}; to start with an empty journal on purpose, run with --new-journal"
        )


def is_damaged(e: BaseException) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file is not a journal SQLite can read as it is."""
    code = getattr(e, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def damaged(p: Path, e: BaseException) -> JournalDamaged:
    return JournalDamaged(f"journal {p} is damaged: {e}; {recovery(p)}")


def quick_check(conn: sqlite3.Connection, p: Path) -> None:
    """`PRAGMA quick_check` (O(size), no index cross-check): refuse a damaged file before trusting a row of it."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        raise damaged(p, e) from None
    if rows != ["ok"]:
        raise JournalDamaged(f"journal {p} is damaged: quick_check: {'; '.join(map(str, rows))}; {recovery(p)}")


def read_tables(conn: sqlite3.Connection) -> None:
    """For readiness: every table answers a read, and a no-op write commits."""
    for table in TABLES:
        conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
    conn.execute("UPDATE watermarks SET updated = updated WHERE 0")


def is_full(e: BaseException) -> bool:
    """SQLITE_FULL: the journal's file system has no space (or `max_page_count` was reached)."""
    code = getattr(e, "sqlite_errorcode", None)
    return isinstance(e, sqlite3.OperationalError) and (
        code == sqlite3.SQLITE_FULL or (code is None and "database or disk is full" in str(e))
    )
