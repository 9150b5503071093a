"""A synchronous client for the sandbox's control API (stdlib only), for tests, the demo and the soak driver.

    control = SandboxControl(info.api_url, info.api_key)
    control.reset()
    control.add_fault(target="api", endpoint="sample-sheet", status=503, times=2)
    control.log(target="s3", operation="UploadPart")

`api()` also calls any Gencove endpoint with the sandbox's key, e.g. `control.api("GET", "/api/v2/projects/")`.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any


class SandboxControlError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body}")
        self.status = status
        self.body = body


class SandboxControl:
    def __init__(self, api_url: str, api_key: str, timeout: float = 30.0, ca_file: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file else None  # a --tls sandbox's CA

    # -- transport -----------------------------------------------------------------------------------
    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        expect: Sequence[int] | None = None,
    ) -> Any:
        """Call any sandbox path with `Authorization: Api-Key`; returns the decoded JSON (or text).

        Raises SandboxControlError for a status outside `expect` (default: any 2xx).
        """
        status, payload = self.request(method, path, body, query)
        ok = status in expect if expect is not None else 200 <= status < 300
        if not ok:
            raise SandboxControlError(method, path, status, payload)
        return payload

    def request(
        self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        """(status, decoded body) without raising on HTTP errors."""
        url = self.api_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Api-Key {self.api_key}", "Content-Type": "application/json"}
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as response:
                return response.status, _decode(response.read(), response.headers.get_content_type())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read(), exc.headers.get_content_type())

    # -- control calls -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return self.api("GET", "/_sandbox/info")

    def reset(self) -> None:
        self.api("POST", "/_sandbox/reset")

    def create_project(self, name: str = "sandbox project", project_id: str | None = None) -> dict[str, Any]:
        return self.api("POST", "/_sandbox/projects", {"name": name, "id": project_id})

    def seed_sample(
        self,
        project_id: str,
        client_id: str,
        *,
        r1_size: int = 1024,
        r2_size: int = 1024,
        seed: int = 0,
        metadata: Any = None,
    ) -> dict[str, Any]:
        """Create a sample without the upload dance: S3 objects of the given sizes, assigned and running.
        Returns the sample (it turns `succeeded` after the sample delay). `r2_size=0` makes an R1-only sample."""
        body = {"client_id": client_id, "r1_size": r1_size, "r2_size": r2_size, "seed": seed, "metadata": metadata}
        return self.api("POST", f"/_sandbox/projects/{project_id}/samples", body)

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        """Add one fault rule (see transferd/sandbox/faults.py for the shapes); returns it with its id."""
        return self.api("POST", "/_sandbox/faults", rule)["faults"][0]

    def add_faults(self, rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return self.api("POST", "/_sandbox/faults", list(rules))["faults"]

    def faults(self) -> list[dict[str, Any]]:
        """Active rules with their `remaining` uses (spent rules disappear)."""
        return self.api("GET", "/_sandbox/faults")["faults"]

    def clear_faults(self) -> None:
        self.api("DELETE", "/_sandbox/faults")

    def mark_path_deleted(self, destination_path: str) -> dict[str, Any]:
        """Make uploads-post-data answer 400 "taken by another upload that was deleted" for this path."""
        return self.add_fault(target="deleted_path", path=destination_path)

    def log(
        self,
        *,
        target: str | None = None,
        method: str | None = None,
        path: str | None = None,
        endpoint: str | None = None,
        operation: str | None = None,
        since: int = 0,
    ) -> list[dict[str, Any]]:
        """Request-log entries (oldest first): seq, time, target (api|s3|download), method, path, query,
        status, bytes, bytes_in, bytes_out, duration, endpoint, operation, part, upload_id, bucket, key,
        file_id, range, fault."""
        query = {"target": target, "method": method, "path": path, "endpoint": endpoint, "operation": operation}
        return self.api("GET", "/_sandbox/log", query={**query, "since": since})["entries"]

    def last_log_seq(self) -> int:
        return int(self.api("GET", "/_sandbox/log", query={"since": 1 << 62})["last_seq"])

    def clear_log(self) -> None:
        self.api("DELETE", "/_sandbox/log")

    def settings(self) -> dict[str, float]:
        return self.api("GET", "/_sandbox/settings")

    def set_settings(
        self,
        *,
        sample_delay: float | None = None,
        restore_delay: float | None = None,
        url_ttl: float | None = None,
        credentials_ttl: float | None = None,
        upload_notice_delay: float | None = None,
    ) -> dict[str, float]:
        values = {
            "sample_delay": sample_delay,
            "restore_delay": restore_delay,
            "url_ttl": url_ttl,
            "credentials_ttl": credentials_ttl,
            "upload_notice_delay": upload_notice_delay,
        }
        return self.api("POST", "/_sandbox/settings", {k: v for k, v in values.items() if v is not None})

    def fail_qc(self, project_id: str, client_id: str, fail: bool = True) -> None:
        """Samples of this client_id assigned to the project from now on end `failed qc`."""
        self.api("POST", "/_sandbox/failqc", {"project_id": project_id, "client_id": client_id, "fail": fail})

    def archive(self, sample_ids: Sequence[str] | None = None, project_id: str | None = None) -> list[str]:
        body = {"project_id": project_id} if project_id else {"sample_ids": list(sample_ids or [])}
        return self.api("POST", "/_sandbox/archive", body)["archived"]

    def set_webhook(self, project_id: str, url: str, secret: str) -> None:
        self.api("PUT", f"/_sandbox/webhooks/{project_id}", {"url": url, "secret": secret})

    def clear_webhook(self, project_id: str) -> None:
        self.api("DELETE", f"/_sandbox/webhooks/{project_id}")

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every delivery attempt: time, url, event_ids, event_type, attempt, status, error."""
        return self.api("GET", "/_sandbox/webhook-deliveries")["deliveries"]

    def uploads(self) -> list[dict[str, Any]]:
        """Every upload with its status, client_id, read, project_id, sample_id and assign_attempts."""
        return self.api("GET", "/_sandbox/uploads")["uploads"]

    def assignments(self) -> list[dict[str, Any]]:
        """Per upload that was named in an assignment call: attempts, assigned, project_id, sample_id."""
        return self.api("GET", "/_sandbox/assignments")["assignments"]

    def samples(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """Samples as `GET samples/{id}` renders them, plus file bucket/key/filename and r1/r2 upload ids."""
        return self.api("GET", "/_sandbox/samples", query={"project_id": project_id})["samples"]

    def sample(self, sample_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v2/samples/{sample_id}")

    def set_sample_status(self, sample_id: str, status: str, note: str = "") -> dict[str, Any]:
        return self.api("POST", f"/_sandbox/samples/{sample_id}/status", {"status": status, "note": note})


def _decode(raw: bytes, content_type: str) -> Any:
    if content_type == "application/json" or raw[:1] in (b"{", b"["):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw.decode("utf-8", "replace")
