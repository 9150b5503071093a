"""A site behind a mandatory forward proxy that re-signs TLS with its own CA: the daemon uploads, assigns and
mirrors over HTTPS through the proxy, with the CA given only in `[network]` (no environment), and nothing reaches
the sandbox except through the proxy (every connection the sandbox saw is one the proxy opened)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import Daemon, free_port
from forward_proxy import ForwardProxy
from helpers import wait_for
from test_daemon import write_run

from transferd.sandbox import SandboxProcess

CLEAN_ENV = {k: "" for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy",
                             "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE")}  # fmt: skip


@pytest.fixture(scope="module")
def tls_sandbox() -> Iterator[SandboxProcess]:
    with SandboxProcess("--tls", "--sample-delay", "0.5", "--restore-delay", "0.5") as sb:
        yield sb


def test_upload_assign_and_mirror_over_https_through_a_proxy(tls_sandbox: SandboxProcess, tmp_path: Path) -> None:
    info = tls_sandbox.info
    root, results = tmp_path / "runs", tmp_path / "results"
    root.mkdir()
    results.mkdir()
    port = free_port()
    with ForwardProxy() as proxy:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[gencove]\nhost = "{info.api_url}"\ns3_endpoint_url = "{info.s3_url}"\n'
            f'[network]\nproxy = "{proxy.url}"\nca_file = "{info.ca_file}"\n'
            f'[state]\npath = "{tmp_path / "journal.sqlite3"}"\n'
            f'[metrics]\nlisten = "127.0.0.1:{port}"\n[log]\nlevel = "info"\n'
            f'[[watch]]\npath = "{root}"\ndestination = "gncv://tls-proxy"\nproject_id = "{info.project_id}"\n'
            'settle_seconds = 0\nrescan_interval = "1s"\n'
            f'[download]\ndestination = "{results}"\nprojects = ["{info.project_id}"]\ninterval = "1s"\n'
        )
        daemon = Daemon(config, port, {"TRANSFERD_API_KEY": info.api_key, **CLEAN_ENV}, tmp_path / "daemon.log")
        try:
            daemon.wait_ready()
            fastqs = write_run(root, "RUN_TLS", {"T1": 1, "T2": 2})
            wait_for(lambda: daemon.value("transferd_mirror_samples", state="done") == 2, timeout=90, interval=0.25,
                     message="both samples uploaded, assigned and mirrored")  # fmt: skip
        finally:
            assert daemon.stop() == 0, daemon.log_text()[-3000:]
        log = tls_sandbox.control.log()
        assert {e["target"] for e in log} >= {"api", "s3", "download"}
        direct = [(e["target"], e["method"], e["path"]) for e in log if not proxy.carried(e["peer"])]
        assert direct == [], "requests that did not come through the proxy"
        api_port, s3_port = info.api_url.rsplit(":", 1)[1], info.s3_url.rsplit(":", 1)[1]
        assert {f"CONNECT 127.0.0.1:{api_port}", f"CONNECT 127.0.0.1:{s3_port}"} <= set(proxy.requests())
    puts = [e for e in log if e["operation"] == "PutObject"]
    assert len(puts) == 4 and all(e["status"] == 200 and not e["fault"] for e in puts)  # SHA-256 trailers verified
    uploaded = {s["client_id"] for s in tls_sandbox.control.samples(info.project_id)}
    assert {"T1", "T2"} <= uploaded and len(fastqs) == 4
    files = {f["id"]: f for s in tls_sandbox.control.samples(info.project_id) for f in s["files"]}
    on_disk = [p for p in results.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(on_disk) == len(files)
    sums = {f["checksum_sha256"] for f in files.values()}
    assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in on_disk} == sums
