"""Held samples: what the journal will not upload or assign until an operator decides (docs/IDENTITY.md).

A hold is opened by ``uploads.record_run`` when a delivery's content says so (the same files as an earlier
delivery; a delivered sample whose files grew or changed) and released only by ``transferd requeue``:
dismissed (the earlier delivery stands; these very file versions are not held again) or as a new delivery.
One open hold per (run, client_id); a hold records what discovery saw, so requeue --as-new needs no rescan.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from transferd.discovery.identity import HoldReason
from transferd.discovery.models import SourceFile
from transferd.journal.store import log_event, now


@dataclass(frozen=True, slots=True)
class NewHold:
    """A hold opened (or whose problem changed) by one record_run: the caller logs it as a WARNING."""

    folder: str
    client_id: str
    reason: str
    problem: str


@dataclass(frozen=True, slots=True)
class HoldRow:
    id: int
    run_id: int
    run_path: str
    client_id: str
    sample_id: int | None
    reason: str
    problem: str
    earlier: str | None
    folder: str
    since: float


@dataclass(frozen=True, slots=True)
class Released:
    folder: str
    client_id: str
    run: str
    outcome: str  # "dismissed" | "as <new folder>"
    problem: str
    run_id: int  # the run the new sample went into (as_new), else the held one


def encode_reads(reads: Mapping[str, Sequence[SourceFile]]) -> str:
    return json.dumps({r: [[str(s.path), s.size, s.mtime_ns, s.inode] for s in srcs] for r, srcs in reads.items()})


def decode_reads(text: str) -> dict[str, tuple[SourceFile, ...]]:
    return {
        r: tuple(SourceFile(Path(p), int(size), int(mt), int(ino)) for p, size, mt, ino in srcs)
        for r, srcs in json.loads(text).items()
    }


def settled(conn: sqlite3.Connection, run_id: int, client_id: str, content: str) -> bool:
    """Already decided for these very file versions: held now, or released by an operator."""
    row = conn.execute(
        "SELECT 1 FROM holds WHERE run_id = ? AND client_id = ? AND content = ?", (run_id, client_id, content)
    ).fetchone()
    return row is not None


def hold(
    conn: sqlite3.Connection,
    *,
    run_id: int,
    client_id: str,
    sample_name: str,
    folder: str,
    project_id: str | None,
    metadata: str | None,
    reads: Mapping[str, Sequence[SourceFile]],
    content: str,
    reason: HoldReason,
    problem: str,
    sample_id: int | None = None,
    earlier: str | None = None,
) -> NewHold:
    """Open the sample's hold, or make its open hold say what is seen now."""
    t = now()
    conn.execute(
        "INSERT INTO holds (run_id, client_id, sample_id, reason, problem, earlier, sample_name, folder, project_id,"
        " metadata, reads, content, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (run_id, client_id) WHERE released IS NULL DO UPDATE SET reason = excluded.reason,"
        " problem = excluded.problem, earlier = excluded.earlier, reads = excluded.reads, content = excluded.content",
        (run_id, client_id, sample_id, reason.value, problem, earlier, sample_name, folder, project_id, metadata,
         encode_reads(reads), content, t),
    )  # fmt: skip
    log_event(conn, "warning", "upload", f"{folder}/{client_id}", f"held ({reason.value}): {problem}")
    return NewHold(folder, client_id, reason.value, problem)


def open_holds(conn: sqlite3.Connection, run_ids: Sequence[int] | None = None) -> list[HoldRow]:
    rows = conn.execute(
        "SELECT h.*, r.path AS run_path FROM holds h JOIN runs r ON r.id = h.run_id WHERE h.released IS NULL"
        " ORDER BY h.id"
    ).fetchall()
    wanted = None if run_ids is None else set(run_ids)
    out = []
    for r in rows:
        if wanted is None or r["run_id"] in wanted:
            out.append(
                HoldRow(
                    r["id"], r["run_id"], r["run_path"], r["client_id"], r["sample_id"], r["reason"], r["problem"],
                    r["earlier"], r["folder"], r["since"],
                )
            )
    return out


def first_seen_suffix(t: float) -> str:
    return time.strftime("@%Y%m%dT%H%M%SZ", time.gmtime(t))


def free_folder(conn: sqlite3.Connection, folder: str, t: float) -> str:
    """``folder`` if no sample uses it yet, else ``folder@<first seen, UTC>`` (then ``-2``, ``-3``...)."""
    candidate, n = folder, 1
    base = folder + first_seen_suffix(t)
    while conn.execute("SELECT 1 FROM samples WHERE folder = ? LIMIT 1", (candidate,)).fetchone() is not None:
        candidate = base if n == 1 else f"{base}-{n}"
        n += 1
    return candidate


def release(
    conn: sqlite3.Connection,
    run: str | None,
    client_id: str | None,
    as_new: bool,
    dry_run: bool,
    destination: Callable[[str, str, str], str],
) -> list[Released]:
    """Open holds of the run (path or name) / client_id (None = any) are released: dismissed (the earlier
    delivery stands; these file versions are not held again), or ``as_new``: recorded as a new sample under a
    folder no earlier delivery uses, uploaded and assigned like any other. ``destination(folder, client_id,
    read)`` names its objects."""
    rows = conn.execute(
        "SELECT h.*, r.path AS run_path, r.name AS run_name, r.watch, r.analysis, r.layout, r.completed_at"
        " FROM holds h JOIN runs r ON r.id = h.run_id WHERE h.released IS NULL"
        " AND (? IS NULL OR r.path = ? OR r.name = ?) AND (? IS NULL OR h.client_id = ?) ORDER BY h.id",
        (run, run, run, client_id, client_id),
    ).fetchall()
    t = now()
    out = []
    for h in rows:
        if not as_new:
            out.append(Released(h["folder"], h["client_id"], h["run_path"], "dismissed", h["problem"], h["run_id"]))
            if not dry_run:
                conn.execute("UPDATE holds SET released = ?, outcome = 'dismissed' WHERE id = ?", (t, h["id"]))
                log_event(conn, "info", "upload", f"{h['folder']}/{h['client_id']}", "hold dismissed by the operator")
            continue
        folder = free_folder(conn, h["folder"], t)
        if dry_run:
            out.append(Released(h["folder"], h["client_id"], h["run_path"], f"as {folder}", h["problem"], h["run_id"]))
            continue
        run_id = int(h["run_id"])
        taken = conn.execute("SELECT 1 FROM samples WHERE run_id = ? AND client_id = ?", (run_id, h["client_id"]))
        if taken.fetchone() is not None:  # the delivered sample is in that run: the new one gets a run row of its own
            cur = conn.execute(
                "INSERT INTO runs (watch, path, analysis, name, layout, state, completed_at, first_seen)"
                " VALUES (?, ?, ?, ?, ?, 'ready', ?, ?)",
                (h["watch"], f"{h['run_path']}#as-new-{h['id']}", h["analysis"], h["run_name"], h["layout"],
                 h["completed_at"], t),
            )  # fmt: skip
            run_id = int(cur.lastrowid or 0)
        cur = conn.execute(
            "INSERT INTO samples (run_id, client_id, sample_name, folder, project_id, metadata, state, created,"
            " updated, content) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (run_id, h["client_id"], h["sample_name"], folder, h["project_id"], h["metadata"], t, t, h["content"]),
        )
        sample_id = int(cur.lastrowid or 0)
        for read, sources in sorted(decode_reads(h["reads"]).items()):
            if sources:
                conn.execute(
                    "INSERT INTO objects (sample_id, read, destination_path, sources, size, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (sample_id, read, destination(folder, h["client_id"], read),
                     json.dumps([[str(s.path), s.size, s.mtime_ns, s.inode] for s in sources]),
                     sum(s.size for s in sources), t),
                )  # fmt: skip
        conn.execute("UPDATE holds SET released = ?, outcome = 'as-new' WHERE id = ?", (t, h["id"]))
        out.append(Released(h["folder"], h["client_id"], h["run_path"], f"as {folder}", h["problem"], run_id))
        log_event(conn, "info", "upload", f"{folder}/{h['client_id']}", "requeued as a new delivery by the operator")
    return out
