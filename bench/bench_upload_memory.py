"""Peak memory and throughput of `transferd upload` on a multi-GiB run (prints figures; asserts nothing).

    .venv/bin/python bench/bench_upload_memory.py [--gib 2] [--moto] [--project] [--concurrency 8] ...

A synthetic run (8 samples x 4 lanes x R1/R2 of real multi-member gzip FASTQ, `bench.data`) is uploaded by the
one-shot command, run as a child process and measured from the outside (`bench.measure`: wall time, CPU, peak
RSS of the child). The sandbox provides the API; S3 is by default `bench.sink`, which reads and discards every
body, so the figure is the client's and not moto's (moto holds ~4.5 GiB RSS per GiB stored: `--moto` only
for runs of about 2 GiB or less). The target is a client peak RSS under 200 MiB whatever the run's size:
memory is bounded by `upload.max_bytes_in_flight`, not by file sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `transferd` importable from this tree
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack

from bench.data import ensure_run, warm_page_cache
from bench.measure import run_measured, tail
from bench.servers import SandboxServer, SinkServer
from bench.tools import BENCH_DIR, REPO_DIR
from transferd.sandbox import SandboxProcess

GIB = 1024**3
MIB = 1024**2
TARGET_RSS = 200 * MIB


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/bench_upload_memory.py", description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=2.0, help="total size of the run, GiB (default: 2)")
    p.add_argument("--moto", action="store_true", help="store in the sandbox's moto instead of the discarding sink")
    p.add_argument("--project", action="store_true", help="also assign the samples to the sandbox's project")
    p.add_argument("--concurrency", type=int, default=8, help="[upload] concurrency (default: 8)")
    p.add_argument("--max-objects", type=int, default=4, help="[upload] max_objects (default: 4)")
    p.add_argument("--max-bytes-in-flight", default="96MiB", help="[upload] max_bytes_in_flight (default: 96MiB)")
    p.add_argument("--part-size", default="8MiB", help="[upload] part_size (default: 8MiB)")
    p.add_argument("--checksums", default="when_supported", choices=("when_supported", "when_required"))
    p.add_argument("--work", type=Path, default=BENCH_DIR / "work" / "upload-memory", help="data and logs")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    return p.parse_args(argv)


def write_config(args: argparse.Namespace, work: Path) -> Path:
    path = work / "upload.toml"
    path.write_text(
        f'[state]\npath = "{work / "daemon.sqlite3"}"\n'
        f'[gencove]\ns3_checksums = "{args.checksums}"\n'
        f"[upload]\nconcurrency = {args.concurrency}\nmax_objects = {args.max_objects}\n"
        f'max_bytes_in_flight = "{args.max_bytes_in_flight}"\npart_size = "{args.part_size}"\n'
        'retry_deadline = "5m"\nassign_deadline = "5m"\n'
    )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    print(f"preparing a {args.gib:g} GiB run under {work} ...", flush=True)
    run = ensure_run(work / "RUN_UPLOAD_MEMORY", int(args.gib * GIB))
    warm_page_cache(run)
    config = write_config(args, work)
    state = work / "upload.sqlite3"
    for leftover in work.glob("upload.sqlite3*"):
        leftover.unlink()
    with ExitStack() as stack:
        if args.moto:
            moto = stack.enter_context(SandboxProcess("--sample-delay", "86400"))
            info = moto.info
            server = "moto (sandbox)"
        else:
            sink = SinkServer(work / "sink.log")
            stack.enter_context(sink)
            sandbox = SandboxServer(sink.url, work / "sandbox.log", ("--sample-delay", "86400"))
            stack.enter_context(sandbox)
            info = sandbox.info
            server = "bench.sink (discards bodies)"
        argv_ = [
            sys.executable, "-m", "transferd", "upload", str(run.root), "-c", str(config),
            "--host", info.api_url, "--s3-endpoint-url", info.s3_url, "--state", str(state), "--no-progress",
            "--destination", f"gncv://bench-memory-{int(time.time())}",
        ]  # fmt: skip
        if args.project:
            argv_ += ["--project-id", info.project_id]
        env = {**os.environ, "TRANSFERD_API_KEY": info.api_key, "PYTHONPATH": str(REPO_DIR)}
        log = work / "client.log"
        print(f"uploading {run.total_bytes / GIB:.2f} GiB in {len(run.files)} files to {server} ...", flush=True)
        m = run_measured(argv_, env=env, cwd=REPO_DIR, log_path=log, timeout=3600)
    mb_s = run.total_bytes / 1e6 / m.wall_s
    figures = {
        "bytes": run.total_bytes,
        "files": len(run.files),
        "server": server,
        "wall_s": round(m.wall_s, 2),
        "throughput_MB_s": round(mb_s, 1),
        "cpu_s": round(m.cpu_s, 2),
        "peak_rss_MiB": round(m.peak_rss_bytes / MIB, 1),
        "exit_code": m.exit_code,
        "config": {k: getattr(args, k) for k in ("concurrency", "max_objects", "max_bytes_in_flight", "part_size")},
    }
    print(f"  wall         {m.wall_s:8.2f} s   (process start to exit)")
    print(f"  throughput   {mb_s:8.1f} MB/s ({run.total_bytes / MIB / m.wall_s:.1f} MiB/s)")
    print(f"  CPU          {m.cpu_s:8.2f} s   ({m.cpu_s / m.wall_s:.2f} cores)")
    verdict = "under" if m.peak_rss_bytes < TARGET_RSS else "OVER"
    print(f"  peak RSS     {m.peak_rss_bytes / MIB:8.1f} MiB ({verdict} the {TARGET_RSS // MIB} MiB target)")
    print(f"  exit code    {m.exit_code}")
    if m.exit_code != 0:
        print(f"client log ({log}):\n{tail(log)}")
    if args.json:
        print(json.dumps(figures))
    return 0 if m.exit_code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
