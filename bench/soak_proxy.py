"""The soak's front door to the sandbox: outage-capable TCP proxies plus a recording HTTP hop for the API.

    python bench/soak_proxy.py --api http://127.0.0.1:PORT --s3 http://127.0.0.1:PORT

prints one JSON line once listening: {"api_url", "s3_url", "control_url", "pid"}. The daemon is pointed at
`api_url` and `s3_url` instead of the sandbox's own addresses:

    daemon --TCP--> [api proxy] --HTTP--> [recorder] --HTTP--> sandbox API
    daemon --TCP--> [s3 proxy]  ------------------------------> sandbox S3 proxy -> moto

Why: the sandbox keeps its state in memory, so restarting it would lose every upload. A restart as the daemon
sees it is "connections drop, the ports refuse connections for a while, then everything answers again" —
exactly what `POST /outage` does to the two TCP proxies (listeners closed, live connections aborted, same
ports reopened after the given seconds). The recorder keeps every secret the API hands out (the S3
credentials of `upload-credentials`, JWTs), so the soak can search the daemon's logs for them.

Control (never taken down): `POST /outage {"seconds": 3, "targets": ["api", "s3"]}`, `GET /secrets`, `GET /stats`
(which lists the API requests in flight, so the soak can SIGKILL the daemon while its assignment POST is
being processed: the sandbox still assigns, the daemon never hears the answer).
The process dies with its parent (PR_SET_PDEATHSIG is set by the spawner) and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, web

CHUNK = 256 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)
SECRET_KEYS = frozenset(
    {"secret_key", "token", "access", "refresh", "session_token", "SecretAccessKey", "SessionToken"}
)


class TcpProxy:
    """Byte pump 127.0.0.1:<port> -> upstream, with outages that look like a server restart."""

    def __init__(self, name: str, upstream: tuple[str, int]) -> None:
        self.name = name
        self.upstream = upstream
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.connections = 0
        self.aborted = 0
        self.outages = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._abort_all()

    def _abort_all(self) -> None:
        for client, upstream in list(self._conns):
            client.transport.abort()
            upstream.transport.abort()
            self.aborted += 1
        self._conns.clear()

    async def outage(self, seconds: float) -> None:
        async with self._lock:  # overlapping outages queue up instead of interleaving
            self.outages += 1
            await self.stop()
            await asyncio.sleep(seconds)
            for _ in range(50):  # the port may be in TIME_WAIT for a moment
                try:
                    await self.start()
                    return
                except OSError:
                    await asyncio.sleep(0.1)
            raise RuntimeError(f"{self.name}: could not listen on port {self.port} again")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, "up"), self._pipe(up_reader, writer, "down"), return_exceptions=True
            )
        finally:
            self._conns.discard(pair)
            for w in pair:
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        try:
            while data := await reader.read(CHUNK):
                if direction == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
        except (OSError, ConnectionError, asyncio.IncompleteReadError, RuntimeError):
            writer.transport.abort()

    def stats(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "up": self._server is not None,
            "connections": self.connections,
            "aborted": self.aborted,
            "outages": self.outages,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }


class Recorder:
    """HTTP pass-through to the sandbox API that remembers every secret in the JSON answers."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.secrets: list[str] = []
        self.requests = 0
        self.inflight: dict[int, str] = {}  # id -> "METHOD /path": lets the soak kill the daemon mid-request
        self._session: ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app: web.Application) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=300), auto_decompress=True)

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.requests += 1
        self.inflight[id(request)] = f"{request.method} {request.path}"
        try:
            return await self._forward(request)
        finally:
            self.inflight.pop(id(request), None)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read() if request.body_exists else None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            async with self._session.request(
                request.method, self.upstream + request.raw_path, headers=headers, data=body, allow_redirects=False
            ) as up:
                payload = await up.read()
                status, reason = up.status, up.reason
                out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
                ctype = up.headers.get("Content-Type", "")
        except Exception as exc:  # the sandbox is unreachable: say so like a gateway would
            return web.json_response({"detail": f"soak proxy: upstream failed: {exc!r}"}, status=502)
        if "json" in ctype:
            with contextlib.suppress(ValueError):
                self._collect(json.loads(payload))
        return web.Response(status=status, reason=reason, body=payload, headers=out_headers)

    def _collect(self, doc: Any) -> None:
        if isinstance(doc, dict):
            for key, value in doc.items():
                if key in SECRET_KEYS and isinstance(value, str) and len(value) >= 8 and value not in self.secrets:
                    self.secrets.append(value)
                else:
                    self._collect(value)
        elif isinstance(doc, list):
            for item in doc:
                self._collect(item)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


async def serve(api_upstream: str, s3_upstream: str) -> None:
    recorder = Recorder(api_upstream)
    rec_runner = web.AppRunner(recorder.app(), access_log=None, shutdown_timeout=1.0)
    await rec_runner.setup()
    rec_site = web.TCPSite(rec_runner, "127.0.0.1", 0)
    await rec_site.start()
    rec_port = rec_runner.addresses[0][1]
    proxies = {
        "api": TcpProxy("api", ("127.0.0.1", rec_port)),
        "s3": TcpProxy("s3", _host_port(s3_upstream)),
    }
    for p in proxies.values():
        await p.start()
    background: set[asyncio.Task[None]] = set()

    async def outage(request: web.Request) -> web.Response:
        body = await request.json()
        seconds = float(body.get("seconds", 3))
        targets = body.get("targets") or list(proxies)
        for name in targets:
            task = asyncio.create_task(proxies[name].outage(seconds))
            background.add(task)
            task.add_done_callback(background.discard)
        return web.json_response({"outage": targets, "seconds": seconds})

    async def secrets(request: web.Request) -> web.Response:
        return web.json_response({"secrets": recorder.secrets})

    async def stats(request: web.Request) -> web.Response:
        doc = {name: p.stats() for name, p in proxies.items()}
        doc["recorder"] = {"requests": recorder.requests, "secrets": len(recorder.secrets),
                           "inflight": sorted(recorder.inflight.values())}  # fmt: skip
        return web.json_response(doc)

    control = web.Application()
    control.router.add_post("/outage", outage)
    control.router.add_get("/secrets", secrets)
    control.router.add_get("/stats", stats)
    ctl_runner = web.AppRunner(control, access_log=None)
    await ctl_runner.setup()
    await web.TCPSite(ctl_runner, "127.0.0.1", 0).start()
    ctl_port = ctl_runner.addresses[0][1]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info = {
        "api_url": f"http://127.0.0.1:{proxies['api'].port}",
        "s3_url": f"http://127.0.0.1:{proxies['s3'].port}",
        "control_url": f"http://127.0.0.1:{ctl_port}",
        "pid": os.getpid(),
    }
    print(json.dumps(info), flush=True)
    await stop.wait()
    for task in list(background):
        task.cancel()
    for p in proxies.values():
        await p.stop()
    await ctl_runner.cleanup()
    await rec_runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True, help="the sandbox API URL")
    parser.add_argument("--s3", required=True, help="the sandbox S3 (proxy) URL")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.api, args.s3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
