"""The `transferd` command line: a thin front over the pipeline's modules.

Each command lives in the module that owns its work and exposes `add_arguments(parser)` and `main(args) -> int`;
this file only routes. Exit codes: 0 ok, 1 failure, 2 usage or config error.

No command ends in a raw traceback: an unexpected exception prints one redacted line and logs its whole
(redacted) traceback as an event, then exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from transferd import __version__
from transferd.errors import TransferdError
from transferd.log import event, redact, setup_logging

log = logging.getLogger("transferd.cli")


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    module: str  # provides add_arguments(parser) and main(args) -> int
    help: str


COMMANDS = (
    Command("run", "transferd.service.daemon", "run the daemon: watch, upload, assign, mirror, serve metrics"),
    Command("check-config", "transferd.cli", "validate a config file and print it resolved, secrets masked"),
    Command("scan", "transferd.discovery.scan_cmd", "show what would be uploaded from PATHs (no network)"),
    Command("upload", "transferd.upload.command", "upload a run folder or a .fastq-map.csv once, then assign"),
    Command("download", "transferd.mirror.command", "mirror a project's deliverables once"),
    Command("status", "transferd.service.status", "runs, samples per state, in-flight work and last errors"),
    Command("requeue", "transferd.upload.requeue", "put failed samples back to work (after fixing the cause)"),
    Command("sandbox", "transferd.sandbox.cli", "run the local Gencove-compatible API and S3 server"),
    Command("demo", "transferd.demo", "end-to-end demo on the embedded sandbox"),
)


# -- check-config (small enough to live here) ----------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="path to the TOML config")
    p.add_argument("--json", action="store_true", help="print the resolved config as JSON")


def main_check_config(args: argparse.Namespace) -> int:
    """Every problem of the file at once (exit 2), then what this host would make of it: errors (exit 2) and
    named warnings."""
    from transferd.config import describe, load_config
    from transferd.preflight import Level, preflight

    cfg = load_config(args.config)
    findings = preflight(cfg)
    doc = describe(cfg)
    errors = [f for f in findings if f.level is Level.ERROR]
    if args.json:
        doc["findings"] = [{"level": f.level.value, "key": f.key, "message": f.message} for f in findings]
        print(json.dumps(doc, indent=2))
    else:
        _print_tree(doc)
    for f in findings:
        print(f.render(cfg.file), file=sys.stderr)
    if errors:
        print(f"\n{cfg.file}: {len(errors)} error(s)", file=sys.stderr)
        return 2
    if not args.json:
        warned = f", {len(findings)} warning(s)" if findings else ""
        print(f"\nOK: {cfg.file}: {len(cfg.watches)} watch(es), {len(cfg.download.projects)} mirrored project(s)"
              f"{warned}")  # fmt: skip
    return 0


def _print_tree(doc: object, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(doc, dict):
        for k, v in doc.items():
            if isinstance(v, dict | list) and v:
                print(f"{pad}{k}:")
                _print_tree(v, indent + 1)
            else:
                print(f"{pad}{k}: {json.dumps(v) if not isinstance(v, str) else v}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc, start=1):
            print(f"{pad}[{i}]")
            _print_tree(v, indent + 1)


# -- routing ---------------------------------------------------------------------------------------------------
def _load(cmd: Command) -> object | None:
    if cmd.name == "check-config":
        return sys.modules[__name__]
    try:
        return importlib.import_module(cmd.module)
    except ModuleNotFoundError as e:
        if e.name and (cmd.module == e.name or cmd.module.startswith(e.name + ".")):
            return None  # not built yet
        raise


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, object | None]]:
    """The parser and each command's module. With `only`, just that command's module is imported (the others
    get no arguments of their own): importing every command costs ~0.25 CPU-s at each start."""
    parser = argparse.ArgumentParser(
        prog="transferd",
        description="Watch sequencer output, upload FASTQs to Gencove, assign them, and mirror results back.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage or config error.",
    )
    parser.add_argument("--version", action="version", version=f"transferd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object | None] = {}
    for cmd in COMMANDS:
        mod = _load(cmd) if only is None or cmd.name == only else None
        modules[cmd.name] = mod
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if mod is not None and hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser, modules


def _command_in(argv: Sequence[str]) -> str:
    """The command named on the command line (the first word that is not an option), or "" for none."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser(_command_in(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 0 for --help/--version, 2 for usage errors
        return int(e.code or 0)
    if not args.command:
        parser.print_help()
        return 2
    mod = modules[args.command]
    entry = main_check_config if args.command == "check-config" else getattr(mod, "main", None)
    if entry is None:
        print(f"transferd {args.command}: not built yet", file=sys.stderr)
        return 2
    try:
        return int(entry(args) or 0)
    except TransferdError as e:
        print(f"transferd {args.command}: error: {redact(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"transferd {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `transferd status | head`: the reader has all it wanted
        _quiet_stdout()
        return 141  # as a shell reports a command ended by SIGPIPE
    except Exception as e:  # a bug: one line for the user, the whole traceback for whoever fixes it
        return _crashed(args.command, e)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of a closed pipe raises nothing more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def _crashed(command: str, exc: Exception) -> int:
    if not any(getattr(h, "_transferd", False) for h in logging.getLogger().handlers):
        setup_logging("warning", "kv")  # not set up by the command yet: Python's fallback would not redact
    event(log, "cli.crashed", logging.ERROR, exc_info=exc, command=command, error=f"{type(exc).__name__}: {exc}")
    first = next(iter(str(exc).splitlines()), "")
    print(
        f"transferd {command}: internal error: {type(exc).__name__}: {redact(first)} "
        "(a bug; the traceback is in the log)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
