"""Votes and edits over real WebSockets (real `python -m server serve` processes): vote counts
reach readers on every instance coalesced (a burst is a few `votes` frames, no seq), and
`edited` / `deleted` are sequenced events, live and replayed for `since`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import httpx2 as httpx
import pytest

from server.votes import VOTES_INTERVAL

from .servers import DEMO_SLUG, ServerProcess
from .test_live import CSRF_META, http, next_frame, reader

pytestmark = pytest.mark.timeout(90)

API = f"/api/articles/{DEMO_SLUG}/comments"
MANY = {"VOTE_RATE_PER_READER": "1000/second", "VOTE_RATE_PER_IP": "1000/second", "VOTE_FLAG_PER_IP": "1000/second"}


@contextlib.asynccontextmanager
async def session(server: ServerProcess) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A reader's browser session: its client (with the reader cookie) and the CSRF header."""
    async with http(server) as client:
        page = await client.get(f"/articles/{DEMO_SLUG}")
        yield client, {"X-CSRF-Token": CSRF_META.search(page.text).group(1)}


async def write(client: httpx.AsyncClient, csrf: dict[str, str], body: str) -> dict:
    answer = await client.post(API, json={"name": "Ann", "body": body}, headers=csrf)
    assert answer.status_code == 201, answer.text
    return answer.json()["comment"]


async def test_a_burst_of_votes_on_two_instances_converges_everywhere_in_a_few_frames(
    start_server, redis_server
) -> None:
    redis_server.client().flushall()
    a, b = start_server(REDIS_URL=redis_server.url, **MANY), start_server(REDIS_URL=redis_server.url, **MANY)
    voters = 24
    async with session(a) as (author, author_csrf):
        comment = await write(author, author_csrf, "Worth recommending")
    async with reader(b) as (watcher, welcome), reader(a) as (voter_socket, _):
        sessions = [session(a if n % 2 else b) for n in range(voters - 1)]
        clients = [await s.__aenter__() for s in sessions]
        try:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(c.post(f"/api/comments/{comment['id']}/vote", json={"up": True}, headers=h) for c, h in clients)
            )
            assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
            await voter_socket.send(json.dumps({"type": "vote", "id": comment["id"], "up": True}))
            last_vote = time.monotonic()
            frames = []
            while not frames or frames[-1]["counts"].get(comment["id"]) != voters:
                frame = await next_frame(watcher, "votes", timeout=5)
                assert "seq" not in frame
                frames.append(frame)
            converged = time.monotonic()
        finally:
            for s in sessions:
                await s.__aexit__(None, None, None)
        own = await next_frame(voter_socket, "votes")  # the socket's own answer (then the coalesced ones)
        assert own["counts"][comment["id"]] >= 1
    took, burst = converged - last_vote, last_vote - started
    print(
        f"\n{voters} votes over {burst:.2f} s on two instances: {len(frames)} votes frame(s) on the other;"
        f" final count there {took * 1000:.0f} ms after the last vote"
    )
    assert took < 2.0
    assert len(frames) <= (converged - started) / VOTES_INTERVAL + 2  # coalesced, not one per vote
    async with http(b) as client:
        listed = (await client.get(API)).json()
    assert listed["seq"] == welcome["seq"]  # no event in the log
    assert next(c for c in listed["comments"] if c["id"] == comment["id"])["votes"] == voters


async def test_edits_and_deletions_reach_readers_live_and_after_a_reconnect(server: ServerProcess) -> None:
    async with session(server) as (author, csrf):
        comment = await write(author, csrf, "Frist!")
        async with reader(server) as (ws, welcome):
            edited = await author.patch(f"/api/comments/{comment['id']}", json={"body": "First!"}, headers=csrf)
            assert edited.status_code == 200, edited.text
            frame = await next_frame(ws, "edited")
            assert frame["seq"] == edited.json()["seq"] == welcome["seq"] + 1
            assert (frame["comment"]["body"], frame["comment"]["html"]) == ("First!", "<p>First!</p>")
            assert frame["comment"]["edited_at"] and "reader_id" not in frame["comment"]
            deleted = await author.delete(f"/api/comments/{comment['id']}", headers=csrf)
            assert deleted.status_code == 200, deleted.text
            assert await next_frame(ws, "deleted") == {
                "type": "deleted",
                "seq": welcome["seq"] + 2,
                "id": comment["id"],
            }
        cookie = "; ".join(f"{k}={v}" for k, v in author.cookies.items())
        async with reader(server, cookie=cookie) as (own_socket, _):
            await own_socket.send(json.dumps({"type": "vote", "id": comment["id"], "up": True}))
            refused = await next_frame(own_socket, "error")
            assert refused["code"] == "forbidden"  # its own comment
            await own_socket.send(json.dumps({"type": "vote", "id": comment["id"], "up": "yes"}))
            assert (await next_frame(own_socket, "error"))["code"] == "invalid_message"
        async with reader(server, since=welcome["seq"], epoch=welcome["epoch"]) as (again, _):
            assert (await next_frame(again, "edited"))["comment"]["body"] == "First!"
            assert (await next_frame(again, "deleted"))["id"] == comment["id"]
