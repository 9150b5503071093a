"""No dashboard panel says "No data" on a healthy daemon.

A real scrape of a fresh, idle, healthy daemon (uploading, mirroring or both; nothing to do yet) becomes
promtool input series, held for 70 minutes as Prometheus would keep scraping it; every panel's queries (Grafana
variables filled in) are then wrapped in `absent()` as an alert that must not fire. So each panel gets at least
one series from the exporter's own output, with the same labels Prometheus adds (job, instance). Latency
quantiles of an idle daemon are NaN series: Grafana draws an empty graph with its legend, not "No data".
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_harness import Daemon, free_port, write_config
from prometheus_client.parser import text_string_to_metric_families
from test_metrics_contract import DASHBOARD, _panels

JOB, INSTANCE = "transferd", "sequencer-host:9464"
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": INSTANCE, "$job": JOB}
HELD_MINUTES = 70
EVAL_AT = "65m"  # past the widest window but 24h: a whole hour of scrapes

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (ops-checks)")


def panel_queries() -> dict[str, tuple[str, list[str]]]:
    """alert name -> (panel title, its queries with the Grafana variables filled in)"""
    out = {}
    for p in _panels(json.loads(DASHBOARD.read_text())["panels"]):
        exprs = []
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"panel {p['title']!r}: unknown Grafana variable in {t['expr']!r}"
            exprs.append(expr)
        if exprs:
            out[f"NoData_panel{p['id']}"] = (p["title"], exprs)
    return out


def input_series(scrape: str) -> list[dict[str, str]]:
    series = [{"series": f'up{{job="{JOB}", instance="{INSTANCE}"}}', "values": f"1x{HELD_MINUTES}"}]
    for family in text_string_to_metric_families(scrape):
        for s in family.samples:
            labels = {**s.labels, "job": JOB, "instance": INSTANCE}
            text = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
            series.append({"series": f"{s.name}{{{text}}}", "values": f"{s.value!r}x{HELD_MINUTES}"})
    return series


def evaluate(scrape: str, work: Path) -> subprocess.CompletedProcess[str]:
    queries = panel_queries()
    # A panel says "No data" only when none of its queries returns a series.
    no_data = {name: " and on () ".join(f"absent({e})" for e in exprs) for name, (_, exprs) in queries.items()}
    rules = {"groups": [{"name": "dashboard", "rules": [{"alert": n, "expr": e} for n, e in no_data.items()]}]}
    tests = {
        "rule_files": ["panels.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": input_series(scrape),
            "alert_rule_test": [{"eval_time": EVAL_AT, "alertname": name, "exp_alerts": []} for name in queries],
        }],
    }  # fmt: skip
    (work / "panels.yml").write_text(json.dumps(rules))  # JSON is YAML
    (work / "panels.test.yml").write_text(json.dumps(tests))
    return subprocess.run(
        ["promtool", "test", "rules", "panels.test.yml"], cwd=work, capture_output=True, text=True, timeout=120
    )


def _failed_panels(out: str) -> list[str]:
    return sorted({f"{name}: {title!r}" for name, (title, _) in panel_queries().items() if f'{name}"' in out})


@pytest.mark.parametrize("shape", ["upload and mirror", "upload only", "mirror only"])
def test_every_panel_has_data_on_a_fresh_healthy_daemon(shape: str, sandbox: object, tmp_path: Path) -> None:
    info = sandbox.info  # type: ignore[attr-defined]
    port = free_port()
    (tmp_path / "runs").mkdir()
    (tmp_path / "results").mkdir()
    watch = {"path": tmp_path / "runs", "destination": "gncv://fresh", "project_id": info.project_id}
    download = {"destination": tmp_path / "results", "projects": [info.project_id], "interval": "1s"}
    config = write_config(
        tmp_path / "c.toml", api_url=info.api_url, s3_url=info.s3_url, state=tmp_path / "j.sqlite3", port=port,
        watches=[] if shape == "mirror only" else [watch], download=None if shape == "upload only" else download,
    )  # fmt: skip
    daemon = Daemon(config, port, {"TRANSFERD_API_KEY": info.api_key}, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        scrape = daemon.scrape()
    finally:
        daemon.stop()
    res = evaluate(scrape, tmp_path)
    assert res.returncode == 0, (
        "panels without data: "
        + "; ".join(_failed_panels(res.stdout + res.stderr))
        + ("\n" + (res.stdout + res.stderr)[-2000:])
    )


def test_the_check_sees_a_panel_without_data(tmp_path: Path) -> None:
    """An empty scrape leaves the panels empty, and the check says which: it cannot pass on nothing."""
    res = evaluate("", tmp_path)
    assert res.returncode != 0
    failed = _failed_panels(res.stdout + res.stderr)
    assert any("'Upload backlog'" in f for f in failed), failed
    assert not any("'Daemon up'" in f for f in failed), failed  # `up` is Prometheus's own, so it has data
