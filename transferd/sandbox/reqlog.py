"""The request log: every API, S3 and download request the sandbox served, in order."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_ENTRIES = 100_000  # bounded so a soak run cannot grow the sandbox without limit


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    time: str  # ISO-8601, UTC
    target: str  # "api" | "s3" | "download"
    method: str
    path: str
    query: Mapping[str, str]
    status: int  # 0 when the connection was dropped before a status was sent
    bytes_in: int = 0
    bytes_out: int = 0
    duration: float = 0.0
    endpoint: str | None = None  # api: first path segment after /api/v2/
    operation: str | None = None  # s3: PutObject, UploadPart, ...
    part: int | None = None  # s3: partNumber
    upload_id: str | None = None  # s3: uploadId
    bucket: str | None = None
    key: str | None = None
    file_id: str | None = None  # download
    range: str | None = None  # download: the Range header
    fault: str | None = None  # the injected fault, if any
    peer: str | None = None  # the client's address:port (which connection carried it: direct or a proxy's)
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return self.bytes_in + self.bytes_out

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["query"] = dict(self.query)
        data["extra"] = dict(self.extra)
        data["bytes"] = self.bytes
        return data


class RequestLog:
    def __init__(self, maxlen: int = MAX_ENTRIES) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=maxlen)
        self._seq = 0

    def add(self, **fields: object) -> LogEntry:
        self._seq += 1
        entry = LogEntry(seq=self._seq, time=datetime.now(UTC).isoformat(), **fields)  # type: ignore[arg-type]
        self._entries.append(entry)
        return entry

    def clear(self) -> None:
        self._entries.clear()

    @property
    def last_seq(self) -> int:
        return self._seq

    def query(
        self,
        *,
        target: str | None = None,
        method: str | None = None,
        path: str | None = None,
        endpoint: str | None = None,
        operation: str | None = None,
        since: int = 0,
    ) -> list[LogEntry]:
        """Entries after `since` (a seq), filtered; `path` is a substring test."""
        return [
            e
            for e in self._entries
            if e.seq > since
            and (target is None or e.target == target)
            and (method is None or e.method == method.upper())
            and (path is None or path in e.path)
            and (endpoint is None or e.endpoint == endpoint)
            and (operation is None or e.operation == operation)
        ]


class Stopwatch:
    """Monotonic elapsed time for a log entry's `duration`."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return round(time.monotonic() - self._start, 6)


def peer_of(request: Any) -> str | None:
    """`address:port` of the client end of an aiohttp request's connection."""
    transport = getattr(request, "transport", None)
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if peer else None
