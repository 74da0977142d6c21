"""Articles on every instance at once (issue 13, point 2): created, changed, unpublished and
republished on one real server, served by the other within a second over Redis; and after a
restart on the embedded backend."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import httpx2 as httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from server.articles import to_stored
from server.backends.redis import RedisStore
from server.comments import utc_now_iso
from server.content import Article

from .servers import ServerProcess

LIMIT = 1.0  # seconds: the promise


def token(server: ServerProcess) -> dict[str, str]:
    done = server.command("create-token", "cms", "--scope", "articles:write")
    return {"Authorization": f"Bearer {done.stdout.strip().splitlines()[-1]}"}


def seen_within(what: str, check: Callable[[], bool], limit: float = LIMIT) -> float:
    """How long until `check()` holds (asking the other server over and over: no event to wait
    on crosses from one process to another but the answer itself)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < 10 * limit, f"{what}: not seen in {10 * limit} s"
        time.sleep(0.01)
    took = time.monotonic() - started
    print(f"\n{what}: served by the other instance after {took * 1000:.0f} ms")
    assert took < limit, f"{what} took {took:.2f} s"
    return took


ARTICLE = {"title": "Bridge opens", "paragraphs": ["The bridge opened today."], "byline": "Ann Writer"}


def test_every_change_is_served_by_the_other_instance_within_a_second(start_server, redis_server):
    redis_server.client().flushall()
    a = start_server(REDIS_URL=redis_server.url)
    b = start_server(REDIS_URL=redis_server.url)
    cms = token(a)
    url_a, url_b = f"{a.url}/articles/bridge-opens", f"{b.url}/articles/bridge-opens"
    assert httpx.get(url_b).status_code == 404

    assert httpx.put(f"{a.url}/api/articles/bridge-opens", json=ARTICLE, headers=cms).status_code == 201
    seen_within("created", lambda: httpx.get(url_b).status_code == 200)
    assert "Bridge opens" in httpx.get(b.url + "/").text
    posted = httpx.post(f"{b.url}/api/articles/bridge-opens/comments", json={"name": "Bo", "body": "At last!"})
    assert posted.status_code == 201, posted.text

    changed = httpx.patch(f"{a.url}/api/articles/bridge-opens", json={"title": "Bridge opens early"}, headers=cms)
    assert changed.status_code == 200
    seen_within("changed", lambda: "Bridge opens early" in httpx.get(url_b).text)

    assert httpx.delete(f"{a.url}/api/articles/bridge-opens", headers=cms).status_code == 204
    seen_within("unpublished", lambda: httpx.get(url_b).status_code == 410)
    assert httpx.get(url_a).status_code == 410
    with pytest.raises(InvalidStatus) as refused:  # its live socket too
        connect(f"{b.ws_url}/articles/bridge-opens/live", origin=b.url).close()
    assert refused.value.response.status_code == 410

    assert httpx.put(f"{b.url}/api/articles/bridge-opens", json=ARTICLE, headers=cms).status_code == 200
    seen_within("republished", lambda: httpx.get(url_a).status_code == 200)
    assert "At last!" in httpx.get(url_a).text  # its comments came back with it


def test_an_article_is_served_after_a_restart_on_the_embedded_backend(start_server):
    server = start_server()
    cms = token(server)
    assert httpx.put(f"{server.url}/api/articles/bridge-opens", json=ARTICLE, headers=cms).status_code == 201
    assert httpx.delete(f"{server.url}/api/articles/kept-away", headers=cms).status_code == 404
    server.restart()
    page = httpx.get(f"{server.url}/articles/bridge-opens")
    assert page.status_code == 200 and "The bridge opened today." in page.text


def test_a_change_whose_message_was_lost_is_served_once_the_bus_reconnects(start_server, redis_server):
    """An ArticleChanged published while an instance's subscription was down never reaches it;
    when the subscription is rebuilt, the instance re-reads every article."""
    redis_server.client().flushall()
    b = start_server(REDIS_URL=redis_server.url)

    async def write_without_telling_anyone() -> None:  # as if the message had been lost
        store = RedisStore(redis_server.url)
        await store.start()
        article = Article("quiet-story", "Quiet story", "", None, "", ("Told to no one.",), None, (), "api")
        await store.ensure_thread("quiet-story", [])
        await store.put_article(to_stored(dataclasses.replace(article, published_at=utc_now_iso()), True))
        await store.close()

    asyncio.run(write_without_telling_anyone())
    assert httpx.get(f"{b.url}/articles/quiet-story").status_code == 404
    redis_server.client().client_kill_filter(_type="pubsub")  # every subscription drops
    seen_within(
        "re-read after the reconnect", lambda: httpx.get(f"{b.url}/articles/quiet-story").status_code == 200, limit=5
    )
