"""Journal queries of the upload side: runs, samples, objects, parts and assignments.

Every function takes the connection first and is run as one transaction by `Journal.call` / `Journal.run`.
Write order (schema.py): an object's S3 multipart id is stored before its first part; a part row only after S3
acknowledged the part; an assignment row `requested` before the POST and `done` after it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transferd.discovery.identity import HoldReason, compare, content_key
from transferd.discovery.models import SourceFile, version_fingerprint
from transferd.journal.holds import NewHold, Released, free_folder, hold, release, settled
from transferd.journal.store import log_event, now

if TYPE_CHECKING:
    from transferd.upload.plan import RunPlan, SamplePlan

# Sample states after which nothing more happens to it (uploaded is final only without a project).
FINAL_SAMPLE_STATES = ("assigned", "failed")
# Samples whose objects are all in S3: a change of their files after this is held, never uploaded over them.
DELIVERED_SAMPLE_STATES = ("uploaded", "assigning", "assigned")


@dataclass(frozen=True, slots=True)
class PartRow:
    number: int
    offset: int
    size: int
    etag: str
    checksum: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectRow:
    id: int
    sample_id: int
    read: str
    destination_path: str
    sources: tuple[SourceFile, ...]
    size: int
    upload_id: str | None
    bucket: str | None
    key: str | None
    s3_upload_id: str | None
    part_size: int | None
    state: str
    sha256: str | None
    etag: str | None
    error: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class AssignCandidate:
    """A sample whose reads are all uploaded and that has a project to go to."""

    sample_id: int
    run_id: int
    client_id: str
    folder: str
    project_id: str
    metadata: str | None
    state: str  # uploaded | assigning
    uploads: dict[str, str]  # read -> Gencove upload id
    assignment: str | None  # None | requested


@dataclass(frozen=True, slots=True)
class SampleProgress:
    """A sample's state after a step, with what the end-to-end clock needs."""

    sample_id: int
    state: str
    project_id: str | None
    completed_at: float  # when discovery found the run complete

    @property
    def final_ok(self) -> bool:
        return self.state == "assigned" or (self.state == "uploaded" and self.project_id is None)


@dataclass(frozen=True, slots=True)
class RecordResult:
    run_id: int
    new_run: bool
    new_samples: int
    failed_samples: int
    held: tuple[NewHold, ...] = ()  # holds opened (or changed) by this call
    replaced: int | None = None  # the earlier run at this path, when its path was reused for other files


@dataclass(frozen=True, slots=True)
class ObjectOutcome:
    read: str
    destination_path: str
    state: str
    size: int
    sha256: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class SampleOutcome:
    run_id: int
    run_name: str
    client_id: str
    folder: str
    project_id: str | None
    state: str
    error: str | None
    gencove_sample_id: str | None
    objects: tuple[ObjectOutcome, ...]

    @property
    def ok(self) -> bool:
        return self.state == "assigned" or (self.state == "uploaded" and self.project_id is None)


# -- encoding -------------------------------------------------------------------------------------------------
def encode_sources(sources: Iterable[SourceFile]) -> str:
    return json.dumps([[str(s.path), s.size, s.mtime_ns, s.inode] for s in sources])


def decode_sources(text: str) -> tuple[SourceFile, ...]:
    return tuple(SourceFile(Path(p), int(size), int(mtime), int(ino)) for p, size, mtime, ino in json.loads(text))


def gzip_checked_sources(conn: sqlite3.Connection, limit: int = 500_000) -> frozenset[int]:
    """``SourceFile.fingerprint()`` of the sources of recorded objects, newest first, at most ``limit`` files.

    Each passed discovery's gzip check when its sample was recorded (only ready samples get objects), so after a
    restart an unchanged file (same path, size, mtime, inode) need not be read again: without this the first
    scan re-reads every FASTQ still lying in the watch roots, fully for single-member gzip files."""
    out: set[int] = set()
    for (text,) in conn.execute("SELECT sources FROM objects ORDER BY id DESC"):
        for path, size, mtime_ns, inode in json.loads(text):
            out.add(version_fingerprint(path, int(size), int(mtime_ns), int(inode)))
        if len(out) >= limit:
            break
    return frozenset(out)


def _object(row: sqlite3.Row) -> ObjectRow:
    return ObjectRow(
        id=row["id"], sample_id=row["sample_id"], read=row["read"], destination_path=row["destination_path"],
        sources=decode_sources(row["sources"]), size=row["size"], upload_id=row["upload_id"],
        bucket=row["bucket"], key=row["key"], s3_upload_id=row["s3_upload_id"], part_size=row["part_size"],
        state=row["state"], sha256=row["sha256"], etag=row["etag"], error=row["error"], attempts=row["attempts"],
    )  # fmt: skip


# -- submit ---------------------------------------------------------------------------------------------------
# An object's error that starts with this: its sources could not be found when it failed (a share unmounted, a
# folder renamed, or really deleted). Such a sample is revived when discovery reports it ready again.
SOURCE_UNAVAILABLE = "source unavailable: "


def _revive_unavailable(conn: sqlite3.Connection, sample_id: int, destinations: Iterable[str], t: float) -> bool:
    """A failed sample whose failed objects all failed because their sources were unavailable, seen ready again:
    those objects go back to work keeping their multipart uploads (the engine checks the sources against the
    recorded versions, then resumes with ListParts, or starts the object again if they changed). False, and
    nothing changed, if the sample failed for another reason or its reads are not the ones recorded."""
    objs = conn.execute(
        "SELECT destination_path, state, error, upload_id FROM objects WHERE sample_id = ?", (sample_id,)
    ).fetchall()
    failed = [o for o in objs if o["state"] == "failed"]
    if not failed or not all((o["error"] or "").startswith(SOURCE_UNAVAILABLE) for o in failed):
        return False
    if {o["destination_path"] for o in objs} != set(destinations):
        return False
    conn.execute(
        "UPDATE objects SET state = CASE WHEN s3_upload_id IS NULL THEN 'pending' ELSE 'uploading' END,"
        " error = NULL, attempts = 0, updated = ? WHERE sample_id = ? AND state = 'failed'",
        (t, sample_id),
    )
    state = "uploading" if any(o["upload_id"] for o in objs) else "pending"
    conn.execute("UPDATE samples SET state = ?, error = NULL, updated = ? WHERE id = ?", (state, t, sample_id))
    return True


def _recorded_reads(conn: sqlite3.Connection, sample_id: int) -> dict[str, tuple[SourceFile, ...]]:
    return {
        o["read"]: decode_sources(o["sources"])
        for o in conn.execute("SELECT read, sources FROM objects WHERE sample_id = ?", (sample_id,))
    }


def _plan_reads(s: SamplePlan) -> dict[str, tuple[SourceFile, ...]]:
    return {o.read: o.sources for o in s.objects}


def _plan_key(s: SamplePlan) -> str:
    return content_key(f for o in s.objects for f in o.sources)


def _reused(conn: sqlite3.Connection, run_id: int, plan: RunPlan, keys: dict[str, str]) -> bool:
    """The run's path holds other data now: nothing discovery sees is a file version that was recorded there
    (a folder deleted and written again, a sequencer reusing a run name), and nothing is being uploaded.
    Content keys are lists of versions, so no object's sources need decoding (this runs at every rescan)."""
    recorded = dict(
        conn.execute("SELECT client_id, content FROM samples WHERE run_id = ? AND content IS NOT NULL", (run_id,))
    )
    if all(recorded.get(cid) == key for cid, key in keys.items()):
        return False  # nothing changed (every rescan of every run that is still on disk): no set building
    old = {v for content in recorded.values() for v in content.split(",")}
    new = {v for key in keys.values() if key for v in key.split(",")}
    if not old or not new or not old.isdisjoint(new):
        return False
    active = conn.execute(
        "SELECT 1 FROM objects o JOIN samples s ON s.id = o.sample_id WHERE s.run_id = ?"
        " AND o.state IN ('pending', 'uploading', 'completing') LIMIT 1",
        (run_id,),
    ).fetchone()
    return active is None


def sample_content(conn: sqlite3.Connection, sample_id: int) -> None:
    """Make the sample's content key what its objects' sources are (after the engine restarted an object)."""
    sources = [f for srcs in _recorded_reads(conn, sample_id).values() for f in srcs]
    conn.execute("UPDATE samples SET content = ? WHERE id = ?", (content_key(sources) if sources else None, sample_id))


def record_run(
    conn: sqlite3.Connection,
    plan: RunPlan,
    adopt_project: bool = False,
    renamed: Callable[[RunPlan, str], RunPlan] | None = None,
) -> RecordResult:
    """Record a complete run and its samples. A delivery is known by its content (docs/IDENTITY.md):

    - a known path whose files are all other versions than those recorded is a new delivery (``renamed(plan,
      folder_suffix)`` re-plans it under a folder no earlier delivery uses); the earlier run row keeps its
      history, its path suffixed with ``#<its id>``;
    - a new sample with the same files as a sample of another run is held (duplicate), not uploaded again;
    - a delivered sample (uploaded, assigning, assigned) whose files grew or changed is held;
    - anything else already known is left as it is, except a failed sample that discovery reports ready
      again: failed in discovery (no objects), or failed only because its sources were unavailable
      (SOURCE_UNAVAILABLE: the share or folder was away while it uploaded).

    ``adopt_project`` (the one-shot upload run again with a project): a sample uploaded earlier without a
    project takes the plan's project, so the assigner assigns it."""
    t = now()
    row = conn.execute(
        "SELECT id, folder_suffix FROM runs WHERE path = ? AND analysis = ?", (plan.path, plan.analysis)
    ).fetchone()
    keys = {s.client_id: _plan_key(s) for s in plan.samples if s.objects}
    replaced: int | None = None
    suffix = ""
    if row is not None and renamed is not None and _reused(conn, int(row["id"]), plan, keys):
        replaced = int(row["id"])
        conn.execute("UPDATE runs SET path = path || '#' || id WHERE id = ?", (replaced,))
        folder = plan.samples[0].folder if plan.samples else ""
        suffix = free_folder(conn, folder, t)[len(folder):]
        plan = renamed(plan, suffix)
        row = None
    elif row is not None and row["folder_suffix"] and renamed is not None:
        # A later delivery at a reused path: its samples seen ready later go to its folder too, never the first's.
        plan = renamed(plan, row["folder_suffix"])
    new_run = row is None
    if row is None:
        error = "; ".join(plan.problems) or None
        cur = conn.execute(
            "INSERT INTO runs (watch, path, analysis, name, layout, state, completed_at, error, first_seen,"
            " folder_suffix) VALUES (?, ?, ?, ?, ?, 'ready', ?, ?, ?, ?)",
            (plan.watch, plan.path, plan.analysis, plan.name, plan.layout, plan.completed_at, error, t, suffix),
        )
        run_id = int(cur.lastrowid or 0)
        if error:
            log_event(conn, "warning", "discovery", plan.path, f"run {plan.name}: {error}")
        if replaced is not None:
            conn.execute("UPDATE runs SET replaced_by = ? WHERE id = ?", (run_id, replaced))
            # Holds of the earlier delivery (files seen changing while the folder was written again) are moot.
            conn.execute(
                "UPDATE holds SET released = ?, outcome = 'dismissed' WHERE run_id = ? AND released IS NULL",
                (t, replaced),
            )
            log_event(conn, "warning", "discovery", plan.path,
                      f"path reused with other files: a new delivery under {plan.samples[0].folder}")  # fmt: skip
    else:
        run_id = int(row["id"])
    known = {
        r["client_id"]: r
        for r in conn.execute(
            "SELECT s.id, s.client_id, s.state, s.project_id, s.content,"
            " (SELECT COUNT(*) FROM objects o WHERE o.sample_id = s.id) AS n FROM samples s WHERE s.run_id = ?",
            (run_id,),
        )
    }
    new_samples = failed = 0
    held: list[NewHold] = []
    for s in plan.samples:
        old = known.get(s.client_id)
        if old is not None and old["state"] == "failed" and old["n"] > 0:
            if not s.problems and _revive_unavailable(conn, int(old["id"]), (o.destination_path for o in s.objects), t):
                log_event(conn, "info", "upload", f"{s.folder}/{s.client_id}", "sources are back; uploading again")
            continue
        # A sample that failed in discovery (no objects: e.g. still settling, or a truncated file that was
        # fixed) comes back when it is seen ready; anything else already known is left alone.
        revive = old is not None and old["state"] == "failed" and old["n"] == 0
        if old is not None and not revive:
            if adopt_project and s.project_id and old["state"] == "uploaded" and old["project_id"] is None:
                conn.execute(
                    "UPDATE samples SET project_id = ?, metadata = ?, updated = ? WHERE id = ?",
                    (s.project_id, s.metadata, t, old["id"]),
                )
                log_event(conn, "info", "upload", f"{s.folder}/{s.client_id}", f"to be assigned to {s.project_id}")
            content = keys.get(s.client_id, "")
            # Unchanged (the common case at every rescan) costs one string comparison.
            if content and content != old["content"] and old["state"] in DELIVERED_SAMPLE_STATES:
                change = compare(_recorded_reads(conn, int(old["id"])), _plan_reads(s))
                if change is not None and not settled(conn, run_id, s.client_id, content):
                    held.append(_hold(conn, run_id, s, content, change.reason, change.problem, int(old["id"])))
            continue
        content = keys.get(s.client_id, "")
        if s.objects and not s.problems:
            earlier = conn.execute(
                "SELECT s.folder, s.client_id, r.path FROM samples s JOIN runs r ON r.id = s.run_id"
                " WHERE s.content = ? AND s.run_id != ? ORDER BY s.id LIMIT 1",
                (content, run_id),
            ).fetchone()
            if earlier is not None:
                if not settled(conn, run_id, s.client_id, content):
                    first = f"{earlier['folder']}/{earlier['client_id']}"
                    problem = (
                        f"the same files as {first} (run {earlier['path']}), delivered earlier: not uploaded again"
                        " (renamed or moved folder?); `transferd requeue --as-new` uploads it anyway"
                    )
                    held.append(_hold(conn, run_id, s, content, HoldReason.DUPLICATE, problem, None, first))
                continue
        problems = list(s.problems)
        for o in s.objects:
            other = conn.execute(
                "SELECT r.path FROM objects o JOIN samples s ON s.id = o.sample_id JOIN runs r ON r.id = s.run_id"
                " WHERE o.destination_path = ?",
                (o.destination_path,),
            ).fetchone()
            if other is not None:
                problems.append(f"{o.destination_path} is already the destination of a sample of {other['path']}")
        error = "; ".join(problems) or None
        if old is not None:
            if error:
                conn.execute("UPDATE samples SET error = ?, updated = ? WHERE id = ?", (error[:2000], t, old["id"]))
                continue
            sample_id = int(old["id"])
            conn.execute(
                "UPDATE samples SET state = 'pending', error = NULL, content = ?, updated = ? WHERE id = ?",
                (content, t, sample_id),
            )
            log_event(conn, "info", "upload", f"{s.folder}/{s.client_id}", "sample is ready now; uploading")
        else:
            cur = conn.execute(
                "INSERT INTO samples (run_id, client_id, sample_name, folder, project_id, metadata, state, error,"
                " created, updated, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, s.client_id, s.sample_name, s.folder, s.project_id, s.metadata,
                 "failed" if error else "pending", error, t, t, content if s.objects and not error else None),
            )  # fmt: skip
            sample_id = int(cur.lastrowid or 0)
            known[s.client_id] = {"id": sample_id, "state": "x", "n": 1}
            new_samples += 1
            if error:
                failed += 1
                log_event(conn, "error", "upload", f"{s.folder}/{s.client_id}", error)
                continue
        for o in s.objects:
            conn.execute(
                "INSERT INTO objects (sample_id, read, destination_path, sources, size, updated)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (sample_id, o.read, o.destination_path, encode_sources(o.sources), o.size, t),
            )
    refresh_run(conn, run_id)
    return RecordResult(run_id, new_run, new_samples, failed, tuple(held), replaced)


def _hold(
    conn: sqlite3.Connection, run_id: int, s: SamplePlan, content: str, reason: HoldReason, problem: str,
    sample_id: int | None, earlier: str | None = None,
) -> NewHold:  # fmt: skip
    return hold(
        conn, run_id=run_id, client_id=s.client_id, sample_name=s.sample_name, folder=s.folder,
        project_id=s.project_id, metadata=s.metadata, reads=_plan_reads(s), content=content, reason=reason,
        problem=problem, sample_id=sample_id, earlier=earlier,
    )  # fmt: skip


# -- objects --------------------------------------------------------------------------------------------------
def next_objects(conn: sqlite3.Connection, exclude: Sequence[int], limit: int) -> list[ObjectRow]:
    """Objects with work left (including work of an earlier process), in-progress ones first."""
    if limit <= 0:
        return []
    marks = ",".join("?" * len(exclude)) or "-1"  # NOT IN (NULL) is never true; ids are positive
    rows = conn.execute(
        f"SELECT o.* FROM objects o JOIN samples s ON s.id = o.sample_id"
        f" WHERE o.state IN ('pending', 'uploading', 'completing') AND s.state != 'failed'"
        f" AND o.id NOT IN ({marks})"
        f" ORDER BY CASE o.state WHEN 'pending' THEN 1 ELSE 0 END, o.sample_id, o.read LIMIT ?",
        (*exclude, limit),
    ).fetchall()
    return [_object(r) for r in rows]


def count_pending_objects(conn: sqlite3.Connection) -> int:
    return int(
        conn.execute(
            "SELECT COUNT(*) FROM objects o JOIN samples s ON s.id = o.sample_id"
            " WHERE o.state IN ('pending', 'uploading', 'completing') AND s.state != 'failed'"
        ).fetchone()[0]
    )


def get_object(conn: sqlite3.Connection, object_id: int) -> ObjectRow:
    return _object(conn.execute("SELECT * FROM objects WHERE id = ?", (object_id,)).fetchone())


def set_slot(conn: sqlite3.Connection, object_id: int, upload_id: str, bucket: str, key: str) -> None:
    """The Gencove upload for the object's gncv path; the object's sample and run are now uploading."""
    t = now()
    conn.execute(
        "UPDATE objects SET upload_id = ?, bucket = ?, key = ?, updated = ? WHERE id = ?",
        (upload_id, bucket, key, t, object_id),
    )
    sample_id, run_id = _sample_of(conn, object_id)
    conn.execute(
        "UPDATE samples SET state = 'uploading', updated = ? WHERE id = ? AND state = 'pending'", (t, sample_id)
    )
    conn.execute("UPDATE runs SET state = 'uploading' WHERE id = ? AND state = 'ready'", (run_id,))


def start_multipart(conn: sqlite3.Connection, object_id: int, s3_upload_id: str, part_size: int) -> None:
    """Stored before the first part is sent, so a crash can always find (and resume or abort) it."""
    conn.execute(
        "UPDATE objects SET s3_upload_id = ?, part_size = ?, state = 'uploading', updated = ? WHERE id = ?",
        (s3_upload_id, part_size, now(), object_id),
    )
    conn.execute("DELETE FROM parts WHERE object_id = ?", (object_id,))


def start_put(conn: sqlite3.Connection, object_id: int) -> None:
    """The object goes as one PutObject: nothing to resume if we die during it (S3 never shows half a PUT)."""
    conn.execute(
        "UPDATE objects SET s3_upload_id = NULL, part_size = NULL, state = 'uploading', updated = ? WHERE id = ?",
        (now(), object_id),
    )
    conn.execute("DELETE FROM parts WHERE object_id = ?", (object_id,))


def record_part(conn: sqlite3.Connection, object_id: int, part: PartRow) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO parts (object_id, part_number, offset, size, etag, checksum, done)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (object_id, part.number, part.offset, part.size, part.etag, part.checksum, now()),
    )


def parts_of(conn: sqlite3.Connection, object_id: int) -> dict[int, PartRow]:
    rows = conn.execute(
        "SELECT part_number, offset, size, etag, checksum FROM parts WHERE object_id = ? ORDER BY part_number",
        (object_id,),
    )
    return {r[0]: PartRow(r[0], r[1], r[2], r[3], r[4]) for r in rows}


def replace_parts(conn: sqlite3.Connection, object_id: int, parts: Iterable[PartRow]) -> None:
    """Make the journal's parts what S3 says they are (after ListParts on resume)."""
    conn.execute("DELETE FROM parts WHERE object_id = ?", (object_id,))
    for p in parts:
        record_part(conn, object_id, p)


def reset_object(
    conn: sqlite3.Connection, object_id: int, reason: str, sources: Sequence[SourceFile] | None = None
) -> None:
    """Start the object again from nothing (multipart upload gone or a source changed)."""
    obj = get_object(conn, object_id)
    new_sources = tuple(sources) if sources is not None else obj.sources
    conn.execute("DELETE FROM parts WHERE object_id = ?", (object_id,))
    conn.execute(
        "UPDATE objects SET s3_upload_id = NULL, part_size = NULL, state = 'pending', sha256 = NULL, etag = NULL,"
        " sources = ?, size = ?, attempts = attempts + 1, updated = ? WHERE id = ?",
        (encode_sources(new_sources), sum(s.size for s in new_sources), now(), object_id),
    )
    sample_content(conn, obj.sample_id)
    log_event(conn, "warning", "upload", obj.destination_path, f"starting the object again: {reason}")


def set_completing(conn: sqlite3.Connection, object_id: int) -> None:
    conn.execute("UPDATE objects SET state = 'completing', updated = ? WHERE id = ?", (now(), object_id))


def finish_object(conn: sqlite3.Connection, object_id: int, sha256: str | None, etag: str | None) -> SampleProgress:
    """The object is in S3 and verified. Returns its sample's state afterwards ('uploaded' once all are)."""
    t = now()
    conn.execute(
        "UPDATE objects SET state = 'done', sha256 = COALESCE(?, sha256), etag = COALESCE(?, etag), error = NULL,"
        " updated = ? WHERE id = ?",
        (sha256, etag, t, object_id),
    )
    sample_id, run_id = _sample_of(conn, object_id)
    left = conn.execute(
        "SELECT COUNT(*) FROM objects WHERE sample_id = ? AND state != 'done'", (sample_id,)
    ).fetchone()[0]
    if left == 0:
        conn.execute(
            "UPDATE samples SET state = 'uploaded', updated = ? WHERE id = ? AND state IN ('pending', 'uploading')",
            (t, sample_id),
        )
    refresh_run(conn, run_id)
    return _progress(conn, sample_id)


def fail_object(conn: sqlite3.Connection, object_id: int, error: str) -> None:
    """The object cannot be uploaded; its sample fails with the reason, the rest goes on."""
    obj = get_object(conn, object_id)
    t = now()
    conn.execute("UPDATE objects SET state = 'failed', error = ?, updated = ? WHERE id = ?", (error, t, object_id))
    sample_id, _ = _sample_of(conn, object_id)
    fail_sample(conn, sample_id, f"{obj.destination_path}: {error}")


# -- samples and assignment -----------------------------------------------------------------------------------
def fail_sample(conn: sqlite3.Connection, sample_id: int, error: str) -> None:
    row = conn.execute("SELECT run_id, folder, client_id FROM samples WHERE id = ?", (sample_id,)).fetchone()
    conn.execute(
        "UPDATE samples SET state = 'failed', error = ?, updated = ? WHERE id = ?", (error[:2000], now(), sample_id)
    )
    log_event(conn, "error", "upload", f"{row['folder']}/{row['client_id']}", error)
    refresh_run(conn, int(row["run_id"]))


@dataclass(frozen=True, slots=True)
class Requeued:
    folder: str
    client_id: str
    run: str
    outcome: str  # "uploading" | "assigning" | "skipped: <why>"
    error: str  # what it had failed with


def release_holds(
    conn: sqlite3.Connection,
    run: str | None,
    client_id: str | None,
    as_new: bool,
    dry_run: bool,
    destination: Callable[[str, str, str], str],
) -> list[Released]:
    """``holds.release``, then the runs it touched are brought up to date."""
    out = release(conn, run, client_id, as_new, dry_run, destination)
    if not dry_run:
        for run_id in {r.run_id for r in out}:
            refresh_run(conn, run_id)
    return out


def requeue_failed(
    conn: sqlite3.Connection, run: str | None = None, client_id: str | None = None, dry_run: bool = False
) -> list[Requeued]:
    """Failed samples (of the run whose path or name is `run`, with this `client_id`; None = any) go back to
    work: failed objects to `pending` (keeping their multipart uploads, which the engine checks with
    ListParts), samples whose objects are all done back to assignment (the sheet is checked before any POST).
    A sample that failed in discovery (no objects) is not touched: it comes back when its files are seen ready."""
    rows = conn.execute(
        "SELECT s.id, s.run_id, s.folder, s.client_id, s.error, r.path FROM samples s JOIN runs r ON r.id = s.run_id"
        " WHERE s.state = 'failed' AND (? IS NULL OR r.path = ? OR r.name = ?) AND (? IS NULL OR s.client_id = ?)"
        " ORDER BY s.id",
        (run, run, run, client_id, client_id),
    ).fetchall()
    out = []
    t = now()
    for r in rows:
        objects = conn.execute("SELECT state FROM objects WHERE sample_id = ?", (r["id"],)).fetchall()
        if not objects:
            why = "skipped: failed in discovery; it is uploaded once its files are seen ready again"
            out.append(Requeued(r["folder"], r["client_id"], r["path"], why, r["error"] or ""))
            continue
        all_done = all(o["state"] == "done" for o in objects)
        state = "uploaded" if all_done else "uploading"
        out.append(Requeued(r["folder"], r["client_id"], r["path"], "assigning" if all_done else "uploading",
                            r["error"] or ""))  # fmt: skip
        if dry_run:
            continue
        conn.execute(
            "UPDATE objects SET state = CASE WHEN s3_upload_id IS NULL THEN 'pending' ELSE 'uploading' END,"
            " error = NULL, attempts = 0, updated = ? WHERE sample_id = ? AND state = 'failed'",
            (t, r["id"]),
        )
        conn.execute("UPDATE samples SET state = ?, error = NULL, updated = ? WHERE id = ?", (state, t, r["id"]))
        log_event(conn, "info", "upload", f"{r['folder']}/{r['client_id']}", "requeued by the operator")
        refresh_run(conn, int(r["run_id"]))
    return out


def assign_candidates(conn: sqlite3.Connection) -> list[AssignCandidate]:
    rows = conn.execute(
        "SELECT s.id, s.run_id, s.client_id, s.folder, s.project_id, s.metadata, s.state, a.state AS assignment"
        " FROM samples s LEFT JOIN assignments a ON a.sample_id = s.id"
        " WHERE s.state IN ('uploaded', 'assigning') AND s.project_id IS NOT NULL ORDER BY s.id"
    ).fetchall()
    out = []
    for r in rows:
        uploads = {
            o["read"]: o["upload_id"]
            for o in conn.execute("SELECT read, upload_id FROM objects WHERE sample_id = ?", (r["id"],))
        }
        out.append(
            AssignCandidate(
                sample_id=r["id"],
                run_id=r["run_id"],
                client_id=r["client_id"],
                folder=r["folder"],
                project_id=r["project_id"],
                metadata=r["metadata"],
                state=r["state"],
                uploads=uploads,
                assignment=r["assignment"],
            )
        )
    return out


def mark_requested(conn: sqlite3.Connection, sample_ids: Sequence[int], project_id: str) -> None:
    """Written BEFORE the assignment POST: after a crash a `requested` row means 'check the sheet first'."""
    t = now()
    for sid in sample_ids:
        conn.execute(
            "INSERT OR REPLACE INTO assignments (sample_id, project_id, state, requested)"
            " VALUES (?, ?, 'requested', ?)",
            (sid, project_id, t),
        )
        conn.execute("UPDATE samples SET state = 'assigning', updated = ? WHERE id = ?", (t, sid))


def mark_assigned(conn: sqlite3.Connection, sample_id: int, gencove_sample_id: str | None) -> SampleProgress:
    t = now()
    row = conn.execute("SELECT run_id, project_id FROM samples WHERE id = ?", (sample_id,)).fetchone()
    conn.execute(
        "INSERT INTO assignments (sample_id, project_id, state, requested, done, gencove_sample_id)"
        " VALUES (?, ?, 'done', ?, ?, ?) ON CONFLICT (sample_id) DO UPDATE SET state = 'done', done = excluded.done,"
        " gencove_sample_id = COALESCE(excluded.gencove_sample_id, assignments.gencove_sample_id)",
        (sample_id, row["project_id"], t, t, gencove_sample_id),
    )
    conn.execute(
        "UPDATE samples SET state = 'assigned', error = NULL, gencove_sample_id = COALESCE(?, gencove_sample_id),"
        " updated = ? WHERE id = ?",
        (gencove_sample_id, t, sample_id),
    )
    refresh_run(conn, int(row["run_id"]))
    return _progress(conn, sample_id)


def mark_assigned_many(conn: sqlite3.Connection, done: Sequence[tuple[int, str | None]]) -> list[SampleProgress]:
    """`mark_assigned` for a whole batch in one transaction."""
    return [mark_assigned(conn, sid, gid) for sid, gid in done]


def clear_requested(conn: sqlite3.Connection, sample_ids: Sequence[int]) -> None:
    """The POST is known not to have assigned these (a definite refusal): forget the request."""
    for sid in sample_ids:
        conn.execute("DELETE FROM assignments WHERE sample_id = ? AND state = 'requested'", (sid,))


def _progress(conn: sqlite3.Connection, sample_id: int) -> SampleProgress:
    row = conn.execute(
        "SELECT s.state, s.project_id, r.completed_at FROM samples s JOIN runs r ON r.id = s.run_id WHERE s.id = ?",
        (sample_id,),
    ).fetchone()
    return SampleProgress(sample_id, row["state"], row["project_id"], float(row["completed_at"]))


# -- runs and reports -----------------------------------------------------------------------------------------
def _sample_of(conn: sqlite3.Connection, object_id: int) -> tuple[int, int]:
    row = conn.execute(
        "SELECT s.id, s.run_id FROM objects o JOIN samples s ON s.id = o.sample_id WHERE o.id = ?", (object_id,)
    ).fetchone()
    return int(row[0]), int(row[1])


def refresh_run(conn: sqlite3.Connection, run_id: int) -> str:
    """Derive a run's state from its samples: done/failed once every sample is final."""
    rows = conn.execute("SELECT state, project_id FROM samples WHERE run_id = ?", (run_id,)).fetchall()
    states = [r["state"] for r in rows]
    final = [s in FINAL_SAMPLE_STATES or (s == "uploaded" and p is None) for s, p in rows]
    failed = states.count("failed")
    if rows and all(final):
        state = "failed" if failed else "done"
        error = f"{failed} of {len(rows)} samples failed" if failed else None
        conn.execute(
            "UPDATE runs SET state = ?, done_at = COALESCE(done_at, ?), error = COALESCE(?, error) WHERE id = ?",
            (state, now(), error, run_id),
        )
        return state
    if any(s in ("pending", "uploading") for s in states):
        started = any(s != "pending" for s in states)
        state = "uploading" if started else "ready"
    elif rows:
        state = "uploaded"
    else:
        state = "ready"
    conn.execute("UPDATE runs SET state = ?, done_at = NULL WHERE id = ?", (state, run_id))
    return state


def run_ids_for(conn: sqlite3.Connection, paths: Sequence[tuple[str, str]]) -> list[int]:
    """Run ids of (path, analysis) pairs that are recorded."""
    ids = []
    for path, analysis in paths:
        row = conn.execute("SELECT id FROM runs WHERE path = ? AND analysis = ?", (path, analysis)).fetchone()
        if row is not None:
            ids.append(int(row[0]))
    return ids


@dataclass(frozen=True, slots=True)
class RunKey:
    run_id: int
    run_path: str
    analysis: str


def runs_by_id(conn: sqlite3.Connection, run_ids: Sequence[int]) -> list[RunKey]:
    rows = [conn.execute("SELECT id, path, analysis FROM runs WHERE id = ?", (i,)).fetchone() for i in run_ids]
    return [RunKey(int(r["id"]), r["path"], r["analysis"]) for r in rows if r is not None]


def outcomes(conn: sqlite3.Connection, run_ids: Sequence[int]) -> list[SampleOutcome]:
    out = []
    for run_id in run_ids:
        run = conn.execute("SELECT name FROM runs WHERE id = ?", (run_id,)).fetchone()
        for s in conn.execute("SELECT * FROM samples WHERE run_id = ? ORDER BY client_id", (run_id,)).fetchall():
            objs = tuple(
                ObjectOutcome(o["read"], o["destination_path"], o["state"], o["size"], o["sha256"], o["error"])
                for o in conn.execute("SELECT * FROM objects WHERE sample_id = ? ORDER BY read", (s["id"],))
            )
            out.append(
                SampleOutcome(
                    run_id=run_id,
                    run_name=run["name"],
                    client_id=s["client_id"],
                    folder=s["folder"],
                    project_id=s["project_id"],
                    state=s["state"],
                    error=s["error"],
                    gencove_sample_id=s["gencove_sample_id"],
                    objects=objs,
                )
            )
    return out


def unfinished_samples(conn: sqlite3.Connection, run_ids: Sequence[int]) -> int:
    """Samples of these runs that still have upload or assignment work left."""
    if not run_ids:
        return 0
    marks = ",".join("?" * len(run_ids))
    return int(
        conn.execute(
            f"SELECT COUNT(*) FROM samples WHERE run_id IN ({marks}) AND NOT (state IN ('assigned', 'failed')"
            f" OR (state = 'uploaded' AND project_id IS NULL))",
            tuple(run_ids),
        ).fetchone()[0]
    )


def remaining_bytes(conn: sqlite3.Connection, run_ids: Sequence[int]) -> int:
    """Bytes of the objects of these runs that are not uploaded yet (for a progress bar)."""
    if not run_ids:
        return 0
    marks = ",".join("?" * len(run_ids))
    return int(
        conn.execute(
            f"SELECT COALESCE(SUM(o.size), 0) FROM objects o JOIN samples s ON s.id = o.sample_id"
            f" WHERE s.run_id IN ({marks}) AND o.state IN ('pending', 'uploading', 'completing')"
            f" AND s.state != 'failed'",
            tuple(run_ids),
        ).fetchone()[0]
    )


def requested_at(conn: sqlite3.Connection, sample_ids: Sequence[int]) -> dict[int, float]:
    """When the `requested` assignment rows of these samples were written (wall clock), by sample id."""
    if not sample_ids:
        return {}
    marks = ",".join("?" * len(sample_ids))
    rows = conn.execute(
        f"SELECT sample_id, requested FROM assignments WHERE state = 'requested' AND sample_id IN ({marks})",
        tuple(sample_ids),
    )
    return {int(r["sample_id"]): float(r["requested"]) for r in rows}


def failed_since(conn: sqlite3.Connection, run_id: int, since: float) -> list[tuple[str, str]]:
    """(client_id, error) of the run's samples recorded as failed at or after `since` (wall clock)."""
    rows = conn.execute(
        "SELECT client_id, error FROM samples WHERE run_id = ? AND state = 'failed' AND created >= ? ORDER BY id",
        (run_id, since),
    )
    return [(r["client_id"], r["error"] or "") for r in rows]
