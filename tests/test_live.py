"""The live thread over real WebSockets: real uvicorn processes, real clients, no mocks.

Every test starts its own server (about 0.3 s) so that seqs, rate limits and presence are
its own. Waiting is always on frames with a deadline, never on a sleep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .servers import DEMO_SLUG, ServerProcess
from .wsframes import OP_TEXT, client_frame, handshake, server_messages

pytestmark = pytest.mark.timeout(60)

FAST = {"POST_RATE_PER_READER": "1000/second", "POST_RATE_PER_IP": "1000/second"}
SEED_NAMES = ["Markus Scholz", "Anya Petrova", "David Chen", "Claire Dubois"]
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


# --- helpers ---------------------------------------------------------------------------------


def live_url(server: ServerProcess, slug: str = DEMO_SLUG, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{server.ws_url}/articles/{slug}/live" + (f"?{query}" if query else "")


def ws_connect(url: str, **kwargs: Any) -> connect:
    kwargs.setdefault("proxy", None)  # never through an HTTP proxy from the environment
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("close_timeout", 2)
    return connect(url, **kwargs)


def http(server: ServerProcess, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=10, **kwargs)


async def next_frame(ws: ClientConnection, type: str | None = None, timeout: float = 5.0) -> dict:
    """The next frame, skipping `presence` unless it is the type asked for. A frame of another
    type than the one asked for fails the test: nothing unexpected may slip through."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            raw = await asyncio.wait_for(ws.recv(), max(remaining, 0.001))
        except TimeoutError:
            raise AssertionError(f"no {type or 'frame'} within {timeout} s") from None
        assert isinstance(raw, str), f"the server sent a binary frame: {raw[:80]!r}"
        frame = json.loads(raw)
        if frame["type"] == "presence" and type != "presence":
            continue
        if type is not None:
            assert frame["type"] == type, f"expected a {type} frame, got {frame}"
        return frame


async def collect(ws: ClientConnection, done: Callable[[list[dict]], bool], timeout: float = 5.0) -> list[dict]:
    """Non-presence frames, in order, until done(frames) holds."""
    frames: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"gave up after {timeout} s with {frames}")
        frames.append(await next_frame(ws, timeout=remaining))
    return frames


async def wait_presence(ws: ClientConnection, readers: int, timeout: float = 5.0) -> None:
    """Wait for a presence frame saying `readers`; other frames are ignored here."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"presence never reached readers={readers}")
        try:
            raw = await asyncio.wait_for(ws.recv(), remaining)
        except TimeoutError:
            continue
        frame = json.loads(raw)
        if frame["type"] == "presence" and frame["readers"] == readers:
            return


def post_frame(
    body: str, name: str = "Reader", ref: str | None = None, parent: str | None = None, about: str | None = None
) -> str:
    # ensure_ascii=False: what a browser sends (UTF-8), not six-byte \u escapes per code unit.
    return json.dumps(
        {"type": "post", "ref": ref, "body": body, "parent": parent, "name": name, "about": about}, ensure_ascii=False
    )


async def post(ws: ClientConnection, body: str, name: str = "Reader", **kwargs: Any) -> str:
    ref = kwargs.pop("ref", None) or uuid.uuid4().hex
    await ws.send(post_frame(body, name=name, ref=ref, **kwargs))
    return ref


@contextlib.asynccontextmanager
async def reader(
    server: ServerProcess,
    slug: str = DEMO_SLUG,
    *,
    since: Any = None,
    epoch: str | None = None,
    cookie: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[ClientConnection, dict]]:
    """A connected reader and its welcome frame (which must be the first frame)."""
    headers = {"Cookie": cookie} if cookie else None
    async with ws_connect(live_url(server, slug, since=since, epoch=epoch), additional_headers=headers, **kwargs) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["type"] == "welcome", first
        yield ws, first


@contextlib.asynccontextmanager
async def reader_session(server: ServerProcess) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    """A browser-like HTTP session: (client holding the reader cookie, cookie header, CSRF token)
    after a GET of the article page."""
    async with http(server) as client:
        page = await client.get(f"/articles/{DEMO_SLUG}")
        assert page.status_code == 200
        token = CSRF_META.search(page.text).group(1)
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        assert cookie.startswith("bc_reader="), cookie
        yield client, cookie, token


async def api_comments(server: ServerProcess) -> dict:
    async with http(server) as client:
        response = await client.get(f"/api/articles/{DEMO_SLUG}/comments")
        assert response.status_code == 200
        return response.json()


def comment_seqs(frames: list[dict]) -> list[int]:
    return [f["seq"] for f in frames if f["type"] == "comment"]


def bodies(frames: list[dict]) -> list[str]:
    return [f["comment"]["body"] for f in frames if f["type"] == "comment"]


# --- 1. two readers --------------------------------------------------------------------------


async def test_two_readers_see_each_others_posts_in_the_same_order(server: ServerProcess) -> None:
    """Two readers of one article both see every post, the same sequence for both, seqs
    following the welcome's head without gaps; each poster's ack names the comment it sees."""
    async with reader(server) as (a, welcome_a), reader(server) as (b, welcome_b):
        head = welcome_a["seq"]
        assert head == welcome_b["seq"] == 4  # the demo article's imported comments
        assert welcome_a["epoch"] == welcome_b["epoch"]
        refs_a = [await post(a, f"from A #{i}", name="Alice") for i in range(3)]
        refs_b = [await post(b, f"from B #{i}", name="Bob") for i in range(3)]

        def complete(frames: list[dict]) -> bool:
            return len(comment_seqs(frames)) == 6 and sum(f["type"] == "ack" for f in frames) == 3

        frames_a, frames_b = await asyncio.gather(collect(a, complete), collect(b, complete))

        comments_a = [f for f in frames_a if f["type"] == "comment"]
        comments_b = [f for f in frames_b if f["type"] == "comment"]
        assert comments_a == comments_b
        assert comment_seqs(comments_a) == list(range(head + 1, head + 7))
        assert sorted(bodies(comments_a)) == sorted(
            [f"from A #{i}" for i in range(3)] + [f"from B #{i}" for i in range(3)]
        )
        # each reader's own posts appear in the order it sent them
        assert [x for x in bodies(comments_a) if x.startswith("from A")] == [f"from A #{i}" for i in range(3)]
        assert [x for x in bodies(comments_a) if x.startswith("from B")] == [f"from B #{i}" for i in range(3)]
        by_id = {f["comment"]["id"]: f for f in comments_a}
        for frames, refs, name in ((frames_a, refs_a, "Alice"), (frames_b, refs_b, "Bob")):
            acks = [f for f in frames if f["type"] == "ack"]
            assert [ack["ref"] for ack in acks] == refs
            for ack in acks:
                event = by_id[ack["id"]]
                assert event["seq"] == ack["seq"]
                assert event["comment"]["author"]["name"] == name

        # a reply names its parent, for both readers
        parent_id = comments_a[0]["comment"]["id"]
        ref = await post(b, "a reply", name="Bob", parent=parent_id)
        reply_a = await next_frame(a, "comment")
        got_b = await collect(b, lambda fs: len(fs) == 2)
        assert reply_a["seq"] == head + 7 and reply_a["comment"]["parent"] == parent_id
        assert [f for f in got_b if f["type"] == "comment"] == [reply_a]
        assert [f["ref"] for f in got_b if f["type"] == "ack"] == [ref]


# --- 2. catch-up with since ------------------------------------------------------------------


async def test_reconnect_with_since_catches_up_on_everything_missed(server: ServerProcess) -> None:
    """A reader who was away reconnects with since=<last seq> and the welcome's epoch: it gets
    exactly the posts it missed (made over the socket, the JSON API and the HTML form), in
    order and once each, then the live ones."""
    async with reader_session(server) as (client, _cookie, token), reader(server) as (poster, welcome):
        epoch = welcome["epoch"]
        async with reader(server) as (away, _):
            await post(poster, "seen live", name="Poster")
            last = (await next_frame(away, "comment"))["seq"]
        await collect(poster, lambda fs: len(fs) == 2)  # its comment and its ack

        # while the reader is away: one post over the socket, one by the API, one by the form
        await post(poster, "missed: socket", name="Poster")
        await collect(poster, lambda fs: len(fs) == 2)
        response = await client.post(
            f"/api/articles/{DEMO_SLUG}/comments",
            headers={"X-CSRF-Token": token},
            json={"name": "Api", "body": "missed: api"},
        )
        assert response.status_code == 201, response.text
        response = await client.post(
            f"/articles/{DEMO_SLUG}/comments",
            data={"name": "Form", "about": "", "body": "missed: form", "parent": "", "csrf_token": token},
        )
        assert response.status_code == 303, response.text
        await collect(poster, lambda fs: len(fs) == 2)  # the API's and the form's comments

        async with reader(server, since=last, epoch=epoch) as (back, welcome_back):
            assert welcome_back["seq"] == last + 3
            missed = [await next_frame(back, "comment") for _ in range(3)]
            assert comment_seqs(missed) == [last + 1, last + 2, last + 3]
            assert bodies(missed) == ["missed: socket", "missed: api", "missed: form"]
            # then live, with nothing replayed twice in between
            await post(poster, "live again", name="Poster")
            live = await next_frame(back, "comment")
            assert (live["seq"], live["comment"]["body"]) == (last + 4, "live again")
            response = await client.post(
                f"/api/articles/{DEMO_SLUG}/comments",
                headers={"X-CSRF-Token": token},
                json={"name": "Api", "body": "sentinel"},
            )
            assert response.status_code == 201
            sentinel = await next_frame(back, "comment")
            assert (sentinel["seq"], sentinel["comment"]["body"]) == (last + 5, "sentinel")

        # since equal to the head: nothing to replay, the next event is the next live one
        async with reader(server, since=last + 5, epoch=epoch) as (current, welcome_current):
            assert welcome_current["seq"] == last + 5
            await post(poster, "after head", name="Poster")
            assert (await next_frame(current, "comment"))["seq"] == last + 6


async def test_reconnecting_during_a_stream_of_posts_misses_and_repeats_nothing(start_server) -> None:
    """A reader that keeps dropping and reconnecting with since while comments pour in still
    sees every seq exactly once, in order (the catch-up/live hand-over has no hole)."""
    server = start_server(**FAST)
    total = 60
    rng = random.Random(3)
    async with reader(server) as (poster, welcome):
        head, epoch = welcome["seq"], welcome["epoch"]

        async def pour() -> None:
            for i in range(total):
                await post(poster, f"stream {i}", name="Poster")
                if i % 5 == 4:  # keep the poster's own inbox drained
                    await collect(poster, lambda fs: sum(f["type"] == "ack" for f in fs) == 5, timeout=10)

        pouring = asyncio.create_task(pour())
        seen: list[int] = []
        last = head
        try:
            while last < head + total:
                async with reader(server, since=last, epoch=epoch) as (ws, _):
                    for _ in range(rng.randint(1, 7)):
                        if last == head + total:
                            break
                        frame = await next_frame(ws, "comment", timeout=10)
                        seen.append(frame["seq"])
                        last = frame["seq"]
            await pouring
        finally:
            pouring.cancel()
    assert seen == list(range(head + 1, head + total + 1))


# --- 3. reset --------------------------------------------------------------------------------


async def test_since_that_cannot_be_honoured_gets_reset(start_server) -> None:
    """`since` older than the kept history, ahead of the head, from another epoch, or not a
    number is answered welcome + reset (reload the snapshot), and live events follow."""
    server = start_server(HISTORY_SIZE="5", **FAST)
    async with reader(server) as (poster, welcome):
        epoch = welcome["epoch"]
        for i in range(7):
            await post(poster, f"filler {i}", name="Poster")
        await collect(poster, lambda fs: len(fs) == 14)
    head = welcome["seq"] + 7  # 11: the log keeps events 7..11

    # the oldest since the log can still serve: exactly the kept events
    async with reader(server, since=head - 5, epoch=epoch) as (ws, w):
        assert w["seq"] == head
        assert comment_seqs([await next_frame(ws, "comment") for _ in range(5)]) == list(range(head - 4, head + 1))

    cases = [
        {"since": head - 6, "epoch": epoch},  # older than the history kept
        {"since": 0, "epoch": epoch},
        {"since": 0},
        {"since": head + 1, "epoch": epoch},  # ahead of the head
        {"since": head + 1000},
        {"since": head - 1, "epoch": "0123456789abcdef"},  # another epoch of the thread
        {"since": "abc"},  # not a number
        {"since": "-1"},
        {"since": "1.5"},
        {"since": "0x3"},
        {"since": " 3"},
        {"since": "9" * 40},
        {"since": "\u00b2"},  # superscript two: str.isdigit() says yes
    ]
    failures = []
    for params in cases:
        try:
            async with reader(server, **params) as (ws, w):
                assert w["seq"] == head
                reset = await next_frame(ws)
                assert reset["type"] == "reset", reset
                assert reset.get("seq") == head and reset.get("epoch") == epoch
        except (AssertionError, ConnectionClosed) as exc:
            failures.append(f"{params}: {exc!r}")
    assert not failures, "\n".join(failures)

    # after a reset the connection carries on live
    async with reader(server, since="abc") as (ws, _), reader(server) as (poster, _):
        assert (await next_frame(ws))["type"] == "reset"
        await post(poster, "after reset", name="Poster")
        live = await next_frame(ws, "comment")
        assert (live["seq"], live["comment"]["body"]) == (head + 1, "after reset")


# --- 4. restart ------------------------------------------------------------------------------


async def test_restart_keeps_comments_and_seq_and_seeds_once(start_server, tmp_path) -> None:
    """A restart on the same DATA_DIR keeps every comment, the seq carries on (the next post is
    head+1), the article's four comments are imported once however often it starts, and a
    reader who was connected reconnects with since and catches up."""
    server = start_server(data_dir=tmp_path / "data")
    async with reader(server) as (ws, welcome):
        epoch = welcome["epoch"]
        for i in range(3):
            await post(ws, f"before restart {i}", name="Early")
        frames = await collect(ws, lambda fs: len(fs) == 6)
    last = max(comment_seqs(frames))
    assert last == 7
    before = await api_comments(server)
    assert before["seq"] == last and len(before["comments"]) == 7

    async with reader(server, since=last, epoch=epoch) as (ws, _):
        await asyncio.to_thread(server.restart)  # the loop keeps running: the client sees the close
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, closed.value  # service restart

    after = await api_comments(server)
    assert after["seq"] == last
    assert after["comments"] == before["comments"]

    async with reader(server, since=last, epoch=epoch) as (ws, welcome):
        assert welcome["epoch"] == epoch and welcome["seq"] == last
        async with http(server) as client:
            response = await client.post(
                f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Late", "body": "after restart"}
            )
        assert response.status_code == 201 and response.json()["seq"] == last + 1
        event = await next_frame(ws, "comment")
        assert (event["seq"], event["comment"]["body"]) == (last + 1, "after restart")

    server.restart()
    final = await api_comments(server)
    assert final["seq"] == last + 1
    names = [c["author"]["name"] for c in final["comments"]]
    assert names[:4] == SEED_NAMES
    assert sum(name in SEED_NAMES for name in names) == 4
    assert [c["id"] for c in final["comments"][:7]] == [c["id"] for c in before["comments"]]

    # the reader who left before the last post catches up after the second restart
    async with reader(server, since=last, epoch=epoch) as (ws, welcome):
        assert welcome["seq"] == last + 1
        assert (await next_frame(ws, "comment"))["comment"]["body"] == "after restart"


# --- 5. bad input ----------------------------------------------------------------------------


async def test_bad_frames_get_error_frames_and_the_connection_stays_open(server: ServerProcess) -> None:
    """Each malformed or refused post is answered with an error frame naming the problem; the
    socket stays usable and other readers see only the good posts, with names cleaned."""
    seed_id = (await api_comments(server))["comments"][0]["id"]
    async with reader(server) as (bad, welcome), reader(server) as (other, _):
        head = welcome["seq"]

        async def refused(frame: str | bytes, code: str, ref: str | None = None) -> dict:
            await bad.send(frame)
            error = await next_frame(bad, "error")
            assert error["code"] == code, (frame[:60], error)
            assert error.get("message")
            if ref is not None:
                assert error.get("ref") == ref
            return error

        await refused("{not json", "invalid_message")
        await refused(b'{"type": "post", "body": "binary", "name": "B"}', "invalid_message")
        await refused(json.dumps({"type": "subscribe", "ref": "x"}), "invalid_message")
        await refused(json.dumps({"body": "no type", "name": "N"}), "invalid_message")
        await refused(json.dumps(["post", "an array"]), "invalid_message")
        await refused(json.dumps("a string"), "invalid_message")
        await refused("42", "invalid_message")
        await refused(json.dumps({"type": "post", "body": 5, "name": "N"}), "invalid_message")
        await refused(post_frame("", ref="r-empty"), "empty", "r-empty")
        await refused(post_frame(" \n\t \u200b ", ref="r-blank"), "empty", "r-blank")
        await refused(post_frame("x" * 5001, ref="r-long"), "too_long", "r-long")
        await refused(post_frame("🇺🇦" * 5001, ref="r-long-emoji"), "too_long", "r-long-emoji")
        await refused(post_frame("hi", name="n" * 81, ref="r-name"), "too_long", "r-name")
        await refused(post_frame("hi", name="", ref="r-noname"), "empty", "r-noname")
        await refused(json.dumps({"type": "post", "ref": "r-missing", "body": "hi"}), "empty", "r-missing")
        await refused(post_frame("hi", name=" \u202e\u0000 ", ref="r-invisible"), "empty", "r-invisible")
        await refused(post_frame("hi", parent="000000000000", ref="r-parent"), "not_found", "r-parent")

        # good posts on the same socket still work
        flags = "🇺🇦" * 5000  # 5,000 characters a person sees (10,000 code points)
        await post(bad, flags, name="n" * 80, ref="r-flags")
        await post(bad, "Hello", name="Ad\u202emin\u0000", about="Ro\u2066le\u0007, Pl\u200bace", ref="r-ctrl")
        await post(bad, "reply", name="Replier", parent=seed_id, ref="r-reply")
        markup = "<script>alert(1)</script> & <b>bold</b> javascript:alert(1) https://example.com/a?b=1&c=2"
        await post(bad, markup, name="<img src=x onerror=alert(1)>", ref="r-markup")
        mine = await collect(bad, lambda fs: sum(f["type"] == "ack" for f in fs) == 4)
        assert [f["ref"] for f in mine if f["type"] == "ack"] == ["r-flags", "r-ctrl", "r-reply", "r-markup"]

        seen = [await next_frame(other, "comment") for _ in range(4)]
        assert comment_seqs(seen) == [head + 1, head + 2, head + 3, head + 4]
        assert seen[0]["comment"]["body"] == flags
        assert seen[1]["comment"]["author"] == {"name": "Admin", "about": "Role, Place"}
        assert seen[2]["comment"]["parent"] == seed_id
        # reader text arrives as typed in `body` and `author`, and inert in `html`
        shown = seen[3]["comment"]
        assert shown["body"] == markup and shown["author"]["name"] == "<img src=x onerror=alert(1)>"
        assert "<script" not in shown["html"] and "<b>" not in shown["html"] and 'href="javascript' not in shown["html"]
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in shown["html"]
        assert '<a href="https://example.com/a?b=1&amp;c=2" rel="nofollow ugc noopener"' in shown["html"]
        # and nothing else reached the other reader: the next thing it sees is the sentinel
        async with http(server) as client:
            response = await client.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "S", "body": "sentinel"})
        assert response.status_code == 201
        sentinel = await next_frame(other, "comment")
        assert (sentinel["seq"], sentinel["comment"]["body"]) == (head + 5, "sentinel")
        assert (await api_comments(server))["seq"] == head + 5


async def test_post_flood_is_rate_limited_and_the_socket_stays_open(server: ServerProcess) -> None:
    """With the default limits (5 posts per 10 s per reader), a reader posting in a burst gets
    `rate_limited` with retry_after for the excess, nothing of it is stored, and the socket
    stays open."""
    async with reader(server) as (flooder, welcome), reader(server) as (other, _):
        head = welcome["seq"]
        refs = [await post(flooder, f"flood {i}", name="Flooder") for i in range(9)]
        frames = await collect(flooder, lambda fs: sum(f["type"] in ("ack", "error") for f in fs) == 9)
        answers = {f["ref"]: f for f in frames if f["type"] in ("ack", "error")}
        assert [answers[r]["type"] for r in refs] == ["ack"] * 5 + ["error"] * 4
        for ref in refs[5:]:
            assert answers[ref]["code"] == "rate_limited"
            assert isinstance(answers[ref]["retry_after"], int) and 1 <= answers[ref]["retry_after"] <= 11
        seen = [await next_frame(other, "comment") for _ in range(5)]
        assert bodies(seen) == [f"flood {i}" for i in range(5)]

        # still open both ways: it is answered, and it receives others' posts
        await flooder.send("{not json")
        assert (await next_frame(flooder, "error"))["code"] == "invalid_message"
        async with http(server) as client:
            response = await client.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "S", "body": "sentinel"})
        assert response.status_code == 201
        for ws in (flooder, other):
            sentinel = await next_frame(ws, "comment")
            assert (sentinel["seq"], sentinel["comment"]["body"]) == (head + 6, "sentinel")


# --- 6. oversized frames ---------------------------------------------------------------------


async def test_oversized_frames_close_1009_and_the_server_stays_up(server: ServerProcess) -> None:
    """A frame over 64 KiB closes that connection with 1009 (message too big); compression is
    declined, so no small frame can inflate into a big one; other readers carry on."""
    async with reader(server) as (bystander, welcome):
        # uncompressed and incompressible: 70,000 bytes on the wire
        async with reader(server, compression=None) as (big, _):
            noise = base64.b64encode(os.urandom(52_500)).decode()
            await big.send(post_frame(noise))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(big.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

        # the client offers permessage-deflate (websockets' default): the server declines it, so
        # ~5 MB of zeros stays ~5 MB on the wire and is refused as too big
        async with reader(server) as (bomb, _):
            assert "Sec-WebSocket-Extensions" not in bomb.response.headers
            # The close may come while sending, or just after: both are inside the block.
            with pytest.raises(ConnectionClosed) as closed:  # noqa: PT012
                await bomb.send("\x00" * 5_000_000)
                await asyncio.wait_for(bomb.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

        # the server is up and the bystander still gets live posts
        async with http(server) as client:
            assert (await client.get("/healthz")).status_code == 200
        async with http(server) as client:  # a fresh client: no reader cookie, so no CSRF needed
            response = await client.post(
                f"/api/articles/{DEMO_SLUG}/comments", json={"name": "S", "body": "still here"}
            )
        assert response.status_code == 201, response.text
        event = await next_frame(bystander, "comment")
        assert (event["seq"], event["comment"]["body"]) == (welcome["seq"] + 1, "still here")


# --- 7. Origin -------------------------------------------------------------------------------


async def test_foreign_origins_are_refused(start_server) -> None:
    """Another site cannot open the live socket (HTTP 403) or post through the API or the form
    (403, nothing stored); the server's own origin and ALLOWED_ORIGINS can."""
    server = start_server(ALLOWED_ORIGINS="https://news.example")
    port = server.port
    foreign = [
        "http://evil.example",
        f"http://127.0.0.1:{port}.evil.example",
        f"http://evil.example/http://127.0.0.1:{port}",
        f"http://127.0.0.1.evil.example:{port}",
        f"https://127.0.0.1:{port}",
        f"http://127.0.0.1:{port + 1}",
        "https://news.example.evil.example",
        "http://news.example",
        "null",
    ]
    for origin in foreign:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(live_url(server), origin=origin):
                pass
        assert refused.value.response.status_code == 403, origin

    for origin in (f"http://127.0.0.1:{port}", "https://news.example", None):
        async with ws_connect(live_url(server), origin=origin) as ws:
            assert (await next_frame(ws))["type"] == "welcome"

    async with reader_session(server) as (client, _cookie, token):
        before = await api_comments(server)
        evil = {"Origin": "http://evil.example"}
        response = await client.post(
            f"/api/articles/{DEMO_SLUG}/comments",
            headers={**evil, "X-CSRF-Token": token},
            json={"name": "Mallory", "body": "cross-site"},
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        async with http(server) as anonymous:
            response = await anonymous.post(
                f"/api/articles/{DEMO_SLUG}/comments", headers=evil, json={"name": "Mallory", "body": "cross-site"}
            )
        assert response.status_code == 403
        response = await client.post(
            f"/articles/{DEMO_SLUG}/comments",
            headers=evil,
            data={"name": "Mallory", "about": "", "body": "cross-site form", "parent": "", "csrf_token": token},
        )
        assert response.status_code == 403
        assert await api_comments(server) == before

        response = await client.post(
            f"/api/articles/{DEMO_SLUG}/comments",
            headers={"Origin": "https://news.example", "X-CSRF-Token": token},
            json={"name": "Embed", "body": "from the embedding site"},
        )
        assert response.status_code == 201

    # without ALLOWED_ORIGINS, the embedding site is foreign too
    plain = start_server()
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(live_url(plain), origin="https://news.example"):
            pass
    assert refused.value.response.status_code == 403


# --- 8. unknown article ----------------------------------------------------------------------


async def test_unknown_article_is_404_everywhere(server: ServerProcess) -> None:
    """An article that does not exist is a 404 for the socket, the page and the API."""
    errors_logged = server.log().count("ERROR")
    for slug in ("nope", "NOPE", DEMO_SLUG + "-x"):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(live_url(server, slug)):
                pass
        assert refused.value.response.status_code == 404
    async with http(server) as client:
        page = await client.get("/articles/nope")
        assert page.status_code == 404 and "text/html" in page.headers["content-type"]
        for response in (
            await client.get("/api/articles/nope/comments"),
            await client.post("/api/articles/nope/comments", json={"name": "N", "body": "hi"}),
        ):
            assert response.status_code == 404
            error = response.json()["error"]
            assert error["code"] == "not_found" and error["message"]
        assert (await client.post("/articles/nope/comments", data={"name": "N", "body": "hi"})).status_code == 404
    # and the real one still works
    async with reader(server) as (_, welcome):
        assert welcome["seq"] == 4
    assert server.log().count("ERROR") == errors_logged, "a 404 for the socket is no server error"


async def test_invalid_utf8_closes_1007_and_the_server_stays_up(server: ServerProcess) -> None:
    """A text frame that is not UTF-8 closes that connection with 1007, quietly (no ERROR in
    the server's log); the other readers carry on."""
    errors_logged = server.log().count("ERROR")
    async with reader(server) as (bystander, welcome):
        sock = await asyncio.to_thread(open_raw_reader, server, f"/articles/{DEMO_SLUG}/live")
        with sock:
            sock.sendall(client_frame(OP_TEXT, b'{"type":"post","body":"\xff\xfe"}'))
            data = b""
            while chunk := await asyncio.to_thread(sock.recv, 65536):
                data += chunk
        frames, close_code = server_messages(data)
        # (the welcome may or may not have gone out before the bad frame was read)
        assert {f["type"] for f in frames} <= {"welcome"} and close_code == 1007
        async with http(server) as client:
            response = await client.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "S", "body": "on we go"})
        assert response.status_code == 201, response.text
        event = await next_frame(bystander, "comment")
        assert (event["seq"], event["comment"]["body"]) == (welcome["seq"] + 1, "on we go")
    assert server.log().count("ERROR") == errors_logged


# --- 9. slow reader --------------------------------------------------------------------------


def open_raw_reader(server: ServerProcess, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then reads nothing more, with a tiny
    receive buffer so the server's side fills up fast. No compression is offered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(handshake(server.port, path))
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: leave every frame unread
        byte = sock.recv(1)
        assert byte, f"the server hung up during the handshake: {head!r}"
        head += byte
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_reader_that_never_reads_is_dropped_and_others_keep_up(start_server) -> None:
    """A reader that stops reading is cut off (its queue overflows) instead of holding the
    thread up: the others get every event promptly and in order, presence falls back, the
    dropped reader's connection ends, and it can catch up with since."""
    server = start_server(SEND_BUFFER_BYTES="65536", **FAST)
    rng = random.Random(7)
    async with reader(server, compression=None) as (good, welcome), reader(server, compression=None) as (poster, _):
        head = welcome["seq"]
        slow = await asyncio.to_thread(open_raw_reader, server, f"/articles/{DEMO_SLUG}/live")
        try:
            await wait_presence(good, 3)

            received: list[int] = []
            dropped = asyncio.Event()
            progress = asyncio.Event()  # set whenever the good reader gets a comment

            async def read_good() -> None:
                while True:
                    frame = json.loads(await good.recv())
                    if frame["type"] == "comment":
                        received.append(frame["seq"])
                        progress.set()
                    elif frame["type"] == "presence" and frame["readers"] == 2:
                        dropped.set()
                    else:
                        assert frame["type"] == "presence", frame

            async def read_poster() -> None:
                async for _ in poster:
                    pass

            async def good_has(count: int, within: float) -> None:
                deadline = time.monotonic() + within
                while len(received) < count:
                    progress.clear()
                    try:
                        await asyncio.wait_for(progress.wait(), deadline - time.monotonic())
                    except TimeoutError:
                        raise AssertionError(f"the good reader stalled at {len(received)}/{count}") from None

            readers = [asyncio.create_task(read_good()), asyncio.create_task(read_poster())]
            posted = 0
            deadline = time.monotonic() + 25
            try:
                while not dropped.is_set():
                    assert time.monotonic() < deadline, f"the slow reader was never dropped ({posted} posts)"
                    assert not any(t.done() for t in readers), [t.exception() for t in readers if t.done()]
                    # 5,000 CJK characters: ~15 KB of body + ~15 KB of html per event
                    body = "".join(chr(0x4E00 + rng.randrange(20_000)) for _ in range(5000))
                    await post(poster, body, name="Poster")
                    posted += 1
                    await good_has(posted - 4, within=5)  # it keeps pace, a few events behind at most
                await good_has(posted, within=5)  # and gets the rest promptly
            finally:
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
            assert received == list(range(head + 1, head + posted + 1))

            # the dropped reader reads at last: what it got, then the end of the connection
            slow.setblocking(False)
            loop = asyncio.get_running_loop()
            data = b""
            end = time.monotonic() + 10
            while True:
                assert time.monotonic() < end, "the server kept the dropped reader's connection open"
                chunk = await asyncio.wait_for(loop.sock_recv(slow, 65536), max(end - time.monotonic(), 0.01))
                if not chunk:
                    break
                data += chunk
        finally:
            slow.close()
        frames, close_code = server_messages(data)
        assert close_code in (None, 4000), close_code
        assert frames[0]["type"] == "welcome"
        got = [f["seq"] for f in frames if f["type"] == "comment"]
        assert got == list(range(head + 1, head + 1 + len(got)))
        assert len(got) < posted
        last = got[-1] if got else head

    # it recovers what it missed with since
    async with reader(server, since=last, epoch=welcome["epoch"]) as (back, w):
        assert w["seq"] == head + posted
        caught = [await next_frame(back, "comment") for _ in range(posted - (last - head))]
        assert comment_seqs(caught) == list(range(last + 1, head + posted + 1))


# --- 10. presence ----------------------------------------------------------------------------


async def test_presence_counts_readers_coming_and_going(server: ServerProcess) -> None:
    """Readers of an article see how many are reading: 2 when two are connected, back to 1
    when one leaves (cleanly, or by its connection dropping)."""
    async with reader(server) as (a, welcome_a):
        assert welcome_a["readers"] == 1
        async with reader(server) as (b, welcome_b):
            assert welcome_b["readers"] == 2
            await asyncio.gather(wait_presence(a, 2), wait_presence(b, 2))
        await wait_presence(a, 1)

        # a reader whose connection just drops (no close handshake) is counted out too
        async with reader(server) as (c, _):
            await wait_presence(a, 2)
            c.transport.abort()
        await wait_presence(a, 1)


async def test_a_reader_that_stops_answering_pings_is_dropped(start_server) -> None:
    """A peer that vanished without closing (it never answers a ping) is found and dropped
    within two ping intervals, and stops counting as a reader."""
    server = start_server(WS_PING_INTERVAL="0.5")
    async with reader(server) as (a, _):
        silent = open_raw_reader(server, f"/articles/{DEMO_SLUG}/live")  # completes the handshake, then nothing
        try:
            await wait_presence(a, 2)
            await wait_presence(a, 1, timeout=5)
        finally:
            silent.close()


# --- 11. idempotent posts --------------------------------------------------------------------


async def test_a_post_resent_with_the_same_ref_is_stored_once(server: ServerProcess) -> None:
    """A client that re-sends a post (same reader, same ref) because it never saw the ack gets
    the same comment back; the comment exists once and is announced once."""
    async with reader_session(server) as (client, cookie, token), reader(server) as (other, welcome):
        head = welcome["seq"]
        async with reader(server, cookie=cookie) as (ws, _):
            await post(ws, "only once", name="Retry", ref="ref-1")
            first = await collect(ws, lambda fs: len(fs) == 2)
            ack = next(f for f in first if f["type"] == "ack")
            assert ack["seq"] == head + 1
            await post(ws, "only once", name="Retry", ref="ref-1")
            again = await next_frame(ws, "ack")
            assert (again["ref"], again["id"], again["seq"]) == ("ref-1", ack["id"], ack["seq"])
        # the same reader on a new connection (the usual retry after a drop)
        async with reader(server, cookie=cookie) as (ws, _):
            await post(ws, "only once", name="Retry", ref="ref-1")
            again = await next_frame(ws, "ack")
            assert (again["id"], again["seq"]) == (ack["id"], ack["seq"])
        # and through the API, with the same reader's cookie
        response = await client.post(
            f"/api/articles/{DEMO_SLUG}/comments",
            headers={"X-CSRF-Token": token},
            json={"name": "Retry", "body": "only once", "ref": "ref-1"},
        )
        assert response.status_code in (200, 201)
        assert response.json()["comment"]["id"] == ack["id"] and response.json()["seq"] == ack["seq"]
        # and through the no-JavaScript form's fallback, which carries the ref too
        response = await client.post(
            f"/articles/{DEMO_SLUG}/comments",
            data={"name": "Retry", "about": "", "body": "only once", "parent": "", "ref": "ref-1", "csrf_token": token},
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"/articles/{DEMO_SLUG}/comments/{ack['id']}#c-{ack['id']}"

        # another reader using the same ref makes its own comment
        async with reader(server) as (stranger, _):
            await post(stranger, "someone else", name="Other", ref="ref-1")
            own = await next_frame(stranger, "comment")
            assert own["seq"] == head + 2

        announced = [await next_frame(other, "comment") for _ in range(2)]
        assert comment_seqs(announced) == [head + 1, head + 2]
        assert bodies(announced) == ["only once", "someone else"]
        thread = await api_comments(server)
        assert [c["body"] for c in thread["comments"]].count("only once") == 1
        assert thread["seq"] == head + 2


async def test_a_resent_post_is_acknowledged_even_when_the_reader_is_at_the_rate_limit(server: ServerProcess) -> None:
    """A retry is not a new post: a reader who used up its burst (5 posts per 10 s by default)
    and re-sends its last post because the ack was lost gets that comment's ack, not
    `rate_limited` for a comment that is in fact published."""
    async with reader(server) as (ws, _welcome):
        refs = [await post(ws, f"burst {i}", name="Burst") for i in range(5)]
        frames = await collect(ws, lambda fs: sum(f["type"] == "ack" for f in fs) == 5)
        acks = {f["ref"]: f for f in frames if f["type"] == "ack"}
        assert set(acks) == set(refs)
        await post(ws, "burst 4", name="Burst", ref=refs[-1])
        answer = await next_frame(ws)
        assert answer["type"] == "ack", f"a retry of a stored post was answered {answer}"
        assert (answer["id"], answer["seq"]) == (acks[refs[-1]]["id"], acks[refs[-1]]["seq"])


# --- 12. HTTP posting ------------------------------------------------------------------------


async def test_json_api_and_form_posts(server: ServerProcess) -> None:
    """Scripts post through the JSON API without a cookie; a browser session must send its CSRF
    token (header or form field); the no-JavaScript form redirects to the new comment or shows
    the page again with the error and the reader's text kept. Every stored post goes live."""
    async with reader(server) as (live, welcome):
        head = welcome["seq"]
        async with http(server) as script:
            response = await script.post(
                f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Script", "about": "Bot, Net", "body": "by API"}
            )
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["seq"] == head + 1
        assert created["comment"]["body"] == "by API"
        assert created["comment"]["author"] == {"name": "Script", "about": "Bot, Net"}
        assert created["comment"]["status"] == "visible" and created["comment"]["parent"] is None
        event = await next_frame(live, "comment")
        assert event == {"type": "comment", "seq": head + 1, "comment": created["comment"]}

        async with reader_session(server) as (client, _cookie, token):
            url = f"/api/articles/{DEMO_SLUG}/comments"
            for headers in ({}, {"X-CSRF-Token": "0" * 32}, {"X-CSRF-Token": ""}):
                response = await client.post(url, headers=headers, json={"name": "Nocsrf", "body": "refused"})
                assert response.status_code == 403, headers
                assert response.json()["error"]["code"] == "forbidden"
            response = await client.post(
                url, headers={"X-CSRF-Token": token}, json={"name": "Browser", "body": "with token"}
            )
            assert response.status_code == 201, response.text
            assert response.json()["seq"] == head + 2
            assert (await next_frame(live, "comment"))["comment"]["body"] == "with token"

            form = f"/articles/{DEMO_SLUG}/comments"
            fields = {"name": "Former", "about": "Clerk, Leeds", "body": "by form", "parent": "", "csrf_token": token}
            response = await client.post(form, data=fields)
            assert response.status_code == 303, response.text
            event = await next_frame(live, "comment")
            assert event["seq"] == head + 3 and event["comment"]["body"] == "by form"
            assert event["comment"]["author"] == {"name": "Former", "about": "Clerk, Leeds"}
            assert (
                response.headers["location"]
                == f"/articles/{DEMO_SLUG}/comments/{event['comment']['id']}#c-{event['comment']['id']}"
            )
            page = await client.get(f"/articles/{DEMO_SLUG}")
            assert f'id="c-{event["comment"]["id"]}"' in page.text

            # a reply through the form
            response = await client.post(form, data={**fields, "body": "form reply", "parent": event["comment"]["id"]})
            assert response.status_code == 303
            reply = await next_frame(live, "comment")
            assert reply["comment"]["parent"] == event["comment"]["id"]

            for bad in ({k: v for k, v in fields.items() if k != "csrf_token"}, {**fields, "csrf_token": "x" * 32}):
                response = await client.post(form, data={**bad, "body": "no token"})
                assert response.status_code == 403
            # another reader's token is no good either
            async with reader_session(server) as (_, _, other_token):
                pass
            response = await client.post(form, data={**fields, "body": "stolen token", "csrf_token": other_token})
            assert response.status_code == 403

            response = await client.post(form, data={**fields, "name": "Typed Name", "body": "   "})
            assert response.status_code == 422
            assert "The comment is empty." in response.text
            assert 'value="Typed Name"' in response.text

        thread = await api_comments(server)
        assert thread["seq"] == head + 4
        assert [c["body"] for c in thread["comments"][4:]] == ["by API", "with token", "by form", "form reply"]
        # the sentinel: nothing refused above was announced
        async with http(server) as script:
            await script.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "S", "body": "sentinel"})
        sentinel = await next_frame(live, "comment")
        assert (sentinel["seq"], sentinel["comment"]["body"]) == (head + 5, "sentinel")


# --- abuse: connection caps and client addresses -----------------------------------------------


async def test_live_connections_per_ip_are_capped(start_server) -> None:
    """One address cannot hold more than MAX_CONNECTIONS_PER_IP sockets: the next is accepted and
    closed with 4029 and a reason a page can show; the others are unaffected and a slot frees up
    when a socket closes."""
    server = start_server(MAX_CONNECTIONS_PER_IP="3")
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(ws_connect(live_url(server))) for _ in range(3)]
        for ws in sockets:
            assert (await next_frame(ws, "welcome"))["type"] == "welcome"
        await wait_presence(sockets[1], 3)
        async with ws_connect(live_url(server)) as refused:
            with pytest.raises(ConnectionClosed) as closed:
                await refused.recv()  # no welcome: the close comes first
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4029, "too many connections from your network")
        await sockets[0].close()
        await wait_presence(sockets[1], 2)  # the server has let go of the closed one
        async with ws_connect(live_url(server)) as again:
            assert (await next_frame(again, "welcome"))["type"] == "welcome"


async def test_one_ipv6_network_shares_one_connection_cap(start_server) -> None:
    """A host holds a whole /64: a fresh address in it for each socket does not get round
    MAX_CONNECTIONS_PER_IP; another /64 is another network."""
    server = start_server(MAX_CONNECTIONS_PER_IP="2")  # the test client is the trusted proxy

    def from_address(address: str) -> connect:
        return ws_connect(live_url(server), additional_headers={"X-Forwarded-For": address})

    async with from_address("2001:db8:5:7::1") as first, from_address("2001:db8:5:7::2") as second:
        for ws in (first, second):
            await next_frame(ws, "welcome")
        async with from_address("2001:db8:5:7:ffff::3") as refused:
            with pytest.raises(ConnectionClosed) as closed:
                await refused.recv()
        assert closed.value.rcvd.code == 4029
        async with from_address("2001:db8:5:8::1") as neighbour:
            assert (await next_frame(neighbour, "welcome"))["type"] == "welcome"


async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(start_server) -> None:
    """A client cannot dodge the per-IP limit by inventing X-Forwarded-For; a trusted proxy's
    header does name the client."""
    limits = {"POST_RATE_PER_IP": "2/minute", "POST_RATE_PER_READER": "1000/minute"}
    untrusting, trusting = start_server(TRUSTED_PROXIES="", **limits), start_server(**limits)
    async with httpx.AsyncClient() as client:

        async def statuses(server: ServerProcess) -> list[int]:
            return [
                (
                    await client.post(
                        f"{server.url}/api/articles/{DEMO_SLUG}/comments",
                        json={"name": "Spoofer", "body": f"post {n}"},
                        headers={"X-Forwarded-For": f"203.0.113.{n}"},
                    )
                ).status_code
                for n in range(3)
            ]

        assert await statuses(untrusting) == [201, 201, 429]
        assert await statuses(trusting) == [201, 201, 201]  # three different clients behind the proxy


async def test_readers_get_exactly_the_contracts_comment_fields(server: ServerProcess) -> None:
    """Nothing private (the author's reader id or address) leaks into a reader's frames or the API."""
    # The contract's fields, and issue 14's: the recommendations and when its author last edited it.
    contract = {"id", "parent", "author", "body", "html", "created_at", "status", "votes", "edited_at"}
    async with reader(server, since=0) as (ws, _welcome):
        replayed = await next_frame(ws, "comment")
        await post(ws, "fields check")
        frames = await collect(
            ws, lambda fs: any(f.get("type") == "comment" and f["comment"]["body"] == "fields check" for f in fs)
        )
        live = [f for f in frames if f.get("type") == "comment"]
    for frame in [replayed, *live]:
        assert set(frame["comment"]) == contract and set(frame["comment"]["author"]) == {"name", "about"}
    api = await api_comments(server)
    assert all(set(c) == contract for c in api["comments"])
