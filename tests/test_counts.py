"""Comment counts for article lists (issue 13, point 5): GET /api/counts answers up to 100
slugs with one store read, cached; CORS for ALLOWED_ORIGINS only; counts.js fills the spans of
another site's page under that page's strict CSP, in real Chromium."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from starlette.testclient import TestClient

from server.app import create_app
from server.comments import Comment, utc_now_iso
from server.newsroom_api import COUNTS_TTL
from server.settings import Settings
from server.threads import new_comment_id

from .servers import CHROMIUM_ARGS, DEMO_SLUG, chromium_path, free_port
from .test_moderation_routes import statements_during

ARTICLES = 100
ALLOWED = "https://news.example"


def slug(n: int) -> str:
    return f"story-number-{n}"


@pytest.fixture
def many_articles(tmp_path: Path) -> Path:
    content = tmp_path / "content"
    content.mkdir()
    for n in range(ARTICLES):
        (content / f"{n}.txt").write_text(
            f"Story number {n}\n\nBy Ann Writer | Reporter\n\n"
            "TOWN, Nov 30 – Something happened.\n\nMore of it.\n\n(Reporting by Ann)\n"
        )
    return content


@pytest.fixture
def newsroom(tmp_path: Path, many_articles: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        content_dir=many_articles,
        secret_key="test-secret-key",
        password_hash_profile="CHEAPEST",
        allowed_origins=(ALLOWED,),
    )
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        yield client


def post(client: TestClient, slug_: str, count: int) -> None:
    for n in range(count):
        comment = Comment(
            id=new_comment_id(slug_),
            slug=slug_,
            parent=None,
            name=f"Reader {n}",
            about=None,
            body="hello",
            html="<p>hello</p>",
            created_at=utc_now_iso(),
            reader_id=f"r{n}",
        )
        client.portal.call(client.app.state.backend.post, comment, None)


class Visitor:  # statements_during reads visitor.client
    def __init__(self, client: TestClient) -> None:
        self.client = client


def test_a_hundred_slugs_cost_one_store_read_then_none(newsroom: TestClient) -> None:
    for n in (0, 42, 99):
        post(newsroom, slug(n), n % 5 + 1)
    slugs = ",".join(slug(n) for n in range(ARTICLES))
    answer = None

    def read() -> None:
        nonlocal answer
        answer = newsroom.get("/api/counts", params={"slugs": slugs})

    cold = statements_during(Visitor(newsroom), read)
    counts = answer.json()
    assert len(counts) == ARTICLES
    assert (counts[slug(0)], counts[slug(42)], counts[slug(99)]) == (1, 3, 5)
    assert sum(counts.values()) == 9
    warm = statements_during(Visitor(newsroom), read)
    print(f"\n/api/counts for {ARTICLES} slugs: {len(cold)} SQL statement(s) cold, {len(warm)} within {COUNTS_TTL} s")
    assert len(cold) == 1 and warm == []
    assert answer.headers["cache-control"] == f"public, max-age={int(COUNTS_TTL)}"


@pytest.mark.parametrize("store", ["redis", "postgres"])
def test_counts_on_the_other_stores(store: str, request, tmp_path: Path, many_articles: Path) -> None:
    if store == "redis":
        redis_server = request.getfixturevalue("redis_server")
        redis_server.client().flushall()  # the server is shared by the session's tests
        urls = {"redis_url": redis_server.url}
    else:
        urls = {"database_url": request.getfixturevalue("database_url")}
    settings = Settings(
        data_dir=tmp_path / "data",
        content_dir=many_articles,
        secret_key="test-secret-key",
        password_hash_profile="CHEAPEST",
        **urls,
    )
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        post(client, slug(7), 2)
        post(client, slug(93), 4)
        counts = client.get("/api/counts", params={"slugs": ",".join(slug(n) for n in range(ARTICLES))}).json()
    assert len(counts) == ARTICLES and (counts[slug(7)], counts[slug(93)], sum(counts.values())) == (2, 4, 6)


def test_unknown_slugs_count_zero_and_more_than_100_are_refused(newsroom: TestClient) -> None:
    assert newsroom.get("/api/counts", params={"slugs": "no-such-story,,"}).json() == {"no-such-story": 0}
    assert newsroom.get("/api/counts").json() == {}
    too_many = newsroom.get("/api/counts", params={"slugs": ",".join(f"s{n}" for n in range(101))})
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "invalid_message"


def test_cors_for_allowed_origins_and_the_site_only(newsroom: TestClient) -> None:
    url = f"/api/counts?slugs={slug(1)}"
    # http://testserver is the in-process app's own origin (its loopback address, in development).
    for origin, allowed in [
        (ALLOWED, True),
        ("http://testserver", True),
        ("https://evil.example", False),
        ("https://news.example.evil", False),
        ("http://news.example", False),
        (None, False),
    ]:
        response = newsroom.get(url, headers={"Origin": origin} if origin else {})
        assert response.status_code == 200 and response.headers["vary"] == "Origin"
        assert response.headers.get("access-control-allow-origin") == (origin if allowed else None), origin


# --- counts.js in a real browser, on another site's page ---


class HostPages(http.server.BaseHTTPRequestHandler):
    """A newsroom's index page on its own origin, with a strict CSP that allows our server only."""

    server_url = ""

    def do_GET(self) -> None:
        spans = "".join(
            f'<li><span data-backchannel-count="{s}">–</span></li>' for s in [DEMO_SLUG, "no-such-story", DEMO_SLUG]
        )
        page = (
            f'<!doctype html><html lang="de"><body><ul>{spans}</ul>'
            f'<script src="{self.server_url}/static/counts.js" async></script></body></html>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header(
            "Content-Security-Policy",
            f"default-src 'none'; script-src {self.server_url}; connect-src {self.server_url}",
        )
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def host_port() -> Iterator[int]:
    port = free_port()
    pages = http.server.ThreadingHTTPServer(("127.0.0.1", port), HostPages)
    thread = threading.Thread(target=pages.serve_forever, daemon=True)
    thread.start()
    yield port
    pages.shutdown()
    pages.server_close()


def test_counts_js_fills_the_spans_of_an_allowed_site_only(start_server, host_port: int) -> None:
    allowed = f"http://127.0.0.1:{host_port}"
    server = start_server(ALLOWED_ORIGINS=allowed)
    HostPages.server_url = server.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(allowed)
            spans = page.locator("[data-backchannel-count]")
            expect(spans.nth(1)).to_have_text("0")
            # The demo article's seed comments, counted by the server; both spans of the slug filled.
            seeded = page.evaluate(f"fetch('{server.url}/api/counts?slugs={DEMO_SLUG}').then(r => r.json())")
            expected = seeded[DEMO_SLUG]
            expect(spans.nth(0)).to_have_attribute("data-backchannel-count-value", str(expected))
            expect(spans.nth(2)).to_have_attribute("data-backchannel-count-value", str(expected))
            assert errors == []  # no CSP violation: nothing inline, nothing from elsewhere

            # The same page from an origin that is not allowed: CORS keeps the counts from it.
            other = browser.new_page()
            with other.expect_console_message(lambda m: "Failed to fetch" in m.text):  # counts.js's warning
                other.goto(f"http://localhost:{host_port}")
            assert other.locator("[data-backchannel-count]").all_inner_texts() == ["–", "–", "–"]
        finally:
            browser.close()
