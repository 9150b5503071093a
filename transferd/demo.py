"""`transferd demo`: the whole job, end to end, on the embedded sandbox.

It starts the Gencove-compatible sandbox (with its real S3 server), writes a config, starts the daemon as a
real process, then plays sequencer: a BCL Convert run (lanes to concatenate, a sample name with "_", index
reads and Undetermined left out) and a manifest drop. It waits until every sample is uploaded, assigned once
and its deliverables are mirrored back, checks every byte end to end, and prints what happened.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from transferd.synthetic import SyntheticSample, make_bclconvert_run, make_manifest_drop


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", help="keep everything here (default: a temporary folder, removed at the end)")
    p.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds (default 180)")
    p.add_argument("--reads", type=int, default=20000, help="reads per FASTQ file (default 20000)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _sha256_concat(paths: tuple[Path, ...]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _write_config(work: Path, project_id: str, api_url: str, s3_url: str, key_file: Path, port: int) -> Path:
    cfg = work / "transferd.toml"
    cfg.write_text(
        f"""# written by `transferd demo`
[gencove]
host = "{api_url}"
api_key_file = "{key_file}"
s3_endpoint_url = "{s3_url}"

[state]
path = "{work / "state" / "journal.sqlite3"}"

[upload]
part_size = "5MiB"

[[watch]]
path = "{work / "sequencers"}"
destination = "gncv://demo"
project_id = "{project_id}"
settle_seconds = "1s"
rescan_interval = "1s"
metadata = {{ source = "transferd demo" }}

[download]
destination = "{work / "results"}"
projects = ["{project_id}"]
interval = "2s"

[metrics]
listen = "127.0.0.1:{port}"
"""
    )
    return cfg


def _metrics(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not s.labels or set(s.labels) <= {"direction", "stage"}:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                key = f"{s.name}{{{labels}}}" if labels else s.name
                out[key] = s.value
    return out


def main(args: argparse.Namespace) -> int:
    from transferd.sandbox import SandboxProcess
    from transferd.sandbox.extra import missing_extra_message

    if (missing := missing_extra_message("demo")) is not None:
        print(missing, file=sys.stderr)
        return 2

    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="transferd-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    keep = bool(args.workdir)
    deadline = time.monotonic() + args.timeout
    daemon: subprocess.Popen[bytes] | None = None
    _say(f"working in {work}")
    try:
        with SandboxProcess("--sample-delay", "2") as sb:
            info = sb.info
            _say(f"sandbox up: API {info.api_url}, S3 {info.s3_url}, project {info.project_id}")
            key_file = work / "api-key"
            key_file.write_text(info.api_key + "\n")
            key_file.chmod(0o600)
            port = _free_port()
            cfg = _write_config(work, info.project_id, info.api_url, info.s3_url, key_file, port)
            (work / "sequencers").mkdir(exist_ok=True)
            log_path = work / "transferd.log"
            log = open(log_path, "wb")  # noqa: SIM115 - closed below, outlives this block
            daemon = subprocess.Popen(
                [sys.executable, "-m", "transferd", "run", "-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT
            )
            _say(f"daemon started (pid {daemon.pid}), log: {log_path}, metrics: http://127.0.0.1:{port}/metrics")

            _say("sequencer writes run 260101_DEMO_0001 (BCL Convert, 2 lanes, Undetermined), marker last")
            run_samples = make_bclconvert_run(
                work / "sequencers", "260101_DEMO_0001", ["Tumor-A", "Normal_B", "NA12878"], lanes=2, reads=args.reads
            )
            _say("a lab member drops a folder with a .fastq-map.csv (two chunks per read for one sample)")
            drop_samples = make_manifest_drop(work / "sequencers", "manual-drop-7", {"PatientX": 2, "PatientY": 1},
                                              reads=args.reads)
            expected: dict[str, SyntheticSample] = {}
            for s in run_samples:
                expected[s.name.replace("_", "-")] = s
            for s in drop_samples:
                expected[s.name] = s

            # Wait for: every sample assigned once, and its deliverables mirrored to disk.
            control = sb.control
            last = ""
            while True:
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {daemon.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not done after {args.timeout:.0f}s; see {log_path}")
                assigned = [a for a in control.assignments() if a.get("project_id") == info.project_id]
                samples = [s for s in control.samples(info.project_id) if s["client_id"] in expected]
                done = [s for s in samples if _status(s).startswith("succeeded")]
                mirrored = {s["client_id"] for s in done if _mirrored(work / "results", s)}
                n_assigned = len({a["sample_id"] for a in assigned})
                line = (f"assigned {n_assigned}/{len(expected)}, analysed {len(done)}/{len(expected)}, "
                        f"mirrored {len(mirrored)}/{len(expected)}")
                if line != last:
                    _say(line)
                    last = line
                if len(mirrored) == len(expected):
                    break
                time.sleep(0.5)

            _say("checking every byte end to end")
            ok = _report(work, expected, samples, assigned)
            try:
                m = _metrics(port)
                shown = ("transferd_transferred_bytes_total", "transferd_transferred_files_total",
                         "transferd_samples_completed_total", "transferd_retries_total")
                _say("metrics: " + ", ".join(f"{k}={v:g}" for k, v in sorted(m.items()) if k.startswith(shown)))
            except OSError as e:
                _say(f"could not read /metrics: {e}")
            daemon.send_signal(signal.SIGTERM)
            rc = daemon.wait(timeout=60)
            log.close()
            _say(f"daemon stopped with exit code {rc} after SIGTERM")
            return 0 if ok and rc == 0 else 1
    except (RuntimeError, TimeoutError, OSError) as e:
        _say(f"FAILED: {e}")
        return 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _status(sample: dict) -> str:
    return str((sample.get("last_status") or {}).get("status", ""))


def _mirrored(results: Path, sample: dict) -> bool:
    files = sample.get("files") or []
    folder = results / str(sample["client_id"]) / str(sample["id"])
    return bool(files) and all((folder / str(f["filename"])).is_file() for f in files)


def _report(work: Path, expected: dict[str, SyntheticSample], samples: list[dict], assigned: list[dict]) -> bool:
    ok = True
    # The sandbox counts assignment requests per upload: exactly once means 1 for every upload.
    if any(a.get("attempts") != 1 for a in assigned):
        ok = False
        _say("FAIL: an upload was assigned more than once")
    head = f"{'client_id':<12} {'R1 files':>8} {'R2 files':>8} {'assigned':>9} {'mirrored files':>15}"
    print(f"\n{head}  end-to-end sha256")
    for s in sorted(samples, key=lambda s: s["client_id"]):
        src = expected[s["client_id"]]
        folder = work / "results" / s["client_id"] / s["id"]
        checks = []
        for f in s.get("files", []):
            local = folder / f["filename"]
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
            good = digest == f["checksum_sha256"]
            if f["file_type"] == "fastq-r1":
                good = good and digest == _sha256_concat(src.r1)
            if f["file_type"] == "fastq-r2":
                good = good and digest == _sha256_concat(src.r2)
            checks.append(good)
        verdict = "ok (sources == uploaded == mirrored)" if checks and all(checks) else "MISMATCH"
        ok = ok and verdict.startswith("ok")
        print(f"{s['client_id']:<12} {len(src.r1):>8} {len(src.r2):>8} {'once':>9} {len(checks):>15}  {verdict}")
    print()
    _say("all samples uploaded, assigned exactly once, analysed and mirrored byte-identical" if ok else "FAILED")
    print(json.dumps({"workdir": str(work), "samples": len(samples), "ok": ok}))
    return ok


if __name__ == "__main__":
    raise SystemExit(main(argparse.ArgumentParser().parse_args()))
