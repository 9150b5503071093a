"""transferd benchmark: `.venv/bin/python bench/run.py [--gib 2] [--reps 3] [--only KEY,...]` (or `make bench`).

Prepares everything (tools, synthetic run, s3rver, sandbox, sink), then measures, interleaved over repetitions
(A B C D A B C D ...):
  uploads   (s3rver)  transferd-upload, gencove-upload, awscli-upload, s5cmd-upload
  downloads (s3rver)  transferd-download, gencove-download   (of the same deliverables)
  ceiling   (sink)    transferd-ceiling, awscli-ceiling, s5cmd-ceiling: the same uploads against a server that
                      discards (the clients' own ceilings)
With `--scenario lowpass` / `wan` (comma-separated, with or without `standard`, the default), also:
  lowpass   (s3rver)  the uploads of a low-pass run (--lowpass-samples x 1 lane x R1/R2, --lowpass-file-mb each)
  wan       (s3rver)  the uploads of the low-pass and the standard run (--wan-gib) with --wan-delay-ms added each
                      way to the API and to S3 by a delaying TCP proxy (bench/wan_proxy.py)
with each upload's API and S3 requests counted on the servers (requests per object).
Writes bench/results/<timestamp>.md/.json and bench/results/latest.md/.json. See bench/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `transferd` importable from this tree
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import datetime

from bench import tools
from bench.data import LANES, READS, SAMPLES, SyntheticRun, ensure_lowpass_run, ensure_run, warm_page_cache
from bench.procs import free_port, raise_on_termination
from bench.report import GIB, MB, RepRecord, check_targets, machine, render_markdown, summarize, write_results
from bench.reqcount import RequestCounter
from bench.runners import (
    ALL_RUNNERS,
    RAW_BUCKET,
    RUNNER_KEYS,
    BenchContext,
    GencoveUpload,
    Runner,
    Target,
    TransferdUpload,
)
from bench.s3admin import S3Admin
from bench.s3rver import ACCESS_KEY, SECRET_KEY, S3rver
from bench.servers import SandboxServer, SinkServer, WanProxy
from bench.session import measure_once, prepare_deliverables

RESULTS_DIR = tools.BENCH_DIR / "results"
WORK_DIR = tools.BENCH_DIR / "work"
# Samples never start during upload measurements (the sandbox would copy deliverables in the background).
IDLE_SAMPLE_DELAY = "86400"
SCENARIOS = ("standard", "lowpass", "wan")


class SuiteError(RuntimeError):
    """A suite could not be set up (its contenders are reported as not measured)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=2.0, help="total size of the synthetic run, GiB (default: 2)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per contender (default: 3)")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY[,KEY]",
        help=f"run only these contenders (repeatable): {', '.join(RUNNER_KEYS)}",
    )
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"scenarios to run (repeatable): {', '.join(SCENARIOS)} (default: standard)",
    )
    p.add_argument("--lowpass-samples", type=int, default=384, help="low-pass run: samples (default: 384)")
    p.add_argument("--lowpass-file-mb", type=float, default=2.0, help="low-pass run: MB per FASTQ (default: 2)")
    p.add_argument("--wan-delay-ms", type=float, default=50.0, help="WAN: one-way delay added (default: 50)")
    p.add_argument("--wan-gib", type=float, default=None, help="WAN: size of the standard run (default: --gib)")
    p.add_argument(
        "--transferd-config",
        type=Path,
        default=None,
        metavar="TOML",
        help="pass `--config TOML` to transferd upload (e.g. other [upload] settings; recorded in the results)",
    )
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="where to write the results")
    p.add_argument("--tmp-dir", type=Path, default=None, help="parent of the run's temp dir (S3 data, scratch)")
    args = p.parse_args(argv)
    if args.gib <= 0 or args.reps < 1:
        p.error("--gib must be > 0 and --reps >= 1")
    args.wan_gib = args.gib if args.wan_gib is None else args.wan_gib
    if args.transferd_config is not None and not args.transferd_config.is_file():
        p.error(f"--transferd-config {args.transferd_config}: no such file")
    if args.lowpass_samples < 1 or args.lowpass_file_mb <= 0 or args.wan_delay_ms < 0 or args.wan_gib <= 0:
        p.error("--lowpass-samples must be >= 1, --lowpass-file-mb and --wan-gib > 0, --wan-delay-ms >= 0")
    scenarios = [k.strip() for item in args.scenario or ["standard"] for k in item.split(",") if k.strip()]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown or not scenarios:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.scenario = [name for name in SCENARIOS if name in scenarios]
    wanted = [k.strip() for item in args.only for k in item.split(",") if k.strip()]
    unknown = sorted(set(wanted) - set(RUNNER_KEYS))
    if unknown:
        p.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(RUNNER_KEYS)}")
    args.only = wanted
    return args


class Progress:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.start
        print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {text}", flush=True)


def select(only: list[str], say: Callable[[str], None]) -> tuple[list[Runner], dict[str, str]]:
    chosen = [r for r in ALL_RUNNERS if not only or r.key in only]
    ready: list[Runner] = []
    skipped: dict[str, str] = {}
    for runner in chosen:
        reason = runner.unavailable()
        if reason is None:
            try:
                runner.install()
            except tools.ToolError as exc:
                reason = str(exc)
        if reason is None:
            ready.append(runner)
        else:
            skipped[runner.key] = reason
            say(f"skipping {runner.key}: {reason}")
    return ready, skipped


def run_phase(
    runners: list[Runner],
    ctx: BenchContext,
    reps: int,
    scratch: Path,
    log_dir: Path,
    progress: Progress,
    records: list[RepRecord],
) -> None:
    """A B C D A B C D ...: each repetition runs every contender once, in the same order."""
    for rep in range(1, reps + 1):
        for runner in runners:
            records.append(measure_once(runner, ctx, rep, scratch, log_dir, progress.say))


def s3rver_target(
    stack: ExitStack, tmp: Path, log_dir: Path, progress: Progress, tag: str = "", delay_ms: float = 0.0
) -> Target:
    """s3rver and a sandbox in front of it for the API; with `delay_ms`, a delaying proxy in front of each, which
    every contender is given instead (the sandbox's control API, the bench's S3 housekeeping and s3rver's event
    notifications to the sandbox stay direct)."""
    progress.say(f"starting s3rver and the sandbox in front of it{' behind WAN proxies' if delay_ms else ''}")
    # s3rver notifies the sandbox of new objects (S3 event notifications, as the real service gets them),
    # so the sandbox never HEADs an object still being written: s3rver would md5 the partial file.
    api_port = free_port()
    events = f"http://127.0.0.1:{api_port}/_s3-events"
    s3 = stack.enter_context(
        S3rver(tmp / f"s3rver-data{tag}", [RAW_BUCKET], log_dir / f"s3rver{tag}.log", events_url=events)
    )
    sandbox_args = ("--port", str(api_port), "--s3-events", "--direct-download-urls",
                    "--sample-delay", IDLE_SAMPLE_DELAY)  # fmt: skip
    sandbox = stack.enter_context(SandboxServer(s3.url, log_dir / f"sandbox{tag}.log", sandbox_args))
    admin = S3Admin(s3.url, ACCESS_KEY, SECRET_KEY)
    stack.callback(admin.close)
    control = sandbox.control()
    pids = {"s3rver": s3.pid, "sandbox": sandbox.pid}
    s3_url, info = s3.url, sandbox.info
    if delay_ms:
        api_proxy = stack.enter_context(WanProxy(info.api_url, delay_ms, log_dir / f"wan-proxy-api{tag}.log"))
        s3_proxy = stack.enter_context(WanProxy(s3.url, delay_ms, log_dir / f"wan-proxy-s3{tag}.log"))
        s3_url, info = s3_proxy.url, dataclasses.replace(info, api_url=api_proxy.url)
        pids |= {"wan-proxy-api": api_proxy.pid, "wan-proxy-s3": s3_proxy.pid}
        progress.say(f"  WAN: +{delay_ms:g} ms each way: API {api_proxy.url} -> {sandbox.info.api_url}, "
                     f"S3 {s3_proxy.url} -> {s3.url}")  # fmt: skip
    return Target("s3rver", s3_url, info, control, admin, pids, RequestCounter(control, s3.url))


def s3rver_suite(
    runners: list[Runner],
    run: SyntheticRun,
    reps: int,
    tmp: Path,
    log_dir: Path,
    progress: Progress,
    records: list[RepRecord],
    scenario: str = "standard",
    delay_ms: float = 0.0,
    transferd_config: Path | None = None,
) -> None:
    uploads = [r for r in runners if r.phase == "upload"]
    downloads = [r for r in runners if r.phase == "download"]
    tag = "" if scenario == "standard" else f"-{scenario}"
    with ExitStack() as stack:
        target = s3rver_target(stack, tmp, log_dir, progress, tag, delay_ms)
        ctx = BenchContext(run=run, target=target, scenario=scenario, transferd_config=transferd_config)
        scratch = tmp / f"scratch{tag}"
        if uploads:
            where = f"{scenario}: uploads to s3rver at {target.s3_url}"
            progress.say(f"{where}: {', '.join(r.key for r in uploads)} x {reps}")
            run_phase(uploads, ctx, reps, scratch, log_dir, progress, records)
        if downloads:
            progress.say(f"downloads from s3rver (presigned URLs): {', '.join(r.key for r in downloads)} x {reps}")
            uploader = _deliverables_uploader(progress.say)
            if uploader is None:
                raise SuiteError("no uploader can prepare the deliverables; downloads skipped")
            ctx.deliverables = prepare_deliverables(ctx, uploader, scratch, log_dir, progress.say)
            run_phase(downloads, ctx, reps, scratch, log_dir, progress, records)


def _deliverables_uploader(say: Callable[[str], None]) -> Runner | None:
    for runner in (TransferdUpload(), GencoveUpload()):
        if runner.unavailable() is None:
            try:
                runner.install()
            except tools.ToolError as exc:
                say(f"  {runner.key} unusable for the set-up: {exc}")
                continue
            return runner
    return None


def sink_suite(
    runners: list[Runner],
    run: SyntheticRun,
    reps: int,
    tmp: Path,
    log_dir: Path,
    progress: Progress,
    records: list[RepRecord],
    transferd_config: Path | None = None,
) -> None:
    with ExitStack() as stack:
        progress.say("starting the null S3 sink and a sandbox in front of it")
        sink = stack.enter_context(SinkServer(log_dir / "sink.log"))
        sandbox = stack.enter_context(
            SandboxServer(sink.url, log_dir / "sandbox-sink.log", ("--sample-delay", IDLE_SAMPLE_DELAY))
        )
        admin = S3Admin(sink.url, ACCESS_KEY, SECRET_KEY)
        stack.callback(admin.close)
        target = Target(
            "sink", sink.url, sandbox.info, sandbox.control(), admin, {"sink": sink.pid, "sandbox": sandbox.pid}
        )
        ctx = BenchContext(run=run, target=target, transferd_config=transferd_config)
        progress.say(f"client ceiling against the sink at {sink.url}: {', '.join(r.key for r in runners)} x {reps}")
        run_phase(runners, ctx, reps, tmp / "scratch-sink", log_dir, progress, records)


Suite = Callable[..., None]


def _run_info(run: SyntheticRun, lanes: int, delay_ms: float = 0.0) -> dict[str, float | int]:
    return {
        "files": len(run.files),
        "samples": len(run.samples),
        "lanes": lanes,
        "logical_bytes": run.total_bytes,
        "objects": len(run.samples) * len(READS),
        "delay_ms": delay_ms,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_termination()
    progress = Progress()
    started = datetime.now().astimezone().replace(microsecond=0)
    log_dir = WORK_DIR / "logs" / started.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    meta_machine = machine()
    progress.say(
        f"transferd benchmark: {', '.join(args.scenario)}; {args.gib:g} GiB, {args.reps} rep(s); "
        f"load average {meta_machine['loadavg_at_start']}"
    )
    if meta_machine["loadavg_at_start"][0] > 1.5:
        progress.say("warning: the machine is busy (load average > 1.5); figures will be noisy")
    scenario_info: dict[str, dict[str, float | int]] = {}
    run: SyntheticRun | None = None
    try:
        runners, skipped = select(args.only, progress.say)
        if not runners:
            progress.say("nothing to run")
            return 1
        tools.ensure_s3rver()
        uploads = [r for r in runners if r.phase == "upload"]
        # (suite, scenario name, contenders, run, one-way delay)
        plan: list[tuple[Suite, str, list[Runner], SyntheticRun, float]] = []
        if "standard" in args.scenario:
            total = int(args.gib * GIB)
            progress.say(f"synthetic run: {SAMPLES} samples x {LANES} lanes x R1/R2, {total / MB:,.0f} MB (built once)")
            run = ensure_run(WORK_DIR / "runs" / f"benchrun-{total}B", total)
            progress.say(f"  {len(run.files)} files, {run.total_bytes / MB:,.1f} MB in {run.root}")
            plan.append((s3rver_suite, "standard", [r for r in runners if r.phase in ("upload", "download")], run, 0))
            plan.append((sink_suite, "standard", [r for r in runners if r.phase == "ceiling"], run, 0))
        lowpass: SyntheticRun | None = None
        if "lowpass" in args.scenario or "wan" in args.scenario:
            file_bytes = int(args.lowpass_file_mb * MB)
            progress.say(f"low-pass run: {args.lowpass_samples} samples x 1 lane x R1/R2, {file_bytes / MB:g} MB each")
            lowpass = ensure_lowpass_run(
                WORK_DIR / "runs" / f"lowpass-{args.lowpass_samples}x{file_bytes}B", args.lowpass_samples, file_bytes
            )
            progress.say(f"  {len(lowpass.files)} files, {lowpass.total_bytes / MB:,.1f} MB in {lowpass.root}")
        if "lowpass" in args.scenario and lowpass is not None:
            plan.append((s3rver_suite, "lowpass", uploads, lowpass, 0))
            scenario_info["lowpass"] = _run_info(lowpass, 1)
        if "wan" in args.scenario and lowpass is not None:
            wan_total = int(args.wan_gib * GIB)
            wan_run = ensure_run(WORK_DIR / "runs" / f"benchrun-{wan_total}B", wan_total)
            plan.append((s3rver_suite, "wan-lowpass", uploads, lowpass, args.wan_delay_ms))
            plan.append((s3rver_suite, "wan-standard", uploads, wan_run, args.wan_delay_ms))
            scenario_info["wan-lowpass"] = _run_info(lowpass, 1, args.wan_delay_ms)
            scenario_info["wan-standard"] = _run_info(wan_run, LANES, args.wan_delay_ms)
        records: list[RepRecord] = []
        suite_errors: list[str] = []
        with tempfile.TemporaryDirectory(prefix="transferd-bench-", dir=args.tmp_dir) as tmp_name:
            tmp = Path(tmp_name)
            for suite, scenario, members, data, delay_ms in plan:
                if not members:
                    continue
                progress.say(f"warming the page cache ({data.root.name})")
                warm_page_cache(data)
                extra: dict[str, object] = {"transferd_config": args.transferd_config}
                if suite is not sink_suite:
                    extra |= {"scenario": scenario, "delay_ms": delay_ms}
                try:
                    suite(members, data, args.reps, tmp, log_dir, progress, records, **extra)
                except Exception as exc:  # one broken suite must not lose the others' figures
                    progress.say(f"suite {suite.__name__} ({scenario}) failed: {exc}")
                    suite_errors.append(f"{suite.__name__} ({scenario}): {exc}")
    except KeyboardInterrupt:
        progress.say("interrupted: servers stopped, nothing written")
        return 130
    meta_machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    meta = {
        "started": started.isoformat(),
        "config": {
            "gib": args.gib,
            "reps": args.reps,
            "only": args.only,
            "scenarios": args.scenario,
            "transferd_config": args.transferd_config.read_text() if args.transferd_config else None,
            "samples": SAMPLES,
            "lanes": LANES,
            "files": len(run.files) if run else 0,
            "logical_bytes": run.total_bytes if run else 0,
            "s3_server": "s3rver (Node.js, files on disk), clients talk to it directly; ceiling: bench/sink.py",
            "skipped": skipped,
            "suite_errors": suite_errors,
            "logs": str(log_dir),
        },
        "scenarios": scenario_info,
        "machine": meta_machine,
        "versions": tools.versions(),
    }
    summaries = summarize(records)
    checks = check_targets(summaries)
    md_path, json_path = write_results(args.results, meta, records, summaries, checks)
    print()
    print(render_markdown(meta, summaries, checks))
    progress.say(f"results: {md_path}, {json_path} (and latest.md/.json); logs: {log_dir}")
    return 0 if records and all(r.ok for r in records) and not suite_errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
