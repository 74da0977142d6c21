"""Several instances share one Redis; faults strike while readers read and posts flow. The
faults of instances strike on a Redis Cluster too (its own faults: test_redis_cluster_failover).

After each fault, every reader's seqs are contiguous and complete (a reader never sees a seq
twice or skips one, and reaches the last event), every instance serves the same snapshot, and
no acknowledged comment is lost (but where Redis itself lost the data: then readers `reset`).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from ..servers import DEMO_SLUG
from .cluster import Cluster, streaming


@pytest.fixture(params=["redis", "redis-cluster"])
def shared_redis(request) -> str | None:
    """The instances' Redis: their own redis-server (None), or the shared Redis Cluster's URL
    (the cluster is flushed first)."""
    if request.param == "redis":
        return None
    cluster = request.getfixturevalue("redis_cluster")
    cluster.flushall()
    return cluster.url


async def test_posts_through_every_instance_reach_every_reader_in_order(tmp_path: Path, shared_redis: str | None):
    async with Cluster(tmp_path, redis_url=shared_redis) as cluster:
        await asyncio.gather(*(cluster.post_many(10, f"writer{n}") for n in range(3)))
        snapshot = await cluster.settle()
        assert len(snapshot["comments"]) == 4 + 30 + 1
        cluster.assert_acked_kept(snapshot)
        for reader in cluster.readers:
            assert reader.seqs == list(range(5, snapshot["seq"] + 1))


async def test_redis_killed_mid_stream_and_restarted(tmp_path: Path):
    async with Cluster(tmp_path) as cluster:
        async with streaming(cluster, "during a Redis crash"):
            await cluster.post_many(5, "before")
            cluster.redis.kill()
            # While Redis is down, posts are refused with 503 `unavailable`, never hang.
            response = await cluster.poster.client.post(
                f"{cluster.instances[0].url}/api/articles/{DEMO_SLUG}/comments", json={"name": "A", "body": "x"}
            )
            assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
            ready = await cluster.poster.client.get(f"{cluster.instances[1].url}/readyz")
            assert ready.status_code == 503
            await asyncio.to_thread(cluster.redis.start)
            await cluster.post_many(5, "after")
        snapshot = await cluster.settle()
        cluster.assert_acked_kept(snapshot)
        assert all(reader.resets == [] for reader in cluster.readers)  # AOF kept everything: no reset


async def test_every_pubsub_connection_killed(tmp_path: Path):
    async with Cluster(tmp_path) as cluster:
        async with streaming(cluster, "while subscriptions die"):
            await cluster.post_many(5, "before")
            redis = cluster.redis.client()
            for kill in range(3):
                await subscribers_back(redis, len(cluster.instances))
                assert redis.client_kill_filter(_type="pubsub") == len(cluster.instances)
                await cluster.post_many(5, f"after kill {kill}")  # new words: the poster is one reader
        snapshot = await cluster.settle()
        cluster.assert_acked_kept(snapshot)


async def subscribers_back(redis, count: int, timeout: float = 10.0) -> None:
    """Redis has no event for "a client subscribed": ask it until every instance is back."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while len(redis.client_list(_type="pubsub")) < count:
        assert loop.time() < end, "the instances did not resubscribe"
        await asyncio.sleep(0.05)


async def test_link_to_redis_blackholed_for_20_seconds(tmp_path: Path):
    async with Cluster(tmp_path) as cluster:
        await cluster.post_many(5, "before")
        cluster.proxy.blackhole()
        loop = asyncio.get_running_loop()
        start = loop.time()
        # A post during the blackhole is answered `unavailable` within seconds, never hangs.
        response = await cluster.poster.client.post(
            f"{cluster.instances[0].url}/api/articles/{DEMO_SLUG}/comments",
            json={"name": "A", "body": "x", "ref": "bh"},
            timeout=15,
        )
        assert response.status_code == 503 and loop.time() - start < 10
        await asyncio.sleep(20 - (loop.time() - start))  # the fault itself lasts 20 s: nothing to wait on
        cluster.proxy.restore()
        await cluster.post_many(5, "after")
        snapshot = await cluster.settle(timeout=40)
        cluster.assert_acked_kept(snapshot)


async def test_redis_flushed(tmp_path: Path):
    async with Cluster(tmp_path) as cluster:
        await cluster.post_many(5, "before")
        old_epoch = (await cluster.snapshot_everywhere())["epoch"]
        cluster.redis.client().flushall()
        await cluster.post_many(3, "after the flush")
        snapshot = await cluster.settle()
        assert snapshot["epoch"] != old_epoch
        # The history is gone, so every reader was told to reload, then got what followed.
        assert all(reader.resets for reader in cluster.readers)
        assert [c["author"]["name"] for c in snapshot["comments"][:4]] == [
            "Markus Scholz",
            "Anya Petrova",
            "David Chen",
            "Claire Dubois",
        ]  # the article's own comments return


async def test_an_instance_killed_with_sigkill(tmp_path: Path, shared_redis: str | None):
    async with Cluster(tmp_path, redis_url=shared_redis) as cluster:
        async with streaming(cluster, "while an instance dies"):
            await cluster.post_many(5, "before")
            cluster.instances[0].stop(signal.SIGKILL)
            await cluster.post_many(5, "after")
        snapshot = await cluster.settle()
        cluster.assert_acked_kept(snapshot)


async def test_an_instance_stopped_with_sigterm_closes_with_1012(tmp_path: Path, shared_redis: str | None):
    async with Cluster(tmp_path, redis_url=shared_redis) as cluster:
        async with streaming(cluster, "during a rolling restart"):
            await cluster.post_many(5, "before")
            for n, server in enumerate(cluster.instances[:2]):  # a rolling restart: one at a time
                await asyncio.to_thread(server.restart)
                await cluster.post_many(3, f"after restart {n}")  # new words: the poster is one reader
        snapshot = await cluster.settle()
        cluster.assert_acked_kept(snapshot)
        # Readers of the restarted instances were told to go elsewhere at once.
        assert sum(reader.close_codes.count(1012) for reader in cluster.readers) >= 2
