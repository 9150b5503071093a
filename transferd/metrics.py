"""The Prometheus view of transferd: the one place where metric names live.

Like rclone's `fs/accounting/prometheus.go`, a custom collector *reads* state at scrape time: the in-process
counters in `transferd.stats.STATS` and the journal's rows per state (so backlog gauges survive restarts).
The engines never touch prometheus_client. Labels are bounded: directions, stages, operations, reasons,
outcomes, states and configured watch roots, never run, sample or file names.

`METRICS` is the documented set (docs/METRICS.md); a test keeps the docs, the dashboard and the alerts in step
with a real scrape.
"""

from __future__ import annotations

import logging
import platform
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from transferd import __version__
from transferd.journal import Journal
from transferd.log import event
from transferd.service.views import Overview, overview
from transferd.stats import E2E_BUCKETS, STATS, Histogram, Stats

log = logging.getLogger(__name__)

# Label values that always exist (as 0), so rate() and alerts work before the first event.
DIRECTIONS = ("upload", "download")
SAMPLE_STAGES = ("uploaded", "assigned", "mirrored")
GZIP_OUTCOMES = ("whole", "broken", "unreadable")
REPAIR_REASONS = ("missing", "changed")
ERROR_STAGES = ("upload", "assign", "mirror", "discovery")  # STATS.error(stage); discovery: a run or scan that failed
WEBHOOK_OUTCOMES = ("accepted", "duplicate", "bad_signature", "stale", "bad_request")  # STATS.webhook(outcome)
E2E_STAGES = ("upload", "mirror")
STATE_TABLES = {  # gauge name -> journal table
    "transferd_runs": "runs",
    "transferd_samples": "samples",
    "transferd_objects": "objects",
    "transferd_mirror_samples": "mirror_samples",
    "transferd_mirror_files": "downloads",
}


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str  # as exposed (counters with their _total)
    kind: str  # counter | gauge | histogram | info
    labels: tuple[str, ...]
    help: str


METRICS: tuple[MetricDef, ...] = (
    MetricDef("transferd_build_info", "info", ("version", "python"), "Build information; always 1."),
    MetricDef("transferd_transferred_bytes_total", "counter", ("direction",),
              "Payload bytes moved: direction=upload (to S3) or download (mirrored deliverables)."),
    MetricDef("transferd_transferred_files_total", "counter", ("direction",),
              "Files completed: source FASTQs uploaded, or deliverable files mirrored."),
    MetricDef("transferd_transferred_objects_total", "counter", ("direction",),
              "Objects completed: uploaded S3 objects (one per sample and read), or mirrored files."),
    MetricDef("transferd_samples_completed_total", "counter", ("stage",),
              "Samples that finished a stage: uploaded, assigned (to a project) or mirrored."),
    MetricDef("transferd_retries_total", "counter", ("operation", "reason"), "Retried operations by reason."),
    MetricDef("transferd_errors_total", "counter", ("stage",), "Failures that gave up, by pipeline stage."),
    MetricDef("transferd_api_requests_total", "counter", ("operation", "outcome"),
              "Requests to the Gencove API by operation and outcome (HTTP status or 'error')."),
    MetricDef("transferd_webhook_requests_total", "counter", ("outcome",), "Webhook deliveries by outcome."),
    MetricDef("transferd_gzip_checks_total", "counter", ("outcome",),
              "Source files read by discovery's gzip check, by outcome (whole, broken, unreadable)."),
    MetricDef("transferd_in_flight_objects", "gauge", ("direction",), "Objects being transferred now."),
    MetricDef("transferd_in_flight_bytes", "gauge", ("direction",), "Bytes buffered or on the wire now."),
    MetricDef("transferd_queued_items", "gauge", ("direction",), "Work items waiting for a transfer slot."),
    MetricDef("transferd_backlog_bytes", "gauge", ("direction",),
              "Bytes still to move according to the journal (unfinished objects / downloads)."),
    MetricDef("transferd_runs", "gauge", ("state",), "Run folders in the journal by state."),
    MetricDef("transferd_samples", "gauge", ("state",), "Upload-side samples in the journal by state."),
    MetricDef("transferd_objects", "gauge", ("state",), "Upload objects in the journal by state."),
    MetricDef("transferd_mirror_samples", "gauge", ("state",), "Mirrored samples in the journal by state."),
    MetricDef("transferd_mirror_files", "gauge", ("state",), "Mirrored deliverable files in the journal by state."),
    MetricDef("transferd_samples_held", "gauge", ("reason",),
              "Samples held until an operator decides (transferd requeue), by reason: duplicate, grown, changed."),
    MetricDef("transferd_oldest_unfinished_run_age_seconds", "gauge", (),
              "Seconds since the oldest run not yet done or failed was found complete; 0 when there is none."),
    MetricDef("transferd_watch_root_up", "gauge", ("root",), "1 when a configured watch root is mounted and readable."),
    MetricDef("transferd_download_destination_up", "gauge", ("destination",),
              "1 when the download destination is usable (there, still the mount it was, marker present); "
              "0 pauses the mirror."),
    MetricDef("transferd_mirror_repairs_total", "counter", ("reason",),
              "Mirrored files found missing or changed on disk by the recheck, and fetched again."),
    MetricDef("transferd_ready", "gauge", ("check",),
              "1 when a readiness check (journal, api, roots, destination) passes."),
    MetricDef("transferd_journal_up", "gauge", (), "1 when the journal could be read at this scrape."),
    MetricDef("transferd_journal_full", "gauge", (),
              "1 while journal writes wait for disk space: work is paused and resumes when space returns."),
    MetricDef("transferd_last_success_timestamp_seconds", "gauge", ("stage",),
              "Unix time of the last success per stage (upload, download, uploaded, assigned, mirrored, ...)."),
    MetricDef("transferd_upload_part_duration_seconds", "histogram", (),
              "Time to upload one S3 part (or one object sent as a single PutObject)."),
    MetricDef("transferd_api_request_duration_seconds", "histogram", ("operation",), "Gencove API request latency."),
    MetricDef("transferd_end_to_end_duration_seconds", "histogram", ("stage",),
              "stage=upload: run complete -> all its samples assigned; stage=mirror: analysis done -> mirrored."),
)  # fmt: skip
_BY_NAME = {m.name: m for m in METRICS}


def _help(name: str) -> str:
    return _BY_NAME[name].help


def _base(name: str) -> str:
    """prometheus_client wants counter family names without `_total` and info names without `_info`."""
    return name.removesuffix("_total").removesuffix("_info")


class TransferdCollector(Collector):
    """Builds every transferd family from a Stats snapshot and the journal, once per scrape.

    `readiness` returns the last readiness verdicts (check -> ok); `roots` returns the watch roots' health
    (root -> up) and overrides `Stats.root_up` so roots removed by a reload disappear.
    """

    def __init__(
        self,
        stats: Stats = STATS,
        journal: Journal | None = None,
        readiness: Callable[[], Mapping[str, bool]] | None = None,
        roots: Callable[[], Mapping[str, bool]] | None = None,
    ) -> None:
        self._stats = stats
        self._journal = journal
        self._readiness = readiness
        self._roots = roots

    def collect(self) -> Iterator[Metric]:
        snap = self._stats.snapshot()
        yield InfoMetricFamily(
            _base("transferd_build_info"), _help("transferd_build_info"),
            value={"version": __version__, "python": platform.python_version()},
        )  # fmt: skip
        yield from self._counters(snap)
        yield from self._gauges(snap)
        yield from self._journal_gauges()
        yield from self._histograms(snap)

    # -- families -------------------------------------------------------------------------------------------
    def _counters(self, snap: dict[str, object]) -> Iterator[Metric]:
        for name, key, defaults in (
            ("transferd_transferred_bytes_total", "bytes", DIRECTIONS),
            ("transferd_transferred_files_total", "files", DIRECTIONS),
            ("transferd_transferred_objects_total", "objects", DIRECTIONS),
            ("transferd_samples_completed_total", "samples", SAMPLE_STAGES),
            ("transferd_errors_total", "errors", ERROR_STAGES),  # at 0 from the start: increase() sees the first
            ("transferd_webhook_requests_total", "webhooks", WEBHOOK_OUTCOMES),
            ("transferd_gzip_checks_total", "gzip_checks", GZIP_OUTCOMES),
            ("transferd_mirror_repairs_total", "mirror_repairs", REPAIR_REASONS),
        ):
            fam = CounterMetricFamily(_base(name), _help(name), labels=_BY_NAME[name].labels)
            values: dict[str, int] = {**dict.fromkeys(defaults, 0), **_dict(snap[key])}
            for label, v in sorted(values.items()):
                fam.add_metric([label], v)
            yield fam
        for name, key in (("transferd_retries_total", "retries"), ("transferd_api_requests_total", "api_requests")):
            fam = CounterMetricFamily(_base(name), _help(name), labels=_BY_NAME[name].labels)
            for (a, b), v in sorted(_dict(snap[key]).items()):
                fam.add_metric([a, b], v)
            yield fam

    def _gauges(self, snap: dict[str, object]) -> Iterator[Metric]:
        for name, key in (
            ("transferd_in_flight_objects", "in_flight_objects"),
            ("transferd_in_flight_bytes", "in_flight_bytes"),
            ("transferd_queued_items", "queued"),
        ):
            fam = GaugeMetricFamily(name, _help(name), labels=["direction"])
            for label, v in sorted({**dict.fromkeys(DIRECTIONS, 0), **_dict(snap[key])}.items()):
                fam.add_metric([label], v)
            yield fam
        name = "transferd_download_destination_up"
        fam = GaugeMetricFamily(name, _help(name), labels=["destination"])
        for dest, up in sorted(_dict(snap["destination_up"]).items()):
            fam.add_metric([str(dest)], 1.0 if up else 0.0)
        yield fam
        roots = dict(self._roots()) if self._roots else _dict(snap["root_up"])
        fam = GaugeMetricFamily("transferd_watch_root_up", _help("transferd_watch_root_up"), labels=["root"])
        for root, up in sorted(roots.items()):
            fam.add_metric([str(root)], 1.0 if up else 0.0)
        yield fam
        if self._readiness is not None:
            fam = GaugeMetricFamily("transferd_ready", _help("transferd_ready"), labels=["check"])
            for check, ok in sorted(self._readiness().items()):
                fam.add_metric([check], 1.0 if ok else 0.0)
            yield fam
        name = "transferd_last_success_timestamp_seconds"
        fam = GaugeMetricFamily(name, _help(name), labels=["stage"])
        for stage, ts in sorted(_dict(snap["last_success"]).items()):
            fam.add_metric([stage], ts)
        yield fam

    def _journal_gauges(self) -> Iterator[Metric]:
        if self._journal is None:
            return
        full = self._journal.full_since is not None
        yield GaugeMetricFamily("transferd_journal_full", _help("transferd_journal_full"), value=1 if full else 0)
        view: Overview | None = None
        try:
            view = self._journal.read(overview)
        except sqlite3.Error as e:  # a scrape must still answer; journal_up says what happened
            event(log, "metrics.journal_unreadable", logging.WARNING, error=str(e))
        yield GaugeMetricFamily("transferd_journal_up", _help("transferd_journal_up"), value=0 if view is None else 1)
        if view is None:
            return
        name = "transferd_oldest_unfinished_run_age_seconds"
        since = view.oldest_unfinished_run_at
        yield GaugeMetricFamily(name, _help(name), value=0.0 if since is None else max(time.time() - since, 0.0))
        fam = GaugeMetricFamily("transferd_backlog_bytes", _help("transferd_backlog_bytes"), labels=["direction"])
        fam.add_metric(["download"], view.download_backlog_bytes)
        fam.add_metric(["upload"], view.upload_backlog_bytes)
        yield fam
        for name, table in STATE_TABLES.items():
            fam = GaugeMetricFamily(name, _help(name), labels=["state"])
            for state, n in sorted(view.counts[table].items()):
                fam.add_metric([state], n)
            yield fam
        fam = GaugeMetricFamily("transferd_samples_held", _help("transferd_samples_held"), labels=["reason"])
        for reason, n in sorted(view.held.items()):
            fam.add_metric([reason], n)
        yield fam

    def _histograms(self, snap: dict[str, object]) -> Iterator[Metric]:
        name = "transferd_upload_part_duration_seconds"
        fam = HistogramMetricFamily(name, _help(name))
        part = snap["part_seconds"]
        assert isinstance(part, Histogram)
        fam.add_metric([], part.cumulative(), part.total)
        yield fam
        for name, key, defaults in (
            ("transferd_api_request_duration_seconds", "api_seconds", {}),
            ("transferd_end_to_end_duration_seconds", "e2e_seconds", {s: E2E_BUCKETS for s in E2E_STAGES}),
        ):
            fam = HistogramMetricFamily(name, _help(name), labels=_BY_NAME[name].labels)
            hists: dict[str, Histogram] = _dict(snap[key])
            for label, buckets in defaults.items():
                hists.setdefault(label, Histogram(buckets))  # empty, so the series exist from the start
            for label, h in sorted(hists.items()):
                fam.add_metric([label], h.cumulative(), h.total)
            yield fam


def _dict(value: object) -> dict:  # type: ignore[type-arg]
    assert isinstance(value, dict)
    return dict(value)


def build_registry(
    journal: Journal | None = None,
    *,
    stats: Stats = STATS,
    readiness: Callable[[], Mapping[str, bool]] | None = None,
    roots: Callable[[], Mapping[str, bool]] | None = None,
    process_metrics: bool = True,
) -> CollectorRegistry:
    """A registry of its own (not the global one) so tests and the daemon never share state by accident."""
    registry = CollectorRegistry()
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    registry.register(TransferdCollector(stats, journal, readiness, roots))
    return registry
