"""A TCP proxy that adds a fixed one-way delay in each direction: the benchmark's WAN (`--scenario wan`).

    python -m bench.wan_proxy --upstream 127.0.0.1:9000 --delay-ms 50 [--host 127.0.0.1] [--port 0]

prints `listening HOST:PORT` once it accepts. Every byte is held `delay` before it is passed on, both ways, so a
request/response round trip costs 2 x delay more; a new connection also costs one round trip before its first
byte reaches the server (the TCP handshake over the WAN; there is no TLS here, whose handshake would add one or
two more). Bandwidth is not limited, but at most WINDOW_BYTES per direction and connection are in flight, as a
TCP window would bound them. Loopback only: the bench starts one in front of the sandbox API and one in front of
the S3 server, and every contender goes through them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sequence

CHUNK = 256 * 1024
WINDOW_BYTES = 16 * 1024 * 1024  # in flight per direction: ~335 MB/s per connection at 50 ms


class _Window:
    """Bytes in flight in one direction; the reader waits while the window is full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self._room:
            await self._room.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n

    async def give(self, n: int) -> None:
        async with self._room:
            self.used -= n
            self._room.notify_all()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader -> writer, each chunk released `delay` after it was read; half-close at EOF."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    window = _Window(WINDOW_BYTES)

    async def read() -> None:
        while data := await reader.read(CHUNK):
            await window.take(len(data))
            queue.put_nowait((time.monotonic() + delay, data))
        queue.put_nowait((time.monotonic() + delay, b""))

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            await window.give(len(data))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        tg.create_task(write())


async def _serve_one(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, upstream: tuple[str, int], delay: float
) -> None:
    server_w: asyncio.StreamWriter | None = None
    try:
        # The handshake's round trip: the first byte reaches the server no sooner than 3 x delay after connect.
        (server_r, server_w), _ = await asyncio.gather(asyncio.open_connection(*upstream), asyncio.sleep(2 * delay))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_pump(client_r, server_w, delay))
            tg.create_task(_pump(server_r, client_w, delay))
    except* OSError:
        pass  # a refused connect or a reset on either side ends the connection, as on a real network
    finally:
        for w in (client_w, server_w):
            if w is not None:
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()


async def start(host: str, port: int, upstream: tuple[str, int], delay: float) -> asyncio.Server:
    """A listening proxy (port 0: a free one), serving until closed."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _serve_one(r, w, upstream, delay)

    return await asyncio.start_server(handle, host, port, limit=CHUNK)


async def serve(host: str, port: int, upstream: tuple[str, int], delay: float) -> None:
    server = await start(host, port, upstream, delay)
    bound = server.sockets[0].getsockname()
    print(f"listening {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wan_proxy", description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="HOST:PORT of the server behind the proxy")
    p.add_argument("--delay-ms", type=float, default=50.0, help="one-way delay added each way (default: 50)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    if not host or not port.isdigit() or args.delay_ms < 0:
        p.error(f"--upstream must be HOST:PORT and --delay-ms >= 0 (got {args.upstream!r}, {args.delay_ms})")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, (host, int(port)), args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
