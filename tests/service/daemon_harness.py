"""Run `python -m transferd run` as a real subprocess and talk to it over HTTP and signals (tests only)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from helpers import wait_for
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    path: Path,
    *,
    api_url: str,
    s3_url: str,
    state: Path,
    port: int,
    watches: list[dict[str, Any]] = (),  # type: ignore[assignment]
    download: dict[str, Any] | None = None,
    grace: float = 10.0,
    upload: dict[str, Any] | None = None,
    log_format: str = "kv",
    extra: str = "",
) -> Path:
    def value(v: Any) -> str:
        return json.dumps(str(v) if isinstance(v, Path) else v)

    def table(name: str, items: Mapping[str, Any]) -> str:
        return f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in items.items())

    text = table("gencove", {"host": api_url, "s3_endpoint_url": s3_url, "s3_checksums": "when_required"})
    text += table("state", {"path": state})
    text += table("metrics", {"listen": f"127.0.0.1:{port}"})
    text += table("log", {"level": "info", "format": log_format})
    text += table("service", {"shutdown_grace": f"{grace}s"})
    if upload:
        text += table("upload", upload)
    for w in watches:
        text += "[[watch]]\n" + "".join(f"{k} = {value(v)}\n" for k, v in w.items())
    if download:
        text += table("download", download)
    path.write_text(text + extra)
    return path


class Daemon:
    """One `transferd run` process; its combined output goes to `log_path`."""

    def __init__(self, config: Path, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.config, self.port, self.log_path = config, port, log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "transferd", "run", "-c", str(config)],
            cwd=REPO,
            env={**os.environ, "PYTHONFAULTHANDLER": "1", **env},  # SIGABRT dumps every thread's stack
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str) -> tuple[int, Any]:
        status, body = self.get(path)
        return status, json.loads(body)

    def scrape(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body.decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """{(sample name, sorted labels): value} of one scrape."""
        out = {}
        for family in text_string_to_metric_families(self.scrape()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def wait_http(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
            try:
                return self.get("/healthz")[0] == 200
            except OSError:
                return False

        wait_for(up, timeout=timeout, interval=0.1, message="the daemon's /healthz")

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        self.wait_http(timeout)
        return wait_for(lambda: (r := self.get_json("/readyz"))[0] == 200 and r[1], timeout=timeout, message="/readyz")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.flush()

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGABRT)  # hung: leave the stacks in the log for whoever reads the failure
            try:
                return self.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.wait(10)
        finally:
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if re.search(rf"\bevent={re.escape(name)}\b", line)]


def scrape_names(text: str) -> set[str]:
    """Every series name a scrape can be queried by (histograms: _bucket, _sum, _count)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


METRIC_REF = re.compile(r"\b((?:transferd|process|python)_[a-z0-9_]+)\b")


def referenced_metrics(expr: str) -> set[str]:
    return set(METRIC_REF.findall(expr))


class RecordingApiProxy:
    """A pass-through proxy in front of the sandbox API that keeps every secret the API hands out
    (the upload-credentials answers), so a test can search the daemon's logs for them."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading

        self.upstream = upstream.rstrip("/")
        self.secrets: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                req = urllib.request.Request(
                    proxy.upstream + self.path, data=body, method=self.command, headers=headers
                )
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        status, payload, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    status, payload, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
                if "upload-credentials" in self.path and 200 <= status < 300:
                    doc = json.loads(payload)
                    proxy.secrets += [doc["secret_key"], doc["token"]]
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="api-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
