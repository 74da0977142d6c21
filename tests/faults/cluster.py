"""A small cluster for the fault tests: one redis-server behind a TCP proxy that can blackhole
the link, several instances of the product, readers that reconnect like live.js does, and a
poster that retries with the same ref until its comment is acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ..redis_server import RedisServer
from ..servers import DEMO_SLUG, ServerProcess, free_port

EVENT_TYPES = {"comment", "removed", "restored"}


class TcpProxy:
    """Forwards 127.0.0.1:port to Redis. blackhole() stops forwarding without closing anything,
    as a dropped network does: nothing arrives, nothing fails, every connection stays open."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    def blackhole(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._flowing.wait()  # while blackholed, data waits here as TCP would retransmit it
            writer.write(data)
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self._server:
            self._server.close()
        for writer in list(self._writers):
            writer.close()


@dataclass
class Reader:
    """Reads one article like live.js: keeps its last seq and epoch, reconnects with them, moves
    to the next instance when one is gone. Records every sequenced event it is given, and any
    violation of the promise (a seq it had already, or one that skips ahead)."""

    instances: list[ServerProcess]
    index: int
    last: int | None = None
    epoch: str | None = None
    seqs: list[int] = field(default_factory=list)
    resets: list[int] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    progressed: asyncio.Event = field(default_factory=asyncio.Event)
    slug: str = DEMO_SLUG

    async def run(self) -> None:
        for attempt in itertools.count():
            server = self.instances[self.index % len(self.instances)]
            query = f"?since={self.last}&epoch={self.epoch}" if self.last is not None else ""
            ws = None
            try:
                async with connect(
                    f"{server.ws_url}/articles/{self.slug}/live{query}", open_timeout=3, ping_interval=None
                ) as ws:
                    async for raw in ws:
                        self._apply(json.loads(raw))
            except (TimeoutError, ConnectionClosed, OSError, InvalidHandshake):
                pass
            if ws is not None and ws.close_code is not None:
                self.close_codes.append(ws.close_code)
            self.connected.clear()
            self.index += 1  # as a load balancer would: try another instance
            await asyncio.sleep(min(0.05 * (attempt % 6), 0.25))

    def _apply(self, frame: dict) -> None:
        kind = frame["type"]
        if kind == "welcome":
            if self.last is None:
                self.last, self.epoch = frame["seq"], frame["epoch"]
            self.connected.set()
        elif kind == "reset":
            self.last, self.epoch = frame["seq"], frame["epoch"]  # the snapshot is reloaded from here
            self.resets.append(frame["seq"])
            self.progressed.set()
        elif kind in EVENT_TYPES:
            seq = frame["seq"]
            if seq <= self.last:
                self.violations.append(f"seq {seq} again after {self.last}")
            elif seq > self.last + 1:
                self.violations.append(f"seq {seq} after {self.last}: a gap")
                self.last = seq
            else:
                self.last = seq
                self.seqs.append(seq)
            self.progressed.set()

    async def wait_for(self, seq: int, epoch: str, timeout: float) -> None:
        async def reached() -> None:
            while not (self.epoch == epoch and self.last is not None and self.last >= seq):
                self.progressed.clear()
                await self.progressed.wait()

        await asyncio.wait_for(reached(), timeout)


class Poster:
    """Posts through every instance in turn; retries a refused post (503, a dead instance) with
    the same ref until it is acknowledged, as live.js does."""

    def __init__(self, instances: list[ServerProcess], slug: str = DEMO_SLUG) -> None:
        self.instances = instances
        self.slug = slug
        self.acked: dict[str, int] = {}  # comment id -> seq
        self.refused = 0
        self._refs = itertools.count()
        self._turn = itertools.count()
        self.client = httpx.AsyncClient(timeout=5)

    async def post(self, body: str, deadline: float = 60.0) -> dict:
        ref = f"poster-{next(self._refs)}"
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while True:
            server = self.instances[next(self._turn) % len(self.instances)]
            try:
                response = await self.client.post(
                    f"{server.url}/api/articles/{self.slug}/comments", json={"name": "Poster", "body": body, "ref": ref}
                )
                if response.status_code in (200, 201):
                    data = response.json()
                    self.acked[data["comment"]["id"]] = data["seq"]
                    return data
                assert response.status_code == 503, response.text  # only "unavailable" may refuse it
                assert response.json()["error"]["code"] == "unavailable"
            except (httpx.TransportError, OSError):
                pass
            self.refused += 1
            if loop.time() > end:
                raise TimeoutError(f"no instance took {body!r} within {deadline} s")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.client.aclose()


class Cluster:
    def __init__(self, tmp: Path, instances: int = 3, readers: int = 6, redis_url: str | None = None) -> None:
        """redis_url: instances on that Redis (a Redis Cluster's) instead of their own
        redis-server behind a TcpProxy (then cluster.redis and cluster.proxy are None)."""
        self.tmp = tmp
        self.redis_url = redis_url
        self.redis = None if redis_url else RedisServer(tmp / "redis")
        self.proxy: TcpProxy | None = None
        self.instances: list[ServerProcess] = []
        self.readers: list[Reader] = []
        self.poster: Poster | None = None
        self._n_instances, self._n_readers = instances, readers
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Cluster:
        if self.redis is not None:
            self.redis.start()
            self.proxy = await TcpProxy(self.redis.port).start()
        url = self.redis_url or f"redis://127.0.0.1:{self.proxy.port}/0"
        for n in range(self._n_instances):
            server = ServerProcess(
                self.tmp / f"instance{n}",
                REDIS_URL=url,
                POST_RATE_PER_READER="100000/second",
                POST_RATE_PER_IP="100000/second",
            )
            await asyncio.to_thread(server.start)
            self.instances.append(server)
        self.poster = Poster(self.instances)
        self.readers = [Reader(self.instances, n) for n in range(self._n_readers)]
        self._tasks = [asyncio.create_task(r.run()) for r in self.readers]
        await asyncio.wait_for(asyncio.gather(*(r.connected.wait() for r in self.readers)), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.poster:
            await self.poster.close()
        for server in self.instances:
            await asyncio.to_thread(server.stop)
        if self.proxy:
            await self.proxy.close()
        if self.redis is not None:
            self.redis.stop()

    @property
    def live_instances(self) -> list[ServerProcess]:
        return [s for s in self.instances if s.process and s.process.poll() is None]

    async def post_many(self, count: int, label: str) -> None:
        for n in range(count):
            await self.poster.post(f"{label} {n}")

    async def settle(self, timeout: float = 30.0) -> dict:
        """Post one last comment and wait until every reader has it; then check the promise:
        no reader saw a double or a gap, every instance serves the same snapshot, and every
        acknowledged comment is in it. Returns the snapshot."""
        final = await self.poster.post("final")
        snapshot = await self.snapshot_everywhere()
        await asyncio.gather(*(r.wait_for(final["seq"], snapshot["epoch"], timeout) for r in self.readers))
        for n, reader in enumerate(self.readers):
            assert reader.violations == [], f"reader {n}: {reader.violations}"
        return snapshot

    async def snapshot_everywhere(self) -> dict:
        snapshots = []
        for server in self.live_instances:
            pages, after = [], ""
            while after is not None:  # the API answers a page at a time: follow `next`
                response = await self.poster.client.get(
                    f"{server.url}/api/articles/{DEMO_SLUG}/comments", params={"limit": 200, "after": after}
                )
                assert response.status_code == 200
                pages.append(response.json())
                after = pages[-1]["next"]
            snapshots.append({**pages[0], "comments": [c for page in pages for c in page["comments"]]})
        assert all(s == snapshots[0] for s in snapshots), "instances disagree on the thread"
        return snapshots[0]

    def assert_acked_kept(self, snapshot: dict) -> None:
        stored = {c["id"] for c in snapshot["comments"]}
        lost = set(self.poster.acked) - stored
        assert not lost, f"{len(lost)} acknowledged comment(s) lost"


@contextlib.asynccontextmanager
async def streaming(cluster: Cluster, label: str, interval: float = 0.02):
    """Posts keep coming (through every instance) for as long as the block runs."""
    stop = asyncio.Event()

    async def stream() -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            await cluster.poster.post(f"{label} {n}")
            await asyncio.sleep(interval)

    task = asyncio.create_task(stream())
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 90)
