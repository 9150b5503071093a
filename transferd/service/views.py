"""Read-only journal queries shared by the metrics collector (at scrape time) and `transferd status`.

Each function takes a `sqlite3.Connection` (the journal's reader) and returns plain values; nothing here
writes. The state lists mirror the CHECK constraints in `transferd.journal.schema`, so gauges exist (as 0)
before the first row reaches a state and dashboards never show gaps.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from transferd.discovery.identity import HOLD_REASONS

RUN_STATES = ("ready", "uploading", "uploaded", "assigned", "done", "failed")
SAMPLE_STATES = ("pending", "uploading", "uploaded", "assigning", "assigned", "failed")
OBJECT_STATES = ("pending", "uploading", "completing", "done", "failed")
DOWNLOAD_STATES = ("pending", "partial", "done", "failed")
MIRROR_SAMPLE_STATES = ("pending", "done", "archived", "restoring", "failed", "skipped")

# table -> the states it may hold
TABLE_STATES: dict[str, tuple[str, ...]] = {
    "runs": RUN_STATES,
    "samples": SAMPLE_STATES,
    "objects": OBJECT_STATES,
    "downloads": DOWNLOAD_STATES,
    "mirror_samples": MIRROR_SAMPLE_STATES,
}


@dataclass(frozen=True, slots=True)
class Overview:
    """Rows per state for every stateful table, and the bytes still to move each way."""

    counts: dict[str, dict[str, int]]  # table -> state -> rows
    upload_backlog_bytes: int
    download_backlog_bytes: int
    held: dict[str, int] = field(default_factory=dict)  # open holds by reason (every reason, 0 included)
    # completed_at of the oldest run not yet done or failed (None: none): a run stuck for hours must page someone
    oldest_unfinished_run_at: float | None = None


def state_counts(conn: sqlite3.Connection, table: str) -> dict[str, int]:
    known = TABLE_STATES[table]  # also guards the f-string: only known table names get here
    out = dict.fromkeys(known, 0)
    for state, n in conn.execute(f"SELECT state, COUNT(*) FROM {table} GROUP BY state"):
        out[state] = n
    return out


def overview(conn: sqlite3.Connection) -> Overview:
    counts = {table: state_counts(conn, table) for table in TABLE_STATES}
    (upload_backlog,) = conn.execute(
        """SELECT COALESCE(SUM(o.size), 0)
                  - COALESCE((SELECT SUM(p.size) FROM parts p JOIN objects q ON q.id = p.object_id
                              WHERE q.state IN ('pending', 'uploading', 'completing')), 0)
           FROM objects o WHERE o.state IN ('pending', 'uploading', 'completing')"""
    ).fetchone()
    (download_backlog,) = conn.execute(
        """SELECT COALESCE(SUM(MAX(COALESCE(size, 0) - bytes_done, 0)), 0)
           FROM downloads WHERE state IN ('pending', 'partial')"""
    ).fetchone()
    # Through the samples still at work (the samples_state index: few rows at any time). Runs without sample rows
    # (only held duplicates, or nothing to upload) are TransferdSamplesHeld's or their error's business.
    (oldest_run,) = conn.execute(
        """SELECT MIN(r.completed_at) FROM samples s JOIN runs r ON r.id = s.run_id
           WHERE s.state IN ('pending', 'uploading', 'uploaded', 'assigning') AND r.state NOT IN ('done', 'failed')"""
    ).fetchone()
    backlogs = max(int(upload_backlog), 0), int(download_backlog)
    return Overview(counts, *backlogs, held_counts(conn), oldest_unfinished_run_at=oldest_run)


def _has_holds(conn: sqlite3.Connection) -> bool:
    """A journal not yet migrated to schema 2 (status beside an older daemon) has no holds table."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'holds'").fetchone() is not None


def held_counts(conn: sqlite3.Connection) -> dict[str, int]:
    out = dict.fromkeys(HOLD_REASONS, 0)
    if _has_holds(conn):
        for reason, n in conn.execute("SELECT reason, COUNT(*) FROM holds WHERE released IS NULL GROUP BY reason"):
            out[reason] = n
    return out


@dataclass(frozen=True, slots=True)
class HeldRow:
    """A held sample: nothing more happens to it until `transferd requeue` (docs/IDENTITY.md)."""

    run: str
    sample: str  # gncv folder/client_id
    reason: str
    problem: str
    since: float


def held(conn: sqlite3.Connection, limit: int = 1000) -> list[HeldRow]:
    """Open holds, newest first: each is something an operator must decide, so all are listed."""
    if not _has_holds(conn):
        return []
    rows = conn.execute(
        """SELECT r.path, h.folder, h.client_id, h.reason, h.problem, h.since FROM holds h
           JOIN runs r ON r.id = h.run_id WHERE h.released IS NULL ORDER BY h.id DESC LIMIT ?""",
        (limit,),
    ).fetchall()
    return [HeldRow(r["path"], f"{r['folder']}/{r['client_id']}", r["reason"], r["problem"], r["since"]) for r in rows]


@dataclass(frozen=True, slots=True)
class RunRow:
    name: str
    analysis: str
    watch: str
    state: str
    completed_at: float
    done_at: float | None
    samples: int
    samples_assigned: int
    error: str | None


@dataclass(frozen=True, slots=True)
class InFlight:
    kind: str  # "upload" | "download"
    what: str  # destination path or local file
    state: str
    done_bytes: int
    total_bytes: int
    attempts: int
    updated: float


@dataclass(frozen=True, slots=True)
class EventRow:
    ts: float
    level: str
    stage: str
    subject: str | None
    message: str


def recent_runs(conn: sqlite3.Connection, limit: int = 20) -> list[RunRow]:
    rows = conn.execute(
        """SELECT r.name, r.analysis, r.watch, r.state, r.completed_at, r.done_at, r.error,
                  COUNT(s.id) AS n, SUM(s.state = 'assigned') AS a
           FROM runs r LEFT JOIN samples s ON s.run_id = r.id
           GROUP BY r.id ORDER BY r.completed_at DESC, r.id DESC LIMIT ?""",
        (limit,),
    ).fetchall()
    return [
        RunRow(r["name"], r["analysis"], r["watch"], r["state"], r["completed_at"], r["done_at"],
               r["n"], r["a"] or 0, r["error"])
        for r in rows
    ]  # fmt: skip


def in_flight(conn: sqlite3.Connection, limit: int = 50) -> list[InFlight]:
    ups = conn.execute(
        """SELECT o.destination_path, o.state, o.size, o.attempts, o.updated,
                  COALESCE((SELECT SUM(p.size) FROM parts p WHERE p.object_id = o.id), 0) AS done
           FROM objects o WHERE o.state IN ('uploading', 'completing')
           ORDER BY o.updated DESC LIMIT ?""",
        (limit,),
    ).fetchall()
    downs = conn.execute(
        """SELECT dest_path, state, COALESCE(size, 0) AS size, bytes_done, updated FROM downloads
           WHERE state = 'partial' ORDER BY updated DESC LIMIT ?""",
        (limit,),
    ).fetchall()
    return [
        InFlight("upload", r["destination_path"], r["state"], r["done"], r["size"], r["attempts"], r["updated"])
        for r in ups
    ] + [InFlight("download", r["dest_path"], r["state"], r["bytes_done"], r["size"], 0, r["updated"]) for r in downs]


def last_events(conn: sqlite3.Connection, limit: int = 10) -> list[EventRow]:
    """The latest warnings and errors (the events table also holds informational rows)."""
    rows = conn.execute(
        """SELECT ts, level, stage, subject, message FROM events
           WHERE lower(level) NOT IN ('debug', 'info') ORDER BY id DESC LIMIT ?""",
        (limit,),
    ).fetchall()
    return [EventRow(r["ts"], r["level"], r["stage"], r["subject"], r["message"]) for r in rows]
