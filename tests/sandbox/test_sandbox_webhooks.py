"""Webhook deliveries: signed analysis_complete_v2 events to a real aiohttp receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from transferd.sandbox import SandboxProcess
from transferd.sandbox.spawn import free_port

SECRET = "whsec-test"


async def _receiver(inbox: asyncio.Queue[tuple[dict[str, str], bytes]], fail_first: int = 0) -> web.AppRunner:
    calls = {"n": 0}

    async def hook(request: web.Request) -> web.Response:
        calls["n"] += 1
        body = await request.read()
        if calls["n"] <= fail_first:
            return web.Response(status=500)
        await inbox.put((dict(request.headers), body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def _verify(header: str, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha512).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


async def test_sample_completion_is_delivered_signed(sandbox: SandboxProcess) -> None:
    c, project = sandbox.control, sandbox.info.project_id
    inbox: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()
    runner = await _receiver(inbox, fail_first=1)  # the first attempt fails: the sandbox retries
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        await asyncio.to_thread(c.set_webhook, project, url, SECRET)
        sample = await asyncio.to_thread(c.seed_sample, project, "W1", r1_size=100, r2_size=0)
        headers, body = await asyncio.wait_for(inbox.get(), timeout=15)
    finally:
        await runner.cleanup()
    assert headers["Content-Type"] == "application/json"
    assert _verify(headers["Gencove-Signature"], body)
    (event,) = json.loads(body)
    assert event["event_type"] == "analysis_complete_v2" and event["event_id"] and event["timestamp"]
    assert event["payload"]["project"] == {"id": project}
    sample_json: dict[str, Any] = event["payload"]["samples"][0]
    assert sample_json == {"id": sample["id"], "client_id": "W1", "last_status": {"status": "succeeded"}}
    attempts = await asyncio.to_thread(c.webhook_deliveries)
    assert [a["status"] for a in attempts] == [500, 204]
    assert attempts[1]["event_ids"] == [event["event_id"]]


async def test_unreachable_receiver_is_logged_not_fatal(sandbox: SandboxProcess) -> None:
    c, project = sandbox.control, sandbox.info.project_id
    await asyncio.to_thread(c.set_webhook, project, f"http://127.0.0.1:{free_port()}/gone", SECRET)
    sample = await asyncio.to_thread(c.seed_sample, project, "W2", r1_size=10, r2_size=0)
    for _ in range(100):
        attempts = await asyncio.to_thread(c.webhook_deliveries)
        if len(attempts) == 4:
            break
        await asyncio.sleep(0.1)
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert all(a["status"] is None and a["error"] for a in attempts)
    detail = await asyncio.to_thread(c.sample, sample["id"])
    assert detail["last_status"]["status"] == "succeeded"
