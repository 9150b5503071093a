"""A run that is neither done nor failed hours after it was found complete: the gauge behind TransferdRunStuck."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from transferd.journal import Journal
from transferd.metrics import build_registry
from transferd.service import status
from transferd.stats import Stats

GAUGE = "transferd_oldest_unfinished_run_age_seconds"
HOUR = 3600.0


def _run(conn: sqlite3.Connection, name: str, state: str, hours_ago: float, samples: int = 1) -> None:
    run_id = conn.execute(
        "INSERT INTO runs (watch, path, name, layout, state, completed_at) VALUES ('/w', ?, ?, 'bclconvert', ?, ?)",
        (f"/w/{name}", name, state, time.time() - hours_ago * HOUR),
    ).lastrowid
    for i in range(samples):
        conn.execute(
            "INSERT INTO samples (run_id, client_id, sample_name, folder, state, created, updated)"
            " VALUES (?, ?, ?, 'gncv://f', 'uploading', 0, 0)",
            (run_id, f"{name}-S{i}", f"S{i}"),
        )


def _age(journal: Journal) -> float:
    text = generate_latest(build_registry(journal, stats=Stats(), process_metrics=False)).decode()
    (value,) = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == GAUGE]
    return value


def test_the_oldest_unfinished_run_sets_the_age(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite3") as journal:
        assert _age(journal) == 0.0  # no run at all: the series exists, at 0

        def fill(conn: sqlite3.Connection) -> None:
            _run(conn, "OLD_DONE", "done", 30)  # finished runs never count, however old
            _run(conn, "OLD_FAILED", "failed", 20)  # failed ones are TransferdSamplesFailed's business
            _run(conn, "NOTHING_TO_UPLOAD", "ready", 10, samples=0)  # no sample rows: its error or a hold says why
            _run(conn, "STUCK", "uploaded", 7)
            _run(conn, "FRESH", "uploading", 1)

        journal.call(fill)
        assert 7 * HOUR - 60 < _age(journal) < 7 * HOUR + 60

        report = status.collect(tmp_path / "j.sqlite3")
        assert report.overview.oldest_unfinished_run_at is not None
        assert "oldest unfinished run complete since" in status.render(report)

        journal.call(lambda c: c.execute("UPDATE runs SET state = 'done' WHERE name = 'STUCK'"))
        assert 1 * HOUR - 60 < _age(journal) < 1 * HOUR + 60
        journal.call(lambda c: c.execute("UPDATE runs SET state = 'done' WHERE name = 'FRESH'"))
        assert _age(journal) == 0.0
        assert "oldest unfinished run" not in status.render(status.collect(tmp_path / "j.sqlite3"))
