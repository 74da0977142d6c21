"""Moderation across two instances sharing Redis: what a moderator does on A reaches B at once."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx2 as httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..redis_server import RedisServer
from ..servers import DEMO_SLUG, ServerProcess, server_command

PASSWORD = "correct horse battery"


@pytest.fixture
def cluster(tmp_path: Path):
    redis = RedisServer(tmp_path / "redis").start()
    servers = [ServerProcess(tmp_path / f"i{n}", REDIS_URL=redis.url).start() for n in range(2)]
    server_command("create-moderator", "alice", env={"REDIS_URL": redis.url}, stdin=PASSWORD + "\n")
    yield servers
    for server in servers:
        server.stop()
    redis.stop()


async def csrf(client: httpx.AsyncClient, url: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', (await client.get(url)).text).group(1)


async def logged_in(server: ServerProcess) -> tuple[httpx.AsyncClient, str]:
    client = httpx.AsyncClient()
    token = await csrf(client, server.url + "/login")
    response = await client.post(
        server.url + "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 303 and response.headers["location"] == "/moderation"
    return client, await csrf(client, server.url + "/moderation")  # the token changes at login


def cookie_header(client: httpx.AsyncClient) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in client.cookies.items())}


async def frame_of(ws, kind: str, timeout: float = 5.0) -> dict:
    async def find() -> dict:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == kind:
                return frame

    return await asyncio.wait_for(find(), timeout)


async def test_a_removal_on_one_instance_reaches_readers_and_desks_on_the_other(cluster):
    a, b = cluster
    moderator, token = await logged_in(a)
    comment = (await moderator.get(f"{a.url}/api/articles/{DEMO_SLUG}/comments")).json()["comments"][0]
    async with (
        connect(f"{b.ws_url}/articles/{DEMO_SLUG}/live") as reader,
        connect(f"{b.ws_url}/moderation/live", additional_headers=cookie_header(moderator)) as desk,
    ):
        assert (await frame_of(desk, "desk_welcome"))["moderator"] == "alice"  # the session works on B too
        await frame_of(reader, "welcome")
        loop = asyncio.get_running_loop()
        start = loop.time()
        response = await moderator.post(
            f"{a.url}/api/comments/{comment['id']}/remove", json={"reason": "abuse"}, headers={"X-CSRF-Token": token}
        )
        assert response.status_code == 200
        removed = await frame_of(reader, "removed")
        print(f"\nthe removal reached a reader on the other instance after {(loop.time() - start) * 1000:.0f} ms")
        assert removed == {"type": "removed", "seq": 5, "id": comment["id"]}
        action = (await frame_of(desk, "desk_action"))["action"]
        assert (action["action"], action["moderator"], action["comment_id"]) == ("remove", "alice", comment["id"])
    await moderator.aclose()


async def test_a_ban_on_one_instance_refuses_the_readers_next_post_on_every_instance(cluster):
    a, b = cluster
    moderator, token = await logged_in(a)
    async with httpx.AsyncClient() as troll:
        troll_token = await csrf(troll, f"{b.url}/articles/{DEMO_SLUG}")
        posted = await troll.post(
            f"{b.url}/api/articles/{DEMO_SLUG}/comments",
            json={"name": "T", "body": "spam"},
            headers={"X-CSRF-Token": troll_token},
        )
        comment_id = posted.json()["comment"]["id"]
        thread = (await moderator.get(f"{a.url}/api/articles/{DEMO_SLUG}/comments")).json()
        reader_id = next(c["reader_id"] for c in thread["comments"] if c["id"] == comment_id)
        assert (
            await moderator.post(
                f"{a.url}/api/readers/{reader_id}/ban", json={"reason": "spam"}, headers={"X-CSRF-Token": token}
            )
        ).status_code == 200
        for server in (a, b):
            refused = await troll.post(
                f"{server.url}/api/articles/{DEMO_SLUG}/comments",
                json={"name": "T", "body": "more"},
                headers={"X-CSRF-Token": troll_token},
            )
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"
    await moderator.aclose()


async def test_logout_on_one_instance_closes_the_moderators_sockets_on_the_other(cluster):
    a, b = cluster
    moderator, token = await logged_in(a)
    async with connect(f"{b.ws_url}/moderation/live", additional_headers=cookie_header(moderator)) as desk:
        await frame_of(desk, "desk_welcome")
        await moderator.post(f"{a.url}/logout", data={"csrf_token": token})
        with pytest.raises(ConnectionClosed):
            await frame_of(desk, "never")
        assert desk.close_code == 4003
    with pytest.raises(InvalidStatus) as refused:  # the copied cookie no longer opens a desk
        async with connect(f"{b.ws_url}/moderation/live", additional_headers=cookie_header(moderator)):
            pass
    assert refused.value.response.status_code == 403
    await moderator.aclose()


async def test_spam_rules_changed_on_one_instance_apply_on_the_other_at_once(cluster):
    a, b = cluster
    moderator, token = await logged_in(a)
    async with connect(f"{b.ws_url}/moderation/live", additional_headers=cookie_header(moderator)) as desk_on_b:
        await frame_of(desk_on_b, "desk_welcome")
        saved = await moderator.post(
            f"{a.url}/api/moderation/rules", json={"banned_words": ["casino"]}, headers={"X-CSRF-Token": token}
        )
        assert saved.status_code == 200
        await frame_of(desk_on_b, "desk_action")  # B has heard of the change: it came before this
    async with httpx.AsyncClient() as reader:
        refused = await reader.post(
            f"{b.url}/api/articles/{DEMO_SLUG}/comments", json={"name": "Ann", "body": "the casino is open"}
        )
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "rejected"
    await moderator.aclose()


@pytest.mark.parametrize("command", [["end-sessions", "Alice"], ["create-moderator", "alice"]])
async def test_end_sessions_or_a_password_reset_closes_every_session_of_the_moderator_everywhere(cluster, command):
    a, b = cluster
    (laptop, _), (phone, _) = await logged_in(a), await logged_in(b)
    async with (
        connect(f"{a.ws_url}/moderation/live", additional_headers=cookie_header(laptop)) as desk_a,
        connect(f"{b.ws_url}/moderation/live", additional_headers=cookie_header(phone)) as desk_b,
    ):
        for desk in (desk_a, desk_b):
            await frame_of(desk, "desk_welcome")
        done = server_command(*command, env={"REDIS_URL": a.env["REDIS_URL"]}, stdin="a brand new password\n")
        print(done.stdout.strip())
        for desk in (desk_a, desk_b):
            with pytest.raises(ConnectionClosed):
                await frame_of(desk, "never")
            assert desk.close_code == 4003
    for client, server in ((laptop, a), (phone, b), (laptop, b)):
        assert (await client.get(f"{server.url}/api/moderation/queue")).status_code == 401
    await laptop.aclose()
    await phone.aclose()


async def test_logins_and_reports_while_redis_is_down_are_503_not_500(tmp_path: Path):
    redis = RedisServer(tmp_path / "redis").start()
    server = ServerProcess(tmp_path / "i0", REDIS_URL=redis.url).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as visitor:
            token = await csrf(visitor, server.url + "/login")
            comment_id = (await visitor.get(f"/api/articles/{DEMO_SLUG}/comments")).json()["comments"][0]["id"]
            redis.kill()
            refused = await visitor.post(
                "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
            )
            assert refused.status_code == 503
            refused = await visitor.post(f"/api/comments/{comment_id}/report", json={}, headers={"X-CSRF-Token": token})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
        assert "Traceback" not in server.log()
    finally:
        server.stop()
        redis.stop()
