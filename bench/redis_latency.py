"""Post-to-delivery latency across instances, and convergence after a Redis restart.

Two instances of the product share one redis-server (AOF, appendfsync everysec). A reader on
each instance; a poster socket on each instance posts in turn, each body stamped with
time.monotonic_ns() (one machine, one clock). Latency is measured at both readers, so every
post is seen once on its own instance and once on the other.
Then Redis is restarted while the readers stay connected: convergence is the time from Redis
answering again to both readers having the first comment posted after it.
Run: make bench-redis   (not part of make test)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402

from tests.redis_server import RedisServer  # noqa: E402
from tests.servers import DEMO_SLUG, ServerProcess  # noqa: E402

POSTS = 3000
RATE = 200  # posts per second, alternating instances


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def read(url: str, instance: int, latencies: dict, done: asyncio.Event, expect: int) -> None:
    seen = 0
    async with connect(url, ping_interval=None, max_queue=None) as ws:
        async for raw in ws:
            now = time.monotonic_ns()
            frame = json.loads(raw)
            if frame["type"] != "comment":
                continue
            body = frame["comment"]["body"]
            if not body.startswith("t="):
                continue
            stamp, origin = body[2:].split(" from ")
            kind = "same instance" if int(origin) == instance else "cross instance"
            latencies[kind].append((now - int(stamp)) / 1e6)
            seen += 1
            if seen == expect:
                done.set()
                return


async def measure_latency(servers: list[ServerProcess]) -> dict:
    latencies = {"same instance": [], "cross instance": []}
    dones = [asyncio.Event() for _ in servers]
    readers = [
        asyncio.create_task(read(f"{s.ws_url}/articles/{DEMO_SLUG}/live", n, latencies, dones[n], POSTS))
        for n, s in enumerate(servers)
    ]
    await asyncio.sleep(0.5)  # the readers' welcome: nothing in the protocol to await from here
    posters = [await connect(f"{s.ws_url}/articles/{DEMO_SLUG}/live", ping_interval=None) for s in servers]
    start = time.monotonic()
    for n in range(POSTS):
        origin = n % len(servers)
        await posters[origin].send(
            json.dumps(
                {"type": "post", "ref": f"p{n}", "name": "Bench", "body": f"t={time.monotonic_ns()} from {origin}"}
            )
        )
        await asyncio.sleep(max(0.0, start + (n + 1) / RATE - time.monotonic()))
    await asyncio.wait_for(asyncio.gather(*(d.wait() for d in dones)), 60)
    for p in posters:
        await p.close()
    await asyncio.gather(*readers)
    return latencies


async def measure_convergence(servers: list[ServerProcess], redis: RedisServer) -> float:
    got = [asyncio.Event() for _ in servers]

    async def watch(n: int, server: ServerProcess) -> None:
        since = None
        while not got[n].is_set():
            query = f"?since={since}" if since is not None else ""
            try:
                async with connect(f"{server.ws_url}/articles/{DEMO_SLUG}/live{query}", ping_interval=None) as ws:
                    async for raw in ws:
                        frame = json.loads(raw)
                        since = frame.get("seq", since)
                        if frame["type"] == "comment" and frame["comment"]["body"] == "after the restart":
                            got[n].set()
                            return
            except Exception:
                await asyncio.sleep(0.05)

    watchers = [asyncio.create_task(watch(n, s)) for n, s in enumerate(servers)]
    await asyncio.sleep(0.5)
    redis.kill()
    await asyncio.sleep(1.0)  # Redis stays down for a second
    await asyncio.to_thread(redis.start)
    back = time.monotonic()
    import httpx2 as httpx

    async with httpx.AsyncClient() as client:
        while True:
            r = await client.post(
                f"{servers[0].url}/api/articles/{DEMO_SLUG}/comments",
                json={"name": "Bench", "body": "after the restart", "ref": "restart"},
            )
            if r.status_code in (200, 201):
                break
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(g.wait() for g in got)), 30)
    elapsed = time.monotonic() - back
    await asyncio.gather(*watchers)
    return elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis", appendfsync=sys.argv[1] if len(sys.argv) > 1 else "everysec")
        redis.start()
        env = {"REDIS_URL": redis.url, "POST_RATE_PER_READER": "100000/second", "POST_RATE_PER_IP": "100000/second"}
        servers = [ServerProcess(Path(tmp) / f"i{n}", **env).start() for n in range(2)]
        try:
            latencies = await measure_latency(servers)
            print(f"{POSTS} posts at {RATE}/s over 2 instances sharing Redis")
            print(f"{'':16} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
            for kind, values in latencies.items():
                print(
                    f"{kind:16} {len(values):>6} {statistics.median(values):>8.2f} {pct(values, 0.99):>8.2f} "
                    f"{max(values):>8.2f}"
                )
            print(
                f"convergence after a Redis restart: {await measure_convergence(servers, redis):.2f} s "
                "from Redis answering to both instances' readers having the next comment"
            )
        finally:
            for s in servers:
                s.stop()
            redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
