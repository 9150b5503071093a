"""The chaos soak: the real daemon against the sandbox (and its real S3 server) while runs keep arriving and
everything that can fail, fails. At the end every sample is checked byte for byte.

    python bench/soak.py --minutes 30 [--seed N] [--report soak.json] [--workdir DIR] [--scale 1.0]

What happens (see docs/SOAK.md for the why):

1. Start the sandbox, a proxy in front of it (outages, secret capture), a download disk that can be filled,
   and `transferd run` with short intervals (settle 1s, rescan 1s, mirror every 2s, 5 MiB parts).
2. For `--minutes`, writer threads play sequencers into two watch roots (one named with a space and non-ASCII):
   BCL Convert, NovaSeq X and MiSeq-style runs, manifest drops, plain drops, files growing in slices, markers
   last, awkward names; and runs that must never go (unfinished, truncated gzip, zero-byte, R1-only,
   unreadable, broken manifest). Some run folders are deleted while they upload.
3. Meanwhile the main thread injects seeded faults: API and S3 5xx/429/SlowDown, resets mid-body, latency,
   credentials and signed URLs expiring early, the sandbox unreachable (proxy outage), SIGKILL of the daemon
   and a restart, a watch root renamed away and back, the download disk full; and sends webhooks, some
   forged, stale, tampered or replayed, checking each answer.
4. Then faults stop, the daemon drains, gets SIGTERM (must exit 0), and the verdict is computed: lost,
   duplicated, corrupted, forbidden uploads, secrets in logs, `.part` leftovers. Exit 0 only if all are zero.

The seed is printed first; the same seed replays the same runs and the same fault schedule (timing-dependent
outcomes may differ, the plan does not).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the soak_* helpers, when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # transferd, without an install

from soak_check import (
    RESULTS_MARKER,
    Observed,
    Verdict,
    attribute_known_bugs,
    find_leaks,
    journal_samples,
    judge,
    judge_holds,
)
from soak_data import Planner, RootGate, RunPlan, Writer, plan_summary
from soak_env import (
    REPO,
    SIGNATURE_HEADER,
    Daemon,
    DownloadDisk,
    Proxy,
    free_port,
    http,
    no_dac_prefix,
    signature,
)

GiB = 1024**3
WEBHOOK_SECRET_BYTES = 24

# Fault kinds and their weights in the random draw. Every kind also happens at least once per soak.
FAULT_WEIGHTS = {
    "api_5xx": 9,
    "api_429": 5,
    "api_latency": 3,
    "s3_5xx": 8,
    "s3_slowdown": 6,
    "s3_reset": 9,
    "s3_latency": 3,
    "download_fault": 7,
    "credentials_expiry": 4,
    "url_expiry": 4,
    "sandbox_outage": 3,
    "daemon_kill": 3,
    "root_away": 3,
    "disk_full": 3,
    "results_away": 2,  # the results share "unmounted": an empty mount point without the marker, then back
    "planted_symlink": 2,  # a symlink out of the share at a client folder or a .part name, removed later
    "hostile_api": 2,  # a listing whose `next` never advances, or a deliverable whose body never ends
    "graceful_restart": 2,  # SIGTERM mid-work: must exit 0 within the grace, then resume from the journal
    "sighup_reload": 2,  # unchanged, a changed watch (its watcher restarts), or an invalid file (must be rejected)
    "kill_during_assign": 2,  # SIGKILL while the assignment POST is being processed (its answer is lost)
    "crash_after_assign": 2,  # the daemon's own hook: exit right after the POST, before the journal knows
}
API_ENDPOINTS = (None, None, "uploads-post-data", "sample-sheet", "project-samples", "upload-credentials",
                 "samples", "projects", "uploads")  # fmt: skip
S3_OPERATIONS = ("UploadPart", "UploadPart", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload",
                 "ListParts", "HeadObject", "PutObject", "PutObject", None)  # fmt: skip
MAX_BACKLOG = 150  # go samples written but not assigned yet, beyond which no new run starts
WEBHOOK_KINDS = ("valid", "valid", "replay", "forged", "stale", "tampered", "unsigned", "malformed")


def say(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Options:
    minutes: float = 2.0
    seed: int = 0
    report: Path | None = None
    workdir: Path | None = None
    keep: bool = False
    scale: float = 1.0
    run_interval: float = 2.5  # seconds between new runs
    fault_interval: tuple[float, float] = (1.5, 4.0)
    writers: int = 3
    drain_timeout: float = 180.0
    log_level: str = "debug"
    sample_delay: float = 1.0
    tolerate_known_bugs: bool = False
    disk: str = "auto"


@dataclass
class Figures:
    faults: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)  # "operation/reason" summed over daemon incarnations
    retries_current: Counter[str] = field(default_factory=Counter)
    webhook_metric: Counter[str] = field(default_factory=Counter)
    webhook_metric_current: Counter[str] = field(default_factory=Counter)
    webhooks_sent: Counter[str] = field(default_factory=Counter)
    webhooks_ok: Counter[str] = field(default_factory=Counter)
    webhook_mismatches: list[str] = field(default_factory=list)
    webhooks_undelivered: int = 0
    deleted_runs: int = 0
    root_away_seconds: float = 0.0
    away_windows: list[list[float]] = field(default_factory=list)  # [root index, from, to] (unix time)
    inflight_kills: list[float] = field(default_factory=list)  # unix times of kill_during_assign
    disk_full_seconds: float = 0.0
    results_away_seconds: float = 0.0
    outage_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # soak machinery problems (not verdicts)
    held_metric: dict[str, int] = field(default_factory=dict)  # transferd_samples_held by reason, last scrape


class Soak:
    def __init__(self, opts: Options) -> None:
        self.o = opts
        # Separate streams, so that what one part draws never shifts another's plan.
        self.rng = random.Random(opts.seed * 3 + 1)  # the fault schedule and parameters
        self.rng_hooks = random.Random(opts.seed * 3 + 2)  # webhooks
        self.rng_prod = random.Random(opts.seed * 3 + 3)  # run kinds order and pacing
        self.fig = Figures()
        self.observed = Observed()
        self.plans: list[RunPlan] = []
        self.plans_lock = threading.Lock()
        self.stop_writing = threading.Event()
        self.abort = threading.Event()
        self.undo: list[tuple[float, str, Any]] = []  # (due, what, arg)
        self.sandbox: Any = None
        self.proxy: Proxy | None = None
        self.disk: DownloadDisk | None = None
        self.daemon: Daemon | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.futures: list[Future[None]] = []
        self.deleters: list[threading.Thread] = []
        self.failed_since: dict[str, float] = {}
        self.drain_started = 0.0
        self.backlog = 0  # go samples written but not yet assigned (from the last progress view)
        self.partial_seen: list[str] = []
        self.confinement: list[str] = []  # writes on the bare mount point or through a planted symlink
        self.results_away = False
        self.reload_problems: list[str] = []
        self.known_crashes: list[str] = []  # go sample -> since when the journal shows it failed
        self.webhook_history: list[tuple[bytes, str]] = []
        self.known_samples: list[dict[str, Any]] = []
        self.final_exit: int | None = None
        self.assign_kill_until = 0.0  # armed "kill_during_assign": kill when the POST is seen in flight
        self.crash_armed_until = 0.0  # a daemon started with TRANSFERD_CRASH_AT=after_assign_request
        self.report: dict[str, Any] = {}

    # ---------------------------------------------------------------------------------------------- setup --
    def setup(self) -> None:
        o = self.o
        if o.workdir:
            self.work = o.workdir.resolve()
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self.work = Path(tempfile.mkdtemp(prefix="transferd-soak-"))
        extra = f" --scale {o.scale:g}" if o.scale != 1 else ""
        say(f"seed {o.seed}  (replay: python bench/soak.py --seed {o.seed} --minutes {o.minutes:g}{extra})")
        say(f"working in {self.work}")
        seq = self.work / "sequencers"
        self.roots = [RootGate(seq / "novaseq-a"), RootGate(seq / "miseq b ü")]  # a root named like an SMB share
        for gate in self.roots:
            gate.path.mkdir(parents=True, exist_ok=True)
        from transferd.sandbox import SandboxProcess

        # moto keeps objects below MOTO_S3_DEFAULT_KEY_BUFFER_SIZE in memory: with 1 MiB, a long soak's GiBs of
        # uploads and deliverable copies go to (unlinked) temp files in the work dir instead of RAM.
        moto_tmp = self.work / "moto-tmp"
        moto_tmp.mkdir(exist_ok=True)
        self.sandbox = SandboxProcess("--sample-delay", f"{o.sample_delay:g}", "--restore-delay", "1",
                                      "--s3-env", "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=1048576",
                                      "--s3-env", f"TMPDIR={moto_tmp}")  # fmt: skip
        self.sandbox.start()
        info = self.sandbox.info
        self.info = info
        say(f"sandbox: API {info.api_url}, S3 {info.s3_url} (moto {info.s3_upstream_url}), project {info.project_id}")
        self.proxy = Proxy(info.api_url, info.s3_url, self.work / "proxy.log")
        say(f"proxy: API {self.proxy.api_url}, S3 {self.proxy.s3_url}")
        # Sparse, so generous costs nothing: a daemon that keeps up mirrors ~200 MiB per minute at scale 1
        # (a 30-minute soak at scale 0.5 filled a 5.9 GiB disk for real). Bounded by the free space here.
        free = shutil.disk_usage(self.work).free
        est = min(max(4 * GiB, int(o.minutes * 1200 * 1024**2 * o.scale)), max(4 * GiB, int(free * 0.8)))
        self.disk = DownloadDisk(self.work, est, o.disk)
        say(f"download disk: {self.disk.kind} ({self.disk.note})")
        self.disk.results.mkdir(parents=True, exist_ok=True)
        (self.disk.results / RESULTS_MARKER).touch()  # an unmounted share lacks it: the mirror pauses
        self.outside = self.work / "outside-the-share"  # where planted symlinks point: must stay empty
        self.outside.mkdir(exist_ok=True)
        self.prefix, self.permission_note, self.permissions_meaningful = no_dac_prefix()
        say(f"unreadable files: {self.permission_note}")
        self.webhook_secret = hashlib.sha256(f"webhook-{o.seed}-{time.time()}".encode()).hexdigest()[:40]
        self.port = free_port()
        self.config = self._write_config()
        self.daemon = Daemon(self.config, self.port, self.work / "transferd.log", self.prefix)
        self.daemon.start()
        self.daemon.wait_http()
        say(f"daemon up (pid {self.daemon.proc.pid if self.daemon.proc else '?'}), metrics "
            f"http://127.0.0.1:{self.port}/metrics, log {self.daemon.log}")  # fmt: skip
        self.second_daemon = self._second_daemon()
        say(f"a second daemon on the same journal: {self.second_daemon}")
        # The sandbox delivers its own (correctly signed) webhooks to the daemon too.
        self.sandbox.control.set_webhook(info.project_id, self.daemon.url("/webhooks/gencove"), self.webhook_secret)
        dests = ["gncv://soak-a", "gncv://soak-b"]
        self.planner = Planner(o.seed, dests, o.scale, self.permissions_meaningful, bulk=o.minutes >= 5)
        self.writer = Writer(self.roots, o.seed)

    def _second_daemon(self) -> str:
        """One daemon per journal: a second `transferd run` on the same config must refuse and leave the first
        alone."""
        r = subprocess.run([*self.prefix, sys.executable, "-m", "transferd", "run", "-c", str(self.config)],
                           cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
        err = (r.stderr.strip().splitlines() or [""])[-1][:200]
        assert self.daemon is not None
        if r.returncode != 0 and "journal" in r.stderr.lower() and self.daemon.alive():
            return f"refused (exit {r.returncode}): {err}"
        return f"NOT REFUSED as expected (exit {r.returncode}, first alive: {self.daemon.alive()}): {err}"

    def _write_config(self) -> Path:
        key_file = self.work / "api-key"
        key_file.write_text(self.info.api_key + "\n")
        key_file.chmod(0o600)
        secret_file = self.work / "webhook-secret"
        secret_file.write_text(self.webhook_secret + "\n")
        secret_file.chmod(0o600)
        assert self.proxy is not None and self.disk is not None

        def q(v: object) -> str:
            return json.dumps(str(v))

        watches = ""
        for gate, dest in zip(self.roots, ("gncv://soak-a", "gncv://soak-b"), strict=True):
            watches += f"""
[[watch]]
path = {q(gate.path)}
destination = "{dest}"
project_id = "{self.info.project_id}"
settle_seconds = "1s"
quiet_seconds = "4s"
rescan_interval = "1s"
metadata = {{ source = "transferd soak", seed = {self.o.seed} }}
"""
        cfg = self.work / "transferd.toml"
        cfg.write_text(f"""# written by bench/soak.py (seed {self.o.seed})
[gencove]
host = "{self.proxy.api_url}"
api_key_file = {q(key_file)}
s3_endpoint_url = "{self.proxy.s3_url}"
request_timeout = "20s"

[state]
path = {q(self.work / "state" / "journal.sqlite3")}

[upload]
concurrency = 6
max_objects = 4
max_bytes_in_flight = "48MiB"
part_size = "5MiB"
single_put_max = "4MiB"
retry_deadline = "15m"
assign_deadline = "15m"
{watches}
[download]
destination = {q(self.disk.results)}
projects = ["{self.info.project_id}"]
interval = "2s"
concurrency = 4
webhook_secret_file = {q(secret_file)}
webhook_tolerance = "5m"
marker = "{RESULTS_MARKER}"
recheck_interval = "20s"

[metrics]
listen = "127.0.0.1:{self.port}"

[log]
level = "{self.o.log_level}"
format = "kv"

[service]
shutdown_grace = "5s"
watchdog = false
""")
        return cfg

    # ------------------------------------------------------------------------------------------- writers --
    def _producer(self, chaos_end: float) -> None:
        """Submits a new run every `run_interval` (jittered) until chaos ends. The first plans cycle through
        every kind once, so each kind happens in every soak, however short."""
        assert self.pool is not None
        kinds = [k for k, _ in self.planner.kinds()]
        self.rng_prod.shuffle(kinds)
        while not self.stop_writing.is_set() and time.monotonic() < chaos_end:
            kind = kinds.pop() if kinds else None
            # Back-pressure: a run starts only when a writer is free, so the chaos ends with little left to write,
            # and only while the daemon keeps up (on a busy machine a backlog would outlast any drain deadline).
            while not self.stop_writing.is_set() and (
                sum(not f.done() for f in self.futures) >= self.o.writers or self.backlog > MAX_BACKLOG
            ):
                self.stop_writing.wait(0.2)
            if self.stop_writing.is_set() or time.monotonic() >= chaos_end:
                break
            plan = self.planner.next_plan(kind)
            with self.plans_lock:
                self.plans.append(plan)
            self.futures.append(self.pool.submit(self._write_plan, plan))
            self.stop_writing.wait(self.o.run_interval * self.rng_prod.uniform(0.5, 1.5))

    def _write_plan(self, plan: RunPlan) -> None:
        try:
            self.writer.write(plan, self.abort)
            plan.steps = []  # the bytes are on disk and their hashes in the plan: free the memory
            if plan.fix_after:
                self.writer.play_steps(plan, plan.fix_after, self.abort)
                plan.notes.append("permissions fixed")
            if plan.after_assigned:
                t = threading.Thread(target=self._after_assigned, args=(plan,), daemon=True)
                self.deleters.append(t)
                t.start()
            if plan.delete_during_upload or plan.rewrite_during_upload:
                t = threading.Thread(target=self._delete_while_uploading, args=(plan,), daemon=True)
                self.deleters.append(t)
                t.start()
        except Exception as e:  # a writer bug must not stop the soak silently
            self.fig.errors.append(f"writer {plan.id}: {type(e).__name__}: {e}")
            traceback.print_exc()

    def _delete_while_uploading(self, plan: RunPlan) -> None:
        """Wait until the daemon uploads this run (a slot exists and, if possible, parts are going), then
        delete the run folder (or replace one of its sources)."""
        paths = {p for s in plan.samples for p in s.paths()}
        deadline = time.monotonic() + 45
        keys: set[str] = set()
        while time.monotonic() < deadline and not self.abort.is_set():
            with contextlib.suppress(Exception):
                uploads = self.sandbox.control.uploads()
                keys = {u["s3"]["object_name"] for u in uploads if u["destination_path"] in paths}
            if keys:
                break
            time.sleep(0.3)
        parts_deadline = time.monotonic() + 8
        while keys and time.monotonic() < parts_deadline and not (keys & self.observed.parts_seen):
            time.sleep(0.2)
        when = "while uploading" if keys else "before any upload started"
        if plan.rewrite_during_upload:
            self.writer.play_steps(plan, plan.rewrite_during_upload, self.abort)
            plan.rewrite_during_upload = []
            plan.notes.append(f"a source replaced {when}")
            self.fig.faults["source_replaced_" + when.replace(" ", "_")] += 1
            return
        gate = self.roots[plan.root]
        with gate.hold() as root:
            shutil.rmtree(root / plan.folder, ignore_errors=True)
        plan.deleted_at = time.time()
        plan.notes.append(f"deleted {when}")
        self.fig.deleted_runs += 1
        self.fig.faults["run_deleted_while_uploading" if keys else "run_deleted_before_upload"] += 1

    def _after_assigned(self, plan: RunPlan) -> None:
        """Once every sample of the run is assigned, rename its folder or grow one of its FASTQs
        (docs/IDENTITY.md: the daemon must hold, not upload again). Skipped, expecting nothing, if the run is not
        assigned within the deadline (a long fault)."""
        paths = {s.dest_r1 for s in plan.samples if s.expect == "go"}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not self.abort.is_set():
            with contextlib.suppress(Exception):
                done = {u["destination_path"] for u in self.sandbox.control.uploads() if u.get("sample_id")}
                if paths <= done:
                    break
            time.sleep(0.5)
        else:
            plan.held_expect = []
            plan.notes.append(f"{plan.after_assigned} skipped: not assigned in time")
            return
        gate = self.roots[plan.root]
        with gate.hold() as root:
            if plan.after_assigned == "rename":
                os.rename(root / plan.folder, root / plan.moved_to)
            elif plan.after_assigned == "reuse":
                shutil.rmtree(root / plan.folder)
            else:
                with open(root / plan.topup_rel, "ab") as fh:
                    fh.write(plan.topup_data)
        plan.notes.append(f"{plan.after_assigned} after assignment")
        self.fig.faults[f"identity_{plan.after_assigned}"] += 1
        if plan.after_assigned == "reuse":
            self._reuse(plan)

    def _reuse(self, plan: RunPlan) -> None:
        """Write the folder again with other data, learn the new delivery's folder from the sandbox, and expect
        its samples there (judged like any go sample: byte-identical, assigned once, mirrored)."""
        self.writer.play_steps(plan, plan.reuse_steps, self.abort)
        plan.reuse_steps = []
        prefix = f"{plan.gncv_folder}@"
        folder = None
        deadline = time.monotonic() + 150
        while folder is None and time.monotonic() < deadline and not self.abort.is_set():
            with contextlib.suppress(Exception):
                folder = next((u["destination_path"].rsplit("/", 1)[0] for u in self.sandbox.control.uploads()
                               if u["destination_path"].startswith(prefix)), None)  # fmt: skip
            time.sleep(0.5)
        folder = folder or f"{prefix}(no new delivery seen)"
        for s in plan.reuse_samples:
            s.dest_r1 = f"{folder}/{s.client_id}_R1.fastq.gz"
            s.dest_r2 = f"{folder}/{s.client_id}_R2.fastq.gz" if s.dest_r2 else None
        with self.plans_lock:
            plan.samples.extend(plan.reuse_samples)
        plan.notes.append(f"written again: new delivery {folder}")

    def _holds_reported(self) -> bool:
        """Every hold the driver caused shows in the metric (the drain waits for the daemon to see them)."""
        want = Counter(reason for p in self.plans for _, reason in p.held_expect)
        return all(self.fig.held_metric.get(reason, 0) >= n for reason, n in want.items())

    # ---------------------------------------------------------------------------------------------- faults --
    def _fault_schedule(self, start: float, end: float) -> list[tuple[float, str, bool]]:
        """Seeded: every kind once at a random time (mandatory: retried until it can be applied), plus random
        draws every `fault_interval`."""
        span = end - start
        events = [(start + self.rng.uniform(0.05, 0.7) * span, kind, True) for kind in FAULT_WEIGHTS]
        t = start + self.rng.uniform(*self.o.fault_interval)
        kinds, weights = zip(*FAULT_WEIGHTS.items(), strict=True)
        while t < end - 2:
            events.append((t, self.rng.choices(kinds, weights)[0], False))
            t += self.rng.uniform(*self.o.fault_interval)
        return sorted(events)

    def inject(self, kind: str) -> bool:
        """Apply one fault now; False if it could not be applied at this moment (e.g. the daemon is down)."""
        ctl = self.sandbox.control
        r = self.rng
        now = time.monotonic()
        try:
            if kind == "api_5xx":
                maint = r.random() < 0.25
                rule = {"target": "api", "status": 503 if maint else r.choice((500, 502, 503)),
                        "times": r.randint(1, 4), "maintenance": maint}  # fmt: skip
                endpoint = r.choice(API_ENDPOINTS)
                if endpoint:
                    rule["endpoint"] = endpoint
                ctl.add_fault(**rule)
            elif kind == "api_429":
                ctl.add_fault(target="api", status=429, retry_after=1, times=r.randint(1, 3))
            elif kind == "api_latency":
                ctl.add_fault(target="api", latency=round(r.uniform(0.2, 1.5), 2), times=r.randint(3, 10))
            elif kind in ("s3_5xx", "s3_slowdown"):
                rule = {"target": "s3", "times": r.randint(1, 3)}
                rule.update({"status": 503, "code": "SlowDown"} if kind == "s3_slowdown" else {"status": 500})
                op = r.choice(S3_OPERATIONS)
                if op:
                    rule["operation"] = op
                ctl.add_fault(**rule)
            elif kind == "s3_reset":
                op = r.choice(("UploadPart", "UploadPart", "UploadPart", "CompleteMultipartUpload", "ListParts",
                               "PutObject", "PutObject"))  # fmt: skip
                ctl.add_fault(target="s3", operation=op, reset=True, times=r.randint(1, 2))
            elif kind == "s3_latency":
                ctl.add_fault(target="s3", latency=round(r.uniform(0.3, 2.0), 2), times=r.randint(2, 6))
            elif kind == "download_fault":
                what = r.choice(("corrupt", "reset", "status"))
                if what == "corrupt":
                    ctl.add_fault(target="download", corrupt=True, times=r.randint(1, 2))
                elif what == "reset":
                    cut = r.randint(100, 2 * 1024**2)
                    ctl.add_fault(target="download", reset_after_bytes=cut, times=r.randint(1, 2))
                else:
                    ctl.add_fault(target="download", status=r.choice((500, 503)), times=r.randint(1, 2))
                kind = f"download_{what}"
            elif kind == "hostile_api":
                if r.random() < 0.5:  # the mirror's poll meets a listing that would never end
                    ctl.add_fault(target="api", endpoint="project-samples", stuck_next=True, times=r.randint(1, 3))
                    kind = "hostile_listing"
                else:  # a deliverable that streams past its declared size, forever
                    ctl.add_fault(target="download", endless=True, times=r.randint(1, 2))
                    kind = "hostile_endless_body"
            elif kind == "credentials_expiry":
                ctl.add_fault(credentials_ttl=round(r.uniform(2, 6), 1), times=r.randint(1, 3))
            elif kind == "url_expiry":
                ctl.add_fault(url_ttl=round(r.uniform(0.3, 2), 1), times=r.randint(1, 4))
            elif kind == "sandbox_outage":
                seconds = round(r.uniform(1.5, 5), 1)
                assert self.proxy is not None
                self.proxy.outage(seconds)
                self.fig.outage_seconds += seconds
            elif kind == "daemon_kill":
                assert self.daemon is not None
                if not self.daemon.alive():
                    return False
                self.crash_armed_until = 0.0  # the restart below starts a normal daemon
                self._scrape()  # the counters die with the process: keep the latest
                self._retire_counters()
                self.daemon.kill()
                self.undo.append((now + r.uniform(0.3, 2.5), "restart", None))
            elif kind == "graceful_restart":
                assert self.daemon is not None
                if not self.daemon.alive() or self.crash_armed_until:
                    return False
                # SIGTERM before the daemon installed its handlers (during imports) kills it by the signal,
                # which systemd counts as a clean stop too; the graceful path needs a daemon that is up.
                try:
                    self.daemon.wait_http(timeout=30)
                except RuntimeError:
                    return False
                self._scrape()
                self._retire_counters()
                log_mark = self.daemon.log.stat().st_size
                code = self.daemon.terminate(timeout=5 + 20)  # shutdown_grace 5s, plus room
                if code != 0:
                    what = f"SIGTERM mid-work: exit code {code} (expected 0)"
                    with open(self.daemon.log, "rb") as fh:
                        fh.seek(log_mark)
                        dump = fh.read().decode(errors="replace")
                    if code is None and "Fatal Python error: Aborted" in dump and "_scan_sync" in dump:
                        # the SIGABRT stacks: asyncio.run's executor shutdown waits for a discovery scan
                        self.known_crashes.append(f"{what}: stopping waited > 25 s for a discovery scan thread "
                                                  f"-- known bug sigterm-waits-for-scan")  # fmt: skip
                    else:
                        self.daemon.crashes.append(what)
                        # CI keeps only the soak's output: show what the daemon was doing (its slow-to-cancel
                        # warnings and the SIGABRT stacks), not just that it hung.
                        lines = [ln for ln in dump.splitlines()
                                 if "task_slow_to_cancel" in ln or "threads_left_behind" in ln or "service." in ln]
                        stacks = dump[dump.find("Fatal Python error"):] if "Fatal Python error" in dump else ""
                        say(f"{what}; the daemon's log since the SIGTERM:\n" + "\n".join(lines[-30:])
                            + "\n" + "\n".join(stacks.splitlines()[:120]))  # fmt: skip
                self.daemon.proc = None
                self.undo.append((now + r.uniform(0.2, 1.5), "restart", None))
            elif kind == "sighup_reload":
                assert self.daemon is not None and self.daemon.proc is not None
                if not self.daemon.serving() or self.crash_armed_until:
                    return False
                variant = r.choice(("unchanged", "watch_changed", "invalid"))
                text = self.config.read_text()
                log_mark = self.daemon.log.stat().st_size
                if variant == "watch_changed":  # the first watch's quiet period flips between 4s and 5s
                    flip = 'quiet_seconds = "5s"' if 'quiet_seconds = "4s"' in text else 'quiet_seconds = "4s"'
                    text = text.replace('quiet_seconds = "4s"', flip, 1).replace('quiet_seconds = "5s"', flip, 1)
                    self.config.write_text(text)
                elif variant == "invalid":
                    self.config.write_text(text.replace('part_size = "5MiB"', 'part_size = "1MiB"'))
                self.daemon.proc.send_signal(signal.SIGHUP)
                want = "service.reload_rejected" if variant == "invalid" else "service.reloaded"
                deadline = time.monotonic() + 10
                seen = False
                while time.monotonic() < deadline and not seen:
                    time.sleep(0.1)
                    with open(self.daemon.log, "rb") as fh:
                        fh.seek(log_mark)
                        seen = want.encode() in fh.read()
                if variant == "invalid":
                    self.config.write_text(text)  # the valid file again, before anything restarts the daemon
                if not seen:
                    self.reload_problems.append(f"SIGHUP ({variant} config): no {want} within 10 s")
                kind = f"sighup_reload_{variant}"
            elif kind == "kill_during_assign":
                if self.assign_kill_until or self.crash_armed_until:
                    return False
                ctl.add_fault(target="api", endpoint="project-samples", method="POST", latency=2.0, times=1)
                self.assign_kill_until = now + 30
            elif kind == "crash_after_assign":
                assert self.daemon is not None
                if self.crash_armed_until or self.assign_kill_until or not self.daemon.alive():
                    return False
                self._scrape()
                self._retire_counters()
                self.daemon.kill("to restart it with TRANSFERD_CRASH_AT=after_assign_request")
                self.daemon.start(env={"TRANSFERD_CRASH_AT": "after_assign_request"})
                self.crash_armed_until = now + 40
            elif kind == "root_away":
                choices = [g for g in self.roots if not g.away]
                if not choices:
                    return False
                gate = r.choice(choices)
                gate.take_away()
                seconds = r.uniform(2, 6)
                self.fig.root_away_seconds += seconds
                window = [float(self.roots.index(gate)), time.time(), time.time() + 3600]
                self.fig.away_windows.append(window)
                self.undo.append((now + seconds, "root_back", (gate, window)))
            elif kind == "results_away":
                assert self.disk is not None
                if self.results_away:
                    return False
                results = self.disk.results
                if self.disk.filled:
                    return False  # mkdir of the bare mount point would fail for want of space
                os.rename(results, results.with_name(results.name + ".unmounted"))
                try:
                    os.mkdir(results)  # the bare mount point: no marker
                except OSError:
                    os.rename(results.with_name(results.name + ".unmounted"), results)
                    raise
                self.results_away = True
                seconds = r.uniform(2, 6)
                self.fig.results_away_seconds += seconds
                self.undo.append((now + seconds, "results_back", None))
            elif kind == "planted_symlink":
                planted = self._plant_symlink(r)
                if planted is None:
                    return False
                self.undo.append((now + r.uniform(3, 8), "unplant", planted))
                kind = f"planted_symlink_{'part' if planted.name.endswith('.part') else 'folder'}"
            elif kind == "disk_full":
                assert self.disk is not None
                if not self.disk.can_fill:
                    self.fig.faults["disk_full (unavailable: " + self.disk.kind + ")"] += 1
                    return True  # as done as it can be here
                if self.disk.filled:
                    return False
                self.disk.fill()
                seconds = r.uniform(3, 8)
                self.fig.disk_full_seconds += seconds
                self.undo.append((now + seconds, "disk_free", None))
            else:
                raise ValueError(kind)
            self.fig.faults[kind] += 1
            return True
        except Exception as e:
            self.fig.errors.append(f"fault {kind}: {type(e).__name__}: {e}")
            return True

    def _do_undo(self, what: str, arg: Any) -> None:
        assert self.daemon is not None and self.disk is not None
        if what == "restart":
            if not self.daemon.alive():
                self.daemon.start()
        elif what == "root_back":
            gate, window = arg
            gate.bring_back()
            window[2] = time.time()
        elif what == "disk_free":
            self.disk.free()
        elif what == "results_back":
            results = self.disk.results
            left = sorted(p.name for p in results.iterdir())
            if left:
                self.confinement.append(f"written on the bare mount point while the share was away: {left[:5]}")
                shutil.rmtree(results)
            else:
                os.rmdir(results)
            os.rename(results.with_name(results.name + ".unmounted"), results)
            self.results_away = False
        elif what == "unplant":
            if self.results_away:  # the link is on the share that is away: take it out once it is back
                self.undo.append((time.monotonic() + 1, "unplant", arg))
            else:
                arg.unlink()

    def _plant_symlink(self, r: random.Random) -> Path | None:
        """A symlink out of the share where the mirror will write: a client folder of a sample still running,
        or the `.part` name of a finished sample's file not mirrored yet. None when there is no such place."""
        assert self.disk is not None
        if self.results_away or self.disk.filled:  # no room for a folder or a link on a full disk
            return None
        from transferd.mirror.confined import part_name

        results = self.disk.results
        samples = self.sandbox.control.samples(self.info.project_id)
        running = [s for s in samples if _status(s) == "running" and s.get("client_id")
                   and not os.path.lexists(results / s["client_id"])]  # fmt: skip
        waiting = [(s, f) for s in samples if _status(s).startswith("succeeded") for f in s.get("files") or []
                   if not os.path.lexists(results / s["client_id"] / s["id"] / f["filename"])
                   and not _through_symlink(results, Path(s["client_id"]) / s["id"])]  # fmt: skip
        if waiting and (not running or r.random() < 0.5):
            s, f = r.choice(waiting)
            folder = results / s["client_id"] / s["id"]
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / part_name(f["filename"], f["id"])
            target: Path = self.outside / f"{s['id']}-{f['id']}"
        elif running:
            s = r.choice(running)
            link, target = results / s["client_id"], self.outside
        else:
            return None
        if os.path.lexists(link):
            return None
        try:
            link.symlink_to(target)
        except FileExistsError:  # the mirror got there first
            return None
        return link

    def _run_undo(self, everything: bool = False) -> None:
        now = time.monotonic()
        due = [u for u in self.undo if everything or u[0] <= now]
        self.undo = [u for u in self.undo if u not in due]
        for _, what, arg in sorted(due, key=lambda u: u[0]):
            try:
                self._do_undo(what, arg)
            except Exception as e:
                self.fig.errors.append(f"undo {what}: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------------------------- observation --
    def _poll_log(self) -> None:
        with contextlib.suppress(Exception):
            entries = self.sandbox.control.log(since=self.observed.last_seq)
            self.observed.feed(entries)

    def _scrape(self) -> None:
        assert self.daemon is not None
        if not self.daemon.alive():
            return
        try:
            m = self.daemon.metrics()
        except OSError:
            return
        retries: Counter[str] = Counter()
        hooks: Counter[str] = Counter()
        for (name, labels), value in m.items():
            d = dict(labels)
            if name == "transferd_retries_total":
                retries[f"{d.get('operation', '?')}/{d.get('reason', '?')}"] += int(value)
            elif name == "transferd_webhook_requests_total":
                hooks[d.get("outcome", "?")] += int(value)
            elif name == "transferd_samples_held":
                self.fig.held_metric[d.get("reason", "?")] = int(value)
        self.fig.retries_current = retries
        self.fig.webhook_metric_current = hooks

    def _retire_counters(self) -> None:
        self.fig.retries.update(self.fig.retries_current)
        self.fig.webhook_metric.update(self.fig.webhook_metric_current)
        self.fig.retries_current = Counter()
        self.fig.webhook_metric_current = Counter()

    def _check_final_files(self) -> None:
        """While everything runs: a final-named file must always be whole (the mirror writes `.part` and renames).
        A size check of every final file against the sandbox's file list is cheap; the hashes come at the end."""
        assert self.disk is not None
        sizes = {}
        for s in self.known_samples:
            for f in s.get("files") or []:
                sizes[self.disk.results / s["client_id"] / s["id"] / f["filename"]] = f["size"]
        for path, want in sizes.items():
            try:
                got = path.stat().st_size
            except OSError:
                continue
            if got != want:
                self.partial_seen.append(f"{path}: {got} of {want} bytes under its final name at "
                                         f"{time.strftime('%X')}")  # fmt: skip

    def _refresh_samples(self) -> None:
        with contextlib.suppress(Exception):
            samples = self.sandbox.control.samples(self.info.project_id)
            self.known_samples = [s for s in samples if _status(s).startswith("succeeded")]

    # ------------------------------------------------------------------------------------------- webhooks --
    def send_webhook(self, kind: str) -> None:
        assert self.daemon is not None
        if not self.daemon.alive():
            return
        url = self.daemon.url("/webhooks/gencove")
        now = int(time.time())
        secret = self.webhook_secret
        if kind == "replay" and not self.webhook_history:
            kind = "valid"
        age = 0.0
        if kind == "replay":
            body, header = self.rng_hooks.choice(self.webhook_history)
            age = now - int(header.split(",")[0].removeprefix("t="))
        else:
            sample = self.rng_hooks.choice(self.known_samples) if self.known_samples else None
            samples = [{"id": sample["id"], "client_id": sample["client_id"]}] if sample else []
            event = {
                "event_id": f"soak-{self.o.seed}-{self.rng_hooks.getrandbits(64):016x}",
                "event_type": "analysis_complete_v2",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "payload": {"project": {"id": self.info.project_id}, "samples": samples},
            }
            body = json.dumps([event]).encode()
            header = signature(secret, body, now)
            if kind == "forged":
                header = signature("not-the-secret-" + secret[:8], body, now)
            elif kind == "stale":
                header = signature(secret, body, now - 3600)
            elif kind == "tampered":
                event["payload"]["project"]["id"] = "someone-elses-project"
                body = json.dumps([event]).encode()
            elif kind == "malformed":
                body = b'{"event_id": "broken", "payload": [1, 2'
                header = signature(secret, body, now)
        headers = {SIGNATURE_HEADER: header} if kind != "unsigned" else {}
        try:
            status, resp = http("POST", url, raw=body, headers=headers, timeout=10)
        except OSError:
            self.fig.webhooks_undelivered += 1
            return
        self.fig.webhooks_sent[kind] += 1
        ok = False
        detail = ""
        try:
            doc = json.loads(resp) if resp else {}
        except ValueError:
            doc = {}
        if kind == "valid":
            ok = status == 200 and doc.get("accepted") == 1
            if ok:
                self.webhook_history.append((body, header))
        elif kind == "replay":
            # A replay within the 5 min tolerance is a duplicate (200, ignored); an older one is stale (401).
            duplicate = status == 200 and doc.get("accepted") == 0 and doc.get("duplicates", 0) >= 1
            stale = status == 401 and b"stale" in resp
            ok = duplicate if age < 280 else stale if age > 320 else duplicate or stale
        elif kind in ("forged", "stale", "tampered", "unsigned"):
            ok = status == 401
        elif kind == "malformed":
            ok = status == 400
        if ok:
            self.fig.webhooks_ok[kind] += 1
        else:
            detail = f"{kind} webhook: got HTTP {status} {resp[:200]!r}"
            self.fig.webhook_mismatches.append(detail)

    # ------------------------------------------------------------------------------------------- phases --
    def chaos(self) -> None:
        o = self.o
        start = time.monotonic()
        end = start + o.minutes * 60
        schedule = self._fault_schedule(start + 3, end)
        say(f"chaos for {o.minutes:g} min: {len(schedule)} faults scheduled, a new run every ~{o.run_interval:g}s")
        self.pool = ThreadPoolExecutor(max_workers=o.writers, thread_name_prefix="writer")
        producer = threading.Thread(target=self._producer, args=(end,), name="producer", daemon=True)
        producer.start()
        next_log = next_scrape = next_hook = next_status = next_samples = time.monotonic()
        while time.monotonic() < end:
            now = time.monotonic()
            while schedule and schedule[0][0] <= now:
                _, kind, mandatory = schedule.pop(0)
                if not self.inject(kind) and mandatory and now + 2 < end:
                    schedule.append((now + 2, kind, True))  # not possible right now: try again shortly
                    schedule.sort()
            self._run_undo()
            self._watch_daemon()
            if now >= next_log:
                self._poll_log()
                next_log = now + 1.0
            if now >= next_scrape:
                self._scrape()
                next_scrape = now + 2.0
            if now >= next_samples:
                self._refresh_samples()
                self._check_final_files()
                next_samples = now + 15.0
            if now >= next_hook:
                self.send_webhook(self.rng_hooks.choice(WEBHOOK_KINDS))
                next_hook = now + self.rng_hooks.uniform(2, 5)
            if now >= next_status:
                self._status_line("chaos")
                next_status = now + 10.0
            time.sleep(0.2)
        say("chaos over: no new runs or faults; letting writers finish and undoing what is still broken")
        self.stop_writing.set()
        producer.join(30)
        self._wait_writers()
        self._run_undo(everything=True)
        self.sandbox.control.clear_faults()
        self.assign_kill_until = 0.0
        if self.crash_armed_until:  # the daemon that drains must be a normal one
            self.crash_armed_until = 0.0
            assert self.daemon is not None
            if self.daemon.alive():
                self.daemon.kill("(TRANSFERD_CRASH_AT never fired) to restart it normally")
            self.daemon.proc = None
            self.daemon.start()
        time.sleep(max(0.0, 5.5))  # the longest proxy outage ends by itself
        self._watch_daemon()
        if self.daemon is not None and not self.daemon.alive():
            self.daemon.start()

    def _wait_writers(self) -> None:
        """Writers finish what they started; undo actions (a root coming back) keep running meanwhile."""
        deadline = time.monotonic() + 180
        told = time.monotonic() + 20
        while time.monotonic() < deadline:
            if time.monotonic() > told:
                say(f"still waiting for {sum(not f.done() for f in self.futures)} writer(s)")
                told += 20
            self._run_undo()
            self._watch_daemon()
            self._poll_log()
            if all(f.done() for f in self.futures) and not any(t.is_alive() for t in self.deleters):
                break
            time.sleep(0.2)
        else:
            self.fig.errors.append("writers still busy 180s after the chaos ended")
        assert self.pool is not None
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _armed_kills(self) -> None:
        """Carry out (or give up) the assignment-time kills that are armed."""
        assert self.daemon is not None and self.proxy is not None
        now = time.monotonic()
        if self.assign_kill_until:
            inflight = []
            with contextlib.suppress(Exception):
                inflight = self.proxy.stats()["recorder"]["inflight"]
            if any(r.startswith("POST /api/v2/project-samples/") for r in inflight) and self.daemon.alive():
                self._scrape()
                self._retire_counters()
                self.daemon.kill("while its assignment POST was in flight")
                self.fig.inflight_kills.append(time.time())
                self.fig.faults["kill_during_assign (fired)"] += 1
                self.undo.append((now + self.rng.uniform(0.5, 2.0), "restart", None))
                self.assign_kill_until = 0.0
            elif now > self.assign_kill_until:
                self.assign_kill_until = 0.0  # no assignment came along
        if self.crash_armed_until and self.daemon.proc is not None:
            code = self.daemon.proc.poll()
            if code is not None:
                self.crash_armed_until = 0.0
                if code == 137:
                    self.fig.faults["crash_after_assign (fired)"] += 1
                    self.daemon.kills += 1
                else:
                    self.daemon.crashes.append(f"daemon armed with TRANSFERD_CRASH_AT exited with {code}")
                self.daemon.proc = None
                self.daemon.start()
            elif now > self.crash_armed_until:  # no assignment came along: back to a normal daemon
                self.crash_armed_until = 0.0
                self._scrape()
                self._retire_counters()
                self.daemon.kill("(TRANSFERD_CRASH_AT never fired) to restart it normally")
                self.daemon.start()

    def _watch_daemon(self) -> None:
        assert self.daemon is not None
        self._armed_kills()
        if any(u[1] == "restart" for u in self.undo) or self.crash_armed_until:
            return  # killed on purpose, restart pending
        crash = self.daemon.check_crash()
        if crash:
            say(f"!! {crash}; restarting it (this fails the soak)")
            self._retire_counters()
            self.daemon.start()

    def _progress(self) -> tuple[int, int, int, int, int]:
        """(go samples, uploaded+assigned, analysed, mirrored, given up) — a cheap view for progress and draining.
        "Given up": the journal has held the sample as `failed` for 20 s on end (discovery revives a sample that
        merely was not ready within seconds, so this one will not come). A "maybe" sample (deleted run) that was
        assigned counts like a go sample: it must be analysed and mirrored too."""
        ctl = self.sandbox.control
        uploads = {u["destination_path"]: u for u in ctl.uploads()}
        samples = {s["id"]: s for s in ctl.samples(self.info.project_id)}
        journal = journal_samples(self.work / "state" / "journal.sqlite3", with_updated=True)
        go = assigned = analysed = mirrored = given_up = 0
        assert self.disk is not None
        draining_for = time.monotonic() - self.drain_started if self.drain_started else 0.0
        for plan in self.plans:
            for s in plan.samples:
                u = uploads.get(s.dest_r1)
                if s.expect == "never" or (s.expect == "maybe" and not (u and u.get("sample_id"))):
                    continue
                go += 1
                if not u or not u.get("sample_id"):
                    state = journal.get((plan.gncv_folder, s.client_id))
                    key = s.dest_r1
                    if state and state[0] == "failed":
                        since = self.failed_since.setdefault(key, time.monotonic())
                        given_up += time.monotonic() - since > 20
                    else:
                        self.failed_since.pop(key, None)
                        # 30 s into the drain, with every run written long ago, a sample the journal has never
                        # heard of is not coming either.
                        given_up += not state and draining_for > 30
                    continue
                assigned += 1
                sample = samples.get(u["sample_id"])
                if not sample or not _status(sample).startswith("succeeded"):
                    continue
                analysed += 1
                folder = self.disk.results / sample["client_id"] / sample["id"]
                files = sample.get("files") or []
                if files and all((folder / f["filename"]).is_file() and (folder / f["filename"]).stat().st_size
                                 == f["size"] for f in files):  # fmt: skip
                    mirrored += 1
        return go, assigned, analysed, mirrored, given_up

    def _status_line(self, phase: str) -> None:
        try:
            go, assigned, analysed, mirrored, given_up = self._progress()
        except Exception as e:
            say(f"{phase}: (progress unavailable: {e})")
            return
        self.backlog = go - assigned - given_up
        faults = sum(self.fig.faults.values())
        say(f"{phase}: runs {len(self.plans)}, go samples {go}: assigned {assigned}, analysed {analysed}, "
            f"mirrored {mirrored}; faults {faults}, kills {self.daemon.kills if self.daemon else 0}")  # fmt: skip

    def drain(self) -> bool:
        deadline = time.monotonic() + self.o.drain_timeout
        say(f"draining: waiting up to {self.o.drain_timeout:g}s for every complete sample to be assigned, "
            "analysed and mirrored")  # fmt: skip
        last = None
        next_hook = time.monotonic()
        self.drain_started = time.monotonic()
        while time.monotonic() < deadline:
            self._watch_daemon()
            self._poll_log()
            self._scrape()
            try:
                state = self._progress()
            except Exception:
                time.sleep(1)
                continue
            if state != last:
                go, assigned, analysed, mirrored, given_up = state
                say(f"drain: go samples {go}: assigned {assigned}, analysed {analysed}, mirrored {mirrored}"
                    + (f", given up by the daemon {given_up}" if given_up else ""))  # fmt: skip
                last = state
            if state[0] == state[3] and self._holds_reported():
                return True
            if state[0] == state[3] + state[4]:
                say("drain: everything else is done; the daemon gave up the rest (judged below)")
                return True
            if time.monotonic() >= next_hook:  # keep the webhook path busy while draining
                self._refresh_samples()
                self.send_webhook(self.rng_hooks.choice(("valid", "replay", "forged")))
                next_hook = time.monotonic() + 3
            time.sleep(1.0)
        say("drain deadline reached with work outstanding")
        return False

    def stop_daemon(self) -> None:
        assert self.daemon is not None
        # Deleted runs may still have work in flight; give the journal a moment to settle, then stop.
        self._scrape()
        self._retire_counters()
        say("SIGTERM to the daemon (graceful stop must exit 0)")
        self.final_exit = self.daemon.terminate(timeout=30)
        say(f"daemon exit code: {self.final_exit}")
        self._poll_log()

    # ------------------------------------------------------------------------------------------- verdict --
    def verdict(self, drained: bool) -> bool:
        ctl = self.sandbox.control
        uploads = ctl.uploads()
        assignments = ctl.assignments()
        samples = ctl.samples(self.info.project_id)
        assert self.disk is not None and self.proxy is not None and self.daemon is not None
        v = judge(self.plans, uploads, assignments, samples, self.observed, self.disk.results, self._fetch_object)
        v.corrupted += self.partial_seen
        outside = sorted(str(p) for p in self.outside.rglob("*"))
        if outside:
            self.confinement.append(f"written through a planted symlink, outside the share: {outside[:5]}")
        away = [(int(r), a, b) for r, a, b in self.fig.away_windows]
        journal = journal_samples(self.work / "state" / "journal.sqlite3")
        upload_ids = {u["destination_path"]: u["id"] for u in uploads}
        attribute_known_bugs(v, self.daemon.log.read_text(errors="replace"), journal, away, self.fig.inflight_kills,
                             upload_ids, self.plans)  # fmt: skip
        # secrets: the API key, the webhook secret, every S3 credential the sandbox issued (captured by the proxy),
        # and the signatures of the signed download URLs it handed out.
        captured = []
        with contextlib.suppress(Exception):
            captured = self.proxy.secrets()
        secrets = {
            "API key": [self.info.api_key],
            "webhook secret": [self.webhook_secret],
            "S3 credentials/tokens issued by the sandbox": captured,
        }
        bad_input = self._bad_input_reports()
        held = judge_holds(self.plans, self.work / "status.json", self.fig.held_metric)
        logs = [self.daemon.log, *self.extra_logs]
        v.leaks = find_leaks(secrets, logs)
        url_sig_leaks = find_leaks({"signed download URL signature": sorted(self.observed.download_sigs)}, logs)
        webhook_ok = not self.fig.webhook_mismatches
        crashes = list(self.daemon.crashes)
        # The checks must not be vacuous: every object Gencove holds was seen completing in the request log,
        # and the secret search had the sandbox's credentials to look for.
        landed = [u for u in uploads if _status(u) == "succeeded"]
        unseen = [u["destination_path"] for u in landed
                  if not self.observed.completes.get(u["s3"]["object_name"]) and not self.observed.puts.get(
                      u["s3"]["object_name"])]  # fmt: skip
        if unseen:
            self.fig.errors.append(f"{len(unseen)} uploaded object(s) never seen completing in the sandbox log "
                                   f"(duplicate detection blind for them), e.g. {unseen[:3]}")  # fmt: skip
        if landed and not captured:
            self.fig.errors.append("no S3 credentials were captured: the secret search had nothing to look for")
        known_ok = self.o.tolerate_known_bugs or not (v.known_bug_losses or v.known_bug_duplicates
                                                      or self.known_crashes)  # fmt: skip
        ok = v.ok and known_ok and webhook_ok and not crashes and self.final_exit == 0 and bad_input["ok"]
        ok = ok and held["ok"]  # every sample the driver made the daemon hold is reported (status and metric)
        ok = ok and (drained or (not v.lost and known_ok))  # a drain that timed out only on known-bug losses
        ok = ok and not self.fig.errors  # the soak's own machinery must have worked
        ok = ok and not self.reload_problems and self.second_daemon.startswith("refused")
        ok = ok and not self.confinement
        self._build_report(v, ok, drained, uploads, captured, url_sig_leaks, bad_input, crashes)
        self.report["held_samples"] = held
        return ok

    def _fetch_object(self, bucket: str, key: str) -> str | None:
        """sha256 of an object read straight from moto (no proxy, no faults)."""
        import boto3
        from botocore.config import Config

        s3 = boto3.client("s3", endpoint_url=self.info.s3_upstream_url, region_name="us-east-1",
                          aws_access_key_id="soak", aws_secret_access_key="soak",
                          config=Config(s3={"addressing_style": "path"}))  # fmt: skip
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except Exception:
            return None
        h = hashlib.sha256()
        for chunk in body.iter_chunks(1 << 20):
            h.update(chunk)
        return h.hexdigest()

    def _bad_input_reports(self) -> dict[str, Any]:
        """Broken manifests must be reported with line numbers: in `transferd scan`, and ideally in the daemon's
        own log or `transferd status`."""
        self.extra_logs: list[Path] = []
        out: dict[str, Any] = {"manifests": 0, "scan_with_lines": 0, "daemon_log_with_lines": 0,
                               "status_with_lines": 0, "ok": True}  # fmt: skip
        assert self.daemon is not None
        log_text = self.daemon.log.read_text(errors="replace")
        status_path = self.work / "status.txt"
        status = subprocess.run([sys.executable, "-m", "transferd", "status", "-c", str(self.config), "--runs", "500"],
                                cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
        status_path.write_text(status.stdout + status.stderr)
        as_json = subprocess.run([sys.executable, "-m", "transferd", "status", "-c", str(self.config), "--json"],
                                 cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
        (self.work / "status.json").write_text(as_json.stdout)
        self.extra_logs.append(status_path)
        for plan in self.plans:
            if not plan.broken_manifest:
                continue
            out["manifests"] += 1
            path = self.roots[plan.root].path / plan.broken_manifest
            scan = subprocess.run([sys.executable, "-m", "transferd", "scan", str(path.parent)], cwd=REPO,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            scan_path = self.work / f"scan-{len(self.extra_logs)}.txt"
            scan_path.write_text(scan.stdout + scan.stderr)
            self.extra_logs.append(scan_path)
            needle = f"{path}:"
            lines_in_scan = sum(1 for line in scan.stdout.splitlines() if needle in line)
            if lines_in_scan >= 5:
                out["scan_with_lines"] += 1
            else:
                out["ok"] = False
            if needle in log_text:
                out["daemon_log_with_lines"] += 1
            if needle in status_path.read_text():
                out["status_with_lines"] += 1
        return out

    def _build_report(self, v: Verdict, ok: bool, drained: bool, uploads: list[dict[str, Any]],
                      captured: list[str], url_sig_leaks: list[str], bad_input: dict[str, Any],
                      crashes: list[str]) -> None:  # fmt: skip
        samples = [s for p in self.plans for s in p.samples]
        by_expect = Counter(s.expect for s in samples)
        retries = dict(sorted(self.fig.retries.items()))
        assert self.daemon is not None and self.disk is not None
        self.report = {
            "ok": ok,
            "seed": self.o.seed,
            "minutes": self.o.minutes,
            "scale": self.o.scale,
            "workdir": str(self.work),
            "drained": drained,
            "daemon_final_exit": self.final_exit,
            "runs": len(self.plans),
            "runs_by_kind": plan_summary(self.plans),
            "samples": len(samples),
            "samples_by_expectation": dict(by_expect),
            "samples_verified": v.verified_samples,
            "gib_verified": round(v.verified_bytes / GiB, 3),
            "gib_written": round(self.writer.bytes_written / GiB, 3),
            "gib_sent_to_s3": round(self.observed.s3_bytes_in / GiB, 3),
            "gib_mirrored": round(v.mirrored_bytes / GiB, 3),
            "mirrored_files": v.mirrored_files,
            "faults_injected": dict(sorted(self.fig.faults.items())),
            "faults_injected_total": sum(self.fig.faults.values()),
            "faults_fired": dict(sorted(self.observed.fired.items())),
            "daemon_kills": self.daemon.kills,
            "daemon_starts": self.daemon.starts,
            "daemon_crashes": crashes,
            "daemon_hangs_known_bug": self.known_crashes,
            "retries": sum(retries.values()),
            "retries_by_operation_reason": retries,
            "root_away_seconds": round(self.fig.root_away_seconds, 1),
            "results_away_seconds": round(self.fig.results_away_seconds, 1),
            "disk_full_seconds": round(self.fig.disk_full_seconds, 1),
            "sandbox_outage_seconds": round(self.fig.outage_seconds, 1),
            "download_disk": f"{self.disk.kind}: {self.disk.note}",
            "unreadable_files": self.permission_note,
            "webhooks_sent": dict(self.fig.webhooks_sent),
            "webhooks_as_expected": dict(self.fig.webhooks_ok),
            "webhook_mismatches": self.fig.webhook_mismatches,
            "reload_problems": self.reload_problems,
            "second_daemon_on_the_journal": self.second_daemon,
            "webhooks_undelivered_daemon_down": self.fig.webhooks_undelivered,
            "webhook_outcomes_in_metrics": dict(self.fig.webhook_metric),
            "sandbox_webhook_deliveries": self._delivery_summary(),
            "bad_input_reports": bad_input,
            "maybe_outcomes": dict(v.maybe_outcomes),
            "never_outcomes": dict(v.never_outcomes),
            "lost": len(v.lost),
            "lost_to_known_bugs": len(v.known_bug_losses),
            "duplicated_by_known_bugs": len(v.known_bug_duplicates),
            "known_bugs_tolerated": self.o.tolerate_known_bugs,
            "duplicated": len(v.duplicated),
            "corrupted": len(v.corrupted),
            "forbidden_uploads": len(v.forbidden),
            "writes_outside_the_share": len(self.confinement),
            "secret_leaks": len(v.leaks),
            "part_files_left": len(v.part_files),
            "signed_url_signatures_in_logs": len(url_sig_leaks),
            "secrets_checked": {
                "api_key": 1,
                "webhook_secret": 1,
                "sandbox_issued": len(captured),
                "download_url_signatures": len(self.observed.download_sigs),
            },
            "details": {
                "lost": v.lost[:200],
                "known_bug_losses": v.known_bug_losses[:200],
                "known_bug_duplicates": v.known_bug_duplicates[:200],
                "duplicated": v.duplicated[:200],
                "corrupted": v.corrupted[:200],
                "forbidden": v.forbidden[:200],
                "confinement": self.confinement[:200],
                "leaks": v.leaks,
                "signed_url_leaks": url_sig_leaks[:20],
                "part_files": v.part_files[:50],
                "notes": v.notes,
                "soak_errors": self.fig.errors,
            },
            "sandbox_log_entries": dict(self.observed.requests),
            "uploads_on_gencove": len(uploads),
            "plans": [_plan_json(p) for p in self.plans],
        }

    def _delivery_summary(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        with contextlib.suppress(Exception):
            for d in self.sandbox.control.webhook_deliveries():
                out[str(d.get("status") or d.get("error", "error")[:40])] += 1
        return dict(out)

    def print_summary(self) -> None:
        r = self.report
        rows = [
            ("seed", r["seed"]),
            ("minutes of chaos", r["minutes"]),
            ("runs written", f"{r['runs']}  {r['runs_by_kind']}"),
            ("samples", f"{r['samples']}  {r['samples_by_expectation']}"),
            ("samples verified end to end", r["samples_verified"]),
            ("GiB verified (go samples)", r["gib_verified"]),
            ("GiB sent to S3 (incl. retries)", r["gib_sent_to_s3"]),
            ("GiB mirrored", r["gib_mirrored"]),
            ("faults injected", f"{r['faults_injected_total']}"),
            *((f"  {k}", n) for k, n in r["faults_injected"].items()),
            ("requests hit by a fault", sum(r["faults_fired"].values())),
            ("daemon kills (SIGKILL)", r["daemon_kills"]),
            ("daemon crashes", len(r["daemon_crashes"])),
            ("retries (transferd_retries_total)", r["retries"]),
            ("webhooks sent / as expected",
             f"{sum(r['webhooks_sent'].values())} / {sum(r['webhooks_as_expected'].values())}"),
            ("deleted-run outcomes", r["maybe_outcomes"]),
            ("never-go outcomes", r["never_outcomes"]),
            ("broken manifests reported", r["bad_input_reports"]),
            ("held samples reported (expected / in status / missing)",
             f"{r['held_samples'].get('expected')} / {r['held_samples'].get('reported')} / "
             f"{r['held_samples'].get('missing')}"),
            ("download disk", r["download_disk"]),
            ("unreadable files", r["unreadable_files"]),
            ("daemon exit on SIGTERM", r["daemon_final_exit"]),
            ("second daemon on the journal", r["second_daemon_on_the_journal"]),
            ("SIGHUP reload problems", len(r["reload_problems"])),
            ("LOST", r["lost"]),
            ("lost to known (xfail-documented) bugs",
             f"{r['lost_to_known_bugs']}{' (tolerated)' if r['known_bugs_tolerated'] else ''}"),
            ("DUPLICATED", r["duplicated"]),
            ("duplicated by known (xfail-documented) bugs",
             f"{r['duplicated_by_known_bugs']}{' (tolerated)' if r['known_bugs_tolerated'] else ''}"),
            ("CORRUPTED", r["corrupted"]),
            ("FORBIDDEN UPLOADS", r["forbidden_uploads"]),
            ("WRITES OUTSIDE THE SHARE", r["writes_outside_the_share"]),
            ("SECRETS IN LOGS", r["secret_leaks"]),
            (".part LEFT", r["part_files_left"]),
            ("signed-URL signatures in logs", r["signed_url_signatures_in_logs"]),
        ]
        width = max(len(k) for k, _ in rows)
        print("\n" + "=" * 100)
        for k, val in rows:
            print(f"{k:<{width}}  {val}")
        print("=" * 100)
        for name in ("lost", "known_bug_losses", "duplicated", "known_bug_duplicates", "corrupted", "forbidden",
                     "confinement", "leaks", "part_files", "notes", "soak_errors"):  # fmt: skip
            items = r["details"][name]
            if items:
                print(f"{name}:")
                for item in items[:25]:
                    print(f"  - {item}")
        if r["webhook_mismatches"]:
            print("webhook answers not as expected:")
            for m in r["webhook_mismatches"][:10]:
                print(f"  - {m}")
        for c in r["daemon_crashes"]:
            print(f"crash: {c}")
        for c in r["daemon_hangs_known_bug"]:
            print(f"known bug: {c}")
        print(f"\nRESULT: {'PASS' if r['ok'] else 'FAIL'}  (seed {r['seed']}, workdir {r['workdir']})", flush=True)

    # ------------------------------------------------------------------------------------------- teardown --
    def teardown(self) -> None:
        self.stop_writing.set()
        self.abort.set()
        for gate in getattr(self, "roots", []):
            with contextlib.suppress(Exception):
                gate.bring_back()  # never leave a watch root renamed away
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.daemon is not None and self.daemon.alive():
            self.daemon.terminate(timeout=15)
        if self.proxy is not None:
            self.proxy.stop()
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                self.sandbox.close()
        if self.disk is not None:
            self.disk.close()


def _through_symlink(root: Path, relative: Path) -> bool:
    """Whether a folder below `root` on the way to `relative` is a symlink (an earlier plant): planting through it
    would be the soak's own write outside the share (found by a CI soak, seed 521732)."""
    path = root
    for part in relative.parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def _status(obj: dict[str, Any]) -> str:
    return str((obj.get("last_status") or {}).get("status") or "")


def _plan_json(p: RunPlan) -> dict[str, Any]:
    return {
        "id": p.id,
        "kind": p.kind,
        "root": p.root,
        "gncv": p.gncv_folder,
        "bytes": p.bytes,
        "notes": p.notes,
        "samples": [(s.client_id, s.expect, s.reason) for s in p.samples],
    }


def run(opts: Options) -> int:
    soak = Soak(opts)
    ok = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        soak.setup()
        soak.chaos()
        drained = soak.drain()
        soak.stop_daemon()
        ok = soak.verdict(drained)
        soak.print_summary()
        if opts.report:
            opts.report.parent.mkdir(parents=True, exist_ok=True)
            opts.report.write_text(json.dumps(soak.report, indent=2, default=str) + "\n")
            say(f"report written to {opts.report}")
    except KeyboardInterrupt as e:
        say(f"interrupted ({e}); tearing down")
    except Exception:
        traceback.print_exc()
        say("the soak itself failed; tearing down")
    finally:
        soak.teardown()
        work = getattr(soak, "work", None)
        if work is not None and ok and not opts.keep and not opts.workdir:
            shutil.rmtree(work, ignore_errors=True)
        elif work is not None:
            say(f"kept {work} (daemon log: {work / 'transferd.log'})")
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description="Chaos soak of transferd against the sandbox (see docs/SOAK.md).")
    p.add_argument("--minutes", type=float, default=2.0, help="length of the chaos phase (default 2)")
    p.add_argument("--seed", type=int, default=None, help="seed of runs and faults (default: random, printed)")
    p.add_argument("--report", type=Path, help="write the summary as JSON here")
    p.add_argument("--workdir", type=Path, help="work here and keep it (default: a temp dir, removed on success)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work dir even on success")
    p.add_argument("--scale", type=float, default=1.0, help="multiply file sizes (default 1.0)")
    p.add_argument("--run-interval", type=float, default=2.5, help="seconds between new runs (default 2.5)")
    p.add_argument("--drain-timeout", type=float, default=None, help="seconds to wait for the backlog at the end")
    p.add_argument("--log-level", default="debug", choices=("debug", "info"), help="daemon log level (default debug)")
    p.add_argument("--disk", default="auto", choices=("auto", "tmpfs", "folder"),
                   help="download disk: auto (ext4 loop image, else tmpfs, else folder), or force a fallback")
    p.add_argument("--tolerate-known-bugs", action="store_true",
                   help="pass despite losses attributed (on evidence) to the documented bugs in soak_check.KNOWN_BUGS")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "big") % 1_000_000
    drain = a.drain_timeout if a.drain_timeout is not None else max(180.0, a.minutes * 60 * 0.5)
    return Options(minutes=a.minutes, seed=seed, report=a.report, workdir=a.workdir, keep=a.keep, scale=a.scale,
                   run_interval=a.run_interval, drain_timeout=drain, log_level=a.log_level,
                   tolerate_known_bugs=a.tolerate_known_bugs, disk=a.disk)  # fmt: skip


if __name__ == "__main__":
    sys.exit(run(parse_args()))
