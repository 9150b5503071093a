"""Value types of the Gencove API that transferd acts on. Everything else is passed through as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


def parse_time(value: str) -> datetime:
    # The API writes ISO-8601 with a zone, sometimes with a trailing Z.
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Credentials:
    """Temporary S3 credentials from `upload-credentials`."""

    access_key: str
    secret_key: str
    token: str
    expiry: datetime

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Credentials:
        return cls(doc["access_key"], doc["secret_key"], doc["token"], parse_time(doc["expiry_time"]))

    def metadata(self) -> dict[str, str]:
        """The shape botocore's refreshable credentials expect."""
        return {
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "token": self.token,
            "expiry_time": self.expiry.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class UploadSlot:
    """Where one gncv:// path goes in S3, and whether it is already there."""

    id: str
    destination_path: str
    bucket: str
    key: str
    status: str  # started | succeeded | failed

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> UploadSlot:
        last = doc.get("last_status") or {}
        return cls(doc["id"], doc["destination_path"], doc["s3"]["bucket"], doc["s3"]["object_name"],
                   last.get("status") or "started")

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"
