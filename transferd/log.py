"""Structured logging: one line per event, `key=value` or JSON, with every registered secret masked.

Call `register_secret(value)` as soon as a secret (API key, S3 secret, webhook secret, token) is held;
the formatter replaces it everywhere in the rendered line, including in exception text and tracebacks.
`redact(text)` is the one function that does it; the journal's writer connection and `status` use it too, so
an API answer that echoes our key reaches no row, no report and no log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any

_MASK = "***"
MAX_ROTATING = 32  # short-lived credentials kept: every refresh adds some, and each costs every line a search
_pinned: set[str] = set()
_rotating: dict[str, None] = {}  # insertion-ordered: oldest first
_ordered: tuple[str, ...] = ()  # longest first, rebuilt on registration (read on every line and journal write)
_lock = threading.Lock()


def register_secret(value: str | None, *, rotating: bool = False) -> None:
    """Mask `value` from now on. `rotating`: a short-lived credential (S3 session keys, access tokens) that is
    replaced on refresh; only the newest MAX_ROTATING are kept, so the set cannot grow without bound."""
    global _ordered
    # Very short values would mask innocent text; real secrets are long.
    if not value or len(value) < 6 or value in _pinned or value in _rotating:
        return
    with _lock:
        if rotating:
            _rotating[value] = None
            while len(_rotating) > MAX_ROTATING:
                del _rotating[next(iter(_rotating))]
        else:
            _pinned.add(value)
        _ordered = tuple(sorted((*_pinned, *_rotating), key=len, reverse=True))


# Credentials in the shapes they travel in are masked even when never registered (another process's key, a key
# cut short by a truncated message): an Authorization value, and signed-URL / token query parameters.
_SHAPES = re.compile(
    r"(?i)\b(Api-Key|GENCOVE-API-KEY|JWT|Bearer)(\s+)[A-Za-z0-9._~+/=-]{4,}"
    r"|\b(X-Amz-Signature|X-Amz-Security-Token|X-Amz-Credential|Signature|access_token|refresh_token|token|password)"
    r"=[^&\s\"'<>]+"
)
_TAIL = 6  # a text cut inside a secret ends with its first characters: mask a tail of at least this many


def _mask_shape(m: re.Match[str]) -> str:
    if m.group(1):
        return f"{m.group(1)}{m.group(2)}{_MASK}"
    return f"{m.group(3)}={_MASK}"


def redact(text: str) -> str:
    """`text` with every registered secret, a cut-off start of one at its end, and every credential-shaped
    value masked. For error texts, reports and log lines."""
    return _SHAPES.sub(_mask_shape, mask_secrets(text))


def mask_secrets(text: str) -> str:
    """Only the registered secrets (and a cut-off start of one at the end): safe on identifiers and paths too,
    which the credential shapes of `redact` could alter."""
    for s in _ordered:
        if s in text:
            text = text.replace(s, _MASK)
        text = _mask_cut(text, s)
    return text


def _mask_cut(text: str, secret: str) -> str:
    tail = text[-(len(secret) - 1) :]
    i = tail.find(secret[:_TAIL])
    while i != -1:
        if secret.startswith(tail[i:]):
            return text[: len(text) - len(tail) + i] + _MASK
        i = tail.find(secret[:_TAIL], i + 1)
    return text


def event(
    log: logging.Logger, name: str, level: int = logging.INFO, *, exc_info: BaseException | None = None, **fields: Any
) -> None:
    """Log one event: `event(log, "upload.part_done", object="gncv://...", part=7)`. With `exc_info` the line
    carries that exception's whole traceback (field `traceback`, redacted like the rest)."""
    if log.isEnabledFor(level):
        log.log(level, name, exc_info=exc_info, extra={"fields": fields}, stacklevel=2)


def _kv_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    if s == "" or any(c in s for c in ' "=\n\t'):
        return json.dumps(s)
    return s


# syslog priorities of the sd-daemon `<N>` line prefix journald reads from a service's stderr.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def journald_stream(stream: Any) -> bool:
    """True when `stream` is the journal's stream socket: systemd sets JOURNAL_STREAM to its `device:inode`."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str, priorities: bool = False) -> None:
        super().__init__()
        self.json = fmt == "json"
        self.priorities = priorities  # `<N>` prefixes, so `journalctl -p warning` shows warnings and errors

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}) or {})
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        msg = record.getMessage()
        if record.exc_info:
            # The whole traceback, chained causes included: its last line alone rarely says where it broke.
            # In kv format it is one quoted field (newlines escaped), so a line stays one journal entry.
            text = self.formatException(record.exc_info).strip()
            fields["exc"] = text.splitlines()[-1]
            fields["traceback"] = text
        if self.json:
            doc = {"ts": ts, "level": record.levelname.lower(), "logger": record.name, "event": msg, **fields}
            line = json.dumps(doc, default=str)
        else:
            parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"event={_kv_value(msg)}"]
            parts += [f"{k}={_kv_value(v)}" for k, v in fields.items()]
            line = " ".join(parts)
        line = redact(line)
        if self.priorities:
            level = max((lv for lv in _PRIORITY if lv <= record.levelno), default=logging.DEBUG)
            line = f"<{_PRIORITY[level]}>{line}"
        return line


def setup_logging(level: str = "info", fmt: str = "kv", stream: Any = None) -> None:
    """Configure the root logger once per process (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_transferd", False):
            root.removeHandler(h)
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(fmt, priorities=journald_stream(stream)))
    handler._transferd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter at INFO is noise in a service log.
    for noisy in ("aiobotocore", "botocore", "aiohttp.access", "watchdog", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
