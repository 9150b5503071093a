"""One measured repetition, done the same way for every contender, and the deliverables set-up for downloads.

Before each measured command: the target is reset (sandbox state and every bucket emptied) for uploads, dirty
pages are flushed (`sync`) and the source data is read once more, so every contender starts from the same
server state and the same warm page cache. After it: the runner verifies what arrived, the scratch data is
removed (the log is kept).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from bench.data import READS, warm_page_cache
from bench.measure import run_measured, tail, tree_cpu_seconds
from bench.report import MB, MIB, RepRecord
from bench.runners import RAW_BUCKET, BenchContext, ExpectedFile, Runner, VerifyError

MIN_TIMEOUT_S = 300.0
SLOWEST_EXPECTED_BPS = 2e6  # a run slower than 2 MB/s is considered hung
SLOWEST_PER_OBJECT_S = 2.0  # ... or slower than 2 s per object (low-pass runs over the WAN)


def reset_target(ctx: BenchContext) -> None:
    """Forget every upload/sample in the sandbox and delete every object the contenders wrote."""
    target = ctx.target
    target.control.reset()
    for bucket in (target.sandbox.bucket, target.sandbox.deliverables_bucket, RAW_BUCKET):
        target.admin.ensure_bucket(bucket)
        target.admin.delete_all(bucket)


def _server_cpu(ctx: BenchContext) -> dict[str, float]:
    return {name: tree_cpu_seconds(pid) for name, pid in ctx.target.server_pids.items()}


def measure_once(
    runner: Runner,
    ctx: BenchContext,
    rep: int,
    scratch_root: Path,
    log_dir: Path,
    say: Callable[[str], None],
    reset: bool = True,
) -> RepRecord:
    scratch = scratch_root / f"{runner.key}-rep{rep}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    scenario = "" if ctx.scenario == "standard" else f"{ctx.scenario}-"  # one log dir serves every scenario
    log_path = log_dir / f"{scenario}{runner.key}-rep{rep}.log"
    if reset and runner.phase != "download":
        reset_target(ctx)
    os.sync()
    warm_page_cache(ctx.run)
    inv = runner.invocation(ctx, rep, scratch)
    record = RepRecord(
        key=runner.key,
        label=runner.label,
        phase=runner.phase,
        rep=rep,
        ok=False,
        logical_bytes=inv.logical_bytes,
        fixed_sleep_s=inv.fixed_sleep_s,
        log=str(log_path),
        load_before=round(os.getloadavg()[0], 2),
        scenario=ctx.scenario,
        objects=ctx.objects(runner) if runner.phase != "download" else 0,
    )
    counter = ctx.target.counter if runner.phase != "download" else None
    mark = counter.mark() if counter is not None else None
    before = _server_cpu(ctx)
    timeout = max(MIN_TIMEOUT_S, inv.logical_bytes / SLOWEST_EXPECTED_BPS, record.objects * SLOWEST_PER_OBJECT_S)
    m = run_measured(inv.argv, env=inv.env, cwd=inv.cwd, log_path=log_path, timeout=timeout)
    after = _server_cpu(ctx)
    if counter is not None and mark is not None:
        counts = counter.since(mark)
        record.api_requests, record.s3_requests = counts.api, counts.s3
        record.api_idle_gap_s = counts.api_idle_gap_s
        # The API timeline beside the command's log: where a low-pass or WAN run spends its round trips.
        timeline = {"s3": counts.s3, "api": list(counts.api_entries)}
        log_path.with_suffix(".requests.json").write_text(json.dumps(timeline, indent=1) + "\n")
    record.wall_s, record.user_s, record.sys_s = m.wall_s, m.user_s, m.sys_s
    record.peak_rss_bytes, record.exit_code = m.peak_rss_bytes, m.exit_code
    record.server_cpu_s = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
    if m.timed_out:
        record.error = f"timed out after {timeout:.0f} s; log {log_path}"
    elif m.exit_code != 0:
        record.error = f"exit {m.exit_code}; log {log_path}:\n{tail(log_path, 15)}"
    else:
        try:
            runner.verify(ctx, inv, scratch)
            record.ok = True
        except VerifyError as exc:
            record.error = f"verification failed: {exc}; log {log_path}"
    shutil.rmtree(scratch, ignore_errors=True)
    if record.ok:
        server = ", ".join(f"{k} {v:.1f}" for k, v in record.server_cpu_s.items())
        extra = f" ({record.transfer_only_mb_s:.1f} MB/s excl. fixed sleep)" if record.fixed_sleep_s else ""
        say(
            f"  {runner.key:<19} rep {rep}: {record.mb_s:7.1f} MB/s{extra}  wall {record.wall_s:6.1f} s  "
            f"cpu {record.cpu_s_per_gib:5.2f} s/GiB  rss {record.peak_rss_bytes / MIB:6.0f} MiB  "
            f"[server cpu: {server}]{_requests_text(record)}"
        )
    else:
        say(f"  {runner.key:<19} rep {rep}: FAILED: {record.error}")
    return record


def _requests_text(record: RepRecord) -> str:
    rpo = record.requests_per_object
    if rpo is None:
        return ""
    api = sum((record.api_requests or {}).values())
    return f"  requests {record.requests} ({api} API) = {rpo:.2f}/object"


def prepare_deliverables(
    ctx: BenchContext,
    uploader: Runner,
    scratch_root: Path,
    log_dir: Path,
    say: Callable[[str], None],
    sample_delay: float = 0.2,
    deadline_s: float = 1800.0,
) -> list[ExpectedFile]:
    """Upload and assign the run once (not timed), let the sandbox build deliverables, return the FASTQ ones."""
    say(f"  preparing deliverables: {uploader.key} uploads and assigns the run (not timed)")
    control, project = ctx.target.control, ctx.target.sandbox.project_id
    reset_target(ctx)
    control.set_settings(sample_delay=sample_delay)  # samples start running at assignment
    record = measure_once(uploader, ctx, 0, scratch_root, log_dir, say, reset=False)
    if not record.ok:
        raise RuntimeError(f"could not prepare deliverables: {record.error}")
    expected = len(ctx.run.samples)
    start = time.monotonic()
    say(f"  waiting for the sandbox to build {expected} samples' deliverables (server-side copies)")
    while True:
        samples = control.samples(project)
        done = [s for s in samples if s["last_status"]["status"] == "succeeded" and s.get("files")]
        failed = [s for s in samples if str(s["last_status"]["status"]).startswith("failed")]
        if failed:
            raise RuntimeError(f"sandbox samples failed: {[s['last_status'] for s in failed][:2]}")
        if len(done) >= expected:
            break
        if time.monotonic() - start > deadline_s:
            raise RuntimeError(f"only {len(done)} of {expected} samples have deliverables after {deadline_s:.0f} s")
        time.sleep(1.0)
    files = [
        ExpectedFile(f["filename"], int(f["size"]), str(f["checksum_sha256"]))
        for s in done
        for f in s["files"]
        if str(f["file_type"]).startswith("fastq")
    ]
    if len(files) != expected * len(READS):
        raise RuntimeError(f"expected {expected * len(READS)} FASTQ deliverables, the sandbox lists {len(files)}")
    total = sum(f.size for f in files)
    say(f"  deliverables ready after {time.monotonic() - start:.0f} s: {len(files)} FASTQs, {total / MB:,.1f} MB")
    return files
