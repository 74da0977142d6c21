"""A Redis Cluster changes under the instances: a primary lost under load (its replica takes
over in 3-5 s here), a slot moved to another node. Every reader of every thread still holds
every event exactly once; posts meanwhile are acknowledged or refused as `unavailable`,
nothing else (the Poster asserts it)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from server.content import slugify

from ..redis_cluster import RedisClusterServers
from ..servers import DEMO_SLUG, ServerProcess
from .cluster import Poster, Reader

THREADS_PER_SHARD = 2
ARTICLE = "By A. Tester | Desk\n\nTESTVILLE (Wire) – One paragraph for the readers to comment on.\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[RedisClusterServers]:
    """This module's own cluster: its test kills a node."""
    servers = RedisClusterServers(tmp_path_factory.mktemp("failover-cluster")).start()
    yield servers
    servers.stop()


def articles_on_every_shard(cluster: RedisClusterServers, content: Path) -> list[str]:
    """THREADS_PER_SHARD articles whose threads live on each primary; returns their slugs."""
    content.mkdir()
    per_primary: dict[int, list[str]] = {node.port: [] for node in cluster.primaries()}
    for n in itertools.count():
        title = f"Cluster thread {n}"
        slug = slugify(title)
        owner = cluster.primary_for("{bc:" + slug + "}").port
        if len(per_primary[owner]) < THREADS_PER_SHARD:
            per_primary[owner].append(slug)
            (content / f"{slug}.txt").write_text(f"{title}\n\n{ARTICLE}")
        if all(len(slugs) == THREADS_PER_SHARD for slugs in per_primary.values()):
            return [slug for slugs in per_primary.values() for slug in slugs]
    raise AssertionError("unreachable")


async def head(client: httpx.AsyncClient, server: ServerProcess, slug: str) -> int:
    response = await client.get(f"{server.url}/api/articles/{slug}/comments", params={"limit": 1})
    assert response.status_code == 200, response.text
    return int(response.json()["seq"])


# Not in `make test` for now (`make test-failover` runs it): in 1 of 3 full runs on 2026-11-30
# the killed primary's threads took no post for 60 s after the failover while the other
# shards' did (issue 16: the cluster client's recovery of one shard is not yet understood).
@pytest.mark.failover_drill
@pytest.mark.timeout(240)
async def test_a_primary_killed_under_load_loses_and_doubles_nothing(tmp_path: Path, cluster: RedisClusterServers):
    slugs = articles_on_every_shard(cluster, tmp_path / "content")
    instances = [
        ServerProcess(
            tmp_path / f"instance{n}",
            tmp_path / "content",
            REDIS_URL=cluster.url,
            POST_RATE_PER_READER="100000/second",
            POST_RATE_PER_IP="100000/second",
        )
        for n in range(2)
    ]
    for server in instances:
        await asyncio.to_thread(server.start)
    readers = [Reader(instances, n, slug=slug) for slug in slugs for n in range(2)]  # one on each instance
    posters = {slug: Poster(instances, slug) for slug in slugs}
    tasks = [asyncio.create_task(reader.run()) for reader in readers]
    stop_posting = asyncio.Event()
    posting: list[asyncio.Task] = []

    async def keep_posting(slug: str) -> None:
        for n in itertools.count():
            if stop_posting.is_set():
                return
            await posters[slug].post(f"{slug} post {n}")
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(asyncio.gather(*(r.connected.wait() for r in readers)), 20)
        posting += [asyncio.create_task(keep_posting(slug)) for slug in slugs]
        victim = cluster.primary_for("{bc:" + slugs[0] + "}")
        await asyncio.sleep(1.5)  # posts flowing on every thread
        killed_at = time.monotonic()
        await asyncio.to_thread(victim.kill)
        # Until the replica is promoted, the victim's threads refuse posts (503) and the others go on.
        await asyncio.to_thread(cluster.wait_for_failover, victim)
        promoted = time.monotonic() - killed_at
        victim_replica_port = cluster.primary_for("{bc:" + slugs[0] + "}").port
        acked_at_promotion = {slug: len(posters[slug].acked) for slug in slugs}
        # Keep posting until every thread took ten more after the promotion.
        deadline = time.monotonic() + 60
        while any(len(posters[slug].acked) < acked_at_promotion[slug] + 10 for slug in slugs):
            assert time.monotonic() < deadline, {slug: len(posters[slug].acked) for slug in slugs}
            await asyncio.sleep(0.1)
        stop_posting.set()
        await asyncio.gather(*posting)

        async with httpx.AsyncClient(timeout=10) as client:
            heads = {slug: await head(client, instances[0], slug) for slug in slugs}
            for slug in slugs:
                assert await head(client, instances[1], slug) == heads[slug], "the instances disagree"
        converge_started = time.monotonic()
        await asyncio.gather(*(r.wait_for(heads[r.slug], r.epoch or "", 30) for r in readers))
        converged = time.monotonic() - converge_started
        on_victim = {slug for slug in slugs if cluster.primary_for("{bc:" + slug + "}").port == victim_replica_port}
        refused = sum(posters[slug].refused for slug in on_victim)
        refused_elsewhere = sum(posters[slug].refused for slug in set(slugs) - on_victim)
        print(
            f"replica promoted {promoted:.1f} s after the kill; post attempts refused (503) meanwhile: "
            f"{refused} on the failed shard's threads, {refused_elsewhere} on the healthy shards'; "
            f"every reader converged {converged:.2f} s after the last post; "
            f"heads {sorted(heads.values())}"
        )
        for reader in readers:
            acked = sorted(posters[reader.slug].acked.values())
            assert reader.violations == [], f"{reader.slug}: {reader.violations}"
            assert reader.resets == [], f"{reader.slug}: reset to a snapshot at {reader.resets}"
            first = reader.seqs[0] if reader.seqs else heads[reader.slug] + 1
            assert reader.seqs == list(range(first, heads[reader.slug] + 1)), f"{reader.slug}: not every event once"
            assert acked and acked[-1] <= heads[reader.slug]
            assert len(set(acked)) == len(acked), f"{reader.slug}: two acknowledged posts share a seq"
        for slug in slugs:  # no seq without its comment: every event is an acknowledged post
            assert sorted(posters[slug].acked.values()) == list(range(1, heads[slug] + 1)), slug
    finally:
        stop_posting.set()
        for task in tasks + posting:
            task.cancel()
        await asyncio.gather(*tasks, *posting, return_exceptions=True)
        for poster in posters.values():
            await poster.close()
        for server in instances:
            await asyncio.to_thread(server.stop)


@pytest.mark.timeout(120)
async def test_a_thread_whose_slot_moves_keeps_reaching_its_readers(tmp_path: Path, redis_cluster: RedisClusterServers):
    """The old owner of a moved slot unsubscribes the instance from the thread's channel, and
    nothing else says so: without following it, readers would wait for ever (a silent stall)."""
    redis_cluster.flushall()
    instances = [
        ServerProcess(
            tmp_path / f"instance{n}",
            REDIS_URL=redis_cluster.url,
            POST_RATE_PER_READER="100000/second",
            POST_RATE_PER_IP="100000/second",
        )
        for n in range(2)
    ]
    for server in instances:
        await asyncio.to_thread(server.start)
    readers = [Reader(instances, n) for n in range(2)]  # one on each instance
    tasks = [asyncio.create_task(reader.run()) for reader in readers]
    poster = Poster(instances)
    try:
        await asyncio.wait_for(asyncio.gather(*(r.connected.wait() for r in readers)), 20)
        before = [await poster.post(f"before the move {n}") for n in range(3)][-1]
        await asyncio.gather(*(r.wait_for(before["seq"], r.epoch or "", 10) for r in readers))

        key = "{bc:" + DEMO_SLUG + "}"
        owner = redis_cluster.primary_for(key)
        target = next(node for node in redis_cluster.primaries() if node is not owner)
        await asyncio.to_thread(redis_cluster.move_slot, key, target)
        assert redis_cluster.primary_for(key) is target

        moved_at = time.monotonic()
        after = [await poster.post(f"after the move {n}") for n in range(3)][-1]
        await asyncio.gather(*(r.wait_for(after["seq"], r.epoch or "", 10) for r in readers))
        print(f"readers had every post made after the move within {time.monotonic() - moved_at:.2f} s")
        for reader in readers:
            assert reader.violations == []
            assert reader.seqs == list(range(reader.seqs[0], after["seq"] + 1))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await poster.close()
        for server in instances:
            await asyncio.to_thread(server.stop)
