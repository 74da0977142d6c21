"""The articles API (issue 13, point 2) in-process: a newsroom's CMS creates, replaces, changes,
unpublishes and republishes articles with a token; readers see each change on the pages; every
refusal is JSON that names what is wrong."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.app import create_app
from server.pages import INDEX_PAGE
from server.settings import Settings

from .servers import DEMO_SLUG
from .test_tokens import assert_refused, bearer, create

STORY = {
    "title": "Council <b>votes</b> on the bridge",
    "byline": "Ann Writer | City desk",
    "dateline": "RIVERTON, Nov 30 – The council met.",
    "paragraphs": ["It voted <script>alert(1)</script> yes.", "The bridge opens in May."],
    "credit": "Reporting by Ann Writer",
    "url": "https://news.example/city/bridge",
    "published_at": "2026-11-30T09:00:00+01:00",
    "section": "City",
    "tags": ["council", "bridge"],
}


@pytest.fixture
def cms(client: TestClient) -> dict[str, str]:
    return bearer(create(client))


def put(client: TestClient, cms: dict[str, str], slug: str, **changes: object):
    return client.put(f"/api/articles/{slug}", json={**STORY, **changes}, headers=cms)


def test_put_creates_then_replaces_and_the_page_shows_it_escaped(client, cms):
    created = put(client, cms, "bridge-vote")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["slug"] == "bridge-vote" and body["published"] is True
    assert body["published_at"] == "2026-11-30T08:00:00.000Z"  # as UTC
    assert body["byline_name"] == "Ann Writer" and body["tags"] == ["council", "bridge"]
    page = client.get("/articles/bridge-vote")
    assert page.status_code == 200
    assert "It voted &lt;script&gt;alert(1)&lt;/script&gt; yes." in page.text  # plain text, escaped
    assert "Council &lt;b&gt;votes&lt;/b&gt; on the bridge" in page.text
    assert "<script>alert(1)" not in page.text

    replaced = put(client, cms, "bridge-vote", title="Council votes yes", published_at=None)
    assert replaced.status_code == 200
    assert replaced.json()["published_at"] == "2026-11-30T08:00:00.000Z"  # a correction keeps its place
    assert "Council votes yes" in client.get("/articles/bridge-vote").text
    assert client.get("/api/articles/bridge-vote").json()["title"] == "Council votes yes"


def test_patch_changes_only_the_fields_sent(client, cms):
    put(client, cms, "bridge-vote")
    patched = client.patch("/api/articles/bridge-vote", json={"section": "Politics"}, headers=cms)
    assert patched.status_code == 200, patched.text
    assert patched.json()["section"] == "Politics" and patched.json()["title"] == STORY["title"]
    assert patched.json()["paragraphs"] == STORY["paragraphs"]
    assert_refused(client.patch("/api/articles/no-such-story", json={"title": "x"}, headers=cms), 404, "not_found")


def test_delete_unpublishes_the_page_answers_410_and_put_brings_the_comments_back(client, cms):
    put(client, cms, "bridge-vote")
    posted = client.post("/api/articles/bridge-vote/comments", json={"name": "Bo", "body": "Finally!"})
    assert posted.status_code == 201, posted.text

    assert client.delete("/api/articles/bridge-vote", headers=cms).status_code == 204
    gone = client.get("/articles/bridge-vote")
    assert gone.status_code == 410
    assert gone.headers["content-type"].startswith("text/html")
    assert "no longer published" in gone.text and 'href="/"' in gone.text  # a page, with the way home
    assert_refused(client.get("/api/articles/bridge-vote/comments"), 410, "gone")
    refused = client.post("/api/articles/bridge-vote/comments", json={"name": "Bo", "body": "Hello?"})
    assert_refused(refused, 410, "gone")
    assert "bridge-vote" not in client.get("/").text
    assert "bridge-vote" not in [a["slug"] for a in client.get("/api/articles").json()]
    # The token holder still sees it, flagged.
    assert client.get("/api/articles/bridge-vote", headers=cms).json()["published"] is False
    assert client.delete("/api/articles/bridge-vote", headers=cms).status_code == 204  # again: the same
    assert_refused(client.delete("/api/articles/no-such-story", headers=cms), 404, "not_found")

    assert put(client, cms, "bridge-vote").status_code == 200  # republished
    page = client.get("/articles/bridge-vote")
    assert page.status_code == 200 and "Finally!" in page.text
    assert client.get("/api/articles/bridge-vote/comments").json()["comments"][0]["body"] == "Finally!"


def test_every_refusal_is_json_and_names_the_field(client, cms):
    article = "/api/articles/a-story"
    assert_refused(client.put(article, json=STORY), 401, "unauthorized")
    assert_refused(client.put(article, json=STORY, headers=bearer("bc_wrong")), 401, "unauthorized")
    reader_only = bearer(create(client, "analytics", scopes=()))
    assert_refused(client.put(article, json=STORY, headers=reader_only), 403, "forbidden")
    assert_refused(client.delete(article, headers=reader_only), 403, "forbidden")
    assert_refused(client.patch(article, json={}, headers=reader_only), 403, "forbidden")
    for slug in ("Capital", "under_score", "x" * 121, "dots.in.it", "%C3%A9t%C3%A9"):
        response = client.put(f"/api/articles/{slug}", json=STORY, headers=cms)
        assert_refused(response, 400, "invalid_message")
        assert "slug" in response.json()["error"]["message"]
    for changes, field in [
        ({"title": ""}, "title"),
        ({"title": None}, "title"),
        ({"title": 5}, "title"),
        ({"title": "x" * 301}, "title"),
        ({"paragraphs": "one string"}, "paragraphs"),
        ({"paragraphs": []}, "paragraphs"),
        ({"paragraphs": ["fine", 3]}, "paragraphs[1]"),
        ({"paragraphs": ["x" * 20_001]}, "p"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "ftp://news.example/x"}, "url"),
        ({"published_at": "yesterday"}, "published_at"),
        ({"published_at": "2026-11-30T09:00:00"}, "published_at"),
        ({"tags": "council"}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"headline": "Not a field"}, "headline"),
        ({"section": "bell\x07"}, "section"),
        ({"slug": "another-slug"}, "slug"),
    ]:
        response = client.put(article, json={**STORY, **changes}, headers=cms)
        assert_refused(response, 400, "invalid_message")
        assert response.json()["error"].get("field") == field, (changes, response.json())
    assert_refused(
        client.put(article, content=b"{not json", headers={**cms, "content-type": "application/json"}),
        400,
        "invalid_message",
    )
    assert_refused(client.put(article, data={"title": "form"}, headers=cms), 400, "invalid_message")
    huge = {**STORY, "paragraphs": ["y" * 10_000] * 30}
    assert_refused(client.put(article, json=huge, headers=cms), 413, "too_long")
    assert client.get("/api/articles/a-story").status_code == 404  # nothing was stored
    assert client.get("/healthz").status_code == 200


def stories(client: TestClient, cms: dict[str, str], count: int) -> list[str]:
    slugs = [f"story-{n:03d}" for n in range(count)]
    for n, slug in enumerate(slugs):  # story-000 is the oldest
        hour, minute = divmod(n, 60)
        assert (
            put(
                client, cms, slug, title=f"Story {n}", published_at=f"2026-11-{1 + hour:02d}T00:{minute:02d}:00Z"
            ).status_code
            == 201
        )
    return slugs[::-1]  # newest first


def test_get_articles_pages_newest_first_with_a_next_cursor(client, cms):
    newest_first = stories(client, cms, 25)
    seen, url = [], "/api/articles?limit=10"
    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += [a["slug"] for a in response.json()]
        link = response.headers.get("link")
        url = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else None
        assert (response.headers.get("x-next-cursor") is None) == (url is None)
    demo = [s for s in seen if not s.startswith("story-")]
    assert [s for s in seen if s.startswith("story-")] == newest_first and len(demo) == 1
    since = client.get("/api/articles", params={"since": "2026-11-01T00:20:00Z"}).json()
    assert [a["slug"] for a in since if a["slug"].startswith("story-")] == newest_first[:5]
    assert_refused(client.get("/api/articles", params={"after": "garbage"}), 400, "invalid_message")
    assert_refused(client.get("/api/articles", params={"limit": "0"}), 400, "invalid_message")
    assert_refused(client.get("/api/articles", params={"since": "soon"}), 400, "invalid_message")


def titles(html: str) -> list[str]:
    return re.findall(r'<h2 class="story-title"[^>]*><a href="/articles/([a-z0-9-]+)"', html)


def test_the_index_pages_with_plain_links(client, cms):
    newest_first = stories(client, cms, INDEX_PAGE * 2 + 5)
    everything, url, pages = [], "/", []
    while url:
        html = client.get(url).text
        pages.append(html)
        everything += titles(html)
        older = re.search(r'<a class="index-older" href="([^"]+)"', html)
        url = older.group(1).replace("&amp;", "&") if older else None
    assert everything == [DEMO_SLUG, *newest_first] and len(pages) == 3  # the demo file is the newest
    assert "index-newer" not in pages[0] and "index-newer" in pages[2]
    newer = re.search(r'<a class="index-newer" href="([^"]+)"', pages[2]).group(1)
    assert titles(client.get(newer).text) == titles(pages[1])  # back one page
    assert "0 comments" in pages[0] and "Story 64" in pages[0]


def test_an_article_lasts_across_a_restart(settings: Settings, tmp_path: Path):
    settings = dataclasses.replace(settings, content_watch=False)
    with TestClient(create_app(settings), base_url="http://testserver") as first:
        assert put(first, bearer(create(first)), "bridge-vote").status_code == 201
    with TestClient(create_app(settings), base_url="http://testserver") as again:
        page = again.get("/articles/bridge-vote")
        assert page.status_code == 200 and "The bridge opens in May." in page.text
