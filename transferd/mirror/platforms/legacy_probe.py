"""The size of the object behind a signed URL, for platforms whose API states no sizes (the legacy raw-data call).

`GET` with `Range: bytes=0-0` answers 206 and `Content-Range: bytes 0-0/<size>` (416 and `bytes */0` for an empty
object) at the cost of one byte. HEAD is no option: a presigned GET URL's signature covers the method. The size
is what the mirror verifies the download against, and what lets a later run recognise a placed file.
"""

from __future__ import annotations

import re

import aiohttp

from transferd import __version__
from transferd.mirror.transfer import url_for_log
from transferd.retry import DEFAULT_POLICY, ApiError, Policy, call

TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=30)
_TOTAL = re.compile(r"/\s*(\d+)\s*$")


class UrlRefused(Exception):
    """HTTP 403 from a signed URL: it expired (or was never valid); ask the platform for a fresh one."""


class SizeProbe:
    def __init__(self, policy: Policy = DEFAULT_POLICY) -> None:
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    async def size(self, url: str) -> int:
        """Retried like any download request (5xx, 429, timeouts); a 403 raises UrlRefused at once."""
        return await call("download.probe", lambda: self._once(url), self.policy)

    async def _once(self, url: str) -> int:
        if self._session is None:  # made lazily, inside the running loop; never carries the API's auth header
            self._session = aiohttp.ClientSession(
                timeout=TIMEOUT, auto_decompress=False,
                headers={"User-Agent": f"transferd/{__version__}", "Accept-Encoding": "identity"},
            )  # fmt: skip
        async with self._session.get(url, headers={"Range": "bytes=0-0"}) as resp:
            if resp.status == 403:
                raise UrlRefused(f"HTTP 403 from {url_for_log(url)}")
            if resp.status in (206, 416):
                match = _TOTAL.search(resp.headers.get("Content-Range", ""))
                if match:
                    await resp.read()
                    return int(match.group(1))
            elif resp.status == 200 and resp.content_length is not None:
                return resp.content_length  # Range ignored: the body is not read, the connection is dropped
            body = (await resp.content.read(300)).decode(errors="replace")
            raise ApiError(resp.status, f"probe {url_for_log(url)}", body or "no size in the answer")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
