"""The daemon as a real process (`python -m transferd run`) against the sandbox: one full run that uploads,
assigns and mirrors, then the operator's view of it (metrics, probes, systemd notifications, status), reload,
a second instance, watch-root loss, and a clean stop with no secret in the logs."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_harness import REPO, Daemon, RecordingApiProxy, free_port, referenced_metrics, scrape_names, write_config
from helpers import make_fastq_gz, wait_for
from test_metrics_contract import PROMETHEUS_BUILTIN, alert_exprs, dashboard_exprs

from transferd.sandbox import SandboxProcess

SAMPLES = {"S1": 1, "S2": 2}
WEBHOOK_SECRET = "whsec-service-test-0123456789"


@dataclass
class Scenario:
    daemon: Daemon
    sandbox: SandboxProcess
    proxy: RecordingApiProxy
    config: Path
    root: Path
    results: Path
    fastqs: list[Path]
    notify: socket.socket
    messages: list[str]

    def drain_notify(self) -> list[str]:
        return list(self.messages)


def write_run(root: Path, name: str, samples: dict[str, int], reads: int = 300) -> list[Path]:
    """A small BCL Convert output folder; the completion marker is written last, as BCL Convert does."""
    run = root / name
    files = [
        make_fastq_gz(run / f"{sample}_S{n}_L001_{read}_001.fastq.gz", reads=reads, seed=n * 10 + i)
        for sample, n in samples.items()
        for i, read in enumerate(("R1", "R2"))
    ]
    (run / "Logs").mkdir()
    (run / "Logs" / "FastqComplete.txt").write_text("done\n")
    return files


@pytest.fixture(scope="module")
def scenario(sandbox_proc: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    sandbox_proc.control.reset()
    info = sandbox_proc.info
    base = tmp_path_factory.mktemp("daemon")
    root, results = base / "runs", base / "results"
    root.mkdir()
    results.mkdir()
    proxy = RecordingApiProxy(info.api_url)
    port = free_port()
    (base / "webhook-secret").write_text(WEBHOOK_SECRET + "\n")
    config = write_config(
        base / "config.toml", api_url=proxy.url, s3_url=info.s3_url, state=base / "state" / "journal.sqlite3",
        port=port, grace=10,
        watches=[{"path": root, "destination": "gncv://service-test", "project_id": info.project_id,
                  "settle_seconds": 0, "rescan_interval": "1s"}],
        download={"destination": results, "projects": [info.project_id], "interval": "1s",
                  "webhook_secret_file": base / "webhook-secret"},
    )  # fmt: skip
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # plays systemd's notify socket
    notify.bind(str(base / "notify.sock"))
    env = {"TRANSFERD_API_KEY": info.api_key, "NOTIFY_SOCKET": str(base / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    daemon = Daemon(config, port, env, base / "daemon.log")
    s = Scenario(daemon, sandbox_proc, proxy, config, root, results, [], notify, [])
    reader = threading.Thread(target=_read_notifications, args=(s,), daemon=True)
    reader.start()
    try:
        daemon.wait_ready()
        sandbox_proc.control.set_webhook(info.project_id, daemon.url("/webhooks/gencove"), WEBHOOK_SECRET)
        s.fastqs = write_run(root, "RUN_A", SAMPLES)
        wait_for(
            lambda: daemon.value("transferd_mirror_samples", state="done") == len(SAMPLES)
            and (daemon.value("transferd_samples_completed_total", stage="mirrored") or 0) >= len(SAMPLES),
            timeout=60, interval=0.25, message="both samples uploaded, assigned and mirrored",
        )  # fmt: skip
        yield s
    finally:
        daemon.stop()
        notify.close()
        proxy.close()


def _read_notifications(s: Scenario) -> None:
    while True:
        try:
            s.messages.append(s.notify.recv(65536).decode())
        except OSError:  # closed at teardown
            return


def _deliverables(s: Scenario) -> list[dict]:  # type: ignore[type-arg]
    samples = [x for x in s.sandbox.control.samples(s.sandbox.info.project_id) if x.get("client_id") in SAMPLES]
    return [f for x in samples for f in x["files"]]


def test_metrics_after_upload_and_mirror(scenario: Scenario) -> None:
    d = scenario.daemon
    m = d.metrics()

    def v(name: str, **labels: str) -> float | None:
        return m.get((name, tuple(sorted(labels.items()))))

    uploaded = sum(f.stat().st_size for f in scenario.fastqs)
    assert v("transferd_transferred_bytes_total", direction="upload") == uploaded
    assert v("transferd_transferred_objects_total", direction="upload") == 4  # one object per sample and read
    assert v("transferd_transferred_files_total", direction="upload") == 4
    assert v("transferd_samples_completed_total", stage="uploaded") == 2
    assert v("transferd_samples_completed_total", stage="assigned") == 2
    deliverables = _deliverables(scenario)
    on_disk = [p for p in scenario.results.rglob("*") if p.is_file() and not p.name.endswith(".part")]
    assert deliverables and len(on_disk) == len(deliverables)
    assert v("transferd_transferred_files_total", direction="download") == len(deliverables)
    assert v("transferd_transferred_bytes_total", direction="download") == sum(p.stat().st_size for p in on_disk)
    assert v("transferd_mirror_files", state="done") == len(deliverables)
    assert v("transferd_samples", state="assigned") == 2 and v("transferd_objects", state="done") == 4
    assert v("transferd_backlog_bytes", direction="upload") == 0
    assert v("transferd_end_to_end_duration_seconds_count", stage="upload") == 2
    # A webhook and the poll may both finish the same sample; the mirror loop then counts it twice (reported).
    mirrored = v("transferd_samples_completed_total", stage="mirrored")
    assert mirrored is not None and mirrored >= 2
    assert v("transferd_end_to_end_duration_seconds_count", stage="mirror") == mirrored
    assert v("transferd_mirror_samples", state="done") == 2
    assert v("transferd_upload_part_duration_seconds_count") == 4
    assert v("transferd_watch_root_up", root=str(scenario.root)) == 1
    assert {v("transferd_ready", check=c) for c in ("journal", "api", "roots")} == {1.0}
    for stage in ("upload", "assigned", "mirrored"):
        assert (v("transferd_last_success_timestamp_seconds", stage=stage) or 0) > time.time() - 120
    assert v("transferd_build_info", version=__import__("transferd").__version__, python=sys.version.split()[0]) == 1


def test_webhooks_reach_the_mirror(scenario: Scenario) -> None:
    d = scenario.daemon
    wait_for(lambda: (d.value("transferd_webhook_requests_total", outcome="accepted") or 0) >= 1, timeout=10,
             message="a signed delivery from the sandbox accepted")  # fmt: skip
    req = urllib.request.Request(d.url("/webhooks/gencove"), data=b"[]", method="POST",
                                 headers={"Gencove-Signature": "t=1,v1=00"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401
    assert d.value("transferd_webhook_requests_total", outcome="bad_signature") == 1


def test_real_scrape_passes_promtool_and_feeds_dashboard_and_alerts(scenario: Scenario) -> None:
    text = scenario.daemon.scrape()
    exposed = scrape_names(text) | PROMETHEUS_BUILTIN
    used = {n for e in dashboard_exprs() + alert_exprs() for n in referenced_metrics(e)}
    assert not used - exposed, f"dashboard/alerts use metrics the daemon does not expose: {sorted(used - exposed)}"
    if shutil.which("promtool"):
        out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_systemd_notifications(scenario: Scenario) -> None:
    def pinged_twice() -> list[str] | None:
        messages = scenario.drain_notify()
        return messages if sum(x == "WATCHDOG=1" for x in messages) >= 2 else None

    messages = wait_for(pinged_twice, timeout=10, message="two WATCHDOG=1 pings")
    assert messages[0].startswith("READY=1\nSTATUS=")
    status = wait_for(
        lambda: [x for x in scenario.drain_notify() if x.startswith("STATUS=") and "assigned" in x][-1:],
        timeout=10, message="a STATUS= update",
    )[0]  # fmt: skip
    assert "2 samples assigned" in status and "mirror ok" in status and "ready" in status


def test_status_command_beside_the_running_daemon(scenario: Scenario) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "transferd", "status", "-c", str(scenario.config)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"daemon running (pid {scenario.daemon.pid})" in out.stdout
    assert "samples:         assigned 2" in out.stdout and "RUN_A" in out.stdout


def test_second_instance_on_the_same_journal_refuses(scenario: Scenario) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "transferd", "run", "-c", str(scenario.config)],
        cwd=REPO, capture_output=True, text=True, timeout=30, env={**_env(scenario)},
    )  # fmt: skip
    assert out.returncode in (1, 2)
    assert "journal.sqlite3 is in use by another transferd" in out.stderr
    assert f"(pid {scenario.daemon.pid})" in out.stderr


def _env(s: Scenario) -> dict[str, str]:
    import os

    return {**os.environ, "TRANSFERD_API_KEY": s.sandbox.info.api_key}


def test_readyz_follows_a_watch_root(scenario: Scenario) -> None:
    d, root = scenario.daemon, scenario.root
    away = root.with_name("runs-unmounted")
    root.rename(away)
    try:
        _, doc = wait_for(lambda: (r := d.get_json("/readyz"))[0] == 503 and r, timeout=10, message="unready")
        assert doc["failed"] == ["roots"] and str(root) in doc["checks"]["roots"]["detail"]
        assert doc["checks"]["roots"]["roots"] == {str(root): False}
        assert d.value("transferd_watch_root_up", root=str(root)) == 0
    finally:
        away.rename(root)
    wait_for(lambda: d.get("/readyz")[0] == 200, timeout=10, message="ready again")
    assert d.get("/healthz")[0] == 200


def test_sighup_rejects_a_broken_config_and_applies_a_good_one(scenario: Scenario) -> None:
    d, config = scenario.daemon, scenario.config
    good = config.read_text()

    def reload_messages(since: int) -> list[str] | None:
        """systemd's reload protocol: RELOADING=1 with MONOTONIC_USEC first, READY=1 last (None until then)."""
        new = [m for m in scenario.drain_notify()[since:] if m.startswith(("RELOADING=1", "ERRNO=", "READY=1"))]
        ends = [i for i, m in enumerate(new) if "READY=1" in m.split("\n")]
        return new[: ends[0] + 1] if ends else None

    config.write_text(good + '[upload]\nconcurrency = "many"\n')
    try:
        since = len(scenario.drain_notify())
        d.signal(signal.SIGHUP)
        line = wait_for(lambda: d.events("service.reload_rejected"), timeout=10)[-1]
        rejected = wait_for(lambda: reload_messages(since), timeout=10, message="READY=1 after the rejected reload")
    finally:
        config.write_text(good)
    assert "key=upload.concurrency" in line and str(config) in line
    assert d.proc.poll() is None and d.get("/readyz")[0] == 200
    assert rejected[0].startswith("RELOADING=1\nMONOTONIC_USEC=") and int(rejected[0].split("\n")[1][15:]) > 0
    assert rejected[-1].startswith("ERRNO=22\nSTATUS=reload rejected, running config kept: ")
    assert rejected[-1].endswith("\nREADY=1") and "upload.concurrency" in rejected[-1]

    second = scenario.root.with_name("runs-2")
    second.mkdir()
    extra = f'[[watch]]\npath = "{second}"\ndestination = "gncv://service-test-2"\n'
    config.write_text(good.replace('interval = "1s"', 'interval = "2s"').replace("[download]", extra + "[download]"))
    try:
        since = len(scenario.drain_notify())
        d.signal(signal.SIGHUP)
        line = wait_for(lambda: d.events("service.reloaded"), timeout=10)[-1]
        assert str(second) in line and "mirror_restarted=true" in line
        applied = wait_for(lambda: reload_messages(since), timeout=10, message="READY=1 after the reload")
        assert applied[0].startswith("RELOADING=1\nMONOTONIC_USEC=") and applied[-1].startswith("READY=1\nSTATUS=")
        assert not [m for m in applied if "ERRNO=" in m]
        wait_for(lambda: d.value("transferd_watch_root_up", root=str(second)) == 1, timeout=10)
    finally:
        config.write_text(good)
    d.signal(signal.SIGHUP)  # and back: the extra watch goes away
    wait_for(lambda: d.value("transferd_watch_root_up", root=str(second)) is None, timeout=10)
    assert d.proc.poll() is None and d.get("/readyz")[0] == 200 and not d.events("service.crashed")


def test_sigterm_exits_0_and_no_secret_is_logged(scenario: Scenario) -> None:
    d = scenario.daemon
    d.signal(signal.SIGTERM)
    assert d.wait(15) == 0
    assert any(m.startswith("STOPPING=1") for m in scenario.drain_notify())
    log = d.log_text()
    assert d.events("service.stopped") and not d.events("service.crashed")
    secrets = [scenario.sandbox.info.api_key, *scenario.proxy.secrets]
    assert len(secrets) >= 3, "the daemon should have fetched S3 credentials through the proxy"
    for secret in secrets:
        assert secret not in log
    # one line per event, each naming its subject
    assert all(line.startswith("ts=") for line in log.splitlines()), "every log line is a key=value event"
    assert any("run=" in line for line in log.splitlines()) and any("object=" in line for line in log.splitlines())


def test_a_restart_does_not_read_uploaded_files_again(scenario: Scenario) -> None:
    """After a restart the first scan meets every run still in the roots. Files uploaded before (same path,
    size, mtime, inode in the journal) are not read again by the gzip check, which for single-member gzip
    files means a full decompression; only new files are."""
    s = scenario
    assert s.daemon.proc.poll() is not None, "runs after the SIGTERM test"
    d = Daemon(s.config, s.daemon.port, {"TRANSFERD_API_KEY": s.sandbox.info.api_key}, s.config.with_name("2.log"))
    try:
        d.wait_ready()
        write_run(s.root, "RUN_B", {"T1": 3})
        wait_for(lambda: (d.value("transferd_samples_completed_total", stage="assigned") or 0) >= 1, timeout=60,
                 interval=0.25, message="RUN_B uploaded and assigned")  # fmt: skip
        checked = d.value("transferd_gzip_checks_total", outcome="whole")
        assert checked == 2, f"{checked} files gzip-checked after the restart; only RUN_B's 2 are new"
        assert not [line for line in d.events("upload.run_submitted") if "RUN_A" in line], "RUN_A taken as new"
    finally:
        assert d.stop() == 0
