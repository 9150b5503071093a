"""Fault rules: pure data, parsing and matching (no I/O).

A rule is a JSON object. Shapes (keys not shown are optional):

    {"target": "api", "endpoint": "sample-sheet" | "<path regex>", "method": "GET",
     "status": 503, "times": 2, "retry_after": 1, "maintenance": true}
    {"target": "api", "latency": 0.5}
    {"target": "s3", "operation": "PutObject", "response_latency": 5}   the server does the work, answers late
    {"target": "s3", "read_rate": 33554432}   the server reads request bodies at 32 MiB/s (a slow link: the
                                              client's socket buffer fills and its transport queues the rest)
    {"target": "s3", "operation": "UploadPart", "part": 3, "status": 503, "code": "SlowDown", "times": 1}
    {"target": "s3", "operation": "UploadPart", "reset": true, "times": 1}
    {"target": "s3", "operation": "PutObject", "corrupt": true}   a body byte flipped on its way to S3
    {"target": "s3", "raw_chunked": true}     an old S3-compatible server: aws-chunked bodies are stored with their
                                              framing, and no checksum is checked or named
    {"target": "download", "corrupt": true, "times": 1}            (+ "file_id" / "file_type")
    {"target": "download", "reset_after_bytes": 1000, "times": 1}
    {"target": "download", "endless": true}                        a body that never ends (no Content-Length)
    {"target": "api", "endpoint": "project-samples", "stuck_next": true}   a listing whose `next` never advances
    {"credentials_ttl": 5}      upload-credentials expire 5 s after issue
    {"url_ttl": 2}              signed download URLs expire 2 s after issue
    {"target": "deleted_path", "path": "gncv://f/S1_R1.fastq.gz"}  uploads-post-data answers 400

`times` counts the requests a rule still affects; rules with an effect (status, reset, corrupt)
default to 1, the others (latency, TTL overrides, deleted paths) stay until cleared (`times: null`).
Matching requests consume a use atomically: the sandbox runs on one event loop thread.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields

TARGETS = ("api", "s3", "download", "credentials", "url", "deleted_path")
S3_ERROR_CODES = {500: "InternalError", 503: "SlowDown", 400: "BadRequest", 403: "AccessDenied"}
S3_ERROR_MESSAGES = {
    "InternalError": "We encountered an internal error. Please try again.",
    "SlowDown": "Please reduce your request rate.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "AccessDenied": "Access Denied",
    "RequestTimeout": "Your socket connection to the server was not read from or written to within the timeout period.",
}


class FaultError(ValueError):
    """A rule that cannot be understood; the message names the key."""


@dataclass(frozen=True, slots=True)
class FaultRule:
    id: str
    target: str
    times: int | None = 1
    # what it matches
    endpoint: str | None = None
    method: str | None = None
    operation: str | None = None
    part: int | None = None
    file_id: str | None = None
    file_type: str | None = None
    path: str | None = None
    # what it does
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    maintenance: bool = False
    latency: float = 0.0
    response_latency: float = 0.0  # s3: forwarded at once, the answer held back (the work is done meanwhile)
    read_rate: int | None = None  # s3: request bodies are read at this many bytes per second
    raw_chunked: bool = False  # s3: a server that knows no aws-chunked (stores the framing, checks nothing)
    reset: bool = False
    reset_after_bytes: int | None = None
    corrupt: bool = False
    endless: bool = False
    stuck_next: bool = False  # api: a listing page whose `meta.next` is the page itself (a broken or hostile API)
    credentials_ttl: float | None = None
    url_ttl: float | None = None

    @property
    def has_effect(self) -> bool:
        return (
            self.status is not None
            or self.reset
            or self.corrupt
            or self.endless
            or self.stuck_next
            or self.reset_after_bytes is not None
        )

    def describe(self) -> str:
        if self.status is not None:
            return f"status {self.status}" + (f" {self.code}" if self.code else "")
        if self.reset:
            return "reset"
        if self.reset_after_bytes is not None:
            return f"reset after {self.reset_after_bytes} bytes"
        if self.corrupt:
            return "corrupt"
        if self.endless:
            return "endless"
        if self.stuck_next:
            return "stuck next"
        if self.response_latency:
            return f"response latency {self.response_latency}s"
        if self.read_rate:
            return f"read rate {self.read_rate} B/s"
        if self.raw_chunked:
            return "aws-chunked stored raw"
        return f"latency {self.latency}s"

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        return {
            k: v for k, v in data.items()
            if v is not None and v is not False and not (k in ("latency", "response_latency") and not v)
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Effect:
    """What one request gets: an added delay and at most one fault action."""

    latency: float = 0.0
    rule: FaultRule | None = None
    response_latency: float = 0.0
    read_rate: int | None = None
    raw_chunked: bool = False

    @property
    def description(self) -> str | None:
        parts = []
        if self.latency:
            parts.append(f"latency {self.latency}s")
        if self.response_latency:
            parts.append(f"response latency {self.response_latency}s")
        if self.read_rate:
            parts.append(f"read rate {self.read_rate} B/s")
        if self.raw_chunked:
            parts.append("aws-chunked stored raw")
        if self.rule is not None:
            parts.append(self.rule.describe())
        return ", ".join(parts) or None


NO_EFFECT = Effect()
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "endpoint": (str,),
    "method": (str,),
    "operation": (str,),
    "part": (int,),
    "file_id": (str,),
    "file_type": (str,),
    "path": (str,),
    "status": (int,),
    "code": (str,),
    "message": (str,),
    "retry_after": (int, float),
    "maintenance": (bool,),
    "latency": (int, float),
    "response_latency": (int, float),
    "read_rate": (int,),
    "raw_chunked": (bool,),
    "stuck_next": (bool,),
    "reset": (bool,),
    "reset_after_bytes": (int,),
    "corrupt": (bool,),
    "endless": (bool,),
    "credentials_ttl": (int, float),
    "url_ttl": (int, float),
}


def parse_rule(raw: Mapping[str, object]) -> FaultRule:
    """Turn a JSON object into a rule, or raise FaultError naming the offending key."""
    if not isinstance(raw, Mapping):
        raise FaultError("a fault rule must be a JSON object")
    known = {f.name for f in fields(FaultRule)} - {"id"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FaultError(f"unknown fault key(s): {', '.join(unknown)}")
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key in ("target", "times"):
            continue
        types = _FIELD_TYPES[key]
        if value is None:
            continue
        if isinstance(value, bool) and bool not in types:
            raise FaultError(f"fault key {key!r} must be {types[0].__name__}, got {value!r}")
        if not isinstance(value, types):
            raise FaultError(f"fault key {key!r} must be {types[0].__name__}, got {value!r}")
        values[key] = (
            float(value) if float in types and isinstance(value, int | float) and not isinstance(value, bool) else value
        )
    target = raw.get("target")
    if target is None:
        target = "credentials" if "credentials_ttl" in values else "url" if "url_ttl" in values else None
    if target not in TARGETS:
        raise FaultError(f"fault key 'target' must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "credentials" and "credentials_ttl" not in values:
        raise FaultError("a credentials rule needs 'credentials_ttl'")
    if target == "url" and "url_ttl" not in values:
        raise FaultError("a url rule needs 'url_ttl'")
    if target == "deleted_path" and "path" not in values:
        raise FaultError("a deleted_path rule needs 'path'")
    if "endpoint" in values:
        try:
            re.compile(str(values["endpoint"]))
        except re.error as exc:
            raise FaultError(f"fault key 'endpoint' is not a valid regex: {exc}") from None
    if "method" in values:
        values["method"] = str(values["method"]).upper()
    rule = FaultRule(id=str(uuid.uuid4()), target=str(target), **values)  # type: ignore[arg-type]
    if target in ("api", "s3") and rule.status is not None and not 100 <= rule.status <= 599:
        raise FaultError(f"fault key 'status' must be an HTTP status, got {rule.status}")
    times_default: int | None = 1 if rule.has_effect else None
    times = raw.get("times", times_default)
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise FaultError(f"fault key 'times' must be a positive integer or null, got {times!r}")
    return FaultRule(**{**asdict(rule), "times": times})


class FaultBook:
    """The active rules and their remaining uses."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._remaining: dict[str, int | None] = {}

    def add(self, rule: FaultRule) -> FaultRule:
        self._rules.append(rule)
        self._remaining[rule.id] = rule.times
        return rule

    def clear(self) -> None:
        self._rules.clear()
        self._remaining.clear()

    def snapshot(self) -> list[dict[str, object]]:
        return [{**r.as_dict(), "remaining": self._remaining[r.id]} for r in self._rules]

    def _consume(self, rule: FaultRule) -> None:
        left = self._remaining[rule.id]
        if left is None:
            return
        if left <= 1:
            self._rules.remove(rule)
            del self._remaining[rule.id]
        else:
            self._remaining[rule.id] = left - 1

    def _take(self, target: str, matches: Callable[[FaultRule], bool]) -> Effect:
        latency = response_latency = 0.0
        read_rate: int | None = None
        raw_chunked = False
        action: FaultRule | None = None
        for rule in list(self._rules):
            if rule.target != target or not matches(rule):
                continue
            if rule.has_effect:
                if action is not None:
                    continue  # one action per request; later rules wait for later requests
                action = rule
                latency += rule.latency
            elif rule.latency or rule.response_latency or rule.read_rate or rule.raw_chunked:
                latency += rule.latency
                response_latency += rule.response_latency
                read_rate = rule.read_rate or read_rate
                raw_chunked = raw_chunked or rule.raw_chunked
            else:
                continue
            self._consume(rule)
        if not (latency or response_latency or action or read_rate or raw_chunked):
            return NO_EFFECT
        return Effect(latency, action, response_latency, read_rate, raw_chunked)

    def take_api(self, method: str, endpoint: str, path: str) -> Effect:
        def matches(rule: FaultRule) -> bool:
            if rule.method and rule.method != method.upper():
                return False
            return not rule.endpoint or rule.endpoint == endpoint or re.search(rule.endpoint, path) is not None

        return self._take("api", matches)

    def take_s3(self, method: str, operation: str, part: int | None) -> Effect:
        def matches(rule: FaultRule) -> bool:
            if rule.method and rule.method != method.upper():
                return False
            if rule.operation and rule.operation.lower() != operation.lower():
                return False
            return rule.part is None or rule.part == part

        return self._take("s3", matches)

    def take_download(self, file_id: str, file_type: str) -> Effect:
        def matches(rule: FaultRule) -> bool:
            return (rule.file_id is None or rule.file_id == file_id) and (
                rule.file_type is None or rule.file_type == file_type
            )

        return self._take("download", matches)

    def _ttl(self, target: str, attr: str) -> float | None:
        for rule in self._rules:
            if rule.target == target:
                value: float | None = getattr(rule, attr)
                self._consume(rule)
                return value
        return None

    def credentials_ttl(self) -> float | None:
        """The TTL override for the credentials being issued now, if any (uses one `times`)."""
        return self._ttl("credentials", "credentials_ttl")

    def url_ttl(self) -> float | None:
        return self._ttl("url", "url_ttl")

    def path_deleted(self, path: str) -> bool:
        return any(r.target == "deleted_path" and r.path == path for r in self._rules)


def s3_error_code(rule: FaultRule) -> str:
    if rule.code:
        return rule.code
    assert rule.status is not None
    return S3_ERROR_CODES.get(rule.status, "InternalError" if rule.status >= 500 else "BadRequest")
