"""A post's Redis round trips: each one before the post script delays every reader of the
post, and under load they were half of the fan-out's p99 (twelve per post, nine of them
checks). They are counted here, at the socket, so that a new check cannot add its own."""

from __future__ import annotations

import dataclasses

import pytest
from redis.asyncio.connection import AbstractConnection
from starlette.testclient import TestClient

from server.app import create_app
from server.settings import Settings

from .redis_server import RedisServer
from .servers import DEMO_SLUG

# Before the script: the post's earlier copy by its ref and the records it is checked against
# (both at once), the rate limits, the repeat check. After it: the reader's history, the desk.
MOST_BEFORE_THE_SCRIPT = 4
MOST_IN_ALL = 7


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write to a Redis socket (a command, or a whole pipeline): one per round trip,
    leaving out the heartbeats that each instance sends itself every half second."""
    writes: list[bytes] = []
    send = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: object, check_health: bool = True) -> None:
        parts = [command] if isinstance(command, (bytes, str, memoryview)) else list(command)  # type: ignore[call-overload]
        packed = b"".join(bytes(p) if not isinstance(p, str) else p.encode() for p in parts)
        if b"bc:hb:" not in packed:
            writes.append(packed)
        await send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return writes


def test_a_post_costs_a_few_redis_round_trips(settings: Settings, redis_server: RedisServer, sent: list[bytes]):
    redis_server.client().flushall()
    on_redis = dataclasses.replace(settings, redis_url=redis_server.url)
    with TestClient(create_app(on_redis), base_url="http://testserver") as client:

        def post(n: int) -> None:
            body = {"name": "Counted", "body": f"post number {n}", "ref": f"ref-{n}"}
            response = client.post(f"/api/articles/{DEMO_SLUG}/comments", json=body)
            assert response.status_code == 201, response.text

        post(0)  # loads the scripts into Redis
        for n in (1, 2):
            sent.clear()
            post(n)
            scripts = [i for i, packed in enumerate(sent) if b"EVALSHA" in packed and b":log" in packed]
            assert len(scripts) == 1, sent
            before = scripts[0]
            print(f"post {n}: {before} round trip(s) before the post script, {len(sent)} in all")
            assert before <= MOST_BEFORE_THE_SCRIPT, sent[:before]
            assert len(sent) <= MOST_IN_ALL, sent
