"""``transferd scan PATH... [--json]``: what would be uploaded, without touching the network."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from transferd.discovery.models import Run, Sample, escaped
from transferd.discovery.rules import CLIENT_ID_POLICIES, COMPLETION_MODES, DiscoveryRules
from transferd.discovery.scanner import RootUnavailableError, scan_paths

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="a watch root, a run folder or a *.fastq-map.csv manifest")
    p.add_argument("--json", action="store_true", help="print one JSON array of samples")
    p.add_argument("-c", "--config", help="use the rules of the [[watch]] whose path holds PATH")
    p.add_argument("--settle", metavar="DURATION", help="settle time per file (default 60s)")
    p.add_argument("--completion", choices=COMPLETION_MODES, help="auto (default), markers or quiet")
    p.add_argument("--quiet-period", metavar="DURATION", help="quiet period for folders without markers")
    p.add_argument("--single-end", action="store_true", default=None, help="allow samples without R2")
    p.add_argument("--include-index-reads", action="store_true", default=None, help="keep I1/I2 files")
    p.add_argument("--include-undetermined", action="store_true", default=None, help="keep Undetermined")
    p.add_argument("--client-id-policy", choices=CLIENT_ID_POLICIES, help="'_' in sample names: replace or reject")
    p.add_argument("--no-verify-gzip", action="store_true", help="skip the gzip end-of-stream check")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from transferd.units import parse_duration

    out: dict[str, Any] = {}
    if args.settle is not None:
        out["settle_seconds"] = parse_duration(args.settle)
    if args.quiet_period is not None:
        out["quiet_seconds"] = parse_duration(args.quiet_period)
    for name in ("completion", "single_end", "include_index_reads", "include_undetermined", "client_id_policy"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    if args.no_verify_gzip:
        out["verify_gzip"] = False
    return out


def main(args: argparse.Namespace) -> int:
    from transferd.errors import UsageError

    try:
        overrides = _overrides(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    base = DiscoveryRules(**overrides)
    if not args.config:
        return run_scan(args.paths, args.json, base)
    from transferd.config import load_config

    cfg = load_config(args.config)
    watches = sorted(cfg.watches, key=lambda w: len(str(w.path)), reverse=True)

    def rules_for(path: Path) -> DiscoveryRules:
        for w in watches:
            if path == Path(w.path) or path.is_relative_to(Path(w.path)):
                return dataclasses.replace(w.rules(), **overrides)
        return base

    return _run(args.paths, args.json, rules_for, sys.stdout)


def run_scan(paths: list[str], as_json: bool, rules: DiscoveryRules, out: TextIO = sys.stdout) -> int:
    """Print what would be uploaded; 0 if every PATH could be scanned, 2 if one does not exist (or is neither a
    folder nor a manifest), 1 if a folder could not be read."""
    return _run(paths, as_json, lambda _path: rules, out)


def _run(paths: Sequence[str], as_json: bool, rules_for: Callable[[Path], DiscoveryRules], out: TextIO) -> int:
    now = time.time()
    status = EXIT_OK
    runs: list[Run] = []
    for raw in paths:
        path = Path(os.path.abspath(raw))
        try:
            runs.extend(scan_paths([path], rules_for(path), now))
        except (FileNotFoundError, ValueError) as exc:
            print(f"transferd scan: {exc}", file=sys.stderr)
            status = max(status, EXIT_USAGE)
        except (RootUnavailableError, OSError) as exc:
            print(f"transferd scan: {exc}", file=sys.stderr)
            status = max(status, EXIT_FAILED)
    if as_json:
        json.dump(samples_json(runs), out, indent=2)
        out.write("\n")
        for run in runs:
            for problem in _run_only_problems(run):
                print(f"transferd scan: {_run_label(run)}: {problem}", file=sys.stderr)
    else:
        write_tables(runs, out)
    return status


# -- JSON ---------------------------------------------------------------------------------------------------------
def _manifest_errors(run: Run, sample: Sample) -> list[str]:
    if sample.manifest is None:
        return []
    prefix = f"{sample.manifest}:"
    return [p for p in run.problems if p.startswith(prefix)]


def _run_only_problems(run: Run) -> list[str]:
    """Run problems that no sample's JSON carries (they go to stderr with --json)."""
    manifests = {str(s.manifest) for s in run.samples if s.manifest is not None}
    return [p for p in run.problems if not any(p.startswith(m + ":") for m in manifests)]


def sample_problems(run: Run, sample: Sample) -> list[str]:
    """A sample's problems as ``scan --json`` shows them: why the run is not complete comes first."""
    problems = [] if run.complete else [f"run not complete: {'; '.join(run.reasons)}"]
    return problems + _manifest_errors(run, sample) + list(sample.problems)


def samples_json(runs: Sequence[Run]) -> list[dict[str, Any]]:
    return [
        {
            "run": escaped(str(run.path)),
            "client_id": s.client_id,
            "sample_name": s.sample_name,
            "r1": [escaped(str(f.path)) for f in s.r1],
            "r2": [escaped(str(f.path)) for f in s.r2],
            "ready": s.ready,
            "problems": sample_problems(run, s),
        }
        for run in runs
        for s in run.samples
    ]


# -- tables -------------------------------------------------------------------------------------------------------
def _run_label(run: Run) -> str:
    path = escaped(str(run.path))
    return f"{path} Analysis/{run.analysis}" if run.analysis is not None else path


def _table(rows: list[list[str]], indent: str) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def write_tables(runs: Sequence[Run], out: TextIO) -> None:
    if not runs:
        out.write("no runs found\n")
        return
    total = ready = 0
    for run in runs:
        state = "complete" if run.complete else "not complete"
        out.write(f"{_run_label(run)}  [{run.layout}]  {state}: {'; '.join(run.reasons)}\n")
        rows = [["CLIENT_ID", "SAMPLE", "R1", "R2", "READY", "PROBLEMS"]]
        for s in run.samples:
            problems = _manifest_errors(run, s) + list(s.problems)
            sample = s.sample_name if not s.project_folder else f"{s.project_folder}/{s.sample_name}"
            rows.append(
                [s.client_id, sample, str(len(s.r1)), str(len(s.r2)), "yes" if s.ready else "no", problems[0]]
                if problems
                else [s.client_id, sample, str(len(s.r1)), str(len(s.r2)), "yes" if s.ready else "no", ""]
            )
            rows.extend(["", "", "", "", "", p] for p in problems[1:])
            total += 1
            ready += s.ready
        if run.samples:
            out.write("\n".join(_table(rows, "  ")) + "\n")
        else:
            out.write("  (no samples)\n")
        for problem in _run_only_problems(run):
            out.write(f"  problem: {problem}\n")
        if run.ignored:
            out.write(f"  ignored: {len(run.ignored)} file(s) (index reads, Undetermined, unlisted or unrecognised)\n")
        out.write("\n")
    out.write(f"{len(runs)} run(s), {total} sample(s), {ready} ready\n")
