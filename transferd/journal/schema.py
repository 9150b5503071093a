"""The journal's schema, versioned with `PRAGMA user_version`. Migrations only ever append.

Write order that makes every crash point recoverable (see docs/JOURNAL.md):
objects: pending -> (multipart id stored) uploading -> completing -> done; a part row is written only after
S3 acknowledged it; an assignment row is written as `requested` *before* the POST and becomes `done` after;
a download is written `partial` while its `.part` file grows and `done` only after fsync + rename.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # --- version 1 -------------------------------------------------------------------------------------------
    """
    CREATE TABLE runs (
        id           INTEGER PRIMARY KEY,
        watch        TEXT NOT NULL,                 -- watch root
        path         TEXT NOT NULL,                 -- run folder
        analysis     TEXT NOT NULL DEFAULT '',      -- NovaSeq X Analysis/<n>; '' = none
        name         TEXT NOT NULL,
        layout       TEXT,
        state        TEXT NOT NULL DEFAULT 'ready'
                     CHECK (state IN ('ready', 'uploading', 'uploaded', 'assigned', 'done', 'failed')),
        completed_at REAL NOT NULL,                 -- when discovery found it complete (end-to-end clock)
        done_at      REAL,
        error        TEXT,
        UNIQUE (path, analysis)
    );
    CREATE TABLE samples (
        id                INTEGER PRIMARY KEY,
        run_id            INTEGER NOT NULL REFERENCES runs(id),
        client_id         TEXT NOT NULL,
        sample_name       TEXT NOT NULL,
        folder            TEXT NOT NULL,            -- gncv://<destination>/<run>[/<analysis>]
        project_id        TEXT,                     -- assignment target; NULL = upload only
        metadata          TEXT,                     -- JSON for the assignment
        state             TEXT NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'uploading', 'uploaded', 'assigning', 'assigned', 'failed')),
        error             TEXT,
        gencove_sample_id TEXT,
        created           REAL NOT NULL,
        updated           REAL NOT NULL,
        UNIQUE (run_id, client_id)
    );
    CREATE TABLE objects (
        id               INTEGER PRIMARY KEY,
        sample_id        INTEGER NOT NULL REFERENCES samples(id),
        read             TEXT NOT NULL CHECK (read IN ('R1', 'R2')),
        destination_path TEXT NOT NULL UNIQUE,      -- gncv://.../<client_id>_R1.fastq.gz
        sources          TEXT NOT NULL,             -- JSON [[path, size, mtime_ns, inode], ...] in order
        size             INTEGER NOT NULL,          -- sum of the sources
        upload_id        TEXT,                      -- Gencove upload id
        bucket           TEXT,
        key              TEXT,
        s3_upload_id     TEXT,                      -- S3 multipart upload id, stored before the first part
        part_size        INTEGER,
        state            TEXT NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'uploading', 'completing', 'done', 'failed')),
        sha256           TEXT,                      -- whole object, computed in the single read pass
        etag             TEXT,
        error            TEXT,
        attempts         INTEGER NOT NULL DEFAULT 0,
        updated          REAL NOT NULL,
        UNIQUE (sample_id, read)
    );
    CREATE TABLE parts (
        object_id   INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
        part_number INTEGER NOT NULL,
        offset      INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        etag        TEXT NOT NULL,                  -- S3's ETag = md5 of the part
        checksum    TEXT,                           -- CRC32 (base64) that S3 verified, when used
        done        REAL NOT NULL,
        PRIMARY KEY (object_id, part_number)
    ) WITHOUT ROWID;
    CREATE TABLE assignments (
        sample_id         INTEGER PRIMARY KEY REFERENCES samples(id),
        project_id        TEXT NOT NULL,
        state             TEXT NOT NULL CHECK (state IN ('requested', 'done')),
        requested         REAL NOT NULL,
        done              REAL,
        gencove_sample_id TEXT
    );
    CREATE TABLE downloads (
        id          INTEGER PRIMARY KEY,
        source      TEXT NOT NULL,                  -- "<api>:<host>:<project>"
        project_id  TEXT NOT NULL,
        sample_id   TEXT NOT NULL,
        client_id   TEXT,
        file_id     TEXT NOT NULL,
        file_type   TEXT,
        dest_path   TEXT NOT NULL UNIQUE,
        size        INTEGER,                        -- expected
        sha256      TEXT,                           -- expected (NULL where the API has none)
        verified    TEXT,                           -- how it was verified: 'sha256' or 'size'
        state       TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'partial', 'done', 'failed')),
        bytes_done  INTEGER NOT NULL DEFAULT 0,
        mtime_ns    INTEGER,                        -- of the placed file, to recognise it without re-hashing
        error       TEXT,
        updated     REAL NOT NULL,
        UNIQUE (source, file_id)
    );
    CREATE TABLE mirror_samples (
        source     TEXT NOT NULL,
        sample_id  TEXT NOT NULL,
        client_id  TEXT,
        modified   TEXT,                            -- the API's `modified` when last mirrored
        status     TEXT,
        state      TEXT NOT NULL CHECK (state IN ('pending', 'done', 'archived', 'restoring', 'failed', 'skipped')),
        error      TEXT,
        ready_at   REAL,                            -- when we first saw its deliverables ready
        done_at    REAL,
        updated    REAL NOT NULL,
        PRIMARY KEY (source, sample_id)
    );
    CREATE TABLE watermarks (
        source  TEXT PRIMARY KEY,
        value   TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE webhook_events (
        event_id TEXT PRIMARY KEY,
        received REAL NOT NULL
    );
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        ts      REAL NOT NULL,
        level   TEXT NOT NULL,
        stage   TEXT NOT NULL,
        subject TEXT,
        message TEXT NOT NULL
    );
    CREATE INDEX samples_state ON samples(state);
    CREATE INDEX objects_state ON objects(state);
    CREATE INDEX downloads_state ON downloads(state);
    CREATE INDEX mirror_samples_state ON mirror_samples(state);
    CREATE INDEX events_ts ON events(ts);
    """,
    # --- version 2: a delivery's identity is its content (docs/IDENTITY.md) ------------------------------------
    """
    ALTER TABLE runs ADD COLUMN first_seen REAL;            -- when this delivery was first recorded
    ALTER TABLE runs ADD COLUMN replaced_by INTEGER;        -- a later delivery found at the same path (runs.id)
    ALTER TABLE runs ADD COLUMN folder_suffix TEXT NOT NULL DEFAULT '';  -- '@<first seen>' of a later delivery
    ALTER TABLE samples ADD COLUMN content TEXT;            -- identity.content_key of its sources (no paths)
    UPDATE runs SET first_seen = completed_at;
    UPDATE samples SET content = (
        SELECT group_concat(v, ',') FROM (
            SELECT json_extract(j.value, '$[1]') || ':' || json_extract(j.value, '$[2]') || ':'
                   || json_extract(j.value, '$[3]') AS v
            FROM objects o, json_each(o.sources) j WHERE o.sample_id = samples.id ORDER BY v
        )
    );
    CREATE INDEX samples_content ON samples(content);
    CREATE TABLE holds (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runs(id),
        client_id   TEXT NOT NULL,
        sample_id   INTEGER REFERENCES samples(id),   -- the delivered sample it concerns; NULL for a duplicate
        reason      TEXT NOT NULL CHECK (reason IN ('duplicate', 'grown', 'changed')),
        problem     TEXT NOT NULL,
        earlier     TEXT,                             -- the earlier delivery (duplicate): folder/client_id
        sample_name TEXT NOT NULL,
        folder      TEXT NOT NULL,                    -- gncv folder the plan had for it
        project_id  TEXT,
        metadata    TEXT,
        reads       TEXT NOT NULL,                    -- JSON {"R1": sources, "R2": sources} as seen
        content     TEXT NOT NULL,
        since       REAL NOT NULL,
        released    REAL,                             -- by `transferd requeue`
        outcome     TEXT CHECK (outcome IN ('dismissed', 'as-new'))
    );
    CREATE UNIQUE INDEX holds_open ON holds(run_id, client_id) WHERE released IS NULL;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
