"""Real headless Chromium (Debian's) against a real server: what a reader sees and does."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from playwright.sync_api import expect

from ..servers import DEMO_SLUG
from .article_page import ARTICLE, comment_by_body, post_from


def test_a_comment_posted_in_one_page_appears_in_the_other_without_a_reload(server, open_page):
    writer, reader = open_page(server), open_page(server)
    post_from(writer, "Live from the first page")
    expect(comment_by_body(reader, "Live from the first page")).to_be_visible()
    expect(reader.locator("[data-comment-count]").first).to_have_text("5 comments")
    # The writer sees its own comment once, and its form is ready for the next one.
    expect(comment_by_body(writer, "Live from the first page")).to_have_count(1)
    expect(writer.locator(".composer textarea[name=body]")).to_have_value("")
    # Newest first: the new comment leads the thread.
    expect(reader.locator("#thread > li.comment").first).to_contain_text("Live from the first page")
    assert writer.errors == [] and reader.errors == []


def test_a_reply_lands_under_its_parent_in_every_page(server, open_page):
    parent_id = httpx.get(server.url + f"/api/articles/{DEMO_SLUG}/comments").json()["comments"][0]["id"]
    writer, reader = open_page(server), open_page(server)
    post_from(writer, "A reply to the first comment", parent=parent_id)
    for page in (writer, reader):
        replies = page.locator(f'ol.replies[data-replies-of="{parent_id}"] > li.comment')
        expect(replies).to_have_count(1)
        expect(replies.first).to_contain_text("A reply to the first comment")
    assert writer.errors == [] and reader.errors == []


def test_what_a_reader_types_never_runs_in_another_readers_page(server, open_page):
    writer, reader = open_page(server), open_page(server)
    payload = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'
    post_from(writer, payload, name='<b onmouseover="window.pwned=1">Eve</b>')
    expect(comment_by_body(reader, "window.pwned=1")).to_be_visible()
    reader.reload()
    expect(comment_by_body(reader, "window.pwned=1")).to_be_visible()
    assert reader.evaluate("window.pwned") is None and writer.evaluate("window.pwned") is None


def test_the_comment_form_works_with_javascript_turned_off(server, open_page):
    page = open_page(server, javascript=False)
    post_from(page, "Posted without JavaScript", name="No Script")
    page.wait_for_url(f"**{ARTICLE}/comments/*#c-*")
    comment_id = page.url.rsplit("#c-", 1)[1]
    expect(page.locator(f"#c-{comment_id}")).to_contain_text("Posted without JavaScript")
    post_from(page, "A reply, also without JavaScript", name="No Script", parent=comment_id, javascript=False)
    page.wait_for_url(f"**{ARTICLE}/comments/*#c-*")
    expect(page.locator(f'ol.replies[data-replies-of="{comment_id}"] > li.comment')).to_contain_text(
        "A reply, also without JavaScript"
    )


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_reader_reports_a_comment_from_the_page(server, open_page, javascript):
    """The page carries no report form per comment (they made big threads slow): opening
    Report builds one, or without JavaScript asks for the page with it; the report arrives."""
    comment_id = httpx.get(server.url + f"/api/articles/{DEMO_SLUG}/comments").json()["comments"][1]["id"]
    page = open_page(server, javascript=javascript)
    card = page.locator(f"#c-{comment_id}")
    assert page.locator("details.report form").count() == 0
    card.locator("details.report summary").click()
    if not javascript:
        card.locator("details.report [data-lazy-form]").click()
        page.wait_for_url(f"**?report={comment_id}#c-{comment_id}")
    form = card.locator("details.report form")
    form.locator("input[name=reason]").fill("spam")
    form.locator("button[type=submit]").click()
    if javascript:
        expect(card.locator('[data-field="action-result"]')).to_contain_text("a moderator will take a look")
    else:
        page.wait_for_url(f"**{ARTICLE}/comments/{comment_id}#c-{comment_id}")
    # the second report from the same reader is recognised as the same one
    response = page.request.post(
        f"{server.url}/api/comments/{comment_id}/report",
        headers={
            "Origin": server.url,
            "X-CSRF-Token": page.locator("input[name=csrf_token]").first.get_attribute("value"),
        },
        data={"reason": "again"},
    )
    assert response.ok and response.json().get("already") is True, response.text()


def test_a_refused_comment_shows_why_and_keeps_the_text(start_server, open_page):
    server = start_server(POST_RATE_PER_READER="5/minute")  # a window no slow machine outlasts
    page = open_page(server)
    post_from(page, "   ", name="Ann")
    expect(page.locator(".composer [data-form-error]")).not_to_be_empty()
    for n in range(5):
        post_from(page, f"Quick comment {n}", name="Ann")
        expect(comment_by_body(page, f"Quick comment {n}")).to_be_visible()
    post_from(page, "One too many", name="Ann")
    expect(page.locator(".composer [data-form-error]")).to_contain_text("Please wait")
    expect(page.locator(".composer textarea[name=body]")).to_have_value("One too many")
    assert comment_by_body(page, "One too many").count() == 0


def test_a_reader_who_was_away_gets_what_was_missed_after_a_restart(server, open_page):
    reader = open_page(server)
    server.restart()  # the page's socket drops; the page reconnects by itself with since
    httpx.post(
        server.url + f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Ann", "body": "Posted while the page was reconnecting"},
    )
    expect(comment_by_body(reader, "Posted while the page was reconnecting")).to_be_visible(timeout=20_000)
    expect(reader.locator("[data-conn]")).to_have_attribute("data-state", "live")


def test_the_page_fits_a_phone_and_remembers_the_readers_name(server, open_page):
    phone = open_page(server, width=375, height=800)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    post_from(phone, "https://example.org/" + "a-very-long-unbroken-url-segment" * 8, name="Remembered Name")
    expect(comment_by_body(phone, "a-very-long-unbroken-url-segment")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    phone.reload()
    expect(phone.locator(".composer input[name=name]")).to_have_value("Remembered Name")
    assert phone.errors == []
