"""Instances that keep their comments in PostgreSQL and share events through Redis.

As with Redis alone: every reader's seqs are contiguous and complete, every instance serves the
same snapshot, and no acknowledged comment is lost, whatever PostgreSQL does meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx2 as httpx
import pytest

from ..postgres_server import PostgresServer
from ..redis_server import RedisServer
from ..servers import DEMO_SLUG, ServerProcess
from .cluster import Poster, Reader


class PostgresCluster:
    """Instances on one PostgreSQL database and one Redis, readers spread over them, a poster."""

    def __init__(self, instances: list[ServerProcess], readers: int, readers_on: list[ServerProcess]) -> None:
        self.instances = instances
        self.poster = Poster(instances)
        self.readers = [Reader(readers_on, n) for n in range(readers)]
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
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    instances: int = 2,
    readers: int = 4,
    instance_env: Sequence[dict[str, str]] = (),
    readers_on: Sequence[int] | None = None,
) -> AsyncIterator[PostgresCluster]:
    """instance_env: more settings of each instance, in order; readers_on: the instances the
    readers use (all by default)."""
    servers = [
        ServerProcess(
            tmp_path / f"instance{n}",
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            POST_RATE_PER_READER="100000/second",
            POST_RATE_PER_IP="100000/second",
            **(instance_env[n] if n < len(instance_env) else {}),
        )
        for n in range(instances)
    ]
    try:
        for server in servers:
            await asyncio.to_thread(server.start)
        chosen = servers if readers_on is None else [servers[n] for n in readers_on]
        cluster = PostgresCluster(servers, readers, chosen)
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


async def test_an_instance_killed_between_commit_and_publish(
    tmp_path: Path, database_url: str, redis_server: RedisServer
):
    """The first instance SIGKILLs itself right after committing its third post, before it
    publishes it (FAULT_KILL_AFTER_COMMITS): no bus will ever carry that event. Readers on the
    other instance still have it within 5 s (the heads reconciliation reads the log), with
    contiguous seqs; the post, stored but never acknowledged, is there once, and its retry
    through the other instance answers it rather than posting it again."""
    async with postgres_cluster(
        tmp_path,
        database_url,
        redis_server.url,
        instance_env=[{"FAULT_KILL_AFTER_COMMITS": "3"}],
        readers_on=[1],
    ) as cluster:
        doomed, survivor = cluster.instances
        client = cluster.poster.client
        start = cluster.readers[0].last

        async def post(server: ServerProcess, ref: str) -> httpx.Response:
            return await client.post(
                f"{server.url}/api/articles/{DEMO_SLUG}/comments", json={"name": "A", "body": ref, "ref": ref}
            )

        for n in range(2):
            assert (await post(doomed, f"before-{n}")).status_code == 201
        with pytest.raises(httpx.TransportError):  # the instance dies before it can answer
            await post(doomed, "unanswered")
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        assert await asyncio.to_thread(doomed.process.wait, 10) == -signal.SIGKILL
        epoch = cluster.readers[0].epoch
        await asyncio.gather(*(reader.wait_for(start + 3, epoch, 5) for reader in cluster.readers))
        print(f"every reader had the unpublished post {loop.time() - killed_at:.2f} s after the instance died")
        for reader in cluster.readers:
            assert reader.violations == [], reader.violations
            assert reader.seqs == [start + 1, start + 2, start + 3]

        retry = await post(survivor, "unanswered")
        assert retry.status_code == 200, retry.text  # the comment stored before the kill, not a new one
        assert retry.json()["seq"] == start + 3
        after = await post(survivor, "after")
        assert after.status_code == 201 and after.json()["seq"] == start + 4
        await asyncio.gather(*(reader.wait_for(start + 4, epoch, 10) for reader in cluster.readers))
        comments = (await client.get(f"{survivor.url}/api/articles/{DEMO_SLUG}/comments")).json()["comments"]
        bodies = [c["body"] for c in comments]
        for body in ("before-0", "before-1", "unanswered", "after"):
            assert bodies.count(body) == 1, bodies
