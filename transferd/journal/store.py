"""The SQLite (WAL) store: one writer connection owned by one thread, one transaction per call.

Every query function in this package takes a `sqlite3.Connection` as its first argument and is run as exactly
one transaction by `Journal.call` (synchronously, for the CLI) or `await Journal.run` (in the journal's own
thread, so the event loop never waits on SQLite). Readers for scrapes and `status` use a separate connection,
which WAL lets run beside the writer.

An exclusive lock file next to the database keeps a second daemon off the same journal. At open the file is
checked (integrity.py): a damaged or emptied journal is refused with the steps to recover it.

A write that fails because the disk is full (SQLITE_FULL) is not an error: the transaction is rolled back and
tried again with backoff until space returns, so work pauses instead of the daemon exiting; meanwhile
`full_since` is set, readiness is red and `transferd_journal_full` is 1.

Every text the writer connection stores has the registered secrets masked (`transferd.log.mask_secrets`), and
event messages are redacted whole (`redact`): error texts come from API answers, exceptions and URLs, and
whichever query module writes one, no secret reaches a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from transferd.errors import TransferdError
from transferd.journal.integrity import damaged, is_damaged, is_full, quick_check, read_tables, refuse_emptied
from transferd.journal.schema import MIGRATIONS, SCHEMA_VERSION
from transferd.log import event, mask_secrets, redact

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger(__name__)
FULL_WAIT_FIRST, FULL_WAIT_MAX = 0.5, 30.0  # backoff while the journal's disk is full
PROBE_WAIT = 5.0  # readiness waits this long for a running transaction, then reports the journal busy


class JournalLocked(TransferdError):
    pass


class _RedactingConnection(sqlite3.Connection):
    """The writer's connection: the one place text enters the journal, so the one place it is redacted."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return super().execute(sql, _redacted(parameters))

    def executemany(self, sql: str, seq: Any, /) -> sqlite3.Cursor:
        return super().executemany(sql, (_redacted(p) for p in seq))


def _redacted(params: Any) -> Any:
    if isinstance(params, dict):
        return {k: _text(v) for k, v in params.items()}
    return tuple(_text(v) for v in params)


def _text(v: Any) -> Any:
    # Registered secrets only: the credential shapes `redact` also masks could alter a path or an id used as a key.
    return mask_secrets(v) if isinstance(v, str) else v


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    factory = sqlite3.Connection if readonly else _RedactingConnection
    conn = sqlite3.connect(
        uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10, factory=factory
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL survives process crashes; S3's ListParts remains the truth for parts after a power loss.
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class Journal:
    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._reader_mutex = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self.full_since: float | None = None  # unix time of the first write refused for want of space
        self._closing = threading.Event()  # ends a wait for space at shutdown

    # -- lifecycle ------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], exclusive: bool = True, new: bool = False) -> Journal:
        """Open (creating and migrating) the journal. `exclusive` takes the daemon lock; `new` accepts an
        emptied (0-byte) file as a new journal (`--new-journal`). A damaged file raises `JournalDamaged`."""
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TransferdError(f"journal {p}: cannot create its folder: {e.strerror}") from None
        lock_fd = _take_lock(p) if exclusive else None
        conn: sqlite3.Connection | None = None
        try:
            refuse_emptied(p, new)
            conn = _connect(p)
            quick_check(conn, p)
            _migrate(conn, p)
        except BaseException as e:
            if conn is not None:
                conn.close()
            if lock_fd is not None:
                os.close(lock_fd)
            if is_damaged(e):
                raise damaged(p, e) from None
            if isinstance(e, sqlite3.Error):
                raise TransferdError(f"journal {p}: {e}") from None
            raise
        return cls(p, conn, lock_fd)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> Journal:
        """For `status` beside a running daemon: no lock, no migration, no writes."""
        p = Path(path)
        if not p.exists():
            raise TransferdError(f"journal {p} does not exist (has the daemon run yet?)")
        refuse_emptied(p, new=False)
        try:
            conn = _connect(p, readonly=True)
        except sqlite3.Error as e:
            raise (damaged(p, e) if is_damaged(e) else TransferdError(f"journal {p}: {e}")) from None
        try:
            quick_check(conn, p)
        except BaseException:
            conn.close()
            raise
        return cls(p, conn, None)

    def close(self) -> None:
        self._closing.set()
        self._executor.shutdown(wait=True)
        with self._mutex:
            self._conn.close()
        if self._reader is not None:
            self._reader.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------------------
    def call(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Run `fn(conn, ...)` as one transaction (BEGIN IMMEDIATE ... COMMIT), here and now. While the disk is
        full the transaction is rolled back and run again until it commits (or the journal closes)."""
        with self._mutex:
            delay = FULL_WAIT_FIRST
            while True:
                try:
                    result = self._transaction(fn, *args, **kw)
                except sqlite3.OperationalError as e:
                    if not is_full(e) or self._closing.is_set():
                        raise
                    self._paused(e)
                    if self._closing.wait(delay):
                        raise
                    delay = min(delay * 2, FULL_WAIT_MAX)
                    continue
                if self.full_since is not None:
                    event(log, "journal.resumed", journal=str(self.path), paused=round(time.time() - self.full_since))
                    self.full_since = None
                return result

    def _transaction(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs) -> T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args, **kw)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL does)
                conn.execute("ROLLBACK")
            raise
        return result

    def _paused(self, e: sqlite3.Error) -> None:
        if self.full_since is None:
            self.full_since = time.time()
            event(
                log, "journal.full", logging.WARNING, journal=str(self.path), error=str(e),
                action="free space on the journal's file system; work is paused and resumes by itself",
            )  # fmt: skip

    async def run(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """`call` on the journal's own thread, awaited from the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.call(fn, *args, **kw))

    def read(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Run a read-only `fn(conn, ...)` on the reader connection (safe from any thread, never blocks writers)."""
        with self._reader_mutex:
            if self._reader is None:
                self._reader = _connect(self.path, readonly=True)
            return fn(self._reader, *args, **kw)

    def writable(self) -> bool:
        """For /readyz: can we read every table and commit a transaction right now?"""
        return self.problem() is None

    def problem(self) -> str | None:
        """What keeps the journal from working now (None: nothing). Never waits for space."""
        if self.full_since is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.full_since))
            return f"{self.path}: disk full since {since}; work is paused until space returns"
        if not self._mutex.acquire(timeout=PROBE_WAIT):
            return f"{self.path}: busy, a transaction has run for more than {PROBE_WAIT:g}s"
        try:
            self._transaction(read_tables)
        except sqlite3.Error as e:
            return f"{self.path}: cannot read its tables or commit: {e}"
        finally:
            self._mutex.release()
        return None


def _take_lock(p: Path) -> int:
    lock_path = p.with_name(p.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder else ""
        raise JournalLocked(
            f"journal {p} is in use by another transferd{who}; only one daemon may use a journal"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _migrate(conn: sqlite3.Connection, p: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise TransferdError(
            f"journal {p} has schema version {version}, newer than this transferd ({SCHEMA_VERSION}); upgrade transferd"
        )
    for v in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            _exec_script(conn, MIGRATIONS[v])
            conn.execute(f"PRAGMA user_version = {v + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _exec_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT our transaction first; run statement by statement instead
    # (complete_statement knows about comments and quotes, so a ';' in a comment does not split).
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip():
        raise sqlite3.ProgrammingError(f"incomplete statement in migration: {buf.strip()[:80]}")


def now() -> float:
    return time.time()


def log_event(conn: sqlite3.Connection, level: str, stage: str, subject: str | None, message: str) -> None:
    """Keep the last errors for `status`; the table is trimmed so it cannot grow without bound."""
    conn.execute(
        "INSERT INTO events (ts, level, stage, subject, message) VALUES (?, ?, ?, ?, ?)",
        (now(), level, stage, subject, redact(message)[:2000]),
    )
    conn.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - 1000")
