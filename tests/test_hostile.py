"""Hostile and broken clients against real instances (on the Redis backend, or the default one)."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import time

import httpx2 as httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from .servers import DEMO_SLUG
from .wsframes import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    client_frame,
    close_code,
    handshake,
    server_messages,
)

LIVE_PATH = f"/articles/{DEMO_SLUG}/live"


async def metrics(server, client: httpx.AsyncClient | None = None) -> dict[str, float]:
    if client is None:
        async with httpx.AsyncClient() as client:
            return await metrics(server, client)
    text = (await client.get(server.url + "/metrics")).text
    return {name: float(value) for name, value in re.findall(r"^(\w+) (\S+)$", text, re.M)}


async def open_and_abort(server, count: int) -> None:
    """count WebSocket handshakes completed, then every TCP connection reset without a close."""
    request = handshake(server.port, LIVE_PATH)

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
    channel = "{bc:" + DEMO_SLUG + "}:events"
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
    return (
        now["backchannel_live_connections"] == 0
        and now["backchannel_active_threads"] == 0
        and now["backchannel_asyncio_tasks"] == baseline["backchannel_asyncio_tasks"]
    )


# --- a reader that never reads, among a hundred that do -------------------------------------

HONEST_READERS = 100
# 100 posts/s of ~600 characters: the bytes per second that fill a stalled reader's socket
# buffers quickly enough for the 5 s bound, at a post rate that leaves the server's core room
# on a slow or busy machine. At 200 posts/s of half the size a fresh CI machine's server sat at
# 102-110 % CPU and the p99 measured its queue (1.1-2.9 s), not the stalled reader.
POSTS_PER_SECOND = 100
STREAM_SECONDS = 8.0  # the 5 s bound on closing the stalled reader, and margin
# Generous on purpose: a stall behind a reader that reads nothing costs the others 10-15 s
# (shared/FACTS.md), so 2.5 s still tells the two apart. On a quiet machine p99 is ~10 ms; with
# the 2-core machine shared by several suites (load average 10-18) it reached 1.1-1.9 s while
# the server used under 40 % of a core: the machine's queue, not the server's. Printed below.
P99_BOUND_MS = 2500.0
CLOSE_BOUND_S = 5.0
# Measured: ~9 MiB (SQLite's page cache, the log, allocator slack). The stalled reader may pin
# at most SEND_BUFFER_BYTES (1 MiB) in the server, and the whole stream is ~1.3 MB, so this bound
# cannot see one reader's backlog; it catches a copy of the stream kept per reader (100 x 1.3 MB).
RSS_GROWTH_BOUND = 50 * 1024 * 1024
# Prose, split: easier to read and edit than a list of forty words.
WORDS = (  # noqa: SIM905
    "the minister said that talks would resume next week but nobody in the room believed "
    "him and the markets fell again before lunch while analysts argued about what it meant "
    "for the ceasefire the border towns and the price of bread this winter"
).split()


class HonestReader(asyncio.Protocol):
    """A reader that reads everything at once, on a raw socket with a small frame parser (100
    websockets clients would cost the test process more than the server): it answers pings,
    checks every comment's seq follows the last, and records each comment's delivery latency
    from the time.monotonic_ns() stamp at the start of its body."""

    def __init__(self, port: int, latencies: list[int], progress: asyncio.Event) -> None:
        self.port, self.latencies, self.progress = port, latencies, progress
        self.welcome: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self.head = bytearray()
        self.upgraded = False
        self.frames = FrameReader()
        self.last_seq: int | None = None
        self.comments = 0
        self.problems: list[str] = []
        self.closed: str | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(handshake(self.port, LIVE_PATH))

    def connection_lost(self, exc) -> None:
        self.closed = self.closed or f"connection lost ({exc!r})"
        if not self.welcome.done():
            self.welcome.set_exception(AssertionError(self.closed))
        self.progress.set()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            assert self.head.startswith(b"HTTP/1.1 101"), bytes(self.head[:200])
            self.upgraded, data = True, bytes(self.head[end + 4 :])
        for opcode, _, payload in self.frames.feed(data):
            if opcode == OP_TEXT:
                self.on_text(orjson.loads(payload), now)
            elif opcode == OP_PING:
                self.transport.write(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self.closed = f"closed by the server with {close_code(payload)}"
                self.progress.set()

    def on_text(self, frame: dict, now: int) -> None:
        kind = frame["type"]
        if kind == "comment":
            seq = frame["seq"]
            if seq != self.last_seq + 1:
                self.problems.append(f"seq {seq} after {self.last_seq}")
            self.last_seq = seq
            self.comments += 1
            self.latencies.append(now - int(frame["comment"]["body"].split(" ", 1)[0]))
            self.progress.set()
        elif kind == "welcome":
            self.last_seq = frame["seq"]
            self.welcome.set_result(frame)
        elif kind != "presence":
            self.problems.append(f"unexpected frame {frame}")


def _percentile(sorted_values: list[int], fraction: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


@pytest.mark.timeout(60)
async def test_a_stalled_reader_among_a_hundred_is_closed_and_the_others_keep_up(start_server) -> None:
    """Abuse resistance, point 6: a reader that completes the handshake and never reads again,
    among 100 readers receiving 100 events/s. The others get every event, in order, with a p99
    delivery under 2.5 s (printed); the stalled one is closed within 5 s; the server's memory stays
    bounded; and the stalled socket ends (its data, then EOF or a reset)."""
    server = start_server(
        POST_RATE_PER_READER="1000/second", POST_RATE_PER_IP="1000/second", MAX_CONNECTIONS_PER_IP="200"
    )
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    progress = asyncio.Event()
    honest: list[HonestReader] = []
    for _ in range(HONEST_READERS):
        _, protocol = await loop.create_connection(
            lambda: HonestReader(server.port, latencies, progress), "127.0.0.1", server.port
        )
        honest.append(protocol)
    welcomes = await asyncio.wait_for(asyncio.gather(*(r.welcome for r in honest)), 10)
    head = welcomes[0]["seq"]
    assert all(w["seq"] == head for w in welcomes)

    # The stalled reader: an ordinary socket (default buffers) that reads the handshake's
    # answer, byte by byte so as to take nothing after it, and then nothing ever again.
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    stalled.sendall(handshake(server.port, LIVE_PATH))
    answer = b""
    while not answer.endswith(b"\r\n\r\n"):
        byte = stalled.recv(1)
        assert byte, f"the server hung up during the handshake: {answer!r}"
        answer += byte
    assert answer.startswith(b"HTTP/1.1 101"), answer

    acks: list[dict] = []
    refused: list[dict] = []
    all_acked = asyncio.Event()
    total = int(POSTS_PER_SECOND * STREAM_SECONDS)
    rng = random.Random(6)
    async with (
        connect(
            f"{server.ws_url}/articles/{DEMO_SLUG}/live",
            proxy=None,
            compression=None,
            open_timeout=5,
            close_timeout=2,
            max_queue=None,
        ) as poster,
        httpx.AsyncClient(trust_env=False) as scraper,
    ):  # one client: a new one costs the loop ~30 ms

        async def read_poster() -> None:
            async for raw in poster:
                frame = orjson.loads(raw)
                if frame["type"] == "ack":
                    acks.append(frame)
                    if len(acks) == total:
                        all_acked.set()
                elif frame["type"] == "error":
                    refused.append(frame)

        poster_reader = asyncio.create_task(read_poster())
        try:
            await eventually(lambda: _live_connections_are(server, HONEST_READERS + 2), timeout=10)
            before = await metrics(server)
            assert before.get("backchannel_slow_readers_closed_total", 0) == 0

            # The server's figures while the stream runs, until the stalled reader is closed.
            started = 0.0
            closed_after: float | None = None
            gone_after: float | None = None

            async def watch() -> None:
                nonlocal closed_after, gone_after
                while gone_after is None:
                    await asyncio.sleep(0.05)  # the server offers no event for this: ask its metrics
                    now = await metrics(server, scraper)
                    if closed_after is None and now.get("backchannel_slow_readers_closed_total", 0) >= 1:
                        closed_after = time.monotonic() - started
                    if gone_after is None and now["backchannel_live_connections"] == HONEST_READERS + 1:
                        gone_after = time.monotonic() - started

            # The poster: POSTS_PER_SECOND on a fixed beat, whatever the acks do.
            cpu_before = time.process_time()
            started = time.monotonic()
            watcher = asyncio.create_task(watch())
            late = 0.0
            for i in range(total):
                delay = started + i / POSTS_PER_SECOND - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    late = max(late, -delay)
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 130)))
                body = f"{time.monotonic_ns()} {words}"
                await poster.send(
                    orjson.dumps({"type": "post", "ref": f"r{i}", "name": "Poster", "body": body}).decode()
                )
            stream_seconds = time.monotonic() - started
            await asyncio.wait_for(all_acked.wait(), 10)
            assert not refused, refused[:3]
            last = head + total
            assert sorted(a["seq"] for a in acks) == list(range(head + 1, last + 1))

            # Every honest reader gets every event, in order (an event per comment: no sleep).
            deadline = loop.time() + 10
            while not all(r.last_seq == last or r.closed for r in honest):
                progress.clear()
                await asyncio.wait_for(progress.wait(), deadline - loop.time())
            cpu = time.process_time() - cpu_before
            try:
                await asyncio.wait_for(watcher, max(0.0, started + CLOSE_BOUND_S + 1 - time.monotonic()))
            except TimeoutError:
                pass  # not closed in time: the assertions below say so
            after = await metrics(server)
        finally:
            poster_reader.cancel()
            await asyncio.gather(poster_reader, return_exceptions=True)

    for r in honest:
        assert r.closed is None, r.closed
        assert not r.problems, r.problems[:5]
        assert r.comments == total
    assert len(latencies) == total * HONEST_READERS
    ordered = sorted(latencies)
    p50, p99, worst = (_percentile(ordered, 0.50) / 1e6, _percentile(ordered, 0.99) / 1e6, ordered[-1] / 1e6)
    growth = after["process_resident_memory_bytes"] - before["process_resident_memory_bytes"]
    server_cpu = after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]
    print(
        f"\n{HONEST_READERS} honest readers, {total} posts in {stream_seconds:.2f} s "
        f"(beat late by {late * 1000:.1f} ms at most; CPU: test process {cpu / stream_seconds:.0%},"
        f" server {server_cpu / stream_seconds:.0%}):"
        f" latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms;"
        f" stalled reader counted closed after {_seconds(closed_after)},"
        f" its connection gone after {_seconds(gone_after)};"
        f" server RSS {before['process_resident_memory_bytes'] / 2**20:.1f} MiB ->"
        f" {after['process_resident_memory_bytes'] / 2**20:.1f} MiB"
    )

    # the stalled reader, closed once and in time, and no one else
    assert closed_after is not None and closed_after <= CLOSE_BOUND_S, (
        f"the stalled reader was not closed within {CLOSE_BOUND_S} s ({_seconds(closed_after)})"
    )
    assert gone_after is not None and gone_after <= CLOSE_BOUND_S, (
        f"the stalled reader's connection was not gone within {CLOSE_BOUND_S} s ({_seconds(gone_after)})"
    )
    assert after["backchannel_slow_readers_closed_total"] == 1
    assert after["backchannel_live_connections"] == HONEST_READERS + 1
    assert p99 < P99_BOUND_MS, f"p99 {p99:.1f} ms"
    assert growth < RSS_GROWTH_BOUND, f"the server's RSS grew by {growth / 2**20:.1f} MiB"

    # The stalled reader reads at last: what it was sent, in order, then the end of the socket.
    stalled.setblocking(False)
    data = bytearray()
    end = loop.time() + 10
    try:
        while True:
            assert loop.time() < end, "the server kept the stalled reader's socket open"
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(stalled, 1 << 20), end - loop.time())
            except ConnectionResetError:
                ending = "a reset"
                break
            if not chunk:
                ending = "EOF"
                break
            data += chunk
    finally:
        for r in honest:
            r.transport.close()
        stalled.close()
    frames, close_code = server_messages(bytes(data), may_end_mid_frame=True)  # a reset may cut it short
    assert close_code in (None, 4000), close_code
    assert frames[0]["type"] == "welcome"
    got = [f["seq"] for f in frames if f["type"] == "comment"]
    assert got == list(range(head + 1, head + 1 + len(got))) and len(got) < total
    print(
        f"the stalled reader, reading at last: {len(data)} bytes, {len(got)} of {total} comments in order,"
        f" close frame {close_code}, then {ending}"
    )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


async def _live_connections_are(server, count: int) -> bool:
    return (await metrics(server))["backchannel_live_connections"] == count
