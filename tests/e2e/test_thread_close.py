"""A thread closed and reopened while two readers have the page open, in real headless
Chromium against a real server: their composers and Reply buttons go live, the page says
"Comments are closed", a post over the socket, over HTTP or from the form without JavaScript is
refused with `closed` (403), what a reader had typed stays in their form, and reopening brings
everything back."""

from __future__ import annotations

import time

import httpx2 as httpx
import pytest
from playwright.sync_api import Page, expect

from ..servers import DEMO_SLUG, ServerProcess
from .article_page import API, ARTICLE, comment_by_body, post_from, thread_comments

pytestmark = pytest.mark.timeout(120)

PASSWORD = "a long enough password"
# ms: how long a close may take to reach another reader's page. It takes tens of ms; the bound
# is generous because the server and three Chromium pages share a busy 2-core machine.
LIVE = 5000


def composer(page: Page):
    return page.locator(".composer")


def reply_buttons(page: Page):
    return page.locator("#thread details.reply > summary")


def log_in(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/login?next={ARTICLE}")
    page.fill("#login-username", "alice")
    page.fill("#login-password", PASSWORD)
    page.click(".login-form button[type=submit]")
    page.wait_for_url(f"{server.url}{ARTICLE}*")
    expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live")


def refused_over_the_socket(page: Page) -> dict:
    """A post sent on a socket of the page's own, as live.js sends one: the server's answer."""
    return page.evaluate(
        """(url) => new Promise((resolve, reject) => {
            const ws = new WebSocket(url);
            ws.onmessage = (event) => {
              const frame = JSON.parse(event.data);
              if (frame.type === "welcome") {
                ws.send(JSON.stringify({type: "post", ref: "late-1", body: "Too late", parent: null,
                                        name: "Socket reader", about: null}));
              } else if (frame.type === "error" || frame.type === "ack") { resolve(frame); ws.close(); }
            };
            ws.onerror = () => reject(new Error("socket failed"));
          })""",
        page.url.replace("http", "ws", 1).split("#")[0] + "/live",
    )


def refused_over_http(page: Page) -> dict:
    return page.evaluate(
        """async (api) => {
            const res = await fetch(api, {method: "POST", headers: {"Content-Type": "application/json",
              "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content},
              body: JSON.stringify({name: "HTTP reader", body: "Too late as well"})});
            return {status: res.status, body: await res.json()};
          }""",
        API,
    )


def test_two_readers_watch_the_thread_close_and_reopen_and_lose_nothing(
    server: ServerProcess, open_page, new_page
) -> None:
    server.command("create-moderator", "alice", stdin=PASSWORD + "\n")
    first_id = thread_comments(server.url)[0]["id"]
    writer, watcher = open_page(server), open_page(server, width=390)
    # The writer has a comment half written; the watcher a reply to the first comment.
    composer(writer).locator("textarea[name=body]").fill("A thought I had not posted yet")
    composer(writer).locator("input[name=name]").fill("Writer")
    watcher.locator(f"#c-{first_id} > .comment-card details.reply > summary").click()
    reply_box = watcher.locator(f"#c-{first_id} > .comment-card details.reply")
    reply_box.locator("textarea[name=body]").fill("My reply, typed in time")
    no_js = new_page(javascript=False)
    no_js.goto(server.url + ARTICLE)
    no_js.locator(".composer textarea[name=body]").fill("Typed without JavaScript")
    no_js.locator(".composer input[name=name]").fill("Plain reader")
    moderator = new_page()
    log_in(moderator, server)

    started = time.monotonic()
    moderator.locator('form[data-action-form="thread-close"] button').click()
    for page in (writer, watcher):
        expect(page.locator("[data-thread-note]")).to_have_text(
            "Comments are closed. The conversation stays here to read.", timeout=LIVE
        )
    print(f"\nclosed on both readers' pages {(time.monotonic() - started) * 1000:.0f} ms after the click")
    expect(moderator.locator('[data-field="action-result"]').first).to_contain_text("Comments are closed")

    # Every Reply button is gone; a composer with nothing in it is gone.
    for page in (writer, watcher):
        expect(reply_buttons(page).first).to_be_hidden()
        expect(page.locator("[data-submit]:visible")).to_have_count(0)
    expect(composer(watcher)).to_be_hidden()
    # What the readers had typed stays where it was, saying it was not posted.
    expect(composer(writer)).to_be_visible()
    expect(composer(writer).locator("textarea[name=body]")).to_have_value("A thought I had not posted yet")
    expect(composer(writer).locator("[data-form-error]")).to_contain_text("not posted")
    expect(reply_box).to_be_visible()
    expect(reply_box.locator("textarea[name=body]")).to_have_value("My reply, typed in time")
    # Ctrl+Enter in a kept form sends nothing either.
    composer(writer).locator("textarea[name=body]").press("Control+Enter")
    expect(composer(writer).locator("[data-form-error]")).to_contain_text("closed")

    # A post by every way in is refused, with `closed`.
    socket_answer = refused_over_the_socket(watcher)
    assert (socket_answer["type"], socket_answer["code"]) == ("error", "closed"), socket_answer
    http_answer = refused_over_http(watcher)
    assert http_answer["status"] == 403 and http_answer["body"]["error"]["code"] == "closed", http_answer
    no_js.locator(".composer [data-submit]").click()
    expect(no_js.locator(".composer [data-form-error]")).to_contain_text("Comments on this article are closed")
    expect(no_js.locator(".composer textarea[name=body]")).to_have_value("Typed without JavaScript")
    expect(no_js.locator("[data-thread-note]")).to_be_visible()
    assert not [c for c in thread_comments(server.url) if "Too late" in c["body"] or "JavaScript" in c["body"]]

    # Reopened: the composers and Reply buttons come back, text and all, and posting works again.
    started = time.monotonic()
    moderator.locator('form[data-action-form="thread-open"] button').click()
    for page in (writer, watcher):
        expect(page.locator("[data-thread-note]")).to_be_hidden(timeout=LIVE)
        expect(composer(page)).to_be_visible()
        expect(reply_buttons(page).first).to_be_visible()
    print(f"reopened on both readers' pages {(time.monotonic() - started) * 1000:.0f} ms after the click")
    expect(composer(writer).locator("textarea[name=body]")).to_have_value("A thought I had not posted yet")
    expect(composer(writer).locator("[data-form-error]")).to_be_empty()
    composer(writer).locator("[data-submit]").click()
    expect(comment_by_body(watcher, "A thought I had not posted yet")).to_be_visible(timeout=LIVE)
    post_from(watcher, "And the conversation goes on", name="Watcher")
    expect(comment_by_body(writer, "And the conversation goes on")).to_be_visible(timeout=LIVE)
    assert not writer.errors, writer.errors
    assert [e for e in watcher.errors if "403" not in e] == [], watcher.errors  # (the refused fetch above)


def test_a_reader_opening_a_closed_thread_sees_it_closed_with_or_without_javascript(
    server: ServerProcess, open_page, new_page
) -> None:
    created = server.command("create-token", "cms", "--scope", "articles:write")
    token = created.stdout.strip().splitlines()[-1]
    closed = httpx.post(
        f"{server.url}/api/articles/{DEMO_SLUG}/close", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert closed.status_code == 200, closed.text
    for page in (open_page(server), open_page(server, javascript=False)):
        page.goto(server.url + ARTICLE)
        expect(page.locator("[data-thread-note]")).to_have_text(
            "Comments are closed. The conversation stays here to read."
        )
        expect(composer(page)).to_be_hidden()
        expect(reply_buttons(page).first).to_be_hidden()
        expect(page.locator("#thread .comment").first).to_be_visible()  # the conversation stays to read


def test_a_moderator_closes_a_thread_from_the_desk(server: ServerProcess, open_page, new_page) -> None:
    server.command("create-moderator", "alice", stdin=PASSWORD + "\n")
    reader = open_page(server)
    desk = new_page()
    desk.goto(f"{server.url}/login?next=/moderation")
    desk.fill("#login-username", "alice")
    desk.fill("#login-password", PASSWORD)
    desk.click(".login-form button[type=submit]")
    desk.wait_for_url(f"{server.url}/moderation*")
    row = desk.locator(f'.desk-thread[data-slug="{DEMO_SLUG}"]')
    expect(row.locator('[data-field="state-name"]')).to_have_text("open")

    row.locator('form[data-action-form="thread-close"] button').click()
    expect(row.locator('[data-field="state-name"]')).to_have_text("closed")
    expect(row.locator('form[data-action-form="thread-open"]')).to_be_visible()
    expect(reader.locator("[data-thread-note]")).to_be_visible(timeout=LIVE)
    expect(composer(reader)).to_be_hidden()
    expect(desk.locator(".audit-item").first).to_contain_text("alice closed the comments")

    row.locator('form[data-action-form="thread-open"] button').click()
    expect(row.locator('[data-field="state-name"]')).to_have_text("open")
    expect(composer(reader)).to_be_visible(timeout=LIVE)
    assert not reader.errors and not desk.errors, (reader.errors, desk.errors)
