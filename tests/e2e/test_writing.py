"""The article page in real headless Chromium against a real server: writing a comment, and
what a reader is told when something is refused, too long, or cannot reach the server."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from playwright.sync_api import Page, expect

from ..servers import ServerProcess
from .article_page import API, ARTICLE, comment_by_body, post_from, thread_comments

pytestmark = pytest.mark.timeout(120)

LIMIT = 5000


def composer(page: Page):
    return page.locator(".composer form[data-comment-form]")


def posts_seen(page: Page) -> list[str]:
    """Every comment the page sends from now on, over HTTP or over the sockets it opens."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framesent", lambda payload: sent.append(str(payload)) if '"type":"post"' in str(payload) else None
        ),
    )
    return sent


def create_moderator(server: ServerProcess, name: str, *options: str) -> None:
    server.command("create-moderator", name, *options, stdin="a long enough password\n")


def test_a_moderators_display_name_is_refused_in_the_servers_words(server, open_page):
    create_moderator(server, "alice", "--display-name", "Alice")
    page = open_page(server)
    post_from(page, "Hello from someone else", name="alice")
    error = composer(page).locator("[data-form-error]")
    expect(error).to_have_text("That name is reserved. Please choose another.")
    expect(composer(page).locator("textarea[name=body]")).to_have_value("Hello from someone else")
    # Choosing another name is the fix: the message goes as soon as the name changes.
    composer(page).locator("input[name=name]").fill("Alicia")
    expect(error).to_be_empty()
    composer(page).locator("[data-submit]").click()
    expect(comment_by_body(page, "Hello from someone else")).to_be_visible()


def test_an_error_goes_away_once_the_reader_fixes_what_it_was_about(server, open_page):
    page = open_page(server)
    form = composer(page)
    error = form.locator("[data-form-error]")
    form.locator("input[name=name]").fill("Jo")
    form.locator("textarea[name=body]").fill("   ")  # passes `required`, not the page's check
    form.locator("[data-submit]").click()
    expect(error).to_have_text("Please write your comment first.")
    form.locator("textarea[name=body]").press_sequentially("Now I")
    expect(error).to_be_empty()
    form.locator("input[name=name]").fill(" ")
    form.locator("[data-submit]").click()
    expect(error).to_have_text("Please add your name.")
    expect(form.locator("input[name=name]")).to_be_focused()
    form.locator("input[name=name]").press_sequentially("Jo")
    expect(error).to_be_empty()
    form.locator("[data-submit]").click()
    expect(comment_by_body(page, "Now I")).to_be_visible()
    assert page.errors == []


def test_a_post_while_the_server_is_down_keeps_the_reader_and_the_draft_on_the_page(server, open_page):
    page = open_page(server)
    server.stop()
    expect(page.locator("[data-conn]")).not_to_have_attribute("data-state", "live")
    post_from(page, "Written while the server was down", name="Kim")
    error = composer(page).locator("[data-form-error]")
    expect(error).to_contain_text("Could not reach the server")
    expect(error).to_contain_text("Your text is kept")
    assert page.url == server.url + ARTICLE  # not the browser's "site can't be reached" page
    expect(composer(page).locator("textarea[name=body]")).to_have_value("Written while the server was down")
    expect(composer(page).locator("[data-submit]")).to_be_enabled()
    # Back up: the same draft posts with one click.
    server.start()
    expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live", timeout=30_000)
    composer(page).locator("[data-submit]").click()
    expect(comment_by_body(page, "Written while the server was down")).to_be_visible()
    expect(error).to_be_empty()


def test_a_comment_over_the_limit_is_counted_and_refused_before_it_is_sent(server, new_page):
    page = new_page()
    sent = posts_seen(page)  # before the page opens its socket
    page.goto(server.url + ARTICLE)
    expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live")
    form = composer(page)
    body = form.locator("textarea[name=body]")
    counter, error = form.locator("[data-counter]"), form.locator("[data-form-error]")
    expect(counter).to_be_hidden()  # nothing to say far from the limit
    body.fill("x" * 6000)  # as a paste: one input event with all of it
    expect(body).to_have_value("x" * 6000)  # nothing cut silently
    expect(counter).to_have_text("6,000 / 5,000 characters — 1,000 too many")
    expect(error).to_contain_text("1,000 over the limit of 5,000")
    form.locator("input[name=name]").fill("Lee")
    form.locator("[data-submit]").click()
    expect(error).to_contain_text("Please shorten it")
    expect(body).to_be_focused()
    assert sent == [], sent
    # Shortened to the limit: the refusal goes, the counter stays, and it posts.
    body.fill("y" * LIMIT)
    expect(error).to_be_empty()
    expect(counter).to_have_text("5,000 / 5,000 characters")
    form.locator("[data-submit]").click()
    expect(page.locator("#thread > li.comment").first).to_contain_text("y" * 100)
    assert len(sent) == 1
    assert page.errors == []


def test_the_counter_counts_characters_as_a_reader_sees_them(server, open_page):
    """A thumbs-up with a skin tone is one character to a reader, two code points and four
    UTF-16 units to the browser (the maxlength attribute would have cut this at 1,250)."""
    page = open_page(server)
    form = composer(page)
    thumbs = "\U0001f44d\U0001f3fd" * LIMIT
    form.locator("textarea[name=body]").fill(thumbs)
    expect(form.locator("[data-counter]")).to_have_text("5,000 / 5,000 characters")
    expect(form.locator("[data-form-error]")).to_be_empty()
    form.locator("input[name=name]").fill("Emoji Fan")
    form.locator("[data-submit]").click()
    expect(form.locator("textarea[name=body]")).to_have_value("")
    assert any(c["body"] == thumbs for c in thread_comments(server.url))


def test_escape_closes_a_reply_form_and_ctrl_enter_posts(server, open_page):
    parent_id = httpx.get(server.url + API).json()["comments"][0]["id"]
    page = open_page(server)
    reply = page.locator(f"#c-{parent_id} > .comment-card details.reply")
    reply.locator("summary").click()
    body = reply.locator("textarea[name=body]")
    expect(body).to_be_focused()
    body.press_sequentially("A reply I will finish later")
    page.keyboard.press("Escape")
    expect(reply).not_to_have_attribute("open", "")
    expect(reply.locator("summary")).to_be_focused()
    page.keyboard.press("Enter")  # open it again from the keyboard: the draft is still there
    expect(body).to_have_value("A reply I will finish later")
    reply.locator("input[name=name]").fill("Mo")
    body.press("Control+Enter")
    replies = page.locator(f'ol.replies[data-replies-of="{parent_id}"] > li.comment')
    expect(replies).to_contain_text("A reply I will finish later")
    # And in the main composer, Cmd+Enter (a Mac's) as well.
    composer(page).locator("textarea[name=body]").fill("Posted from the keyboard")
    composer(page).locator("input[name=name]").fill("Mo")
    composer(page).locator("textarea[name=body]").press("Meta+Enter")
    expect(comment_by_body(page, "Posted from the keyboard")).to_be_visible()
    assert page.errors == []


def test_a_long_comment_is_collapsed_behind_read_more_on_a_phone(server, open_page):
    paragraph = "A long argument, carefully made, sentence after sentence. " * 16
    long_body = "\n\n".join([paragraph.strip()] * 5)[:LIMIT]
    comment_id = httpx.post(server.url + API, json={"name": "Verbose", "body": long_body}).json()["comment"]["id"]
    phone = open_page(server, width=390, height=844)
    expect_collapsed(phone, comment_id)
    more = phone.locator(f"#c-{comment_id} > .comment-card [data-field=read-more]")
    more.click()
    expect(more).to_have_attribute("aria-expanded", "true")
    expect(more).to_have_text("Show less")
    expanded = card_height(phone, comment_id)
    print(f"long comment at 390 px: {expanded:.0f} px expanded")
    assert expanded > 1500
    # A long comment arriving live is collapsed the same way; a short one has no button.
    again = {"name": "Verbose", "body": long_body + " (again)"}
    live_id = httpx.post(server.url + API, json=again).json()["comment"]["id"]
    expect(phone.locator(f"#c-{live_id}")).to_be_attached()
    expect_collapsed(phone, live_id)
    short_id = httpx.get(server.url + API).json()["comments"][0]["id"]
    expect(phone.locator(f"#c-{short_id} > .comment-card [data-field=read-more]")).to_be_hidden()
    assert phone.errors == []


def card_height(page: Page, comment_id: str) -> float:
    return page.locator(f"#c-{comment_id} > .comment-card").bounding_box()["height"]


def expect_collapsed(page: Page, comment_id: str) -> None:
    more = page.locator(f"#c-{comment_id} > .comment-card [data-field=read-more]")
    expect(more).to_be_visible()
    expect(more).to_have_attribute("aria-expanded", "false")
    height = card_height(page, comment_id)
    print(f"long comment at 390 px: {height:.0f} px collapsed")
    assert height < 700


# WCAG 2.x contrast of every piece of text a reader sees, from the computed colours: text over
# the backgrounds it sits on (composited up to the first opaque one).
CONTRAST = """() => {
  const parse = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1 });
  const lum = ({ r, g, b }) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    const layers = [];
    for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let bg = layers.length && layers[layers.length - 1].a >= 1 ? layers.pop() : { r: 255, g: 255, b: 255, a: 1 };
    while (layers.length) bg = over(layers.pop(), bg);
    return bg;
  };
  const found = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest(".visually-hidden, template, script, style")) continue;
    const own = [...el.childNodes].filter((n) => n.nodeType === 3 && n.textContent.trim())
      .map((n) => n.textContent.trim()).join(" ");
    if (!own || !el.getClientRects().length || getComputedStyle(el).visibility === "hidden") continue;
    const style = getComputedStyle(el);
    const fg = parse(style.color);
    if (!fg) { found.push({ text: own.slice(0, 40), unparsed: style.color }); continue; }
    const bg = background(el);
    const [a, b] = [lum(over(fg, bg)), lum(bg)].sort((x, y) => y - x);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && parseInt(style.fontWeight, 10) >= 700);
    found.push({ text: own.slice(0, 40), cls: el.className, ratio: (a + 0.05) / (b + 0.05), needed: large ? 3 : 4.5 });
  }
  return found;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_on_the_article_page_meets_wcag_aa_contrast(server, open_page, scheme):
    page = open_page(server)
    page.emulate_media(color_scheme=scheme)
    comment_id = httpx.get(server.url + API).json()["comments"][0]["id"]
    page.locator(f"#c-{comment_id} > .comment-card details.report summary").click()  # its form shows too
    texts = page.evaluate(CONTRAST)
    grey = [t for t in texts if "comment-permalink" in str(t.get("cls")) or t["text"].startswith("Report")]
    print(scheme, "timestamps and Report:", sorted({round(t["ratio"], 2) for t in grey}))
    assert grey, "no timestamp or Report found to measure"
    assert [t for t in texts if "unparsed" in t] == []
    failing = [t for t in texts if t["ratio"] < t["needed"]]
    assert failing == [], failing


def test_a_live_connection_the_server_refuses_is_explained_and_retried(start_server, open_page, new_page):
    """One address, one socket (as a carrier's NAT can look): the second page reads the thread,
    is told why it is not live, and goes live by itself once the first has left."""
    server = start_server(MAX_CONNECTIONS_PER_IP="1")
    first = open_page(server)
    second = new_page()
    second.goto(server.url + ARTICLE)
    conn = second.locator("[data-conn]")
    expect(conn).to_have_attribute("data-state", "refused", timeout=20_000)
    expect(conn).to_contain_text("Live updates paused")
    expect(conn).to_contain_text("you can still read and post")
    expect(second.locator("#thread > li.comment").first).to_be_visible()  # the thread is all there
    post_from(second, "Posted while not live", name="Nat")  # over HTTP
    expect(comment_by_body(second, "Posted while not live")).to_be_visible()
    first.close()
    expect(conn).to_have_attribute("data-state", "live", timeout=45_000)


def test_without_javascript_a_comment_over_the_limit_comes_back_refused_with_its_text(server, open_page):
    """No maxlength cuts the paste silently: the server refuses it and shows the page again."""
    page = open_page(server, javascript=False)
    post_from(page, "z" * 6000, name="Old Browser", javascript=False)
    form = composer(page)
    expect(form.locator("[data-form-error]")).to_contain_text("5,000")
    expect(form.locator("textarea[name=body]")).to_have_value("z" * 6000)
    assert all("z" * 100 not in c["body"] for c in thread_comments(server.url))
