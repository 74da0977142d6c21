"""GET /api/articles/{slug}/comments?sort=…&parent=…: one parent's comments a page at a time,
and following `next` shows each comment once while others post (a property test)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from server.comments import Comment, utc_now_iso
from server.threads import new_comment_id

from .servers import DEMO_SLUG

URL = f"/api/articles/{DEMO_SLUG}/comments"


def write(client: TestClient, parent: str | None = None) -> str:
    """Straight into the store: many posts through the API would hit its rate limits."""
    comment = Comment(
        id=new_comment_id(DEMO_SLUG),
        slug=DEMO_SLUG,
        parent=parent,
        name="Reader",
        about=None,
        body="a comment",
        html="<p>a comment</p>",
        created_at=utc_now_iso(),
    )
    stored, _ = client.portal.call(client.app.state.backend.post, comment, None)
    return stored.id


def top_level(client: TestClient) -> list[str]:
    """Every top-level comment, oldest first."""
    ids, params = [], {"sort": "oldest", "limit": 200}
    while True:
        page = client.get(URL, params=params).json()
        ids += [c["id"] for c in page["comments"]]
        if page["next"] is None:
            return ids
        params["after"] = page["next"]


def test_a_page_of_replies_with_counts_and_cursors(client: TestClient) -> None:
    parent = write(client)
    replies = [write(client, parent) for _ in range(5)]
    write(client, replies[0])
    newest = client.get(URL, params={"sort": "newest", "limit": 1}).json()
    assert [c["id"] for c in newest["comments"]] == [parent]
    assert newest["comments"][0]["reply_count"] == 5 and newest["comments"][0]["votes"] == 0
    assert newest["next"] and newest["sort"] == "newest" and newest["seq"] >= 7
    first = client.get(URL, params={"parent": parent, "limit": 3}).json()  # replies: oldest first
    assert [c["id"] for c in first["comments"]] == replies[:3] and first["comments"][0]["reply_count"] == 1
    rest = client.get(URL, params={"parent": parent, "limit": 3, "after": first["next"]}).json()
    assert [c["id"] for c in rest["comments"]] == replies[3:] and rest["next"] is None


def test_bad_sorts_and_cursors_are_refused_clearly(client: TestClient) -> None:
    write(client)
    page = client.get(URL, params={"sort": "oldest", "limit": 1}).json()
    for params in ({"sort": "loudest"}, {"sort": "newest", "after": page["next"]}, {"sort": "oldest", "after": "x!"}):
        answer = client.get(URL, params=params)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_message", params
    assert "sort must be one of: oldest, newest, top" in client.get(URL, params={"sort": "loudest"}).text


def test_most_recommended_first(client: TestClient) -> None:
    quiet, liked = write(client), write(client)
    backend = client.app.state.backend
    client.portal.call(backend.vote, DEMO_SLUG, liked, "r1", True)
    page = client.get(URL, params={"sort": "top", "limit": 1}).json()
    assert [(c["id"], c["votes"]) for c in page["comments"]] == [(liked, 1)]
    rest = client.get(URL, params={"sort": "top", "limit": 200, "after": page["next"]}).json()
    assert rest["comments"][0]["id"] == quiet and liked not in [c["id"] for c in rest["comments"]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sort=st.sampled_from(["oldest", "newest", "top"]),
    limit=st.integers(1, 4),
    posts_between_pages=st.lists(st.integers(0, 3), min_size=1, max_size=8),
)
def test_following_next_shows_each_comment_once_while_others_post(
    client: TestClient, sort: str, limit: int, posts_between_pages: list[int]
) -> None:
    for _ in range(3):
        write(client)
    existing = top_level(client)
    seen: list[str] = []
    page = client.get(URL, params={"sort": sort, "limit": limit}).json()
    arrivals = iter(posts_between_pages)
    while True:
        seen += [c["id"] for c in page["comments"]]
        for _ in range(next(arrivals, 0)):
            write(client, parent=None)
            write(client, parent=existing[0])  # replies never show among the top level
        if page["next"] is None:
            break
        page = client.get(URL, params={"sort": sort, "limit": limit, "after": page["next"]}).json()
    assert len(seen) == len(set(seen)), "a comment shown twice"
    if sort in ("newest", "top"):  # no votes here: most recommended is newest first
        assert seen == existing[::-1]  # what arrived while paging is above the first page
    else:
        assert seen[: len(existing)] == existing  # and here, after the last: once, in order
        assert seen == top_level(client)[: len(seen)]
