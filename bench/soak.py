"""The soak run: `make soak` (not part of make test).

Ten minutes (SOAK_MINUTES), 1,000 readers (SOAK_READERS) over two instances sharing one Redis,
a post every 100 ms alternating between instances, Redis restarted twice along the way. It
passes when the instances' memory grew less than 10 % after warm-up, no subscription or
connection is left once the readers are gone, and every reader got every event exactly once,
in order (the readers are the fault tests' own: they reconnect with since like live.js).
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx2 as httpx  # noqa: E402

from tests.faults.cluster import Poster, Reader  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.servers import DEMO_SLUG, ServerProcess  # noqa: E402

MINUTES = float(os.environ.get("SOAK_MINUTES", "10"))
READERS = int(os.environ.get("SOAK_READERS", "1000"))
POST_EVERY = 0.1
WARM_UP = min(60.0, MINUTES * 60 / 5)


async def metrics(client: httpx.AsyncClient, server: ServerProcess) -> dict[str, float]:
    text = (await client.get(server.url + "/metrics")).text
    return {name: float(value) for name, value in re.findall(r"^(\w+) (\S+)$", text, re.M)}


async def soak() -> list[str]:
    failures: list[str] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis", appendfsync="everysec").start()
        env = {
            "REDIS_URL": redis.url,
            "MAX_CONNECTIONS_PER_IP": "100000",
            "POST_RATE_PER_READER": "100000/second",
            "POST_RATE_PER_IP": "100000/second",
        }
        servers = [ServerProcess(Path(tmp) / f"i{n}", **env).start() for n in range(2)]
        poster = Poster(servers)
        readers = [Reader(servers, n) for n in range(READERS)]
        tasks = [asyncio.create_task(r.run()) for r in readers]
        client = httpx.AsyncClient(timeout=10)
        try:
            await asyncio.wait_for(asyncio.gather(*(r.connected.wait() for r in readers)), 120)
            print(f"{READERS} readers connected; posting every {POST_EVERY * 1000:.0f} ms for {MINUTES:g} min")
            start = time.monotonic()
            end = start + MINUTES * 60
            restarts = [start + MINUTES * 60 / 3, start + MINUTES * 60 * 2 / 3]
            baseline = None
            posts = 0
            next_post = start
            while time.monotonic() < end:
                if baseline is None and time.monotonic() - start > WARM_UP:
                    baseline = [(await metrics(client, s))["process_resident_memory_bytes"] for s in servers]
                if restarts and time.monotonic() > restarts[0]:
                    restarts.pop(0)
                    print(f"{time.monotonic() - start:6.0f} s: restarting Redis")
                    redis.restart()
                await poster.post(f"soak {posts}")
                posts += 1
                next_post += POST_EVERY  # on a fixed beat, however long a post took
                await asyncio.sleep(max(0.0, next_post - time.monotonic()))
            final = await poster.post("final")
            epoch = (await client.get(f"{servers[0].url}/api/articles/{DEMO_SLUG}/comments")).json()["epoch"]
            await asyncio.wait_for(asyncio.gather(*(r.wait_for(final["seq"], epoch, 120) for r in readers)), 150)
            after = [(await metrics(client, s))["process_resident_memory_bytes"] for s in servers]
            violations = sum(len(r.violations) for r in readers)
            growth = max(a / b - 1 for a, b in zip(after, baseline or after, strict=True))
            print(f"posts: {posts + 1} acknowledged ({poster.refused} refusals retried while Redis was away)")
            print(f"readers: {READERS}, every one at seq {final['seq']}; promise violations: {violations}")
            print(
                "memory after warm-up: "
                + ", ".join(
                    f"{b / 2**20:.0f} -> {a / 2**20:.0f} MiB" for b, a in zip(baseline or after, after, strict=True)
                )
                + f" (largest growth {growth * 100:.1f} %)"
            )
            if violations:
                failures.append(f"{violations} seqs doubled or skipped")
            if growth >= 0.10:
                failures.append(f"memory grew {growth * 100:.1f} %")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        deadline = time.monotonic() + 30
        while True:  # the instances clean up on their own time; ask until they have
            states = [await metrics(client, s) for s in servers]
            subscribers = redis.client().pubsub_numsub("{bc:" + DEMO_SLUG + "}:events")[0][1]
            if subscribers == 0 and all(m["backchannel_live_connections"] == 0 for m in states):
                print("after the readers left: no live connection, no subscription left")
                break
            if time.monotonic() > deadline:
                failures.append(
                    f"left behind: {subscribers} subscriptions, "
                    f"{[m['backchannel_live_connections'] for m in states]} connections"
                )
                break
            await asyncio.sleep(0.5)
        await client.aclose()
        await poster.close()
        for server in servers:
            server.stop()
        redis.stop()
    return failures


if __name__ == "__main__":
    problems = asyncio.run(soak())
    print("SOAK " + ("FAILED: " + "; ".join(problems) if problems else "PASSED"))
    sys.exit(1 if problems else 0)
