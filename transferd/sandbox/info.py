"""What a running sandbox tells its users (printed as one JSON line with `--json`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    api_url: str  # Gencove API base, e.g. http://127.0.0.1:PORT (paths start with /api/v2/)
    s3_url: str  # the S3 endpoint clients use: the fault/log proxy
    api_key: str
    project_id: str  # a project that exists from the start and survives reset
    bucket: str  # where uploads land
    deliverables_bucket: str
    pid: int  # the sandbox process
    s3_upstream_url: str = ""  # the S3 server behind the proxy (unlogged, unfaulted)
    ca_file: str = ""  # with --tls: the CA certificate (PEM) that signed the sandbox's HTTPS certificate

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxInfo:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
