"""Journal queries of the download mirror: watermarks, per-sample and per-file state, webhook event ids.

Each function is one transaction (run it with `journal.call` / `await journal.run`). A file row is `partial`
while its `.part` grows and becomes `done` only after verification, fsync and the rename; its `mtime_ns` and
`size` then let a later cycle recognise the placed file without hashing it again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from transferd.journal.store import log_event, now

UNRESOLVED = ("pending", "failed", "restoring")
SETTLED = ("done", "archived", "skipped")  # re-examined only when the sample's `modified` changes
REPAIR = "repair: "  # error prefix of a done sample reopened because a file went missing or changed on disk
_CHUNK = 500  # SQLite's host-parameter limit is far above this; keep statements small anyway
WEBHOOK_EVENT_TTL = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class MirrorSampleRow:
    sample_id: str
    state: str
    modified: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DownloadRow:
    file_id: str
    sample_id: str
    dest_path: str
    size: int | None
    sha256: str | None
    verified: str | None
    state: str
    bytes_done: int
    mtime_ns: int | None
    error: str | None


# -- watermarks --------------------------------------------------------------------------------------------------
def get_watermark(conn: sqlite3.Connection, source: str) -> str | None:
    row = conn.execute("SELECT value FROM watermarks WHERE source = ?", (source,)).fetchone()
    return row["value"] if row else None


def set_watermark(conn: sqlite3.Connection, source: str, value: str) -> None:
    conn.execute(
        "INSERT INTO watermarks (source, value, updated) VALUES (?, ?, ?) "
        "ON CONFLICT (source) DO UPDATE SET value = excluded.value, updated = excluded.updated",
        (source, value, now()),
    )


# -- samples -----------------------------------------------------------------------------------------------------
def sample_rows(conn: sqlite3.Connection, source: str, sample_ids: Sequence[str]) -> dict[str, MirrorSampleRow]:
    out: dict[str, MirrorSampleRow] = {}
    for i in range(0, len(sample_ids), _CHUNK):
        chunk = list(sample_ids[i : i + _CHUNK])
        marks = ",".join("?" * len(chunk))
        for r in conn.execute(
            f"SELECT sample_id, state, modified, error FROM mirror_samples WHERE source = ? AND sample_id IN ({marks})",
            (source, *chunk),
        ):
            out[r["sample_id"]] = MirrorSampleRow(r["sample_id"], r["state"], r["modified"], r["error"])
    return out


def unresolved_samples(conn: sqlite3.Connection, source: str) -> list[MirrorSampleRow]:
    """Samples that still need work whatever the listing says (failed, half done, being restored)."""
    marks = ",".join("?" * len(UNRESOLVED))
    return [
        MirrorSampleRow(r["sample_id"], r["state"], r["modified"], r["error"])
        for r in conn.execute(
            f"SELECT sample_id, state, modified, error FROM mirror_samples WHERE source = ? AND state IN ({marks}) "
            "ORDER BY updated",
            (source, *UNRESOLVED),
        )
    ]


def mark_sample(
    conn: sqlite3.Connection,
    source: str,
    sample_id: str,
    *,
    state: str,
    client_id: str | None,
    modified: str | None,
    status: str | None,
    error: str | None = None,
    ready: bool = False,
) -> float | None:
    """Record a sample's state. Returns `ready_at` (when its deliverables were first seen ready)."""
    t = now()
    conn.execute(
        "INSERT INTO mirror_samples (source, sample_id, client_id, modified, status, state, error, ready_at, done_at, "
        "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (source, sample_id) DO UPDATE SET client_id = excluded.client_id, modified = excluded.modified, "
        "status = excluded.status, state = excluded.state, error = excluded.error, "
        "ready_at = COALESCE(mirror_samples.ready_at, excluded.ready_at), "
        "done_at = CASE WHEN excluded.state = 'done' THEN excluded.done_at ELSE mirror_samples.done_at END, "
        "updated = excluded.updated",
        (source, sample_id, client_id, modified, status, state, error, t if ready else None,
         t if state == "done" else None, t),
    )  # fmt: skip
    if error:
        log_event(conn, "error" if state == "failed" else "warning", "mirror", sample_id, error)
    row = conn.execute(
        "SELECT ready_at FROM mirror_samples WHERE source = ? AND sample_id = ?", (source, sample_id)
    ).fetchone()
    return row["ready_at"] if row else None


# -- files -------------------------------------------------------------------------------------------------------
def _download(r: sqlite3.Row) -> DownloadRow:
    return DownloadRow(
        r["file_id"], r["sample_id"], r["dest_path"], r["size"], r["sha256"], r["verified"], r["state"],
        r["bytes_done"], r["mtime_ns"], r["error"],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PlacedFile:
    id: int
    sample_id: str
    dest_path: str
    size: int | None
    mtime_ns: int | None


def placed_files(conn: sqlite3.Connection, source: str, after: int, limit: int) -> list[PlacedFile]:
    """Done files in id order after `after`, `limit` at a time (the recheck walks them page by page)."""
    return [
        PlacedFile(r["id"], r["sample_id"], r["dest_path"], r["size"], r["mtime_ns"])
        for r in conn.execute(
            "SELECT id, sample_id, dest_path, size, mtime_ns FROM downloads WHERE source = ? AND state = 'done' "
            "AND id > ? ORDER BY id LIMIT ?",
            (source, after, limit),
        )
    ]


def reopen_samples(conn: sqlite3.Connection, source: str, problems: dict[str, str]) -> int:
    """Done samples whose files are missing or changed on disk become owed again; returns how many."""
    n = 0
    for sample_id, problem in problems.items():
        cur = conn.execute(
            "UPDATE mirror_samples SET state = 'pending', error = ?, updated = ? "
            "WHERE source = ? AND sample_id = ? AND state = 'done'",
            (REPAIR + problem, now(), source, sample_id),
        )
        if cur.rowcount:
            n += 1
            log_event(conn, "warning", "mirror", sample_id, problem)
    return n


def file_row(conn: sqlite3.Connection, source: str, file_id: str) -> DownloadRow | None:
    r = conn.execute("SELECT * FROM downloads WHERE source = ? AND file_id = ?", (source, file_id)).fetchone()
    return _download(r) if r else None


def claim_file(
    conn: sqlite3.Connection,
    source: str,
    *,
    project_id: str,
    sample_id: str,
    client_id: str | None,
    file_id: str,
    file_type: str,
    dest_path: str,
    size: int | None,
    sha256: str | None,
) -> DownloadRow | None:
    """Make (source, file_id) the owner of `dest_path`, keeping its progress if nothing changed.

    Returns the row of another sample's file that already owns the path (a collision across samples), else
    None. A path held by an older file of the same sample (re-analysis gives new file ids) is taken over.
    """
    holder = conn.execute("SELECT * FROM downloads WHERE dest_path = ?", (dest_path,)).fetchone()
    if holder is not None and not (holder["source"] == source and holder["file_id"] == file_id):
        if holder["source"] != source or holder["sample_id"] != sample_id:
            return _download(holder)
        conn.execute("DELETE FROM downloads WHERE id = ?", (holder["id"],))
    current = file_row(conn, source, file_id)
    same = current is not None and current.dest_path == dest_path and current.sha256 == sha256 and current.size == size
    if same:
        return None
    conn.execute(
        "INSERT INTO downloads (source, project_id, sample_id, client_id, file_id, file_type, dest_path, size, sha256, "
        "verified, state, bytes_done, mtime_ns, error, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 'pending', 0, NULL, NULL, ?) "
        "ON CONFLICT (source, file_id) DO UPDATE SET project_id = excluded.project_id, "
        "sample_id = excluded.sample_id, client_id = excluded.client_id, file_type = excluded.file_type, "
        "dest_path = excluded.dest_path, size = excluded.size, sha256 = excluded.sha256, verified = NULL, "
        "state = 'pending', bytes_done = 0, mtime_ns = NULL, error = NULL, updated = excluded.updated",
        (source, project_id, sample_id, client_id, file_id, file_type, dest_path, size, sha256, now()),
    )
    return None


def path_owned(conn: sqlite3.Connection, dest_path: str) -> bool:
    """Whether some deliverable is (to be) placed at this path."""
    return conn.execute("SELECT 1 FROM downloads WHERE dest_path = ?", (dest_path,)).fetchone() is not None


def file_progress(conn: sqlite3.Connection, source: str, file_id: str, bytes_done: int) -> None:
    conn.execute(
        "UPDATE downloads SET state = 'partial', bytes_done = ?, error = NULL, updated = ? "
        "WHERE source = ? AND file_id = ?",
        (bytes_done, now(), source, file_id),
    )


def file_done(
    conn: sqlite3.Connection, source: str, file_id: str, *, size: int, sha256: str | None, verified: str, mtime_ns: int
) -> None:
    conn.execute(
        "UPDATE downloads SET state = 'done', size = ?, sha256 = COALESCE(?, sha256), verified = ?, bytes_done = ?, "
        "mtime_ns = ?, error = NULL, updated = ? WHERE source = ? AND file_id = ?",
        (size, sha256, verified, size, mtime_ns, now(), source, file_id),
    )


def file_failed(conn: sqlite3.Connection, source: str, file_id: str, error: str, *, bytes_done: int) -> None:
    conn.execute(
        "UPDATE downloads SET state = 'failed', error = ?, bytes_done = ?, updated = ? "
        "WHERE source = ? AND file_id = ?",
        (error[:2000], bytes_done, now(), source, file_id),
    )
    row = conn.execute("SELECT dest_path FROM downloads WHERE source = ? AND file_id = ?", (source, file_id)).fetchone()
    log_event(conn, "error", "mirror", row["dest_path"] if row else file_id, error)


def files_by_state(conn: sqlite3.Connection, source: str | None = None) -> dict[str, int]:
    """Counts per state (for `status` and tests)."""
    sql = "SELECT state, COUNT(*) AS n FROM downloads" + (" WHERE source = ?" if source else "") + " GROUP BY state"
    return {r["state"]: r["n"] for r in conn.execute(sql, (source,) if source else ())}


def note(conn: sqlite3.Connection, level: str, subject: str, message: str) -> None:
    """A mirror event for `status` (e.g. the destination paused or back)."""
    log_event(conn, level, "mirror", subject, message)


# -- webhook events ----------------------------------------------------------------------------------------------
def remember_events(conn: sqlite3.Connection, event_ids: Iterable[str]) -> list[str]:
    """Record event ids; returns those not seen before (in order). Old ids are forgotten after 30 days."""
    t = now()
    conn.execute("DELETE FROM webhook_events WHERE received < ?", (t - WEBHOOK_EVENT_TTL,))
    fresh: list[str] = []
    for event_id in event_ids:
        cur = conn.execute(
            "INSERT INTO webhook_events (event_id, received) VALUES (?, ?) ON CONFLICT (event_id) DO NOTHING",
            (event_id, t),
        )
        if cur.rowcount == 1:
            fresh.append(event_id)
    return fresh


def done_files(conn: sqlite3.Connection, sample_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(path, sha256) of the verified files of these samples (those checked by SHA-256)."""
    out: list[tuple[str, str]] = []
    for i in range(0, len(sample_ids), 500):
        chunk = list(sample_ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT dest_path, sha256 FROM downloads WHERE state = 'done' AND sha256 IS NOT NULL"
            f" AND sample_id IN ({marks}) ORDER BY dest_path",
            chunk,
        )
        out += [(r[0], r[1]) for r in rows]
    return out
