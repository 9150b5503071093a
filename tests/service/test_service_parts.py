"""The daemon's own machinery without the pipeline: sd_notify, reload planning, health, HTTP, status."""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from transferd.config import WatchConfig, load_config
from transferd.journal import Journal, log_event
from transferd.metrics import build_registry
from transferd.service import sdnotify, status
from transferd.service.health import Check, Health, RootProber
from transferd.service.http import build_app
from transferd.service.reload import plan_reload


# -- sd_notify ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("abstract", [False, True])
def test_notify_delivers_one_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        if abstract:
            name = f"transferd-test-{os.getpid()}-{time.monotonic_ns()}"
            server.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            server.bind(str(tmp_path / "notify"))
            monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert sdnotify.notify("READY=1", sdnotify.status_line("uploading 3 objects,\n12 samples"))
        assert server.recv(4096) == b"READY=1\nSTATUS=uploading 3 objects, 12 samples"


def test_notify_never_blocks_on_a_full_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It runs on the event loop: a supervisor that stops reading must not hang the daemon."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        started = time.monotonic()
        results = [sdnotify.notify("WATCHDOG=1") for _ in range(5000)]  # far beyond the socket's queue
        assert time.monotonic() - started < 5
        assert results[0] is True and results[-1] is False


def test_notify_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/socket")
    assert sdnotify.notify("WATCHDOG=1") is False  # errors never escape


def test_watchdog_interval_honours_watchdog_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert sdnotify.watchdog_interval() is None


# -- reload planning ------------------------------------------------------------------------------------------------
def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / f"c{time.monotonic_ns()}.toml"
    path.write_text(f'[state]\npath = "{tmp_path}/j.sqlite3"\n' + body)
    return path


def test_reload_plan_restarts_only_what_changed(tmp_path: Path) -> None:
    w = '[[watch]]\npath = "{p}"\ndestination = "gncv://{d}"\n'
    old = load_config(_config(tmp_path, w.format(p="/a", d="a") + w.format(p="/b", d="b")))
    new = load_config(
        _config(
            tmp_path,
            w.format(p="/a", d="a") + w.format(p="/b", d="b2") + w.format(p="/c", d="c")
            + '[log]\nlevel = "debug"\n[upload]\nconcurrency = 2\n[download]\ninterval = "10s"\n',
        )
    )  # fmt: skip
    plan = plan_reload(old, new)
    assert plan.stop_watches == (Path("/b"),)
    assert set(plan.start_watches) == {Path("/b"), Path("/c")}
    assert plan.restart_mirror and plan.relog
    assert plan.needs_restart == ("upload",)
    assert plan.config.upload == old.upload  # kept until the next restart
    assert plan.config.watches == new.watches and plan.config.log.level == "debug"
    assert not plan_reload(old, replace(old, file=new.file)).changed


# -- health and HTTP ------------------------------------------------------------------------------------------------
async def test_root_prober_combines_stat_and_watcher(tmp_path: Path) -> None:
    up, gone = tmp_path / "up", tmp_path / "gone"
    up.mkdir()
    prober = RootProber()
    try:
        check, roots = await prober.probe([up, gone], {})
        assert not check.ok and str(gone) in check.detail and roots == {str(up): True, str(gone): False}
        check, roots = await prober.probe([up], {up: False})  # the watcher could not scan it
        assert not check.ok and roots == {str(up): False}
        check, _ = await prober.probe([up], {up: True})
        assert check.ok
    finally:
        prober.close()


async def _client(app: web.Application) -> TestClient:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_http_probes_report_each_check(tmp_path: Path) -> None:
    health = Health(live_after=0.5)
    journal = Journal.open(tmp_path / "j.sqlite3")
    app = build_app(build_registry(journal, readiness=health.verdicts, roots=health.root_health), health, lambda: None)
    client = await _client(app)
    try:
        health.tick()
        resp = await client.get("/healthz")
        assert resp.status == 200 and (await resp.json())["alive"] is True
        health.set("journal", Check(True, "ok"))
        health.set("api", Check(True, "ok"))
        health.set("roots", Check(False, "watch root down: /data/x"))
        health.roots = {"/data/x": False}
        resp = await client.get("/readyz")
        doc = await resp.json()
        assert resp.status == 503 and doc["failed"] == ["roots"]
        assert doc["checks"]["roots"]["detail"] == "watch root down: /data/x"
        assert doc["checks"]["roots"]["roots"] == {"/data/x": False}
        health.set("roots", Check(True, "1 watch root(s) up"))
        assert (await client.get("/readyz")).status == 200
        text = await (await client.get("/metrics")).text()
        assert 'transferd_watch_root_up{root="/data/x"} 0.0' in text and 'transferd_ready{check="roots"} 1.0' in text
        resp = await client.post("/webhooks/gencove", data=b"[]")
        assert resp.status == 404  # not configured
        time.sleep(0.6)  # noqa: ASYNC251 - deliberately block the loop: the tick must go stale
        resp = await client.get("/healthz")
        assert resp.status == 503 and (await resp.json())["alive"] is False
    finally:
        await client.close()
        journal.close()


# -- status -----------------------------------------------------------------------------------------------------------
def _fill(conn) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        "INSERT INTO runs (watch, path, name, layout, state, completed_at) VALUES ('/w', '/w/R1', 'R1', 'bclconvert',"
        " 'uploading', 1.7e9)"
    )
    for i, state in enumerate(("uploading", "assigned"), start=1):
        conn.execute(
            "INSERT INTO samples (run_id, client_id, sample_name, folder, state, created, updated)"
            " VALUES (1, ?, ?, 'gncv://f/R1', ?, 0, 0)",
            (f"S{i}", f"S{i}", state),
        )
    conn.execute(
        "INSERT INTO objects (sample_id, read, destination_path, sources, size, state, updated)"
        " VALUES (1, 'R1', 'gncv://f/R1/S1_R1.fastq.gz', '[]', 3000, 'uploading', 0)"
    )
    conn.execute("INSERT INTO parts VALUES (1, 1, 0, 1000, 'etag', NULL, 0)")
    log_event(conn, "error", "assign", "S9", "project not found")
    log_event(conn, "info", "service", None, "started")


def test_status_reads_the_journal_beside_a_writer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, "")
    with Journal.open(tmp_path / "j.sqlite3") as journal:  # holds the daemon lock, like a running daemon
        journal.call(_fill)
        rc = status.main(argparse.Namespace(config=str(cfg), state=None, json=True, runs=20))
        assert rc == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["overview"]["counts"]["samples"]["assigned"] == 1
        assert doc["overview"]["upload_backlog_bytes"] == 2000
        assert doc["in_flight"][0]["done_bytes"] == 1000 and doc["in_flight"][0]["total_bytes"] == 3000
        assert [e["message"] for e in doc["errors"]] == ["project not found"]  # info rows are not errors
        assert doc["runs"][0]["samples"] == 2 and doc["runs"][0]["samples_assigned"] == 1
        text = status.render(status.collect(tmp_path / "j.sqlite3"))
        assert "samples:         uploading 1, assigned 1" in text and "project not found" in text


def test_status_without_a_journal_says_so(tmp_path: Path) -> None:
    from transferd.errors import TransferdError

    with pytest.raises(TransferdError, match="does not exist"):
        status.collect(tmp_path / "missing.sqlite3")


def test_watch_config_equality_drives_restarts() -> None:
    a = WatchConfig(path=Path("/a"), destination="gncv://a", metadata={"k": 1})
    assert a == WatchConfig(path=Path("/a"), destination="gncv://a", metadata={"k": 1})
    assert a != replace(a, rescan_interval=5.0)
