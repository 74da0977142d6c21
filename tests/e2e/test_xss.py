"""The XSS corpus (tests/e2e/xss_corpus.py) against real headless Chromium and a real server.

Every payload goes in as a name, an "about" line and a comment body, through each way in: the
no-JavaScript form (a JS-disabled page), the JSON API and the WebSocket. A reader watches the
thread live while it arrives (live.js inserting each comment), and again after a reload; its
page has the CSP bypassed, so that the escaping itself is tested and not only the CSP behind
it. A second reader then opens the whole thread with the CSP in force: the CSP must never have
had anything to stop. Then the refused-form path, which shows what the reader typed again
inside <textarea> and value="…".

In every page: the flag the payloads set stays unset, no dialog opens, no request leaves for
another host (and the browser resolves no name at all, so none could), no CSP violation is
reported, the DOM holds no element or attribute a payload could have brought, and each
comment shows its name, about line and text exactly, as text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import pytest
import regex
from playwright.sync_api import Browser, BrowserContext, Page, expect
from websockets.sync.client import connect

from server.content import slugify
from server.errors import Empty, TooLong
from server.settings import MAX_ABOUT_CHARS, MAX_NAME_CHARS
from server.text import clean_body, clean_name

from ..servers import CHROMIUM_ARGS, DEMO_SLUG, ROOT, ServerProcess, chromium_path
from .article_page import thread_comments
from .xss_corpus import PAYLOADS

ARTICLE = f"/articles/{DEMO_SLUG}"
SEEDS = 4  # the demo article's imported comments
CHANNELS = ("form", "api", "websocket")
UNLIMITED = {"POST_RATE_PER_READER": "100000/second", "POST_RATE_PER_IP": "100000/second"}

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def isolated_browser(browser: Browser) -> Iterator[Browser]:
    """A Chromium of its own (from the session's Playwright: there can be only one) in which
    every host name resolves to nothing (loopback literals still work): whatever got through
    could not reach any machine but this one, and the request it tried is still seen."""
    args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
    isolated = browser.browser_type.launch(executable_path=chromium_path(), args=args)
    yield isolated
    isolated.close()


# --- watching a page -------------------------------------------------------------------------

WATCH_SCRIPT = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || '')));
"""


class Watched:
    """A browser context whose pages report dialogs, errors and requests to other origins."""

    def __init__(
        self,
        browser: Browser,
        server: ServerProcess,
        *,
        javascript: bool = True,
        bypass_csp: bool = False,
        articles: tuple[str, ...] = (ARTICLE,),
    ) -> None:
        self.server = server
        self.origin = server.url
        self.articles = articles
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.navigations: list[str] = []  # where main frames went: only ever the article (or its form post)
        self.context: BrowserContext = browser.new_context(java_script_enabled=javascript, bypass_csp=bypass_csp)
        self.context.add_init_script(WATCH_SCRIPT)
        self.context.route("**/*", self._route)
        self.context.on("request", self._request)

    def _same_origin(self, url: str) -> bool:
        parts, ours = urlsplit(url), urlsplit(self.origin)
        return (parts.scheme, parts.netloc) == (ours.scheme, ours.netloc)

    def _route(self, route) -> None:
        if self._same_origin(route.request.url):
            route.continue_()
        else:
            route.abort()

    def _request(self, request) -> None:
        if not self._same_origin(request.url):
            self.foreign.append(request.url)

    def page(self) -> Page:
        page = self.context.new_page()
        page.on("dialog", lambda dialog: (self.dialogs.append(f"{dialog.type}: {dialog.message}"), dialog.dismiss()))
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        # The console's "Failed to load resource" does not say which: this does.
        page.on(
            "response",
            lambda r: (
                self.errors.append(f"response: {r.status} {r.request.method} {r.url}") if r.status >= 500 else None
            ),
        )
        page.on(
            "framenavigated", lambda frame: self.navigations.append(frame.url) if frame == page.main_frame else None
        )
        return page

    def strange_navigations(self) -> list[str]:
        """Main-frame navigations anywhere but the article page and its form's answer (a meta
        refresh, a <base> or a form a payload brought would show up here)."""
        allowed = {self.origin + a + tail for a in self.articles for tail in ("", "/comments")}
        return [url for url in self.navigations if url.split("#")[0] not in allowed]

    def open_live(self, article: str = ARTICLE) -> Page:
        page = self.page()
        page.goto(self.origin + article)
        expect_or_explain(
            page, self, lambda: expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live")
        )
        return page

    def close(self) -> None:
        self.context.close()


# What the DOM may hold. Anything a payload could bring in that the page itself never uses is
# listed (the page's own <script>s, <link>s and forms are checked for where they point).
INSPECT_DOM = """
() => {
  const problems = [];
  const say = (what, el) => problems.push(what + ': ' + (el && el.outerHTML ? el.outerHTML.slice(0, 160) : el));
  const DANGER = 'img, svg, math, iframe, frame, frameset, object, embed, style, base, video, audio, source, '
    + 'canvas, marquee, xss, xml, isindex, keygen, bgsound, plaintext, xmp, noembed, noframes, noscript, applet, '
    + 'portal, input[type=image], [style], [srcdoc], [formaction], [background], [dynsrc], [lowsrc], '
    + 'meta[http-equiv], body [id=xss]';
  for (const el of document.querySelectorAll(DANGER)) say('element', el);
  for (const el of document.querySelectorAll('*')) {
    for (const attr of el.attributes) {
      if (/^on/i.test(attr.name)) say('event handler ' + attr.name, el);
      if (/^\\s*(javascript|vbscript|data|livescript):/i.test(attr.value.replace(/[\\t\\n\\r]/g, ''))) {
        say('script URL in ' + attr.name, el);
      }
    }
  }
  const own = (url) => new URL(url, location.href).origin === location.origin;
  for (const script of document.scripts)
    if (!script.src || !script.src.startsWith(location.origin + '/static/')) say('script', script);
  for (const link of document.querySelectorAll('link'))
    if (!link.href.startsWith(location.origin + '/static/')) say('link', link);
  for (const form of document.forms)
    if (!own(form.action) || form.closest('[data-field="body"], [data-field="name"], [data-field="about"]')) {
      say('form', form);
    }
  for (const a of document.querySelectorAll('a[href]'))
    if (!['http:', 'https:', 'mailto:'].includes(a.protocol)) say('link protocol', a);
  if (document.querySelectorAll('title').length !== 1) say('title', document.title);
  if (window.frames.length) say('frames', window.frames.length);

  const comments = {};
  for (const li of document.querySelectorAll('li.comment')) {
    const id = li.dataset.id;
    if (!id) continue;  // the blank one inside <template> is not in the document
    const card = li.querySelector(':scope > .comment-card');
    const field = (name) => card && card.querySelector(':scope [data-field="' + name + '"]');
    const body = field('body'), name = field('name'), about = field('about');
    if (!body || !name || !about) { say('a comment without its parts', li); continue; }
    for (const el of [name, about]) if (el.childElementCount) say('markup in a name or about', el);
    let text = '';
    for (const [i, p] of [...body.children].entries()) {
      if (p.tagName !== 'P' || p.attributes.length) say('not a bare <p> in a body', p);
      if (i) text += '\\n\\n';
      for (const node of p.childNodes) {
        if (node.nodeType === Node.TEXT_NODE) text += node.data;
        else if (node.tagName === 'BR' && !node.attributes.length) text += '\\n';
        else if (node.tagName === 'A' && node.childElementCount === 0 &&
                 [...node.attributes].every((a) => ['href', 'rel', 'target'].includes(a.name)) &&
                 node.rel === 'nofollow ugc noopener' && node.target === '_blank') text += node.textContent;
        else say('unexpected node in a body', node);
      }
    }
    for (const node of body.childNodes) {
      if (node.nodeType === Node.TEXT_NODE && node.data.trim()) say('text outside <p>', node.data);
    }
    comments[id] = {name: name.textContent, about: about.textContent, body: text,
                    visible: li.dataset.status !== 'visible' || body.checkVisibility()};
  }
  return {problems, comments, flag: typeof window.__xss === 'undefined' ? null : String(window.__xss),
          csp: window.__cspViolations || []};
}
"""


def expect_or_explain(page: Page, watched: Watched, expectation) -> None:
    """Runs a Playwright expectation; if it fails, says first whether a payload is the reason
    (a page whose markup a payload broke is never "live" and never shows every comment)."""
    try:
        expectation()
    except AssertionError:
        assert_inert(page, watched)
        raise


def thread_complete(page: Page, watched: Watched, total: int, timeout: float = 10_000) -> None:
    """Every top-level comment on the page: the ones it shows, and the rest loaded in place
    with "Load more comments" (the page opens on a screenful, server/paging.py)."""
    more = page.locator("[data-load-more]")
    while more.is_visible():
        shown = page.locator("#thread > li.comment").count()
        more.click()
        expect_or_explain(
            page, watched, lambda shown=shown: expect(page.locator("#thread > li.comment")).not_to_have_count(shown)
        )
    expect_or_explain(
        page, watched, lambda: expect(page.locator("#thread > li.comment")).to_have_count(total, timeout=timeout)
    )


def shown_text(text: str) -> str:
    """The text a reader sees of a comment body: paragraphs at blank lines, each trimmed."""
    return "\n\n".join(p.strip() for p in regex.split(r"\n\s*\n", text) if p.strip())


def assert_inert(page: Page, watched: Watched, expected: dict[str, dict] | None = None) -> None:
    """Nothing ran, nothing was fetched, nothing was injected; every expected comment reads right."""
    assert watched.strange_navigations() == [], f"the page went elsewhere: {watched.strange_navigations()[:5]}"
    seen = page.evaluate(INSPECT_DOM)
    assert seen["flag"] is None, f"a payload ran: window.__xss = {seen['flag']}"
    assert watched.dialogs == [], watched.dialogs
    assert watched.foreign == [], f"requests to other hosts: {watched.foreign[:10]}"
    assert seen["csp"] == [], f"the CSP had to stop something: {seen['csp'][:10]}"
    assert seen["problems"] == [], "\n".join(seen["problems"][:20])
    assert watched.errors == [], watched.errors[:10]
    for comment_id, comment in (expected or {}).items():
        shown = seen["comments"].get(comment_id)
        assert shown is not None, f"comment {comment_id} is not on the page"
        assert shown["name"] == comment["author"]["name"], comment_id
        assert shown["about"] == (comment["author"]["about"] or ""), comment_id
        assert shown["body"] == shown_text(comment["body"]), (comment_id, shown["body"], comment["body"])
        assert shown["visible"], f"comment {comment_id} is hidden"


# --- the three ways in -------------------------------------------------------------------------


def fitting(payload: str, limit: int) -> str:
    """The longest start of a payload that a form field of `limit` takes and the server accepts."""
    for end in range(min(len(payload), limit), 0, -1):
        head = payload[:end]
        if len(head.encode("utf-16-le")) // 2 > limit:  # maxlength counts UTF-16 code units
            continue
        try:
            clean_name(head, limit, "name", required=True)
        except (Empty, TooLong):
            continue
        return head
    raise AssertionError(f"no start of {payload!r} makes a name")


def items() -> list[dict[str, str]]:
    # Each body ends in a paragraph of its own number: the spam rules refuse the same words twice
    # from one reader, and some payloads differ only in case or punctuation.
    return [
        {"body": f"{p}\n\n#{n}", "name": fitting(p, MAX_NAME_CHARS), "about": fitting(p, MAX_ABOUT_CHARS)}
        for n, p in enumerate(PAYLOADS)
    ]


def api_of(article: str) -> str:
    return "/api" + article + "/comments"


def post_through_the_api(server: ServerProcess, article: str) -> list[str]:
    ids = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for item in items():
            response = client.post(api_of(article), json=item)
            assert response.status_code == 201, (item, response.text)
            ids.append(response.json()["comment"]["id"])
    return ids


def post_through_the_websocket(server: ServerProcess, article: str) -> list[str]:
    ids = []
    with connect(server.ws_url + article + "/live", open_timeout=10, max_size=2**22) as ws:
        for n, item in enumerate(items()):
            ref = f"xss-{n}"
            ws.send(json.dumps({"type": "post", "ref": ref, "parent": None, **item}))
            while True:  # events and presence arrive too; read on to this post's answer
                frame = json.loads(ws.recv(timeout=10))
                if frame.get("ref") == ref:
                    assert frame["type"] == "ack", (item, frame)
                    ids.append(frame["id"])
                    break
    return ids


FORM_POST = """([sink, body, name, about]) => {
  const form = document.querySelector('.composer form[data-comment-form]');
  form.target = sink;
  form.elements.body.value = body;
  form.elements.name.value = name;
  form.elements.about.value = about;
  form.requestSubmit();
}"""
SINKS = 4


def as_sent(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def post_through_the_form(watched: Watched, article: str) -> list[str]:
    """The no-JavaScript path: the page's own comment form, in a page with JavaScript off, sent by
    the browser, a few at a time into hidden frames. The server's answer (a 303 to the new
    comment) is taken in the middle, so that no frame loads the whole thread once per post."""
    answers: dict[str, tuple[int, str]] = {}  # body as sent -> (status, Location)

    def answer_here(route) -> None:
        body = parse_qs(route.request.post_data or "", keep_blank_values=True)["body"][0]
        response = route.fetch(max_redirects=0)
        answers[as_sent(body)] = (response.status, response.headers.get("location", ""))
        route.fulfill(status=200, content_type="text/plain", body="stored")

    page = watched.page()
    page.route(f"**{article}/comments", answer_here)
    page.goto(watched.origin + article)
    page.evaluate(
        """(n) => { for (let i = 0; i < n; i++) {
        const sink = document.createElement('iframe');
        sink.name = 'sink' + i;
        document.body.append(sink); } }""",
        SINKS,
    )
    all_items = items()
    for start in range(0, len(all_items), SINKS):
        batch = all_items[start : start + SINKS]
        for n, item in enumerate(batch):
            page.evaluate(FORM_POST, [f"sink{n}", item["body"], item["name"], item["about"]])
        while not all(as_sent(item["body"]) in answers for item in batch):
            page.wait_for_event("response", lambda r: r.request.method == "POST")
    page.close()
    ids = []
    for item in all_items:
        status, location = answers[as_sent(item["body"])]
        assert status == 303, (item, status)
        ids.append(location.rsplit("#c-", 1)[1])
    return ids


def stored(server: ServerProcess, article: str = ARTICLE) -> dict[str, dict]:
    return {c["id"]: c for c in thread_comments(server.url, api_of(article))}


def articles_per_way_in(content_dir: Path) -> dict[str, str]:
    """The demo article three times over, one for each way in: a page with all 900 comments takes
    Chromium many seconds to load (about two forms per comment), three of 300 do not."""
    content_dir.mkdir()
    demo = (ROOT / "content" / "moscow-warns-western-troops.txt").read_text().split("\n", 1)
    articles = {}
    for channel in CHANNELS:
        title = f"Comments sent through the {channel}"
        (content_dir / f"{channel}.txt").write_text(title + "\n" + demo[1])
        articles[channel] = "/articles/" + slugify(title)
    return articles


def one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")  # what <input type=text> does to a value


# --- the tests ---------------------------------------------------------------------------------


def test_the_xss_corpus_stays_text_live_and_after_a_reload(isolated_browser, start_server, tmp_path):
    articles = articles_per_way_in(tmp_path / "content")
    server = start_server(content_dir=tmp_path / "content", **UNLIMITED)
    # The live reader has the CSP bypassed: what it shows is the escaping alone. The reader
    # with the CSP comes after (a page on the whole thread), then the live one reloads.
    watched = {
        kind: Watched(isolated_browser, server, articles=tuple(articles.values()), **options)
        for kind, options in (("live", {"bypass_csp": True}), ("csp", {}), ("poster", {"javascript": False}))
    }
    live, with_csp, poster = watched["live"], watched["csp"], watched["poster"]
    try:
        readers = {channel: live.open_live(article) for channel, article in articles.items()}
        ids = {
            "form": post_through_the_form(poster, articles["form"]),
            "api": post_through_the_api(server, articles["api"]),
            "websocket": post_through_the_websocket(server, articles["websocket"]),
        }
        assert poster.dialogs == [] and poster.foreign == [] and poster.errors == []
        comments = {channel: stored(server, article) for channel, article in articles.items()}
        total = SEEDS + len(PAYLOADS)

        # The server kept what was typed, cleaned as documented, and nothing else.
        for channel in CHANNELS:
            assert len(comments[channel]) == total
            for item, comment_id in zip(items(), ids[channel], strict=True):
                comment = comments[channel][comment_id]
                assert comment["body"] == clean_body(item["body"], 5000), (channel, item)
                name, about = (
                    (one_line(item["name"]), one_line(item["about"]))
                    if channel == "form"
                    else (item["name"], item["about"])
                )
                assert comment["author"]["name"] == clean_name(name, MAX_NAME_CHARS, "name", True), (channel, item)
                assert comment["author"]["about"] == clean_name(about, MAX_ABOUT_CHARS, "description", False)

        # Live: every comment arrived over the socket into the open pages.
        for channel, page in readers.items():
            thread_complete(page, live, total, timeout=60_000)
            assert_inert(page, live, comments[channel])
        # Each thread rendered by the server, in a page with the CSP; then the live pages reloaded.
        for channel, article in articles.items():
            page = with_csp.open_live(article)
            thread_complete(page, with_csp, total)
            assert_inert(page, with_csp, comments[channel])
        for channel, page in readers.items():
            page.reload()
            expect_or_explain(
                page,
                live,
                lambda page=page: expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live"),
            )
            thread_complete(page, live, total)
            assert_inert(page, live, comments[channel])
    finally:
        for each in watched.values():
            each.close()


REFUSED_FORM = """([action, fields]) => {
  const form = document.createElement('form');
  form.method = 'post';
  form.action = action;
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement('input');
    input.type = 'hidden';
    input.name = name;
    input.value = value;
    form.append(input);
  }
  document.body.append(form);
  form.submit();  // a plain navigation: live.js does not see it
}"""


def as_parsed(text: str) -> str:
    """A value as the browser reads it back from the page's HTML (CRLF/CR -> LF, NUL -> U+FFFD)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")


@pytest.mark.parametrize("where", ["composer", "reply"])
def test_a_refused_form_shows_the_hostile_text_again_only_as_text(isolated_browser, start_server, where):
    """A refused form post shows the page again with what was typed kept in the form: every
    payload at once in the textarea and in both value="…" attributes."""
    server = start_server(**UNLIMITED)
    watched = Watched(isolated_browser, server, bypass_csp=True)
    try:
        page = watched.open_live()
        parent = next(iter(stored(server))) if where == "reply" else ""
        fields = {
            "csrf_token": page.locator('meta[name="csrf-token"]').get_attribute("content"),
            "parent": parent,
            "name": " ".join(PAYLOADS),  # far over the 80 characters a name may have: refused
            "about": " ".join(PAYLOADS),
            "body": "\n".join(PAYLOADS),
        }
        with page.expect_navigation() as navigation:
            page.evaluate(REFUSED_FORM, [ARTICLE + "/comments", fields])
        assert navigation.value.status == 422
        # Chromium logs the 422 of the page itself as a failed load: that one is expected.
        watched.errors = [e for e in watched.errors if "status of 422" not in e]
        expect_or_explain(
            page, watched, lambda: expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live")
        )
        form = page.locator(f"#c-{parent} > .comment-card form" if parent else ".composer form")
        expect(form.locator("[data-form-error]")).to_contain_text("limited to 80 characters")
        # Each value is exactly what was sent: nothing closed the textarea or the attribute.
        assert form.locator("textarea[name=body]").input_value() == as_parsed(fields["body"])
        for name in ("name", "about"):
            assert form.locator(f"input[name={name}]").get_attribute("value") == as_parsed(fields[name])
        assert_inert(page, watched, stored(server))
    finally:
        watched.close()
