"""The theme in real Chromium: light and dark (the reader's preference, or forced with
data-theme), a newsroom's stylesheet (THEME_CSS_URL) served from another origin, and WCAG AA
contrast in both themes, checked by axe-core (axe-playwright-python bundles it)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from ..servers import ServerProcess, free_port
from .article_page import ARTICLE, post_from

pytestmark = pytest.mark.timeout(180)

LIGHT_BG = "rgb(253, 252, 250)"  # --bc-bg
DARK_BG = "rgb(20, 20, 19)"
PASSWORD = "a long enough password"
NEWSROOM_CSS = b"""
:root { --bc-accent: rgb(0, 110, 60); --bc-radius: 0px; --bc-font-serif: "DejaVu Sans Mono", monospace; }
"""


def computed(page: Page, selector: str, prop: str) -> str:
    return page.eval_on_selector(selector, "(el, prop) => getComputedStyle(el).getPropertyValue(prop)", prop)


def open_article(new_page, server: ServerProcess, scheme: str, width: int = 1280) -> Page:
    page = new_page(width=width)
    page.emulate_media(color_scheme=scheme)
    page.goto(server.url + ARTICLE)
    expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live")
    return page


@pytest.fixture
def newsroom_css() -> Iterator[str]:
    """A newsroom's stylesheet on an origin of its own: another port, a little server."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.send_header("Content-Length", str(len(NEWSROOM_CSS)))
            self.end_headers()
            self.wfile.write(NEWSROOM_CSS)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/newsroom.css"
    httpd.shutdown()
    httpd.server_close()


def test_the_page_follows_the_readers_light_or_dark_preference(server, new_page):
    assert computed(open_article(new_page, server, "light"), "body", "background-color") == LIGHT_BG
    dark = open_article(new_page, server, "dark")
    assert computed(dark, "body", "background-color") == DARK_BG
    assert computed(dark, "body", "color") == "rgb(235, 232, 226)"


def test_data_theme_forces_a_theme_whatever_the_preference(server, new_page):
    page = open_article(new_page, server, "light")
    page.eval_on_selector("html", "el => { el.dataset.theme = 'dark'; }")
    assert computed(page, "body", "background-color") == DARK_BG
    page = open_article(new_page, server, "dark")
    page.eval_on_selector("html", "el => { el.dataset.theme = 'light'; }")
    assert computed(page, "body", "background-color") == LIGHT_BG
    # The theme also lives on .backchannel, the element an embed renders into: the thread
    # moved into one, forced dark, is dark on a light page.
    page.evaluate(
        """() => {
            const root = document.createElement("div");
            root.className = "backchannel";
            root.dataset.theme = "dark";
            const composer = document.querySelector(".composer");
            composer.replaceWith(root);
            root.append(composer);
        }"""
    )
    assert computed(page, ".backchannel .composer textarea", "background-color") == DARK_BG
    assert computed(page, "body", "background-color") == LIGHT_BG


def test_a_newsrooms_stylesheet_restyles_every_page(start_server, new_page, newsroom_css):
    server = start_server(THEME_CSS_URL=newsroom_css)
    origin = newsroom_css.rsplit("/", 1)[0]
    csp = httpx.get(server.url + ARTICLE).headers["content-security-policy"]
    assert f"style-src 'self' {origin};" in csp
    page = open_article(new_page, server, "light")
    assert computed(page, ".site-header", "border-top-color") == "rgb(0, 110, 60)"
    assert computed(page, ".composer", "border-top-left-radius") == "0px"
    assert "DejaVu Sans Mono" in computed(page, ".story-headline", "font-family")
    assert page.errors == []  # a CSP refusal would be a console error
    # Every page links it after our own stylesheet: the index, login, an error page.
    for path, status in (("/", 200), ("/login", 200), ("/articles/no-such-story", 404)):
        response = page.goto(server.url + path)
        assert response is not None and response.status == status
        assert (
            page.eval_on_selector_all("link[rel=stylesheet]", "links => links.map(l => l.getAttribute('href'))")[-1]
            == newsroom_css
        )
        assert computed(page, ".site-header", "border-top-color") == "rgb(0, 110, 60)"


def contrast_violations(page: Page) -> list[str]:
    results = Axe().run(page, options={"runOnly": {"type": "rule", "values": ["color-contrast"]}})
    return [
        f"{node['target']}: {node['any'][0]['message'] if node['any'] else ''}"
        for violation in results.response["violations"]
        for node in violation["nodes"]
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_meets_wcag_aa_contrast_in_both_themes(start_server, new_page, scheme):
    server = start_server()
    server.command("create-moderator", "alice", stdin=PASSWORD + "\n")
    reader = open_article(new_page, server, scheme)
    post_from(reader, "A first comment, to see the thread's colours.", name="Ann")
    post_from(reader, "   ", name="Ann")  # the composer's error message
    first = reader.locator("li.comment").first
    expect(first).to_be_visible()
    reply_to = first.get_attribute("data-id")
    post_from(reader, "A reply, one level in.", name="Ben", parent=reply_to)
    expect(reader.locator(f"#c-{reply_to} .replies li.comment")).to_be_visible()
    assert contrast_violations(reader) == []

    moderator = new_page()
    moderator.emulate_media(color_scheme=scheme)
    moderator.goto(f"{server.url}/login?next={ARTICLE}")
    assert contrast_violations(moderator) == []
    moderator.fill("#login-username", "alice")
    moderator.fill("#login-password", PASSWORD)
    moderator.click(".login-form button[type=submit]")
    moderator.wait_for_url(f"{server.url}{ARTICLE}*")
    expect(moderator.locator("[data-conn]")).to_have_attribute("data-state", "live")
    moderator.locator(f"#c-{reply_to} .mod-tools [data-action-form=remove] button").first.click()
    expect(moderator.locator(f"#c-{reply_to}")).to_have_attribute("data-status", "removed")
    assert contrast_violations(moderator) == []
    moderator.goto(server.url + "/moderation")
    expect(moderator.locator("[data-conn]")).to_have_attribute("data-state", "live")
    assert contrast_violations(moderator) == []
