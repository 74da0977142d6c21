"""One Redis against a 3-primary Redis Cluster (3 replicas), side by side in one run.

For each of 1 Redis and the cluster, with 2 and then 4 instances (one worker each):
- fan-out: FANOUT_THREADS threads, READERS_PER_THREAD readers on each (spread over the
  instances), one closed-loop poster per thread: deliveries/s at the readers, post-to-delivery
  p50/p99, and the Redis CPU each primary used (INFO cpu, per second of the run);
- posts/s across 1,000 threads (one closed-loop poster on each, a reader on each).
Then the failover drill, on the cluster with 2 instances: posters and readers on six threads
over the three shards, the primary of two of them SIGKILLed: the longest silence a reader of
those threads saw, the events lost (must be 0), and the time from the kill until every reader
holds every event.
Bodies carry time.monotonic_ns() (one machine, one clock). The bench client shares the
machine's cores with the servers and the Redis nodes: compare rows with each other.
Run: make bench-cluster   (not part of make test; a few minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from websockets.asyncio.client import ClientConnection  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from bench.store import open_socket, pct, post_loop, read_latencies, start_instances, workload, write_articles  # noqa: E402
from tests.redis_cluster import RedisClusterServers  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.servers import ServerProcess  # noqa: E402

THREADS = 1000
FANOUT_THREADS = 20
READERS_PER_THREAD = 10
DRILL_THREADS = 6


def primaries_of(url: str) -> list[redis.Redis]:
    if url.startswith("redis+cluster://"):
        clients = []
        for address in url.removeprefix("redis+cluster://").split(","):
            host, port = address.rsplit(":", 1)
            client = redis.Redis(host=host, port=int(port))
            if client.info("replication")["role"] == "master":
                clients.append(client)
        return clients
    return [redis.Redis.from_url(url)]


def cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def fanout(servers: list[ServerProcess], slugs: list[str], url: str, seconds: float) -> dict:
    readers = [
        await open_socket(servers[(i + k) % len(servers)], slug)
        for i, slug in enumerate(slugs)
        for k in range(READERS_PER_THREAD)
    ]
    posters = [await open_socket(servers[i % len(servers)], slug) for i, slug in enumerate(slugs)]
    stop, acked, latencies = asyncio.Event(), [0], []
    reading = [asyncio.create_task(read_latencies(ws, latencies, stop)) for ws in readers]
    posting = [asyncio.create_task(post_loop(ws, stop, acked, f"f{i}")) for i, ws in enumerate(posters)]
    await asyncio.sleep(1.0)  # warm-up
    primaries = primaries_of(url)
    cpu_before = [cpu_seconds(p) for p in primaries]
    first, started = len(latencies), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    measured = latencies[first:]
    cpu = [(cpu_seconds(p) - before) / elapsed * 100 for p, before in zip(primaries, cpu_before, strict=True)]
    stop.set()
    await asyncio.gather(*posting, *reading, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in [*readers, *posters]), return_exceptions=True)
    return {"deliveries/s": len(measured) / elapsed, "p50": pct(measured, 0.5), "p99": pct(measured, 0.99), "cpu": cpu}


async def run_setup(name: str, url: str, instances: int, slugs: list[str], content: Path, work: Path, seconds: float):
    servers = await asyncio.to_thread(start_instances, instances, work / f"{name}-{instances}", content, REDIS_URL=url)
    try:
        print(f"{name}, {instances} instances: fan-out …", flush=True)
        spread = await fanout(servers, slugs[:FANOUT_THREADS], url, seconds)
        print(f"{name}, {instances} instances: {len(slugs)} threads …", flush=True)
        many = await workload(servers, slugs, 1, seconds)
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)
    row = {"redis": name, "instances": instances, "threads": len(slugs), "fanout": spread, "many": many}
    print(table([row]).splitlines()[-1], flush=True)
    return row


def table(rows: list[dict]) -> str:
    threads = rows[0]["threads"] if rows else THREADS
    lines = [
        f"| Redis | instances | deliveries/s ({FANOUT_THREADS} threads × {READERS_PER_THREAD} readers) "
        f"| p50 / p99 ms | Redis CPU % per primary | posts/s, {threads} threads | p50 / p99 ms |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        spread, many = row["fanout"], row["many"]
        cpu = " / ".join(f"{c:.0f}" for c in spread["cpu"])
        lines.append(
            f"| {row['redis']} | {row['instances']} | {spread['deliveries/s']:.0f} | {spread['p50']:.1f} / "
            f"{spread['p99']:.1f} | {cpu} | {many['posts/s']:.0f} | {many['p50']:.1f} / {many['p99']:.1f} |"
        )
    return "\n".join(lines)


class DrillReader:
    """A reader that stamps the arrival of each event (the instance stays up: no reconnects)."""

    def __init__(self, ws: ClientConnection, slug: str) -> None:
        self.ws, self.slug = ws, slug
        self.arrivals: list[tuple[int, float]] = []

    async def run(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame["type"] == "comment":
                    self.arrivals.append((frame["seq"], time.monotonic()))
        except ConnectionClosed:
            pass

    def longest_silence(self, around: float) -> float:
        """The longest gap between two arrivals that spans `around` (the kill)."""
        times = [t for _seq, t in self.arrivals]
        return max((b - a for a, b in itertools.pairwise(times) if a <= around <= b), default=0.0)


async def failover_drill(cluster: RedisClusterServers, content: Path, slugs: list[str], work: Path) -> dict:
    chosen: list[str] = []  # two threads on each primary
    by_primary: dict[int, int] = {}
    for slug in slugs:
        port = cluster.primary_for("{bc:" + slug + "}").port
        if by_primary.get(port, 0) < 2:
            by_primary[port] = by_primary.get(port, 0) + 1
            chosen.append(slug)
        if len(chosen) == DRILL_THREADS:
            break
    servers = await asyncio.to_thread(start_instances, 2, work / "drill", content, REDIS_URL=cluster.url)
    try:
        readers = [
            DrillReader(await open_socket(servers[k % 2], slug), slug)
            for slug in chosen
            for k in range(READERS_PER_THREAD)
        ]
        posters = [await open_socket(servers[i % 2], slug) for i, slug in enumerate(chosen)]
        stop, acked = asyncio.Event(), [0]
        reading = [asyncio.create_task(r.run()) for r in readers]
        posting = [asyncio.create_task(post_loop(ws, stop, acked, f"d{i}")) for i, ws in enumerate(posters)]
        await asyncio.sleep(2.0)
        victim = cluster.primary_for("{bc:" + chosen[0] + "}")
        victims = {slug for slug in chosen if cluster.primary_for("{bc:" + slug + "}") is victim}
        killed_at = time.monotonic()
        await asyncio.to_thread(victim.kill)
        await asyncio.to_thread(cluster.wait_for_failover, victim)
        promoted = time.monotonic() - killed_at
        await asyncio.sleep(3.0)  # posts flow on the new primary
        stop.set()
        await asyncio.gather(*posting, return_exceptions=True)
        heads = {}
        for slug in chosen:
            with redis.Redis(port=cluster.primary_for("{bc:" + slug + "}").port) as client:
                heads[slug] = int(client.hget("{bc:" + slug + "}:meta", "seq"))
        deadline = time.monotonic() + 30
        while any(max((s for s, _t in r.arrivals), default=0) < heads[r.slug] for r in readers):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        converged = max(t for r in readers for _s, t in r.arrivals) - killed_at
        lost = sum(len(set(range(r.arrivals[0][0], heads[r.slug] + 1)) - {s for s, _t in r.arrivals}) for r in readers)
        doubled = sum(len(r.arrivals) - len({s for s, _t in r.arrivals}) for r in readers)
        silence = max(r.longest_silence(killed_at) for r in readers if r.slug in victims)
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
        await asyncio.gather(*(r.ws.close() for r in readers), *(ws.close() for ws in posters), return_exceptions=True)
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)
    return {
        "promoted_s": promoted,
        "longest_silence_s": silence,
        "lost": lost,
        "doubled": doubled,
        "converged_s": converged,
        "posts": acked[0],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per workload")
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        content = work / "content"
        slugs = write_articles(content, args.threads)
        single = RedisServer(work / "redis", appendfsync=None).start()
        cluster = RedisClusterServers(work / "cluster").start()
        try:
            for instances in (2, 4):
                for name, url, flush in (
                    ("1 Redis", single.url, lambda: single.client().flushall()),
                    ("cluster, 3 primaries", cluster.url, cluster.flushall),
                ):
                    flush()
                    rows.append(await run_setup(name, url, instances, slugs, content, work, args.seconds))
            cluster.flushall()
            print("failover drill …", flush=True)
            drill = await failover_drill(cluster, content, slugs, work)
        finally:
            single.stop()
            cluster.stop()
    print()
    print(table(rows))
    print()
    print(
        f"failover drill (2 instances, {DRILL_THREADS} threads × {READERS_PER_THREAD} readers, "
        f"{drill['posts']} posts): replica promoted {drill['promoted_s']:.1f} s after the kill; longest silence "
        f"on the failed shard's threads {drill['longest_silence_s']:.1f} s; events lost {drill['lost']}, "
        f"doubled {drill['doubled']}; every reader had every event {drill['converged_s']:.1f} s after the kill"
    )
    print(json.dumps({"rows": rows, "drill": drill}))


if __name__ == "__main__":
    asyncio.run(main())
