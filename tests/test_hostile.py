"""Hostile and broken clients against a real instance on the Redis backend."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct

import httpx2 as httpx
import pytest

from .servers import DEMO_SLUG


async def metrics(server) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(server.url + "/metrics")).text
    return {name: float(value) for name, value in re.findall(r"^(\w+) (\S+)$", text, re.M)}


async def open_and_abort(server, count: int) -> None:
    """count WebSocket handshakes completed, then every TCP connection reset without a close."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /articles/{DEMO_SLUG}/live HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return writer

    writers = []
    for start in range(0, count, 100):
        writers += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    for writer in writers:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, no FIN
        writer.transport.abort()


async def eventually(check, timeout: float = 20.0) -> None:
    """The server cleans up on its own time; ask its metrics until it has (no event to await)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        assert loop.time() < end, "the server did not clean up"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_a_thousand_connections_dropped_abruptly_leave_nothing_behind(start_server, redis_server):
    server = start_server(REDIS_URL=redis_server.url, MAX_CONNECTIONS_PER_IP="5000")
    redis = redis_server.client()
    channel = f"bc:events:{DEMO_SLUG}"
    baseline = await metrics(server)
    # The first thousand raises the allocator's high-water mark (measured: about 37 MB, kept by
    # the allocator, not by live objects); a leak shows as growth on every round after it.
    await open_and_abort(server, 1000)
    await eventually(lambda: _settled(server, baseline))
    warm = await metrics(server)

    await open_and_abort(server, 1000)

    await eventually(lambda: _settled(server, baseline))
    after = await metrics(server)
    assert redis.pubsub_numsub(channel) == [(channel.encode(), 0)]  # the subscription went with the last reader
    assert after["backchannel_asyncio_tasks"] == baseline["backchannel_asyncio_tasks"]
    growth = after["process_resident_memory_bytes"] - warm["process_resident_memory_bytes"]
    assert growth < 4 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB after 1000 more dropped connections"


async def _settled(server, baseline: dict) -> bool:
    now = await metrics(server)
    return (now["backchannel_live_connections"] == 0 and now["backchannel_active_threads"] == 0
            and now["backchannel_asyncio_tasks"] == baseline["backchannel_asyncio_tasks"])
