"""A 2,000-comment thread in Chromium: paged deep, it stays live by the paging rules while
another reader posts, replies, votes and edits; without JavaScript "Load more" and the sort are links that work; a
permalink opens a comment from a late page, in view and highlighted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from playwright.sync_api import Page, expect

from ..servers import ServerProcess
from ..test_big_thread import _write_thread
from ..visitors import token
from .article_page import API, ARTICLE
from .test_votes_edits import own

THREAD = 2_000  # every fourth a reply to the comment three before it
LIVE = 5_000  # ms: a live comment reaches the other reader well within this on a loaded machine


@pytest.fixture(scope="module")
def big_server(tmp_path_factory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("big-thread")
    asyncio.run(_write_thread(data_dir, THREAD))
    server = ServerProcess(data_dir, POST_RATE_PER_READER="100/10 seconds", POST_RATE_PER_IP="100/minute").start()
    yield server
    server.stop()


def post(server: ServerProcess, body: str, parent: str | None = None) -> str:
    """Another reader posting (a script: no cookie)."""
    res = httpx.post(server.url + API, json={"name": "Other Reader", "body": body, "parent": parent})
    assert res.status_code == 201, res.text
    return res.json()["comment"]["id"]


def top_level_ids(page: Page) -> list[str]:
    return page.locator("#thread > li.comment").evaluate_all("(els) => els.map((e) => e.dataset.id)")


def all_ids(page: Page) -> list[str]:
    return page.locator("#thread li.comment").evaluate_all("(els) => els.map((e) => e.dataset.id)")


def load_more(page: Page, times: int) -> None:
    for _ in range(times):
        before = len(top_level_ids(page))
        page.locator("[data-load-more]").click()
        expect(page.locator("#thread > li.comment")).to_have_count(before + 30)


def test_a_reader_paged_deep_sees_exactly_what_the_rules_say_while_another_posts(big_server, new_page):
    reader = new_page()
    reader.goto(big_server.url + ARTICLE + "?sort=oldest")
    expect(reader.locator("[data-conn]")).to_have_attribute("data-state", "live")
    load_more(reader, 3)
    shown = top_level_ids(reader)
    assert len(shown) == 120 and len(set(all_ids(reader))) == len(all_ids(reader))
    count = reader.locator(".comment-count").inner_text()

    # 1. a new top-level comment belongs after the last page: not shown (no shift), but counted
    newcomer = post(big_server, "A new top-level comment, far below")
    expect(reader.locator(".comment-count")).not_to_have_text(count, timeout=LIVE)
    assert reader.locator(f"#c-{newcomer}").count() == 0 and top_level_ids(reader) == shown

    # 2. a reply to a loaded comment whose replies are all shown appears under it
    settled = reader.locator("#thread > li.comment:not(:has(> a.more-replies:not([hidden])))").last
    parent = settled.get_attribute("data-id")
    reply = post(big_server, "A reply to a comment on the fourth page", parent=parent)
    expect(reader.locator(f"#c-{parent} > ol.replies > #c-{reply}")).to_be_visible(timeout=LIVE)

    # 3. a reply where replies are not all loaded raises that comment's "N more replies"
    holder = reader.locator("#thread li.comment:has(> a.more-replies:not([hidden]))").last.get_attribute("data-id")
    more = reader.locator(f"#c-{holder} > a.more-replies")
    before = int(more.get_attribute("data-count"))
    hidden_reply = post(big_server, "A reply not loaded yet", parent=holder)
    expect(more).to_have_attribute("data-count", str(before + 1), timeout=LIVE)
    assert reader.locator(f"#c-{hidden_reply}").count() == 0
    more.click()  # loads them in place, each once
    expect(reader.locator(f"#c-{hidden_reply}")).to_be_visible()
    expect(more).to_be_hidden()

    # 4. another reader (a cookie of their own) recommends a comment on the fourth page and fixes
    #    a typo in their reply there: the count and the new text reach the deep page in place
    voted = reader.locator(f"#c-{shown[100]}")
    with httpx.Client(base_url=big_server.url, headers={"Origin": big_server.url}, timeout=10) as other:
        headers = {"X-CSRF-Token": token(other, ARTICLE)}
        res = other.post(API, json={"name": "Other Reader", "body": "Teh reply", "parent": parent}, headers=headers)
        typo = reader.locator(f"#c-{res.json()['comment']['id']}")
        expect(own(typo, ".comment-body")).to_have_text("Teh reply", timeout=LIVE)
        edit = other.patch(
            f"/api/comments/{typo.get_attribute('data-id')}", json={"body": "The reply"}, headers=headers
        )
        assert edit.status_code == 200, edit.text
        vote = other.post(f"/api/comments/{shown[100]}/vote", json={"up": True}, headers=headers)
        assert vote.status_code == 200, vote.text
    expect(own(typo, ".comment-body")).to_have_text("The reply", timeout=LIVE)
    expect(own(typo, '[data-field="edited"]')).to_be_visible()
    expect(own(voted, '[data-field="votes"]')).to_have_text(str(vote.json()["votes"]), timeout=LIVE)
    ids = all_ids(reader)
    assert len(ids) == len(set(ids)) and top_level_ids(reader) == shown
    assert reader.errors == []


def test_in_newest_order_a_new_comment_waits_behind_the_new_comments_button(big_server, new_page):
    reader = new_page()
    reader.goto(big_server.url + ARTICLE)  # newest first
    expect(reader.locator("[data-conn]")).to_have_attribute("data-state", "live")
    load_more(reader, 2)
    reader.locator("[data-load-more]").scroll_into_view_if_needed()
    top = reader.locator("#thread > li.comment").nth(60).bounding_box()
    newcomer = post(big_server, "Breaking: a new comment on top")
    expect(reader.locator("#new-comments")).to_be_visible(timeout=LIVE)
    expect(reader.locator("#new-comments")).to_contain_text("1 new comment")
    assert reader.locator("#thread > li.comment").nth(61).bounding_box()["y"] == pytest.approx(top["y"], abs=2)
    reader.locator("#new-comments").click()
    expect(reader.locator(f"#c-{newcomer}")).to_be_in_viewport()


def test_without_javascript_load_more_and_the_sort_are_links(big_server, new_page):
    page = new_page(javascript=False)
    page.goto(big_server.url + ARTICLE)
    first = top_level_ids(page)
    page.locator("[data-load-more]").click()
    page.wait_for_url("**after=*")
    second = top_level_ids(page)
    assert len(first) == len(second) == 30 and not set(first) & set(second)
    page.locator('[data-thread-sort] a[data-sort="oldest"]').click()
    page.wait_for_url("**sort=oldest*")
    expect(page.locator('[data-thread-sort] a[aria-current="true"]')).to_have_attribute("data-sort", "oldest")
    oldest = top_level_ids(page)
    assert (
        oldest[0] == httpx.get(big_server.url + API, params={"sort": "oldest", "limit": 1}).json()["comments"][0]["id"]
    )


@pytest.mark.parametrize("javascript", [True, False])
def test_a_permalink_opens_a_comment_from_a_late_page_in_view(big_server, new_page, javascript):
    page = httpx.get(big_server.url + API, params={"sort": "newest", "limit": 200}).json()
    page = httpx.get(big_server.url + API, params={"sort": "newest", "limit": 200, "after": page["next"]}).json()
    late = next(c for c in reversed(page["comments"]) if c["reply_count"])  # page 12 or so of 30
    reply = httpx.get(big_server.url + API, params={"parent": late["id"]}).json()["comments"][0]["id"]
    browser_page = new_page(javascript=javascript, width=390, height=844)
    browser_page.goto(f"{big_server.url}{ARTICLE}/comments/{reply}#c-{reply}")
    target = browser_page.locator(f"#c-{reply}")
    expect(target).to_have_class("comment comment-target")
    expect(target.locator("> .comment-card")).to_be_in_viewport()
    expect(browser_page.locator(f"#c-{late['id']} > ol.replies > #c-{reply}")).to_have_count(1)  # its ancestor
    copy = target.locator("> .comment-card button.copy-link")
    if javascript:
        expect(copy).to_be_visible()
        browser_page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        copy.click()
        expect(copy).to_have_text("Link copied")
        copied = browser_page.evaluate("navigator.clipboard.readText()")
        assert copied == f"{big_server.url}{ARTICLE}/comments/{reply}#c-{reply}"
    else:
        expect(copy).to_be_hidden()
