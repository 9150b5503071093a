"""The Gencove clients against a hostile API (an aiohttp app of the test's own, on loopback): listings whose
`next` never advances, endless listings, oversized bodies, ids that try to leave their path segment."""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from transferd.gencove.client import MAX_BODY, ApiContractError, GencoveClient
from transferd.gencove.legacy_client import PROJECTS, LegacyClient, LegacyCredential
from transferd.retry import Policy

FAST = Policy(deadline=2.0, max_attempts=2, initial=0.01, max_wait=0.05)
KEY = "bounds-key-0123456789"


class FakeApi:
    """Counts requests and remembers the raw paths asked for; `handler` answers the listing endpoints."""

    def __init__(self, handler: Callable[[web.Request], web.StreamResponse]) -> None:
        self.requests = 0
        self.paths: list[str] = []
        self._handler = handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.paths.append(request.raw_path)
        result = self._handler(request)
        if isinstance(result, web.StreamResponse) and not isinstance(result, web.Response):
            await result.prepare(request)
        return result


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[FakeApi], object]]:
    servers: list[TestServer] = []

    async def start(api: FakeApi) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", api.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start  # type: ignore[misc]
    for s in servers:
        await s.close()


def page(request: web.Request, nxt_offset: int | None) -> web.Response:
    nxt = f"http://api/api/v2/projects/?limit=200&offset={nxt_offset}" if nxt_offset is not None else None
    return web.json_response({"meta": {"next": nxt}, "results": [{"id": f"p{request.query.get('offset')}"}]})


async def test_a_next_that_never_advances_fails_fast_with_a_clear_error(serve) -> None:  # type: ignore[no-untyped-def]
    api = FakeApi(lambda r: page(r, 0))  # every page points back at offset 0
    base = await serve(api)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with GencoveClient(base, KEY, policy=FAST) as client:
        with pytest.raises(ApiContractError, match=r"/api/v2/projects/ \(offset 0\): meta.next does not advance"):
            await client.projects()
    assert api.requests == 1  # stopped at the first page that did not move on
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50 * 1024  # KiB: nothing piled up


async def test_an_endless_listing_stops_at_the_page_cap(serve) -> None:  # type: ignore[no-untyped-def]
    api = FakeApi(lambda r: page(r, int(r.query["offset"]) + 200))  # always another page
    base = await serve(api)
    async with GencoveClient(base, KEY, policy=FAST, max_pages=5) as client:
        seen = []
        with pytest.raises(ApiContractError, match="more than 5 pages; listing stopped"):
            async for item in client.project_samples("proj"):
                seen.append(item["id"])
    assert api.requests == 5 and seen == ["p0", "p200", "p400", "p600", "p800"]


async def test_a_listing_that_ends_is_read_whole(serve) -> None:  # type: ignore[no-untyped-def]
    api = FakeApi(lambda r: page(r, 200 if r.query["offset"] == "0" else None))
    base = await serve(api)
    async with GencoveClient(base, KEY, policy=FAST) as client:
        assert [p["id"] for p in await client.projects()] == ["p0", "p200"]


def huge(request: web.Request) -> web.StreamResponse:
    """17 MiB of JSON, streamed without a Content-Length (chunked), as a hostile or broken server might."""

    class Endless(web.StreamResponse):
        async def prepare(self, req: web.BaseRequest):  # type: ignore[no-untyped-def]
            writer = await super().prepare(req)
            await self.write(b'{"results": ["')
            for _ in range(17 * 16):
                await self.write(b"x" * 65536)
            await self.write(b'"]}')
            await self.write_eof()
            return writer

    resp = Endless(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    return resp


async def test_an_oversized_json_body_is_refused_naming_the_url(serve) -> None:  # type: ignore[no-untyped-def]
    api = FakeApi(huge)
    base = await serve(api)
    async with GencoveClient(base, KEY, policy=FAST) as client:
        with pytest.raises(ApiContractError, match=rf"GET {base}/api/v2/samples/s1: answer exceeds {MAX_BODY} bytes"):
            await client.sample("s1")
    assert api.requests == 1  # not retried: asking again gets the same answer


async def test_an_announced_oversized_body_is_refused_before_reading(serve) -> None:  # type: ignore[no-untyped-def]
    api = FakeApi(lambda r: web.Response(body=b"{}" + b" " * 2048, content_type="application/json"))
    base = await serve(api)
    async with LegacyClient(base, LegacyCredential(api_key=KEY), policy=FAST, max_body=1024) as client:
        with pytest.raises(ApiContractError, match=r"GET .*/welcome-api-key: answer of 2050 bytes exceeds 1024"):
            await client.welcome()


async def test_ids_are_quoted_as_one_path_segment(serve) -> None:  # type: ignore[no-untyped-def]
    api = FakeApi(lambda r: web.json_response({"orders": [], "order": {}, "samples": []}))
    base = await serve(api)
    hostile = "../../projects/x?y=1#z"
    async with GencoveClient(base, KEY, policy=FAST) as client:
        await client.sample(hostile)
        await client.project(hostile)
    async with LegacyClient(base, LegacyCredential(api_key=KEY), policy=FAST) as legacy:
        await legacy.order(PROJECTS, hostile, "a/b")
    quoted = "..%2F..%2Fprojects%2Fx%3Fy=1%23z"  # "=" may stay literal in a path
    assert api.paths == [
        f"/api/v2/samples/{quoted}",
        f"/api/v2/projects/{quoted}",
        "/welcome-api-key",
        f"/projects/{quoted}/samples/a%2Fb/order",
    ]
