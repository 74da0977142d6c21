"""Instances that keep their comments in PostgreSQL and share events through Redis.

As with Redis alone: every reader's seqs are contiguous and complete, every instance serves the
same snapshot, and no acknowledged comment is lost, whatever PostgreSQL does meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from ..postgres_server import PostgresServer
from ..redis_server import RedisServer
from ..servers import DEMO_SLUG, ServerProcess
from .cluster import Poster, Reader


class PostgresCluster:
    """Instances on one PostgreSQL database and one Redis, readers spread over them, a poster."""

    def __init__(self, instances: list[ServerProcess], readers: int) -> None:
        self.instances = instances
        self.poster = Poster(instances)
        self.readers = [Reader(instances, n) for n in range(readers)]
        self._tasks = [asyncio.create_task(r.run()) for r in self.readers]

    async def settle(self, timeout: float = 30.0) -> dict:
        """One last post reaches every reader, with no double and no gap on the way; every
        instance serves the same snapshot, holding every acknowledged comment."""
        final = await self.poster.post("final")
        snapshots = []
        for server in self.instances:
            response = await self.poster.client.get(f"{server.url}/api/articles/{DEMO_SLUG}/comments")
            snapshots.append(response.json())
        assert all(s == snapshots[0] for s in snapshots), "instances disagree on the thread"
        await asyncio.gather(*(r.wait_for(final["seq"], snapshots[0]["epoch"], timeout) for r in self.readers))
        for n, reader in enumerate(self.readers):
            assert reader.violations == [], f"reader {n}: {reader.violations}"
            assert reader.resets == [], f"reader {n} was reset"
        lost = set(self.poster.acked) - {c["id"] for c in snapshots[0]["comments"]}
        assert not lost, f"{len(lost)} acknowledged comment(s) lost"
        return snapshots[0]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.poster.close()


@contextlib.asynccontextmanager
async def postgres_cluster(
    tmp_path: Path, database_url: str, redis_url: str, instances: int = 2, readers: int = 4
) -> AsyncIterator[PostgresCluster]:
    servers = [
        ServerProcess(
            tmp_path / f"instance{n}",
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            POST_RATE_PER_READER="100000/second",
            POST_RATE_PER_IP="100000/second",
        )
        for n in range(instances)
    ]
    try:
        for server in servers:
            await asyncio.to_thread(server.start)
        cluster = PostgresCluster(servers, readers)
        try:
            await asyncio.wait_for(asyncio.gather(*(r.connected.wait() for r in cluster.readers)), 10)
            yield cluster
        finally:
            await cluster.close()
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)


async def test_instances_on_postgres_and_redis_share_a_thread(
    tmp_path: Path, database_url: str, redis_server: RedisServer
):
    async with postgres_cluster(tmp_path, database_url, redis_server.url) as cluster:
        start = cluster.readers[0].last
        # Two writers at once, each going round both instances: the seq is shared, not per instance.
        await asyncio.gather(*(cluster.poster.post(f"writer {w} post {n}") for w in range(2) for n in range(15)))
        snapshot = await cluster.settle()
        for reader in cluster.readers:
            assert reader.seqs == list(range(start + 1, snapshot["seq"] + 1))
        assert snapshot["seq"] == start + 31


async def test_postgres_restarted_while_posts_flow(tmp_path: Path, redis_server: RedisServer):
    postgres = PostgresServer().init()  # its own cluster: this test stops it
    try:
        async with postgres_cluster(tmp_path, postgres.create_database(), redis_server.url) as cluster:
            stop_posting = asyncio.Event()

            async def keep_posting() -> None:
                n = 0
                while not stop_posting.is_set():
                    await cluster.poster.post(f"stream {n}")
                    n += 1
                    await asyncio.sleep(0.02)

            streamer = asyncio.create_task(keep_posting())
            await cluster.poster.post("before")
            await asyncio.to_thread(postgres.stop)
            loop = asyncio.get_running_loop()
            # While PostgreSQL is down a post is refused with 503 `unavailable` at once, never hangs.
            began = loop.time()
            response = await cluster.poster.client.post(
                f"{cluster.instances[0].url}/api/articles/{DEMO_SLUG}/comments", json={"name": "A", "body": "x"}
            )
            refused_in = loop.time() - began
            print(f"a post while PostgreSQL is down was refused in {refused_in * 1000:.0f} ms")
            assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
            assert refused_in < 5
            assert (await cluster.poster.client.get(f"{cluster.instances[1].url}/readyz")).status_code == 503
            await asyncio.sleep(1)  # the outage itself lasts a second: nothing to wait on
            await asyncio.to_thread(postgres.start)
            began = loop.time()
            await cluster.poster.post("after")
            print(f"posts were taken again {(loop.time() - began) * 1000:.0f} ms after PostgreSQL was back")
            stop_posting.set()
            await asyncio.wait_for(streamer, 60)
            print(f"{len(cluster.poster.acked)} posts acknowledged, {cluster.poster.refused} refused and retried")
            await cluster.settle()
            for reader in cluster.readers:  # open pages stayed connected throughout
                assert reader.close_codes == [], reader.close_codes
    finally:
        postgres.remove()


async def test_redis_killed_posts_still_succeed_on_postgres(tmp_path: Path, database_url: str):
    redis = RedisServer(tmp_path / "redis").start()  # its own: this test kills it
    try:
        async with postgres_cluster(tmp_path, database_url, redis.url) as cluster:
            await cluster.poster.post("before")
            redis.kill()
            client = cluster.poster.client
            last = None
            for n in range(6):  # through both instances, while Redis is gone
                response = await client.post(
                    f"{cluster.instances[n % 2].url}/api/articles/{DEMO_SLUG}/comments",
                    json={"name": "A", "body": f"during {n}", "ref": f"during-{n}"},
                )
                assert response.status_code == 201, response.text
                last = response.json()
                cluster.poster.acked[last["comment"]["id"]] = last["seq"]
            assert (await client.get(f"{cluster.instances[0].url}/readyz")).status_code == 200
            # Readers already connected have them from the log, Redis or not.
            loop = asyncio.get_running_loop()
            began = loop.time()
            epoch = cluster.readers[0].epoch
            await asyncio.gather(*(r.wait_for(last["seq"], epoch, 10) for r in cluster.readers))
            print(f"with Redis down, every reader had the last post {loop.time() - began:.2f} s after it was stored")
            await asyncio.to_thread(redis.start)
            await cluster.settle()
            for reader in cluster.readers:  # open pages stayed connected throughout
                assert reader.close_codes == [], reader.close_codes
    finally:
        redis.stop()
