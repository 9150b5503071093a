"""An aiohttp client for the Gencove v2 endpoints transferd uses.

Every call goes through the retry policy (`transferd.retry`): 5xx, 429 (honouring Retry-After), timeouts and
connection errors are retried with jittered backoff up to the policy's deadline; other 4xx answers raise
`ApiError` at once. Latency and outcome of every request are recorded in `STATS`.

The API is not trusted to be well-behaved: bodies are read up to `MAX_BODY` (a clear error naming the URL past
it), listings stop with an error when `next` does not advance or after `MAX_PAGES` pages, and ids are quoted
before they become path segments, so an id like `../x?y` cannot address another endpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp

from transferd import __version__
from transferd.errors import TransferdError
from transferd.gencove.models import Credentials, UploadSlot
from transferd.log import register_secret
from transferd.network import DIRECT, Network
from transferd.retry import DEFAULT_POLICY, ApiError, Policy, call, never_processed
from transferd.stats import STATS

log = logging.getLogger(__name__)
PAGE = 200
ASSIGN_BATCH = 200  # the API's maximum per request
MAX_BODY = 16 * 1024**2  # a JSON answer larger than this is refused, not buffered
MAX_PAGES = 5000  # 1,000,000 items at PAGE per page: far beyond any project, short of exhausting memory


class ApiContractError(TransferdError):
    """The API answered something we must not follow (an oversized body, a listing that does not advance).
    Not retried: asking again gets the same answer."""


def segment(value: object) -> str:
    """An id as one URL path segment: '/', '?', '#', '..' and the like cannot leave it."""
    return quote(str(value), safe="")


async def read_body(resp: aiohttp.ClientResponse, limit: int = MAX_BODY) -> bytes:
    """The whole body, refused past `limit` bytes (announced or actual) without buffering the rest."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ApiContractError(f"{resp.method} {resp.url}: answer of {resp.content_length} bytes exceeds {limit}")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise ApiContractError(f"{resp.method} {resp.url}: answer exceeds {limit} bytes")
    return bytes(buf)


def api_base(host: str) -> str:
    """Only scheme, host and port of a configured host count (the API lives at /api/v2/)."""
    parts = urlsplit(host if "://" in host else f"https://{host}")
    return f"{parts.scheme}://{parts.netloc}"


class GencoveClient:
    def __init__(
        self,
        host: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        policy: Policy = DEFAULT_POLICY,
        session: aiohttp.ClientSession | None = None,
        max_body: int = MAX_BODY,
        max_pages: int = MAX_PAGES,
        network: Network = DIRECT,
    ) -> None:
        register_secret(api_key)
        self.max_body, self.max_pages = max_body, max_pages
        self.base = api_base(host)
        self._headers = {
            "Authorization": f"Api-Key {api_key}",
            "Content-Type": "application/json",
            "User-Agent": f"transferd/{__version__}",
        }
        self.policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=30)
        self._own_session = session is None
        self._session = session
        self._network = network
        self._proxy = network.proxy_for(self.base)

    async def __aenter__(self) -> GencoveClient:
        if self._session is None:
            self._session = self._network.session(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- transport ---------------------------------------------------------------------------------------
    async def _once(self, method: str, path: str, operation: str, body: Any, params: dict[str, Any] | None) -> Any:
        assert self._session is not None, "use GencoveClient as an async context manager"
        started = time.monotonic()
        outcome = "error"
        try:
            async with self._session.request(
                method, self.base + path, json=body, params=params, headers=self._headers, timeout=self._timeout,
                proxy=self._proxy,
            ) as resp:
                raw = await read_body(resp, self.max_body)
                outcome = str(resp.status)
                doc: Any = None
                if raw:
                    try:
                        doc = json.loads(raw)
                    except ValueError:
                        doc = raw.decode(errors="replace")[:500]
                if resp.status >= 400:
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
                    raise ApiError(resp.status, operation, doc, retry_after)
                return doc
        finally:
            STATS.observe_api(operation, time.monotonic() - started, outcome)

    async def request(
        self,
        method: str,
        path: str,
        operation: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        idempotent: bool = True,
    ) -> Any:
        """One API call under the retry policy. A non-idempotent call is retried only when the failure proves it
        never reached the server; otherwise the error goes to the caller, who must find out what happened."""
        return await call(
            f"api.{operation}",
            lambda: self._once(method, path, operation, body, params),
            self.policy,
            retry_if=None if idempotent else never_processed,
        )

    async def pages(self, path: str, operation: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every result of a limit/offset listing, following `meta.next` (only its `offset` counts).

        A `next` that does not move forward or more than `max_pages` pages end the listing with
        `ApiContractError` instead of looping."""
        offset = 0
        for _ in range(self.max_pages):
            doc = await self.request("GET", path, operation, params={**params, "offset": offset, "limit": PAGE})
            where = f"GET {self.base}{path} (offset {offset})"
            results = doc.get("results") if isinstance(doc, dict) else None
            if not isinstance(results, list):
                raise ApiContractError(f"{where}: the answer has no `results` list")
            for item in results:
                yield item
            nxt = (doc.get("meta") or {}).get("next")
            if not nxt:
                return
            offsets = parse_qs(urlsplit(str(nxt)).query).get("offset")
            if not offsets:
                return
            try:
                following = int(offsets[0])
            except ValueError:
                raise ApiContractError(f"{where}: meta.next has a bad offset: {offsets[0][:50]!r}") from None
            if following <= offset:
                raise ApiContractError(f"{where}: meta.next does not advance (offset {following}); listing stopped")
            offset = following
        raise ApiContractError(f"GET {self.base}{path}: more than {self.max_pages} pages; listing stopped")

    # -- upload side -----------------------------------------------------------------------------------------
    async def upload_credentials(self) -> Credentials:
        doc = await self.request("POST", "/api/v2/upload-credentials/", "upload_credentials", body={})
        creds = Credentials.from_json(doc)
        for secret in (creds.secret_key, creds.token, creds.access_key):
            register_secret(secret, rotating=True)
        return creds

    async def upload_slot(self, destination_path: str) -> UploadSlot:
        doc = await self.request(
            "POST", "/api/v2/uploads-post-data/", "uploads_post_data", body={"destination_path": destination_path}
        )
        return UploadSlot.from_json(doc)

    async def sample_sheet(self, search: str, status: str = "all") -> list[dict[str, Any]]:
        params = {"search": search, "status": status, "sort_by": "created", "sort_order": "desc"}
        return [item async for item in self.pages("/api/v2/sample-sheet/", "sample_sheet", params)]

    async def assign(self, project_id: str, items: list[dict[str, Any]], metadata: Any = None) -> list[dict[str, Any]]:
        """One assignment request; the caller batches (at most ASSIGN_BATCH, never empty)."""
        if not items or len(items) > ASSIGN_BATCH:
            raise ValueError(f"an assignment batch holds 1..{ASSIGN_BATCH} samples, not {len(items)}")
        doc = await self.request(
            "POST",
            f"/api/v2/project-samples/{segment(project_id)}",
            "assign",
            body={"uploads": items, "metadata": metadata},
            idempotent=False,  # a second POST could assign twice: the Assigner checks the sample sheet instead
        )
        return list((doc or {}).get("uploads", []))

    # -- download side ---------------------------------------------------------------------------------------
    async def projects(self) -> list[dict[str, Any]]:
        return [p async for p in self.pages("/api/v2/projects/", "projects", {"hidden_status": "visible"})]

    async def project(self, project_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/v2/projects/{segment(project_id)}", "project")

    def project_samples(
        self,
        project_id: str,
        *,
        sort_by: str = "modified",
        sort_order: str = "desc",
        status: str = "all",
        archive_status: str = "all",
        search: str = "",
    ) -> AsyncIterator[dict[str, Any]]:
        params = {
            "search": search, "sort_by": sort_by, "sort_order": sort_order, "status": status,
            "archive_status": archive_status, "hidden_status": "visible",
        }  # fmt: skip
        return self.pages(f"/api/v2/project-samples/{segment(project_id)}", "project_samples", params)

    async def sample(self, sample_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/v2/samples/{segment(sample_id)}", "sample")

    async def file_types(self, project_id: str | None = None) -> list[str]:
        params = {"project_id": project_id} if project_id else {}
        return [t["key"] async for t in self.pages("/api/v2/file-types/", "file_types", params)]

    async def restore(self, project_id: str, sample_ids: list[str]) -> Any:
        return await self.request(
            "POST", f"/api/v2/project-restore-samples/{segment(project_id)}", "restore", body={"sample_ids": sample_ids}
        )


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
