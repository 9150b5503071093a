"""Requests per object, counted on the servers' side around one measured command.

* API requests: the sandbox's request log (`/_sandbox/log`, target "api", paths under /api/), after the log
  sequence number taken just before the command; control calls and s3rver's event notifications are not
  Gencove API requests and are left out.
* S3 requests: s3rver's own counter (`bench/s3rver_main.js`, `GET /_bench/requests`), per operation and
  User-Agent product, diffed between two snapshots. Every contender talks to s3rver directly, so nothing sits
  in the data path to count them.

The longest pause between two API requests is kept too: for the gencove CLI it is its fixed "cooling down"
sleep, measured rather than assumed.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from transferd.sandbox import SandboxControl

COUNTS_PATH = "/_bench/requests"


@dataclass(frozen=True, slots=True)
class Mark:
    api_seq: int
    s3: dict[str, int]


@dataclass(frozen=True, slots=True)
class RequestCounts:
    api: dict[str, int] = field(default_factory=dict)  # Gencove endpoint -> requests
    s3: dict[str, int] = field(default_factory=dict)  # "Operation user-agent" -> requests
    api_idle_gap_s: float = 0.0  # the longest time with no API request in flight, between the first and last
    api_entries: tuple[dict[str, object], ...] = field(default=(), repr=False)  # the log entries, for the logs dir

    @property
    def api_total(self) -> int:
        return sum(self.api.values())

    @property
    def s3_total(self) -> int:
        return sum(self.s3.values())

    @property
    def total(self) -> int:
        return self.api_total + self.s3_total

    def s3_by_operation(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for name, n in self.s3.items():
            out[name.split(" ", 1)[0]] += n
        return dict(out)


def s3rver_counts(s3rver_url: str, timeout: float = 30.0) -> dict[str, int]:
    with urllib.request.urlopen(s3rver_url.rstrip("/") + COUNTS_PATH, timeout=timeout) as response:
        return {str(k): int(v) for k, v in json.loads(response.read()).items()}


def idle_gap_s(entries: list[dict[str, object]]) -> float:
    """The longest stretch with no request in flight, from log entries stamped at their end with a duration."""
    spans = []
    for e in entries:
        end = datetime.fromisoformat(str(e["time"])).timestamp()
        spans.append((end - float(e.get("duration") or 0.0), end))  # type: ignore[arg-type]
    spans.sort()
    gap, reached = 0.0, None
    for start, end in spans:
        if reached is not None:
            gap = max(gap, start - reached)
        reached = end if reached is None else max(reached, end)
    return round(gap, 3)


class RequestCounter:
    """Marks before a command, counts after it (API from the sandbox log, S3 from s3rver when it counts)."""

    def __init__(self, control: SandboxControl, s3rver_url: str | None) -> None:
        self.control = control
        self.s3rver_url = s3rver_url  # None: the S3 server does not count (the sink)

    def mark(self) -> Mark:
        s3 = s3rver_counts(self.s3rver_url) if self.s3rver_url else {}
        return Mark(self.control.last_log_seq(), s3)

    def since(self, mark: Mark) -> RequestCounts:
        entries = [e for e in self.control.log(target="api", since=mark.api_seq) if str(e["path"]).startswith("/api/")]
        api = Counter(str(e.get("endpoint") or e["path"]) for e in entries)
        s3: dict[str, int] = {}
        if self.s3rver_url:
            now = s3rver_counts(self.s3rver_url)
            s3 = {k: n - mark.s3.get(k, 0) for k, n in now.items() if n > mark.s3.get(k, 0)}
        return RequestCounts(api=dict(api), s3=s3, api_idle_gap_s=idle_gap_s(entries), api_entries=tuple(entries))
