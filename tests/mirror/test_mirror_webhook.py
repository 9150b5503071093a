"""Webhooks: a signed event mirrors its samples within a second; forged, stale, replayed and malformed ones do not."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from helpers import wait_for
from mirror_support import FAST, assert_mirrored, default_path, eventually

from transferd.config import Config, ProjectSource
from transferd.journal import Journal
from transferd.mirror.loop import MirrorLoop
from transferd.mirror.webhook import SIGNATURE_HEADER, WebhookReceiver
from transferd.sandbox import SandboxProcess
from transferd.sandbox.webhooks import sample_event, sign_webhook
from transferd.stats import STATS

SECRET = "whsec-0123456789abcdef"
Seeder = Callable[..., list[dict[str, Any]]]


@asynccontextmanager
async def receiver_server(receiver: WebhookReceiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/webhooks/gencove", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/webhooks/gencove"
    finally:
        await runner.cleanup()


class Recorder:
    """Wraps a trigger and remembers when it was called."""

    def __init__(self, inner: Callable[[str | None, list[str]], None] | None = None) -> None:
        self.calls: list[tuple[str | None, list[str], float]] = []
        self._inner = inner

    def __call__(self, project_id: str | None, sample_ids: list[str]) -> None:
        self.calls.append((project_id, sample_ids, time.monotonic()))
        if self._inner is not None:
            self._inner(project_id, sample_ids)


async def post(url: str, body: bytes, header: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **({SIGNATURE_HEADER: header} if header else {})}
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_signed_webhook_mirrors_within_a_second_and_bad_ones_do_nothing(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    c = sandbox.control
    loop = MirrorLoop(mirror_config(interval=3600), journal, sandbox.info.api_key, policy=FAST)
    trigger = Recorder(loop.trigger)
    receiver = WebhookReceiver(SECRET, 300, journal, trigger)
    root = tmp_path / "mirror"
    async with receiver_server(receiver) as url:
        task = asyncio.create_task(loop.run())
        try:
            await eventually(lambda: "mirror" in STATS.last_success)  # the first poll ran: polling is now idle
            (sample,) = await asyncio.to_thread(finished_samples, 1)
            event = sample_event("analysis_complete_v2", project.id, [{"id": sample["id"], "client_id": "S0"}])
            body = json.dumps([event]).encode()
            now = int(time.time())

            # Forged, unsigned and stale deliveries are refused and trigger nothing.
            assert (await post(url, body, sign_webhook("not-the-secret", body, now)))[0] == 401
            assert (await post(url, body, None))[0] == 401
            assert (await post(url, body, sign_webhook(SECRET, body, now - 3600)))[0] == 401
            assert trigger.calls == [] and STATS.webhooks == {"bad_signature": 2, "stale": 1}

            # A signed one mirrors the sample within a second of arriving.
            header = sign_webhook(SECRET, body, now)
            assert await post(url, body, header) == (200, {"accepted": 1, "duplicates": 0})
            last = default_path(root, sample, sample["files"][-1])
            await eventually(lambda: all(default_path(root, sample, f).exists() for f in sample["files"]), 5)
            assert time.monotonic() - trigger.calls[0][2] < 1.0, "mirror took more than a second"
            assert last.exists()
            assert_mirrored(root, [sample])

            # The same delivery again (Gencove retries, or a replay inside the tolerance) is acknowledged, ignored.
            assert await post(url, body, header) == (200, {"accepted": 0, "duplicates": 1})
            assert len(trigger.calls) == 1
            assert STATS.webhooks["accepted"] == 1 and STATS.webhooks["duplicate"] == 1

            # A real delivery from the sandbox: subscription set, a sample finishes, the sandbox POSTs it signed.
            await asyncio.to_thread(c.set_webhook, project.id, url, SECRET)
            (second,) = await asyncio.to_thread(finished_samples, 1, prefix="W")
            await eventually(lambda: any(second["id"] in ids for _, ids, _ in trigger.calls), 5)
            await eventually(lambda: all(default_path(root, second, f).exists() for f in second["files"]), 5)
            started = next(t for _, ids, t in trigger.calls if second["id"] in ids)
            assert time.monotonic() - started < 1.0
            listings = c.log(endpoint="project-samples")
            assert len(listings) == 1, "the mirror came from the webhooks, not from polling"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert_mirrored(root, [sample, second])
    deliveries = wait_for(lambda: c.webhook_deliveries(), message="the sandbox's delivery record")
    assert [d["status"] for d in deliveries] == [200]


async def test_receiver_answers(journal: Journal) -> None:
    trigger = Recorder()
    receiver = WebhookReceiver(SECRET, 300, journal, trigger)
    now = int(time.time())
    async with receiver_server(receiver) as url:
        bad_json = b"[{not json"
        assert (await post(url, bad_json, sign_webhook(SECRET, bad_json, now)))[0] == 400
        not_events = b'{"hello": 1}'
        assert (await post(url, not_events, sign_webhook(SECRET, not_events, now)))[0] == 400
        legacy = json.dumps([{"event": "analysis_complete", "object_id": "s-legacy"}]).encode()
        assert (await post(url, legacy, sign_webhook(SECRET, legacy, now)))[0] == 200
        # One delivery holding the same event twice and a report event without samples.
        twice = [sample_event("analysis_complete_v2", "P", [{"id": "s1"}])] * 2
        twice.append(sample_event("batch_final_report_complete_v2", "P", []))
        body = json.dumps(twice).encode()
        assert await post(url, body, sign_webhook(SECRET, body, now)) == (200, {"accepted": 2, "duplicates": 1})
        # Key rotation: a header with two v1 values, one of them right.
        rotated = sign_webhook(SECRET, legacy + b" ", now).replace("v1=", f"v1={'ab' * 64},v1=")
        assert (await post(url, legacy + b" ", rotated))[0] == 200
    assert [(p, ids) for p, ids, _ in trigger.calls] == [(None, ["s-legacy"]), ("P", ["s1"])]
    assert STATS.webhooks == {"bad_request": 2, "accepted": 2, "duplicate": 1}


async def test_a_burst_of_webhooks_is_a_bounded_number_of_passes(
    sandbox: SandboxProcess, journal: Journal, mirror_config: Callable[..., Config], project: ProjectSource,
    finished_samples: Seeder, tmp_path: Path,
) -> None:  # fmt: skip
    """Twelve webhooks arriving while the API is slow: at most TRIGGER_PASSES passes run at once (one task each,
    not one per webhook), later ones are merged, and every sample is mirrored once."""
    from transferd.mirror.loop import TRIGGER_PASSES

    loop = MirrorLoop(mirror_config(interval=3600), journal, sandbox.info.api_key, policy=FAST)
    task = asyncio.create_task(loop.run())
    try:
        await eventually(lambda: "mirror" in STATS.last_success)  # the first poll ran: polling is now idle
        samples = await asyncio.to_thread(finished_samples, 12, prefix="B")
        sandbox.control.add_fault(target="api", endpoint="samples", latency=0.4, times=None)
        most = 0
        for s in samples:  # one webhook every 50 ms, each slower to serve than that
            loop.trigger(project.id, [s["id"]])
            for _ in range(5):
                await asyncio.sleep(0.01)
                most = max(most, sum(t.get_name() == "mirror-trigger" for t in asyncio.all_tasks()))
        root = tmp_path / "mirror"
        deadline = time.monotonic() + 60
        while not all(default_path(root, s, f).exists() for s in samples for f in s["files"]):
            assert time.monotonic() < deadline, "not every sample was mirrored within 60 s"
            most = max(most, sum(t.get_name() == "mirror-trigger" for t in asyncio.all_tasks()))
            await asyncio.sleep(0.05)
        assert 1 < most <= TRIGGER_PASSES, most
        assert_mirrored(root, samples)
        details = sandbox.control.log(endpoint="samples")
        assert len({e["path"] for e in details}) == 12
    finally:
        sandbox.control.clear_faults()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
