"""The daemon's HTTP face (aiohttp): /metrics, /healthz, /readyz and POST /webhooks/gencove.

Bound to `[metrics] listen` (loopback by default). /metrics renders in a worker thread because the collector
reads the journal; the probes only read state cached by background tasks, so they answer in microseconds.
Connections are guarded (connguard.py): a request header must arrive within HEADER_TIMEOUT, and at
MAX_CONNECTIONS the oldest half-open connection makes room, so probes are answered during a connection flood.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from transferd.errors import TransferdError
from transferd.log import event
from transferd.service.connguard import ConnectionGuard
from transferd.service.health import Health

log = logging.getLogger(__name__)

WebhookHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WEBHOOK_PATH = "/webhooks/gencove"
MAX_CONNECTIONS = 256  # far above Prometheus + probes + webhooks; the systemd unit's LimitNOFILE leaves room
HEADER_TIMEOUT = 10.0  # seconds for a new connection to send its whole request header
KEEPALIVE_TIMEOUT = 30.0  # an idle keep-alive connection is closed after this (Prometheus reconnects)
SHUTDOWN_TIMEOUT = 2.0  # at stop, a request still in progress gets this long (aiohttp waits 60 s by default)


def build_app(
    registry: CollectorRegistry, health: Health, webhook: Callable[[], WebhookHandler | None] | None
) -> web.Application:
    """/metrics, /healthz, /readyz, and the webhook route unless `webhook` is None (it has a listener of its own:
    `build_webhook_app`). `webhook()` returns the current receiver's handler (None: not configured), so a reload
    can swap it."""

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.get_running_loop().run_in_executor(None, encoder, registry)
        resp = web.Response(body=body, headers={"Content-Type": content_type})
        resp.enable_compression()
        return resp

    async def healthz(request: web.Request) -> web.Response:
        alive, age = health.alive()
        doc = {"alive": alive, "last_tick_seconds_ago": round(age, 3), "loop_lag_seconds": round(health.loop_lag, 3)}
        return web.json_response(doc, status=200 if alive else 503)

    async def readyz(request: web.Request) -> web.Response:
        ready = health.ready()
        doc: dict[str, Any] = {"ready": ready, "checks": {n: c.as_json() for n, c in health.checks.items()}}
        doc["checks"]["roots"]["roots"] = health.root_health()
        if not ready:
            doc["failed"] = [n for n, c in health.checks.items() if not c.ok]
        return web.json_response(doc, status=200 if ready else 503)

    app = web.Application(client_max_size=1024**2)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if webhook is not None:
        app.router.add_post(WEBHOOK_PATH, _webhook_route(webhook))
    return app


def build_webhook_app(webhook: Callable[[], WebhookHandler | None]) -> web.Application:
    """POST /webhooks/gencove and nothing else: the listener a site opens to Gencove ([webhook] listen)."""
    app = web.Application(client_max_size=1024**2)
    app.router.add_post(WEBHOOK_PATH, _webhook_route(webhook))
    return app


def _webhook_route(webhook: Callable[[], WebhookHandler | None]) -> Callable[[web.Request], Any]:
    async def gencove_webhook(request: web.Request) -> web.StreamResponse:
        handler = webhook()
        if handler is None:
            doc = {"error": "webhooks are not configured (download.webhook_secret_file)"}
            return web.json_response(doc, status=404)
        return await handler(request)

    return gencove_webhook


class _GuardedSite(web.BaseSite):
    """aiohttp's TCPSite, with the connection guard around the runner's protocol factory."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: Callable[[Any], ConnectionGuard]) -> None:
        super().__init__(runner)
        self._host, self._port, self._make_guard = host, port, guard
        self.guard: ConnectionGuard | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        assert self._runner.server is not None
        self.guard = self._make_guard(self._runner.server)
        self._server = await asyncio.get_running_loop().create_server(
            self.guard, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


class HttpServer:
    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
        key: str = "metrics.listen",
    ) -> None:
        self._key = key  # the config key that names this listener, for errors
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE_TIMEOUT,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )  # fmt: skip
        self.host, self.port = host, port
        self._limits = (max_connections, header_timeout)
        self.guard: ConnectionGuard | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = _GuardedSite(self._runner, self.host, self.port, lambda factory: ConnectionGuard(factory, *self._limits))
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise TransferdError(f"{self._key} {self.host}:{self.port}: cannot listen: {e.strerror}") from None
        self.guard = site.guard
        if self._runner.addresses:  # the real port when 0 was asked for
            self.port = self._runner.addresses[0][1]
        event(log, "service.http_listening", address=f"http://{self.host}:{self.port}", key=self._key)

    async def stop(self) -> None:
        await self._runner.cleanup()
