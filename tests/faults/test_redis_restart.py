"""Right after Redis restarts, what /readyz says and what a post gets agree."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx2 as httpx

from ..redis_server import RedisServer
from ..servers import DEMO_SLUG


async def ready(client: httpx.AsyncClient, url: str, timeout: float = 20.0) -> None:
    """/readyz has no event to wait on: ask it until it says 200."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (await client.get(url + "/readyz")).status_code != 200:
        assert loop.time() < end, f"{url} never became ready"
        await asyncio.sleep(0.05)


async def test_once_ready_after_a_redis_restart_the_first_post_on_each_instance_is_stored(tmp_path: Path, start_server):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        instances = [start_server(REDIS_URL=redis.url) for _ in range(2)]
        async with httpx.AsyncClient(timeout=10) as client:

            async def post(server, body: str) -> httpx.Response:
                return await client.post(
                    f"{server.url}/api/articles/{DEMO_SLUG}/comments", json={"name": "Ann", "body": body}
                )

            for n, server in enumerate(instances):  # every pool (commands, rate limits) has connections
                assert (await post(server, f"before {n}")).status_code == 201
                assert (await client.get(f"{server.url}/api/articles/{DEMO_SLUG}/comments")).status_code == 200
            await asyncio.to_thread(redis.restart)
            for server in instances:
                await ready(client, server.url)
            for n, server in enumerate(instances):
                response = await post(server, f"after {n}")
                assert response.status_code == 201, response.text
    finally:
        redis.stop()
