"""What the instances share through Redis: who is reading, and how fast a reader may post."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx2 as httpx
import pytest
from websockets.asyncio.client import connect

from ..redis_server import RedisServer
from ..servers import DEMO_SLUG, ServerProcess


@pytest.fixture
def redis(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def instances(tmp_path: Path, redis: RedisServer, request):
    env = getattr(request, "param", {})
    servers = [ServerProcess(tmp_path / f"instance{n}", REDIS_URL=redis.url, **env) for n in range(2)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def live(server: ServerProcess):
    return connect(f"{server.ws_url}/articles/{DEMO_SLUG}/live", ping_interval=None)


async def presence(ws, readers: int, timeout: float = 20.0) -> None:
    async def seen() -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "presence" and frame["readers"] == readers:
                return

    await asyncio.wait_for(seen(), timeout)


async def test_presence_counts_readers_on_every_instance_and_forgets_a_dead_one(instances):
    a, b = instances
    async with live(b) as watcher, live(a), live(a):
        await presence(watcher, 3)
        a.stop(signal.SIGKILL)  # its readers vanish without a goodbye
        await presence(watcher, 1)  # within PRESENCE_TTL (6 s) plus a refresh


@pytest.mark.parametrize("instances", [{"POST_RATE_PER_IP": "4/minute"}], indirect=True)
async def test_rate_limits_are_shared_by_all_instances(instances):
    async with httpx.AsyncClient() as client:
        codes = []
        for n in range(6):
            server = instances[n % 2]
            response = await client.post(
                f"{server.url}/api/articles/{DEMO_SLUG}/comments", json={"name": "Flood", "body": f"post {n}"}
            )
            codes.append(response.status_code)
        assert codes == [201, 201, 201, 201, 429, 429]
        assert response.json()["error"]["code"] == "rate_limited" and int(response.headers["retry-after"]) > 0


async def test_with_redis_down_a_socket_post_gets_unavailable_and_the_reader_stays(instances, redis):
    async with live(instances[0]) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        redis.kill()
        await ws.send(json.dumps({"type": "post", "ref": "r1", "name": "Ann", "body": "while Redis is away"}))

        async def refusal() -> dict:
            async for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "error":
                    return frame

        error = await asyncio.wait_for(refusal(), 10)
        assert error["code"] == "unavailable" and error["ref"] == "r1"
        redis.start()
        # The same socket, never reconnected: the retry with the same ref is stored once.
        await ws.send(json.dumps({"type": "post", "ref": "r1", "name": "Ann", "body": "while Redis is away"}))

        async def stored() -> tuple[dict, dict]:
            ack = comment = None
            async for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "error":  # Redis may still be coming back: retry, same ref
                    await asyncio.sleep(0.2)
                    await ws.send(
                        json.dumps({"type": "post", "ref": "r1", "name": "Ann", "body": "while Redis is away"})
                    )
                ack = frame if frame["type"] == "ack" else ack
                comment = frame if frame["type"] == "comment" else comment
                if ack and comment:
                    return ack, comment

        ack, comment = await asyncio.wait_for(stored(), 20)
        assert ack["seq"] == comment["seq"] == 5 and comment["comment"]["body"] == "while Redis is away"
