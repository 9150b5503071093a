"""The SQLite (WAL) store: one writer connection owned by one thread, one transaction per call.

Every query function in this package takes a `sqlite3.Connection` as its first argument and is run as exactly
one transaction by `Journal.call` (synchronously, for the CLI) or `await Journal.run` (in the journal's own
thread, so the event loop never waits on SQLite). Readers for scrapes and `status` use a separate connection,
which WAL lets run beside the writer.

An exclusive lock file next to the database keeps a second daemon off the same journal.

Every text the writer connection stores has the registered secrets masked (`transferd.log.mask_secrets`), and
event messages are redacted whole (`redact`): error texts come from API answers, exceptions and URLs, and
whichever query module writes one, no secret reaches a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from transferd.errors import TransferdError
from transferd.journal.schema import MIGRATIONS, SCHEMA_VERSION
from transferd.log import mask_secrets, redact

P = ParamSpec("P")
T = TypeVar("T")


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

    # -- lifecycle ------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], exclusive: bool = True) -> Journal:
        """Open (creating and migrating) the journal. `exclusive` takes the daemon lock."""
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TransferdError(f"journal {p}: cannot create its folder: {e.strerror}") from None
        lock_fd = _take_lock(p) if exclusive else None
        try:
            conn = _connect(p)
            _migrate(conn, p)
        except sqlite3.Error as e:
            if lock_fd is not None:
                os.close(lock_fd)
            raise TransferdError(f"journal {p}: {e}") from None
        return cls(p, conn, lock_fd)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> Journal:
        """For `status` beside a running daemon: no lock, no migration, no writes."""
        p = Path(path)
        if not p.exists():
            raise TransferdError(f"journal {p} does not exist (has the daemon run yet?)")
        return cls(p, _connect(p, readonly=True), None)

    def close(self) -> None:
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
        """Run `fn(conn, ...)` as one transaction (BEGIN IMMEDIATE ... COMMIT), here and now."""
        with self._mutex:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args, **kw)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

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
        """For /readyz: can we commit a transaction right now?"""
        try:
            self.call(lambda c: c.execute("UPDATE watermarks SET updated = updated WHERE 0"))
            return True
        except sqlite3.Error:
            return False


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
