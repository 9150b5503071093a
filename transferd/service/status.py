"""`transferd status [-c CONFIG | --state FILE] [--json]`: what the journal says, read-only, safe beside the daemon.

It opens the journal without the daemon lock and without writing (SQLite WAL lets it read while the daemon
writes), so it can be run at any time, by any user that can read the journal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transferd.config import load_config, resolve_api_key
from transferd.errors import TransferdError, UsageError
from transferd.journal import Journal
from transferd.log import redact
from transferd.service import views
from transferd.units import format_size
from transferd.upload.command import journal_path

JOURNAL_DISK_LOW = 16 * 1024**2  # below this the journal's next writes may fail: say so at the top


@dataclass(frozen=True, slots=True)
class Report:
    journal: str
    daemon_pid: int | None  # a live transferd holding the journal lock, as far as we can tell
    overview: views.Overview
    runs: list[views.RunRow]
    in_flight: list[views.InFlight]
    errors: list[views.EventRow]
    held: list[views.HeldRow]  # samples waiting for an operator (transferd requeue)
    journal_disk_free: int | None = None  # bytes free for the journal; near 0 the daemon's work is paused


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="path to the TOML config (the daemon's journal)")
    p.add_argument("--state", help="journal file instead (default without -c: `transferd upload`'s journal)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--runs", type=int, default=20, metavar="N", help="show the latest N runs (default 20)")


def main(args: argparse.Namespace) -> int:
    if args.config:
        with contextlib.suppress(UsageError, OSError):  # know the key to mask it, where this user may read it
            resolve_api_key(load_config(args.config))
    report = collect(journal_path(args.config, args.state), runs=args.runs)
    # Rows are redacted when written; this covers rows from older versions and secrets of other processes.
    print(redact(json.dumps(asdict(report), indent=2) if args.json else render(report)))
    return 0


def collect(path: Path, runs: int = 20) -> Report:
    journal = Journal.open_readonly(path)
    try:

        def read(conn: sqlite3.Connection) -> Report:
            return Report(
                journal=str(path),
                daemon_pid=daemon_pid(path),
                overview=views.overview(conn),
                runs=views.recent_runs(conn, runs),
                in_flight=views.in_flight(conn),
                errors=views.last_events(conn),
                held=views.held(conn),
                journal_disk_free=_free_bytes(path),
            )

        try:
            return journal.read(read)
        except sqlite3.Error as e:
            raise TransferdError(f"journal {path}: cannot read it: {e}") from None
    finally:
        journal.close()


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def daemon_pid(path: Path) -> int | None:
    """The pid the daemon wrote into the journal's lock file, if that process is still a transferd.

    We never take the lock ourselves: even a brief shared lock could make a starting daemon refuse to run.
    """
    try:
        pid = int(path.with_name(path.name + ".lock").read_text().strip() or 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if pid and pid != os.getpid() and b"transferd" in cmdline else None


# -- rendering ----------------------------------------------------------------------------------------------------
def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _states(counts: dict[str, int]) -> str:
    shown = [f"{state} {n}" for state, n in counts.items() if n]
    return ", ".join(shown) if shown else "none"


def render(r: Report) -> str:
    o = r.overview
    running = f"daemon running (pid {r.daemon_pid})" if r.daemon_pid else "daemon not running"
    out = [f"journal {r.journal} ({running})"]
    if r.journal_disk_free is not None and r.journal_disk_free < JOURNAL_DISK_LOW:
        out.append(
            f"journal disk:    FULL ({format_size(r.journal_disk_free)} free): work is paused until space returns"
        )
    out.append("")
    out.append(f"runs:            {_states(o.counts['runs'])}")
    if o.oldest_unfinished_run_at is not None:
        out.append(f"oldest unfinished run complete since {_when(o.oldest_unfinished_run_at)}")
    out.append(f"samples:         {_states(o.counts['samples'])}")
    out.append(f"held samples:    {_states(o.held)}" + ("  (see below; `transferd requeue`)" if r.held else ""))
    out.append(f"objects:         {_states(o.counts['objects'])}  (to upload: {format_size(o.upload_backlog_bytes)})")
    out.append(f"mirror samples:  {_states(o.counts['mirror_samples'])}")
    out.append(
        f"mirror files:    {_states(o.counts['downloads'])}  (to download: {format_size(o.download_backlog_bytes)})"
    )
    out += ["", f"latest runs ({len(r.runs)}):"]
    rows: list[tuple[Any, ...]] = [("run", "state", "samples", "assigned", "complete since", "error")]
    for run in r.runs:
        name = f"{run.name}/Analysis/{run.analysis}" if run.analysis else run.name
        rows.append((name, run.state, run.samples, run.samples_assigned, _when(run.completed_at), run.error or ""))
    out += _table(rows) if r.runs else ["  (none yet)"]
    out += ["", f"in flight ({len(r.in_flight)}):"]
    for f in r.in_flight:
        out.append(
            f"  {f.kind:8} {f.state:10} {format_size(f.done_bytes):>10} / {format_size(f.total_bytes):<10} {f.what}"
            + (f"  (attempts {f.attempts})" if f.attempts > 1 else "")
        )
    if not r.in_flight:
        out.append("  (nothing)")
    if r.held:
        out += ["", f"HELD ({len(r.held)}): not uploaded or assigned until `transferd requeue` (--as-new) decides"]
        out += [f"  {h.sample} [{h.reason}] ({h.run}): {h.problem}" for h in r.held]
    out += ["", f"last errors ({len(r.errors)}):"]
    for e in r.errors:
        subject = f" {e.subject}:" if e.subject else ""
        out.append(f"  {_when(e.ts)} {e.level:7} {e.stage}{subject} {e.message}")
    if not r.errors:
        out.append("  (none)")
    return "\n".join(out)


def _table(rows: list[tuple[Any, ...]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
