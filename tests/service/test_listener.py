"""The HTTP listener under a connection flood (raw sockets on loopback against the real server object): 300
half-open connections do not keep /healthz from answering, late headers are cut off, file descriptors stay
bounded."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from transferd.journal import Journal
from transferd.metrics import build_registry
from transferd.service.health import Health
from transferd.service.http import HttpServer, build_app

PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # a header that never ends


async def _server(tmp_path: Path, **limits: float) -> tuple[HttpServer, Journal]:
    health = Health(live_after=60)
    journal = Journal.open(tmp_path / "j.sqlite3")
    app = build_app(build_registry(journal, readiness=health.verdicts, process_metrics=False), health, lambda: None)
    server = HttpServer(app, "127.0.0.1", 0, **limits)  # type: ignore[arg-type]
    await server.start()
    return server, journal


async def _hold(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PARTIAL)
        conns.append((reader, writer))
    await asyncio.gather(*(w.drain() for _, w in conns))
    return conns


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.01) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_healthz_answers_while_300_half_open_connections_are_held(tmp_path: Path) -> None:
    server, journal = await _server(tmp_path)  # the defaults: 256 connections, 10 s for a header
    fds_before = len(os.listdir("/proc/self/fd"))
    attackers = await _hold(server.port, 300)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            took = []
            for _ in range(20):  # a fresh connection each time, as a prober does
                started = time.monotonic()
                async with http.get(f"http://127.0.0.1:{server.port}/healthz", headers={"Connection": "close"}) as r:
                    assert r.status == 200 and (await r.json())["alive"] is True
                took.append(time.monotonic() - started)
        assert max(took) < 1.0, took
        guard = server.guard
        assert guard is not None and guard.open <= guard.limit
        server_side = len(os.listdir("/proc/self/fd")) - fds_before - len(attackers)
        assert server_side <= guard.limit + 2, server_side  # file descriptors stay bounded
        closed = await asyncio.gather(*(_closed_by_server(r) for r, _ in attackers))
        assert sum(closed) >= 300 - guard.limit  # the oldest half-open connections made room
        assert not any(closed[-100:])  # the newest were left alone (they are within their header time)
    finally:
        for _, w in attackers:
            w.close()
        await server.stop()
        journal.close()


async def test_a_header_that_does_not_arrive_in_time_is_cut_off(tmp_path: Path) -> None:
    server, journal = await _server(tmp_path, header_timeout=0.3)
    try:
        [(slow, slow_w)] = await _hold(server.port, 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # whole header: served, then kept alive
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(slow.read(), 3) == b""  # closed by the server, no answer
        assert not writer.is_closing() and not reader.at_eof()  # a good connection is not timed out
        assert server.guard is not None and server.guard.dropped == 1
        slow_w.close()
        writer.close()
    finally:
        await server.stop()
        journal.close()
