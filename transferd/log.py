"""Structured logging: one line per event, `key=value` or JSON, with every registered secret masked.

Call `register_secret(value)` as soon as a secret (API key, S3 secret, webhook secret, token) is held;
the formatter replaces it everywhere in the rendered line, including in exception text.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

_MASK = "***"
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    # Very short values would mask innocent text; real secrets are long.
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    if not _secrets:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, _MASK)
    return text


def event(log: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event: `event(log, "upload.part_done", object="gncv://...", part=7)`."""
    if log.isEnabledFor(level):
        log.log(level, name, extra={"fields": fields}, stacklevel=2)


def _kv_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    if s == "" or any(c in s for c in ' "=\n\t'):
        return json.dumps(s)
    return s


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}) or {})
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        msg = record.getMessage()
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info).strip().splitlines()[-1]
        if self.json:
            doc = {"ts": ts, "level": record.levelname.lower(), "logger": record.name, "event": msg, **fields}
            line = json.dumps(doc, default=str)
        else:
            parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"event={_kv_value(msg)}"]
            parts += [f"{k}={_kv_value(v)}" for k, v in fields.items()]
            line = " ".join(parts)
        return redact(line)


def setup_logging(level: str = "info", fmt: str = "kv", stream: Any = None) -> None:
    """Configure the root logger once per process (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_transferd", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    handler._transferd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter at INFO is noise in a service log.
    for noisy in ("aiobotocore", "botocore", "aiohttp.access", "watchdog", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
