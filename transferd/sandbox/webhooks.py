"""Signed webhook deliveries, as Gencove sends them.

`Gencove-Signature: t=<unix seconds>,v1=<hex HMAC-SHA512(secret, "<t>.<raw body>")>`. Deliveries run as
tracked tasks, retry a few times, and are recorded; a failing receiver never disturbs the sandbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from transferd.log import event
from transferd.sandbox.tasks import TaskSet

log = logging.getLogger("transferd.sandbox")

SIGNATURE_HEADER = "Gencove-Signature"
RETRY_DELAYS = (0.2, 0.5, 1.0)  # pauses between attempts: 4 attempts in all
MAX_RECORDS = 10_000


def sign_webhook(secret: str, body: bytes, t: int) -> str:
    """The `Gencove-Signature` header value for `body` sent at unix time `t`."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha512).hexdigest()
    return f"t={t},v1={mac}"


def sample_event(event_type: str, project_id: str, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "timestamp": datetime.now(UTC).isoformat(),
        "payload": {"project": {"id": project_id}, "samples": list(samples)},
    }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt to deliver one POST."""

    time: str
    url: str
    event_ids: tuple[str, ...]
    event_type: str
    attempt: int
    status: int | None
    error: str | None

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["event_ids"] = list(self.event_ids)
        return data


class WebhookSender:
    def __init__(self, tasks: TaskSet) -> None:
        self._tasks = tasks
        self._session: aiohttp.ClientSession | None = None
        self.records: deque[Delivery] = deque(maxlen=MAX_RECORDS)

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def send(self, url: str, secret: str, events: list[dict[str, Any]]) -> None:
        self._tasks.spawn(self._deliver(url, secret, events), name="webhook")

    async def _deliver(self, url: str, secret: str, events: list[dict[str, Any]]) -> None:
        assert self._session is not None
        body = json.dumps(events).encode()
        ids = tuple(e["event_id"] for e in events)
        event_type = events[0]["event_type"] if events else ""
        # A bounded number of attempts with fixed pauses: a test double needs no jitter or policy.
        for attempt, pause in enumerate((*RETRY_DELAYS, None), start=1):
            status: int | None = None
            error: str | None = None
            try:
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign_webhook(secret, body, int(time.time())),
                }
                async with self._session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.records.append(Delivery(datetime.now(UTC).isoformat(), url, ids, event_type, attempt, status, error))
            if status is not None and 200 <= status < 300:
                return
            event(
                log,
                "sandbox.webhook_failed",
                logging.WARNING,
                url=url,
                attempt=attempt,
                error=error or f"HTTP {status}",
            )
            if pause is None:
                return
            await asyncio.sleep(pause)
