"""Threads open, close and hide over real WebSockets (a real `python -m server serve`): the
`closed` and `opened` frames live and replayed for `since`, posts on the socket refused with
`closed`, and readers of a hidden thread let go while moderators stay."""

from __future__ import annotations

import asyncio

import pytest

from server.protocol import CLOSE_THREAD_HIDDEN

from .servers import DEMO_SLUG, ServerProcess
from .test_live import collect, http, next_frame, post, reader, reader_session
from .test_tokens import bearer
from .visitors import PASSWORD

pytestmark = pytest.mark.timeout(60)


def api_token(server: ServerProcess) -> str:
    created = server.command("create-token", "cms", "--scope", "articles:write")
    return created.stdout.strip().splitlines()[-1]


async def set_state(server: ServerProcess, token: str, action: str) -> dict:
    async with http(server) as client:
        answer = await client.post(f"/api/articles/{DEMO_SLUG}/{action}", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        return answer.json()


async def test_a_live_reader_sees_the_thread_close_and_reopen_and_its_post_in_between_is_refused(
    server: ServerProcess,
) -> None:
    token = api_token(server)
    async with reader(server) as (ws, welcome):
        assert welcome["state"] == "open"
        closed = await set_state(server, token, "close")
        frame = await next_frame(ws, "closed")
        assert frame == {"type": "closed", "seq": welcome["seq"] + 1, "at": closed["at"]}  # no moderator name

        ref = await post(ws, "Written while it closed")
        refused = await next_frame(ws, "error")
        assert (refused["code"], refused["ref"]) == ("closed", ref)
        assert "closed" in refused["message"]

        await set_state(server, token, "open")
        assert (await next_frame(ws, "opened"))["seq"] == welcome["seq"] + 2
        ref = await post(ws, "Posted once it reopened")  # the same socket: it stayed open
        frames = await collect(ws, lambda fs: any(f["type"] == "ack" for f in fs))
        assert [f["ref"] for f in frames if f["type"] == "ack"] == [ref]
        assert [f["comment"]["body"] for f in frames if f["type"] == "comment"] == ["Posted once it reopened"]


async def test_a_reader_reconnecting_with_since_across_a_close_gets_the_closed_frame(server: ServerProcess) -> None:
    """From the store's log (nobody else was reading), and from the Hub's tail in memory
    (another reader kept the thread's subscription): the same frame either way."""
    token = api_token(server)
    async with reader(server) as (_ws, welcome):
        since = welcome["seq"]
    closed = await set_state(server, token, "close")  # while the reader was away
    async with reader(server, since=since) as (ws, again):
        assert (again["seq"], again["state"]) == (since + 1, "closed")
        assert await next_frame(ws, "closed") == {"type": "closed", "seq": since + 1, "at": closed["at"]}

        opened = await set_state(server, token, "open")  # ws stays: the Hub keeps the thread's tail
        assert (await next_frame(ws, "opened"))["seq"] == since + 2
        async with reader(server, since=since) as (back, welcome_back):
            assert (welcome_back["seq"], welcome_back["state"]) == (since + 2, "open")
            assert await next_frame(back, "closed") == {"type": "closed", "seq": since + 1, "at": closed["at"]}
            assert await next_frame(back, "opened") == {"type": "opened", "seq": since + 2, "at": opened["at"]}


async def test_a_post_over_http_to_a_closed_thread_is_refused_and_stores_nothing(server: ServerProcess) -> None:
    token = api_token(server)
    await set_state(server, token, "close")
    async with reader_session(server) as (client, _cookie, csrf):
        before = (await client.get(f"/api/articles/{DEMO_SLUG}/comments")).json()
        answer = await client.post(
            f"/api/articles/{DEMO_SLUG}/comments",
            json={"name": "Reader", "body": "Too late"},
            headers={"X-CSRF-Token": csrf},
        )
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "closed"
        after = (await client.get(f"/api/articles/{DEMO_SLUG}/comments")).json()
    assert after["seq"] == before["seq"] and after["comments"] == before["comments"]


async def moderator_cookie(server: ServerProcess) -> str:
    server.command("create-moderator", "alice", stdin=PASSWORD + "\n")
    async with reader_session(server) as (client, _cookie, csrf):
        answer = await client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf})
        assert answer.status_code == 303, answer.text
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


async def test_readers_of_a_hidden_thread_are_let_go_and_moderators_stay(server: ServerProcess) -> None:
    token = api_token(server)
    cookie = await moderator_cookie(server)
    async with reader(server) as (ws, welcome), reader(server, cookie=cookie) as (moderator, _):
        await set_state(server, token, "hide")
        hidden = await next_frame(ws, "hidden")
        assert hidden["seq"] == welcome["seq"] + 1 and "by" not in hidden
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == CLOSE_THREAD_HIDDEN
        assert (await next_frame(moderator, "hidden"))["by"] == "api:cms"
        await set_state(server, token, "close")  # the moderator's socket goes on
        assert (await next_frame(moderator, "closed"))["seq"] == welcome["seq"] + 2
        await set_state(server, token, "hide")
    # Coming back, with or without since: the welcome says why, and the socket closes.
    for since in (None, welcome["seq"]):
        async with reader(server, since=since) as (ws, again):
            assert again["state"] == "hidden"
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == CLOSE_THREAD_HIDDEN
