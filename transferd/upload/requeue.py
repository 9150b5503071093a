"""`transferd requeue [-c CONFIG | --state FILE] (--run RUN | --sample ID | --all-failed | --all-held) [--as-new]`.

A failed sample stays failed (it is never retried behind the operator's back: a file that is not what it should
be, a project that refuses it, an outage longer than the retry deadline). Once the cause is fixed, this puts it
back to work in the journal. It is safe beside a running daemon: one SQLite transaction, without the daemon
lock; the daemon takes the work at its next rescan (its assigner within a minute). Uploads resume from the
parts S3 already has; an assignment is never posted before the sample sheet is checked.

A held sample (docs/IDENTITY.md) is released the same way: its hold dismissed (the earlier delivery stands, and
these very file versions are not held again), or with ``--as-new`` recorded as a new delivery under a folder no
earlier one uses, then uploaded and assigned like any other sample.
"""

from __future__ import annotations

import argparse

from transferd.errors import TransferdError, UsageError
from transferd.journal import Journal
from transferd.journal import uploads as jq
from transferd.upload.command import journal_path
from transferd.upload.plan import destination_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="path to the TOML config (for the daemon's journal)")
    p.add_argument("--state", help="journal file instead (default without -c: `transferd upload`'s journal)")
    p.add_argument("--run", help="only samples of this run (its folder path or its name)")
    p.add_argument("--sample", metavar="CLIENT_ID", help="only samples with this client_id")
    p.add_argument("--all-failed", action="store_true", help="every failed sample")
    p.add_argument("--all-held", action="store_true", help="every held sample")
    p.add_argument(
        "--as-new", action="store_true",
        help="a held sample is uploaded (and assigned) as a new delivery; without it, its hold is dismissed",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="show what would be requeued, change nothing")


def main(args: argparse.Namespace) -> int:
    if not (args.run or args.sample or args.all_failed or args.all_held):
        raise UsageError("say which samples: --run RUN, --sample CLIENT_ID, --all-failed or --all-held")
    path = journal_path(args.config, args.state)
    if not path.exists():
        raise TransferdError(f"journal {path} does not exist (has the daemon or `transferd upload` run yet?)")
    failed_too = not args.all_held or args.all_failed or args.run or args.sample
    held_too = not args.all_failed or args.all_held or args.run or args.sample
    journal = Journal.open(path, exclusive=False)
    try:
        run = journal.read if args.dry_run else journal.call
        found = run(jq.requeue_failed, args.run, args.sample, args.dry_run) if failed_too else []
        released = (
            run(jq.release_holds, args.run, args.sample, args.as_new, args.dry_run, destination_path)
            if held_too
            else []
        )
    finally:
        journal.close()
    if not found and not released:
        print("no failed or held sample matches")
        return 1
    verb = "would requeue" if args.dry_run else "requeued"
    for r in found:
        what = r.outcome if r.outcome.startswith("skipped") else f"{verb} for {r.outcome}"
        print(f"{r.folder}/{r.client_id} ({r.run}): {what}\n    was: {r.error}")
    for h in released:
        if h.outcome == "dismissed":
            what = "hold would be dismissed" if args.dry_run else "hold dismissed; the earlier delivery stands"
        else:
            what = f"{verb} as a new delivery {h.outcome[3:]}"
        print(f"{h.folder}/{h.client_id} ({h.run}): {what}\n    was held: {h.problem}")
    if not args.dry_run and (any(not r.outcome.startswith("skipped") for r in found) or (args.as_new and released)):
        print("a running daemon takes them at its next rescan; `transferd status` shows the progress")
    return 0
