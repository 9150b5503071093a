"""In-process accounting, in the spirit of rclone's `fs/accounting`.

The engines record what happened here; nothing in the engines knows about Prometheus. The collector in
`transferd.metrics` reads a snapshot of these values at scrape time, and so does the daemon's systemd status
line. The one-shot progress bar counts its own bytes, and `transferd status` reads the journal (it runs in
another process), so those two agree with the metrics only as far as the journal and the bytes sent agree.

Labels are bounded by construction: operations, stages, reasons, directions and configured roots, never
sample or file names.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

# Histogram buckets (seconds), chosen per quantity.
PART_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
E2E_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, c in zip((*self.buckets, float("inf")), self.counts, strict=True):
            acc += c
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), acc))
        return out


class Stats:
    """Counters, gauges and histograms for the whole process. Thread-safe (the watcher runs in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            # Monotonic counters.
            self.bytes = defaultdict[str, int](int)  # direction -> bytes ("upload", "download")
            self.files = defaultdict[str, int](int)  # direction -> source files uploaded / files mirrored
            self.objects = defaultdict[str, int](int)  # direction -> objects completed
            self.samples = defaultdict[str, int](int)  # "uploaded" | "assigned" | "mirrored"
            self.retries = defaultdict[tuple[str, str], int](int)  # (operation, reason)
            self.errors = defaultdict[str, int](int)  # stage
            self.webhooks = defaultdict[str, int](int)  # outcome: accepted | duplicate | bad_signature | stale
            self.api_requests = defaultdict[tuple[str, str], int](int)  # (operation, outcome)
            self.gzip_checks = defaultdict[str, int](int)  # outcome: whole | broken | unreadable
            self.mirror_repairs = defaultdict[str, int](int)  # reason: missing | changed (found by the recheck)
            # Gauges.
            self.in_flight_objects = defaultdict[str, int](int)  # direction
            self.in_flight_bytes = defaultdict[str, int](int)  # direction: bytes buffered or being transferred
            self.queued = defaultdict[str, int](int)  # direction: work items waiting
            self.root_up: dict[str, bool] = {}
            self.destination_up: dict[str, bool] = {}  # the download destination: usable (mounted, marker)
            self.last_success: dict[str, float] = {}  # stage -> unix time
            # Histograms.
            self.part_seconds = Histogram(PART_BUCKETS)
            self.api_seconds = defaultdict[str, Histogram](lambda: Histogram(API_BUCKETS))  # by operation
            self.e2e_seconds = defaultdict[str, Histogram](lambda: Histogram(E2E_BUCKETS))  # "upload"|"mirror"
            self.started = time.time()

    # -- recording (called by the engines) ----------------------------------------------------------
    def add_bytes(self, direction: str, n: int) -> None:
        with self._lock:
            self.bytes[direction] += n

    def file_done(self, direction: str, n: int = 1) -> None:
        with self._lock:
            self.files[direction] += n

    def object_done(self, direction: str) -> None:
        with self._lock:
            self.objects[direction] += 1
            self.last_success[direction] = time.time()

    def sample_done(self, what: str) -> None:
        with self._lock:
            self.samples[what] += 1
            self.last_success[what] = time.time()

    def success(self, stage: str) -> None:
        with self._lock:
            self.last_success[stage] = time.time()

    def retry(self, operation: str, reason: str) -> None:
        with self._lock:
            self.retries[(operation, reason)] += 1

    def error(self, stage: str) -> None:
        with self._lock:
            self.errors[stage] += 1

    def webhook(self, outcome: str) -> None:
        with self._lock:
            self.webhooks[outcome] += 1

    def gzip_checked(self, outcome: str) -> None:
        with self._lock:
            self.gzip_checks[outcome] += 1

    def in_flight(self, direction: str, objects: int = 0, nbytes: int = 0) -> None:
        """Adjust in-flight gauges by a delta (negative to release)."""
        with self._lock:
            self.in_flight_objects[direction] += objects
            self.in_flight_bytes[direction] += nbytes

    def set_queued(self, direction: str, n: int) -> None:
        with self._lock:
            self.queued[direction] = n

    def mirror_repair(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.mirror_repairs[reason] += n

    def set_destination_up(self, destination: str, up: bool) -> None:
        with self._lock:
            self.destination_up[destination] = up

    def set_root_up(self, root: str, up: bool) -> None:
        with self._lock:
            self.root_up[root] = up

    def observe_part(self, seconds: float) -> None:
        with self._lock:
            self.part_seconds.observe(seconds)

    def observe_api(self, operation: str, seconds: float, outcome: str) -> None:
        with self._lock:
            self.api_seconds[operation].observe(seconds)
            self.api_requests[(operation, outcome)] += 1

    def observe_e2e(self, what: str, seconds: float) -> None:
        with self._lock:
            self.e2e_seconds[what].observe(seconds)

    # -- reading (called by metrics, status and progress) -----------------------------------------------
    def snapshot(self) -> dict[str, object]:
        """A consistent deep copy for one scrape."""
        with self._lock:
            return {
                "bytes": dict(self.bytes),
                "files": dict(self.files),
                "objects": dict(self.objects),
                "samples": dict(self.samples),
                "retries": dict(self.retries),
                "errors": dict(self.errors),
                "webhooks": dict(self.webhooks),
                "api_requests": dict(self.api_requests),
                "gzip_checks": dict(self.gzip_checks),
                "in_flight_objects": dict(self.in_flight_objects),
                "in_flight_bytes": dict(self.in_flight_bytes),
                "queued": dict(self.queued),
                "root_up": dict(self.root_up),
                "destination_up": dict(self.destination_up),
                "mirror_repairs": dict(self.mirror_repairs),
                "last_success": dict(self.last_success),
                "part_seconds": _copy_hist(self.part_seconds),
                "api_seconds": {k: _copy_hist(v) for k, v in self.api_seconds.items()},
                "e2e_seconds": {k: _copy_hist(v) for k, v in self.e2e_seconds.items()},
            }


def _copy_hist(h: Histogram) -> Histogram:
    return Histogram(h.buckets, list(h.counts), h.total, h.n)


# The process-wide instance. Tests that need isolation call STATS.reset().
STATS = Stats()
