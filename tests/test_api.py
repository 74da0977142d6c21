"""GET /api/articles/{slug}/comments answers a bounded page at a time; following `next` yields
each comment exactly once, in thread order, even while comments arrive."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from server.api import MAX_PAGE_SIZE, PAGE_SIZE
from server.comments import PENDING, Comment, utc_now_iso
from server.threads import new_comment_id

from .servers import DEMO_SLUG

URL = f"/api/articles/{DEMO_SLUG}/comments"
SEEDS = 4  # the demo article's own comments


def write_comments(client: TestClient, count: int, status: str = "visible") -> list[str]:
    """Straight into the store: hundreds of posts through the API would hit its rate limits."""
    ids = []
    for n in range(count):
        comment = Comment(
            id=new_comment_id(DEMO_SLUG),
            slug=DEMO_SLUG,
            parent=None,
            name=f"Reader {n}",
            about=None,
            body=f"comment {n}",
            html=f"<p>comment {n}</p>",
            created_at=utc_now_iso(),
            status=status,
            reader_id=f"r{n}",
        )
        stored, _ = client.portal.call(client.app.state.backend.post, comment, None)
        ids.append(stored.id)
    return ids


def read_all(client: TestClient, **params) -> tuple[list[dict], list[dict]]:
    """(every comment, every page) by following next."""
    pages = [client.get(URL, params=params).json()]
    while pages[-1]["next"] is not None:
        pages.append(client.get(URL, params={**params, "after": pages[-1]["next"]}).json())
    return [c for page in pages for c in page["comments"]], pages


def test_a_page_is_bounded_and_says_where_the_next_begins(client: TestClient) -> None:
    written = write_comments(client, 300)
    first = client.get(URL).json()
    assert len(first["comments"]) == PAGE_SIZE and first["next"]
    assert {"seq", "epoch", "comments", "next"} <= first.keys() and first["seq"] == SEEDS + 300
    assert len(client.get(URL, params={"limit": 10_000}).json()["comments"]) == MAX_PAGE_SIZE
    comments, pages = read_all(client, limit=120)
    assert [len(p["comments"]) for p in pages] == [120, 120, 64]
    assert [c["id"] for c in comments][SEEDS:] == written  # in thread order, each once


def test_following_next_sees_each_comment_once_while_comments_arrive(client: TestClient) -> None:
    write_comments(client, 100)
    seen = []
    page = client.get(URL, params={"limit": 30}).json()
    while True:
        seen += [c["id"] for c in page["comments"]]
        if page["next"] is None:
            break
        write_comments(client, 7)  # arrive between two pages
        page = client.get(URL, params={"limit": 30, "after": page["next"]}).json()
    assert len(seen) == len(set(seen)) == SEEDS + 100 + 7 * (len(seen) // 30)
    assert seen == [c["id"] for c in read_all(client, limit=MAX_PAGE_SIZE)[0]]


def test_held_comments_come_last_for_a_moderator(moderator) -> None:
    published = write_comments(moderator.client, 60)
    held = write_comments(moderator.client, 5, status=PENDING)
    pages = [moderator.get(URL, params={"limit": 25}).json()]
    while pages[-1]["next"] is not None:
        pages.append(moderator.get(URL, params={"limit": 25, "after": pages[-1]["next"]}).json())
    ids = [c["id"] for page in pages for c in page["comments"]]
    assert len(ids) == len(set(ids)) == SEEDS + 65
    assert ids[SEEDS : SEEDS + 60] == published and set(ids[-5:]) == set(held)


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "-1"}, {"limit": "ten"}, {"after": "not-a-cursor"}, {"after": "WzEsMl0"}]
)
def test_a_wrong_limit_or_cursor_is_refused(client: TestClient, params: dict) -> None:
    response = client.get(URL, params=params)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_message"
