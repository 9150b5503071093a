"""The metric names are one contract between metrics.py, docs/METRICS.md, the dashboard and the alerts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_harness import REPO, referenced_metrics, scrape_names
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from transferd.journal import Journal
from transferd.metrics import METRICS, build_registry
from transferd.stats import Stats

DASHBOARD = REPO / "monitoring" / "grafana-dashboard.json"
ALERTS = REPO / "monitoring" / "alerts.yml"
PROMETHEUS_BUILTIN = {"up"}  # made by Prometheus itself, not by the exporter


def _busy_stats() -> Stats:
    stats = Stats()
    stats.add_bytes("upload", 4096)
    stats.file_done("upload", 2)
    stats.object_done("upload")
    stats.sample_done("assigned")
    stats.retry("s3.upload_part", "throttled")
    stats.error("assign")
    stats.webhook("accepted")
    stats.in_flight("upload", objects=1, nbytes=1024)
    stats.set_root_up("/data/run", True)
    stats.observe_part(0.3)
    stats.observe_api("assign", 0.02, "200")
    stats.observe_e2e("upload", 42.0)
    return stats


@pytest.fixture
def scrape(tmp_path: Path) -> str:
    with Journal.open(tmp_path / "j.sqlite3") as journal:
        registry = build_registry(journal, stats=_busy_stats(), readiness=lambda: {"journal": True, "api": True})
        return generate_latest(registry).decode()


def test_every_documented_metric_is_exposed_with_its_labels(scrape: str) -> None:
    families = {f.name: f for f in text_string_to_metric_families(scrape)}
    for m in METRICS:
        base = m.name.removesuffix("_total") if m.kind == "counter" else m.name
        assert base in families, f"{m.name} missing from the scrape"
        fam = families[base]
        assert fam.type == {"info": "gauge"}.get(m.kind, m.kind)  # the 0.0.4 text format has no info type
        for sample in fam.samples:
            assert set(sample.labels) - {"le"} == set(m.labels), (m.name, sample)
    assert scrape.count("transferd_upload_part_duration_seconds_bucket") == 12


def test_values_come_from_stats(scrape: str) -> None:
    assert 'transferd_transferred_bytes_total{direction="upload"} 4096.0' in scrape
    assert 'transferd_transferred_bytes_total{direction="download"} 0.0' in scrape  # exists before the first byte
    assert 'transferd_samples_completed_total{stage="mirrored"} 0.0' in scrape
    assert 'transferd_retries_total{operation="s3.upload_part",reason="throttled"} 1.0' in scrape
    assert 'transferd_end_to_end_duration_seconds_count{stage="mirror"} 0.0' in scrape
    assert 'transferd_samples{state="pending"} 0.0' in scrape and "transferd_journal_up 1.0" in scrape


def test_docs_list_every_metric() -> None:
    doc = (REPO / "docs" / "METRICS.md").read_text()
    missing = [m.name for m in METRICS if f"`{m.name}`" not in doc]
    assert not missing, f"docs/METRICS.md does not document {missing}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/ops-checks.sh installs it)")
def test_promtool_accepts_the_exposition(scrape: str) -> None:
    out = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


# -- Grafana dashboard -------------------------------------------------------------------------------------------
def _panels(panels: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for p in panels:
        out.append(p)
        out += _panels(p.get("panels", []))
    return out


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in _panels(doc["panels"]) for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def test_dashboard_structure() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "transferd-overview" and doc["title"] and doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = _panels(doc["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = {p["title"] for p in panels if p["type"] == "row"}
    assert {"Throughput", "Backlog", "Latency", "Errors and retries", "Health"} <= titles
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert "$instance" in t["expr"], f"{p['title']}: every query follows the instance selector"


def test_dashboard_and_alerts_use_only_exposed_metrics(scrape: str) -> None:
    exposed = scrape_names(scrape) | PROMETHEUS_BUILTIN
    used = {name for expr in dashboard_exprs() + alert_exprs() for name in referenced_metrics(expr)}
    assert used, "no metric names found in the exprs"
    assert not used - exposed, f"used but never exposed: {sorted(used - exposed)}"
    for family in ("transferd_backlog_bytes", "transferd_watch_root_up", "transferd_errors_total"):
        assert family in used


def test_a_fresh_daemon_exposes_every_counter_with_known_labels_at_0(sandbox: object, tmp_path: Path) -> None:
    """Counters exist from the first scrape, so `increase()` sees the first error, webhook or repair."""
    from daemon_harness import Daemon, free_port, write_config

    from transferd.metrics import (
        DIRECTIONS,
        ERROR_STAGES,
        GZIP_OUTCOMES,
        REPAIR_REASONS,
        SAMPLE_STAGES,
        WEBHOOK_OUTCOMES,
    )

    info = sandbox.info  # type: ignore[attr-defined]
    port = free_port()
    (tmp_path / "runs").mkdir()
    config = write_config(tmp_path / "c.toml", api_url=info.api_url, s3_url=info.s3_url, state=tmp_path / "j.sqlite3",
                          port=port, watches=[{"path": tmp_path / "runs", "destination": "gncv://fresh"}])  # fmt: skip
    daemon = Daemon(config, port, {"TRANSFERD_API_KEY": info.api_key}, tmp_path / "daemon.log")
    try:
        daemon.wait_http()
        counters = {
            (f.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(daemon.scrape()) if f.type == "counter"
            for s in f.samples if s.name.endswith("_total")
        }  # fmt: skip
    finally:
        daemon.stop()
    expected = {
        "transferd_transferred_bytes": ("direction", DIRECTIONS),
        "transferd_transferred_files": ("direction", DIRECTIONS),
        "transferd_transferred_objects": ("direction", DIRECTIONS),
        "transferd_samples_completed": ("stage", SAMPLE_STAGES),
        "transferd_errors": ("stage", ERROR_STAGES),
        "transferd_webhook_requests": ("outcome", WEBHOOK_OUTCOMES),
        "transferd_gzip_checks": ("outcome", GZIP_OUTCOMES),
        "transferd_mirror_repairs": ("reason", REPAIR_REASONS),
    }  # fmt: skip
    for family, (label, values) in expected.items():
        for value in values:
            assert counters.get((family, ((label, value),))) == 0.0, (family, value)
