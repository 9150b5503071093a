"""The daemon's HTTP face (aiohttp): /metrics, /healthz, /readyz and POST /webhooks/gencove.

Bound to `[metrics] listen` (loopback by default). /metrics renders in a worker thread because the collector
reads the journal; the probes only read state cached by background tasks, so they answer in microseconds.
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
from transferd.service.health import Health

log = logging.getLogger(__name__)

WebhookHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WEBHOOK_PATH = "/webhooks/gencove"


def build_app(
    registry: CollectorRegistry, health: Health, webhook: Callable[[], WebhookHandler | None]
) -> web.Application:
    """`webhook()` returns the current receiver's handler (None: not configured), so a reload can swap it."""

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

    async def gencove_webhook(request: web.Request) -> web.StreamResponse:
        handler = webhook()
        if handler is None:
            doc = {"error": "webhooks are not configured (download.webhook_secret_file)"}
            return web.json_response(doc, status=404)
        return await handler(request)

    app = web.Application(client_max_size=1024**2)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post(WEBHOOK_PATH, gencove_webhook)
    return app


class HttpServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.host, self.port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise TransferdError(f"metrics.listen {self.host}:{self.port}: cannot listen: {e.strerror}") from None
        if self._runner.addresses:  # the real port when 0 was asked for
            self.port = self._runner.addresses[0][1]
        event(log, "service.http_listening", address=f"http://{self.host}:{self.port}")

    async def stop(self) -> None:
        await self._runner.cleanup()
