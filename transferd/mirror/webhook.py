"""Gencove webhooks: verify, de-duplicate, and trigger an immediate mirror of the named samples.

`Gencove-Signature: t=<unix seconds>,v1=<hex>` where v1 = hex HMAC-SHA512(secret, f"{t}." + raw body). We
compare in constant time, accept any of several v1 values (secret rotation), ignore other schemes, and reject
a `t` outside the tolerance (a captured request cannot be replayed later). Event ids (legacy events:
`event` + `object_id`) are remembered in the journal, so a redelivery is answered 200 and ignored.

Answers: 401 for a missing, bad or stale signature; 400 for a body that is not a list of events; 200 otherwise.
Every outcome is counted in `STATS.webhook(...)`. Polling remains the safety net for anything lost here.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from transferd.journal import Journal
from transferd.journal import downloads as jd
from transferd.log import event, register_secret
from transferd.stats import STATS

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Gencove-Signature"
Trigger = Callable[[str | None, list[str]], None]


class SignatureCheck(enum.Enum):
    OK = "ok"
    MISSING = "missing"
    BAD = "bad"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    key: str  # event_id, or "<event>:<object_id>" for legacy events
    event_type: str
    project_id: str | None
    sample_ids: tuple[str, ...]


def parse_signature_header(header: str) -> tuple[int | None, list[str]]:
    """(t, [v1 values]) from `t=...,v1=...[,v1=...][,v0=...]`; other schemes are ignored."""
    t: int | None = None
    v1: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        value = value.strip().strip('"')
        key = key.strip()
        if key == "t":
            try:
                t = int(value)
            except ValueError:
                return None, []
        elif key == "v1" and value:
            v1.append(value.lower())
    return t, v1


def sign(secret: str, body: bytes, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha512).hexdigest()


def verify_signature(secret: str, header: str | None, body: bytes, *, now: float, tolerance: float) -> SignatureCheck:
    if not header:
        return SignatureCheck.MISSING
    t, candidates = parse_signature_header(header)
    if t is None or not candidates:
        return SignatureCheck.BAD
    expected = sign(secret, body, t)
    # Check every candidate (no early exit), each in constant time.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        return SignatureCheck.BAD
    if abs(now - t) > tolerance:
        return SignatureCheck.STALE
    return SignatureCheck.OK


def parse_events(doc: Any) -> list[WebhookEvent]:
    """The events of a delivery (a JSON list, or one event object). Raises ValueError when malformed."""
    raw = [doc] if isinstance(doc, dict) else doc
    if not isinstance(raw, list) or not raw:
        raise ValueError("expected a JSON list of events")
    events = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"event {i} is not an object")
        event_id = item.get("event_id")
        legacy = item.get("event")
        if isinstance(event_id, str) and event_id:
            key, event_type = event_id, str(item.get("event_type") or "")
        elif isinstance(legacy, str) and legacy and item.get("object_id"):
            key, event_type = f"{legacy}:{item['object_id']}", legacy
        else:
            raise ValueError(f"event {i} has neither event_id nor event + object_id")
        payload = item.get("payload")
        payload = {} if payload is None else payload
        if not isinstance(payload, dict):
            raise ValueError(f"event {i}: payload is not an object")
        project = payload.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        samples = payload.get("samples") or []
        if not isinstance(samples, list):
            raise ValueError(f"event {i}: payload.samples is not a list")
        ids: list[str] = []
        for s in samples:
            sid = s.get("id") if isinstance(s, dict) else s
            if not isinstance(sid, str) or not sid:
                raise ValueError(f"event {i}: a sample without an id")
            ids.append(sid)
        if not ids and legacy and legacy.startswith("analysis_complete"):
            ids = [str(item["object_id"])]  # legacy analysis events name the sample as their object
        events.append(WebhookEvent(key, event_type, str(project_id) if project_id else None, tuple(ids)))
    return events


class WebhookReceiver:
    """Mounted by the daemon at `POST /webhooks/gencove`."""

    def __init__(
        self,
        secret: str,
        tolerance: float,
        journal: Journal,
        trigger: Trigger,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("the webhook secret is empty")
        register_secret(secret)
        self._secret = secret
        self._tolerance = tolerance
        self._journal = journal
        self._trigger = trigger
        self._clock = clock

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        check = verify_signature(
            self._secret, request.headers.get(SIGNATURE_HEADER), body, now=self._clock(), tolerance=self._tolerance
        )
        if check is not SignatureCheck.OK:
            outcome = "stale" if check is SignatureCheck.STALE else "bad_signature"
            STATS.webhook(outcome)
            event(log, "webhook.rejected", logging.WARNING, reason=check.value, remote=request.remote)
            return web.json_response({"detail": f"signature {check.value}"}, status=401)
        try:
            events = parse_events(json.loads(body))
        except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            STATS.webhook("bad_request")
            event(log, "webhook.bad_request", logging.WARNING, error=str(e)[:200])
            return web.json_response({"detail": str(e)[:200]}, status=400)
        fresh = set(await self._journal.run(jd.remember_events, [ev.key for ev in events]))
        new = []
        for ev in events:
            if ev.key in fresh:  # first occurrence only, also within one delivery
                fresh.discard(ev.key)
                new.append(ev)
        for ev in new:
            if ev.sample_ids:
                self._trigger(ev.project_id, list(ev.sample_ids))
        STATS.webhook("accepted" if new else "duplicate")
        event(
            log, "webhook.received", events=len(events), new=len(new),
            samples=sum(len(ev.sample_ids) for ev in new), types=sorted({ev.event_type for ev in new}),
        )  # fmt: skip
        return web.json_response({"accepted": len(new), "duplicates": len(events) - len(new)})
