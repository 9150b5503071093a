"""`transferd requeue [-c CONFIG | --state FILE] (--run RUN | --sample CLIENT_ID | --all-failed) [--dry-run]`.

A failed sample stays failed (it is never retried behind the operator's back: a file that is not what it should
be, a project that refuses it, an outage longer than the retry deadline). Once the cause is fixed, this puts it
back to work in the journal. It is safe beside a running daemon: one SQLite transaction, without the daemon
lock; the daemon takes the work at its next rescan (its assigner within a minute). Uploads resume from the
parts S3 already has; an assignment is never posted before the sample sheet is checked.
"""

from __future__ import annotations

import argparse

from transferd.errors import TransferdError, UsageError
from transferd.journal import Journal
from transferd.journal import uploads as jq
from transferd.upload.command import journal_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="path to the TOML config (for the daemon's journal)")
    p.add_argument("--state", help="journal file instead (default without -c: `transferd upload`'s journal)")
    p.add_argument("--run", help="only samples of this run (its folder path or its name)")
    p.add_argument("--sample", metavar="CLIENT_ID", help="only samples with this client_id")
    p.add_argument("--all-failed", action="store_true", help="every failed sample")
    p.add_argument("--dry-run", action="store_true", help="show what would be requeued, change nothing")


def main(args: argparse.Namespace) -> int:
    if not (args.run or args.sample or args.all_failed):
        raise UsageError("say which samples: --run RUN, --sample CLIENT_ID, or --all-failed")
    path = journal_path(args.config, args.state)
    if not path.exists():
        raise TransferdError(f"journal {path} does not exist (has the daemon or `transferd upload` run yet?)")
    journal = Journal.open(path, exclusive=False)
    try:
        if args.dry_run:
            found = journal.read(jq.requeue_failed, args.run, args.sample, True)
        else:
            found = journal.call(jq.requeue_failed, args.run, args.sample)
    finally:
        journal.close()
    if not found:
        print("no failed sample matches")
        return 1
    verb = "would requeue" if args.dry_run else "requeued"
    for r in found:
        what = r.outcome if r.outcome.startswith("skipped") else f"{verb} for {r.outcome}"
        print(f"{r.folder}/{r.client_id} ({r.run}): {what}\n    was: {r.error}")
    if not args.dry_run and any(not r.outcome.startswith("skipped") for r in found):
        print("a running daemon takes them at its next rescan; `transferd status` shows the progress")
    return 0
