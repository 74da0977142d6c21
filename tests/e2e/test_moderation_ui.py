"""Moderation in real headless Chromium against two real instances sharing one real Redis:
the article page's moderator tools, the live desk, its keyboard, and the forms without JavaScript."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

import httpx2 as httpx
import pytest
from playwright.sync_api import Page, expect

from ..redis_server import RedisServer
from ..servers import DEMO_SLUG, ServerProcess, server_command
from .article_page import thread_comments

ARTICLE = f"/articles/{DEMO_SLUG}"
API = f"/api/articles/{DEMO_SLUG}/comments"
PASSWORD = "correct horse battery staple"
# ms: how long a moderator's action may take to show on another instance's page. It arrives in
# tens of ms; the bound is generous because two instances and Chromium share a busy 2-core machine.
LIVE = 5000

pytestmark = pytest.mark.timeout(120)


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess


def create_moderator(redis_url: str, name: str) -> None:
    server_command("create-moderator", name, env={"REDIS_URL": redis_url}, stdin=PASSWORD + "\n")


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory) -> Iterator[Cluster]:
    """Instances A and B on one Redis, with moderators alice and bob (shared by the module's
    tests: each works on comments of its own)."""
    redis_server.client().flushall()
    servers = [ServerProcess(tmp_path_factory.mktemp(name), REDIS_URL=redis_server.url) for name in "ab"]
    try:
        with ThreadPoolExecutor() as pool:  # four process start-ups at once, not one after another
            started = [pool.submit(server.start) for server in servers]
            started += [pool.submit(create_moderator, redis_server.url, name) for name in ("alice", "bob")]
            for future in started:
                future.result()
        yield Cluster(*servers)
    finally:
        for server in servers:
            server.stop()


def log_in(page: Page, server: ServerProcess, name: str, then: str) -> None:
    page.goto(f"{server.url}/login?next={then}")
    page.fill("#login-username", name)
    page.fill("#login-password", PASSWORD)
    page.click(".login-form button[type=submit]")
    page.wait_for_url(f"{server.url}{then}*")
    expect(page.locator(".mod-nav")).to_contain_text(f"Log out ({name})")


def open_live(page: Page, url: str) -> Page:
    page.goto(url)
    expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live")
    return page


def post(server: ServerProcess, body: str, name: str = "Reader", parent: str | None = None) -> str:
    res = httpx.post(server.url + API, json={"name": name, "body": body, "parent": parent})
    assert res.status_code in (201, 202), res.text
    return res.json()["comment"]["id"]


def status_of(server: ServerProcess, comment_id: str) -> str:
    return next(c["status"] for c in thread_comments(server.url) if c["id"] == comment_id)


def card(page: Page, comment_id: str):
    """The comment's own card (not its replies')."""
    return page.locator(f"#c-{comment_id} > .comment-card")


def test_a_removal_on_one_instance_reaches_a_reader_on_the_other_at_once(cluster, new_page):
    parent = post(cluster.a, "A comment a moderator will remove", name="Ann")
    reply = post(cluster.a, "A reply that stays", name="Bo", parent=parent)
    alice = new_page()
    log_in(alice, cluster.a, "alice", ARTICLE)
    open_live(alice, cluster.a.url + ARTICLE)
    reader = open_live(new_page(width=375, height=800), cluster.b.url + ARTICLE)
    expect(card(reader, parent).locator('[data-field="body"]')).to_have_text("A comment a moderator will remove")

    card(alice, parent).locator('form[data-action-form="remove"] button').click()
    expect(card(reader, parent).locator('[data-field="tombstone"]')).to_be_visible(timeout=LIVE)
    expect(card(reader, parent).locator('[data-field="body"]')).to_be_hidden()
    expect(card(reader, parent)).not_to_contain_text("Ann")
    expect(card(reader, reply).locator('[data-field="body"]')).to_have_text("A reply that stays")
    # The moderator still reads what was removed, marked as such, and can undo it.
    expect(card(alice, parent).locator('[data-field="removed-note"]')).to_contain_text("Removed by alice")
    expect(card(alice, parent).locator('[data-field="body"]')).to_have_text("A comment a moderator will remove")
    restore = card(alice, parent).locator('form[data-action-form="restore"] button')
    expect(restore).to_be_focused()  # the Remove button pressed is gone; the focus is not lost

    restore.click()
    expect(card(reader, parent).locator('[data-field="body"]')).to_have_text(
        "A comment a moderator will remove", timeout=LIVE
    )
    expect(card(reader, parent).locator('[data-field="tombstone"]')).to_be_hidden()
    expect(card(reader, parent).locator('[data-field="name"]')).to_have_text("Ann")
    assert reader.evaluate("document.documentElement.scrollWidth") <= 375
    assert alice.errors == [] and reader.errors == []


def test_two_desks_on_two_instances_see_each_other_work(cluster, new_page):
    alice, bob = new_page(), new_page()
    log_in(alice, cluster.a, "alice", "/moderation")
    log_in(bob, cluster.b, "bob", "/moderation")
    for desk in (alice, bob):
        expect(desk.locator("[data-conn]")).to_have_attribute("data-state", "live")
    reader = open_live(new_page(), cluster.b.url + ARTICLE)
    reader.fill(".composer textarea[name=body]", "Fresh from a reader")
    reader.fill(".composer input[name=name]", "Cy")
    reader.click(".composer [data-submit]")
    expect(reader.locator("#thread > li.comment").first).to_contain_text("Fresh from a reader")
    comment_id = reader.locator("#thread > li.comment").first.get_attribute("data-id")

    for desk in (alice, bob):
        expect(desk.locator(f"#desk-comment-{comment_id}")).to_contain_text("Fresh from a reader")
        expect(desk.locator(f"#desk-comment-{comment_id}")).to_contain_text("Cy")
    alice.locator(f'#desk-comment-{comment_id} form[data-action-form="remove"] button').click()
    on_bob = bob.locator(f"#desk-comment-{comment_id}")
    expect(on_bob.locator('[data-field="handled"]')).to_contain_text("Removed by alice", timeout=LIVE)
    expect(on_bob).to_have_attribute("data-status", "removed")
    expect(on_bob.locator('form[data-action-form="remove"]')).to_be_hidden()
    expect(on_bob.locator('form[data-action-form="restore"]')).to_be_visible()
    expect(bob.locator(".audit-item").first).to_contain_text("alice removed a comment")
    expect(alice.locator(f"#desk-comment-{comment_id} [data-field=handled]")).to_contain_text("Removed by you")
    expect(card(reader, comment_id).locator('[data-field="tombstone"]')).to_be_visible()
    assert alice.errors == [] and bob.errors == [] and reader.errors == []


def test_the_desk_works_from_the_keyboard(cluster, new_page):
    comment_id = post(cluster.b, "Removed with two keys", name="Dee")
    desk = new_page()
    log_in(desk, cluster.a, "alice", "/moderation")
    expect(desk.locator("[data-conn]")).to_have_attribute("data-state", "live")
    target = desk.locator(f"#desk-comment-{comment_id}")
    expect(target).to_be_visible()
    assert desk.locator('[data-list="report"] .desk-card').count() == 0  # so the newest comment leads

    desk.keyboard.press("j")
    expect(target).to_be_focused()
    desk.keyboard.press("r")
    expect(target).to_have_attribute("data-status", "removed")
    expect(target.locator('[data-field="handled"]')).to_contain_text("Removed by you")
    assert status_of(cluster.b, comment_id) == "removed"
    desk.keyboard.press("u")  # undo
    expect(target).to_have_attribute("data-status", "visible")
    # Shortcuts never fire while typing: "r" in the ban form's reason field is just a letter.
    desk.keyboard.press("b")
    expect(target.locator("details.ban")).to_have_attribute("open", "")
    target.locator("input[name=reason]").type("rrr")
    expect(target).to_have_attribute("data-status", "visible")
    desk.keyboard.press("Escape")  # closes the ban form, back on the card
    expect(target.locator("details.ban")).not_to_have_attribute("open", "")
    expect(target).to_be_focused()
    desk.keyboard.press("?")
    expect(desk.locator("#desk-keys")).to_have_attribute("open", "")
    assert desk.errors == []


def test_a_moderator_removes_a_comment_without_javascript(cluster, new_page):
    comment_id = post(cluster.a, "Removed by a plain form", name="Eve")
    page = new_page(javascript=False)
    log_in(page, cluster.b, "alice", ARTICLE)
    with page.expect_response(lambda r: r.request.method == "POST" and "/remove" in r.url) as answer:
        card(page, comment_id).locator('form[data-action-form="remove"] button').click()
    assert answer.value.status == 303
    page.wait_for_url(f"**{ARTICLE}/comments/{comment_id}#c-{comment_id}")
    expect(page.locator(f"#c-{comment_id}")).to_have_attribute("data-status", "removed")
    expect(card(page, comment_id).locator('[data-field="removed-note"]')).to_contain_text("Removed by alice")
    expect(card(page, comment_id).locator('form[data-action-form="restore"]')).to_be_visible()
    # Readers get the tombstone only.
    public = next(c for c in thread_comments(cluster.a.url) if c["id"] == comment_id)
    assert public["status"] == "removed" and public["body"] == ""


def test_a_held_comment_waits_for_approval_then_appears_once(cluster, new_page):
    alice = new_page()
    log_in(alice, cluster.a, "alice", ARTICLE)
    open_live(alice, cluster.a.url + ARTICLE)
    switch = alice.locator('[data-field="premod-switch"]')
    if switch.get_attribute("aria-pressed") != "true":
        switch.click()
    expect(switch).to_have_attribute("aria-pressed", "true")
    try:
        author = open_live(new_page(), cluster.b.url + ARTICLE)
        other = open_live(new_page(), cluster.a.url + ARTICLE)
        author.fill(".composer textarea[name=body]", "Held for a moderator")
        author.fill(".composer input[name=name]", "Fay")
        author.click(".composer [data-submit]")
        held = author.locator("li.comment", has=author.locator(".comment-body", has_text="Held for a moderator"))
        expect(held).to_have_attribute("data-status", "pending")
        expect(held.locator('[data-field="pending"]')).to_be_visible()
        comment_id = held.get_attribute("data-id")
        expect(other.locator(f"#c-{comment_id}")).to_have_count(0)
        # The moderator reading the article on the other instance sees it arrive, held.
        expect(alice.locator(f"#c-{comment_id}")).to_have_attribute("data-status", "pending", timeout=LIVE)
        expect(card(alice, comment_id).locator('form[data-action-form="approve"]')).to_be_visible()

        alice.goto(cluster.a.url + "/moderation")
        pending = alice.locator(f"#desk-comment-{comment_id}")
        expect(pending).to_have_attribute("data-status", "pending")
        pending.locator('form[data-action-form="approve"] button').click()
        expect(other.locator(f"#c-{comment_id} .comment-body")).to_have_text("Held for a moderator", timeout=LIVE)
        expect(held).to_have_attribute("data-status", "visible", timeout=LIVE)
        expect(held.locator('[data-field="pending"]')).to_be_hidden()
        expect(author.locator(f"#c-{comment_id}")).to_have_count(1)  # replaced in place, not doubled
        assert author.errors == [] and other.errors == []
    finally:
        alice.goto(cluster.a.url + ARTICLE)
        switch = alice.locator('[data-field="premod-switch"]')
        if switch.get_attribute("aria-pressed") == "true":
            switch.click()
            expect(switch).to_have_attribute("aria-pressed", "false")


def reader_client(server: ServerProcess) -> httpx.Client:
    """A reader of their own (their own reader cookie), posting through the API."""
    client = httpx.Client(base_url=server.url, timeout=10)
    page = client.get(ARTICLE).text  # the first page gives the reader cookie, and its CSRF token
    client.headers["X-CSRF-Token"] = re.search(r'<meta name="csrf-token" content="([^"]*)"', page).group(1)
    return client


def post_as(client: httpx.Client, body: str, name: str) -> httpx.Response:
    return client.post(API, json={"name": name, "body": body})


def ban_from(scope, duration: str = "1 hour") -> None:
    ban = scope.locator("details.ban")
    ban.locator("summary").click()
    ban.locator("select[name=duration]").select_option(label=duration)
    ban.locator("form button[type=submit]").click()


def test_a_ban_is_shown_on_every_comment_of_its_author_and_lifted_from_the_article_page(cluster, new_page):
    with closing(reader_client(cluster.b)) as greta:
        first = post_as(greta, "First words from a troll", "Greta").json()["comment"]["id"]
        second = post_as(greta, "Second words from a troll", "Greta").json()["comment"]["id"]
        alice = new_page()
        log_in(alice, cluster.a, "alice", ARTICLE)
        open_live(alice, cluster.a.url + ARTICLE)
        ban_from(card(alice, first))
        for comment_id in (first, second):  # both of hers say so, neither offers a second ban
            expect(card(alice, comment_id).locator('[data-field="banned"]')).to_have_text("Author banned")
            expect(card(alice, comment_id).locator("details.ban")).to_be_hidden()
            expect(card(alice, comment_id).locator('form[data-action-form="unban"]')).to_be_visible()
        expect(card(alice, first).locator('[data-field="action-result"]')).to_contain_text("Author banned for 1 hour")
        expect(card(alice, first).locator('form[data-action-form="unban"] button')).to_be_focused()
        assert post_as(greta, "Still here?", "Greta").status_code == 403

        card(alice, second).locator('form[data-action-form="unban"] button').click()
        expect(card(alice, second).locator('[data-field="action-result"]')).to_contain_text("Ban lifted")
        for comment_id in (first, second):
            expect(card(alice, comment_id).locator('[data-field="banned"]')).to_be_hidden()
            expect(card(alice, comment_id).locator("details.ban")).to_be_visible()
            expect(card(alice, comment_id).locator('form[data-action-form="unban"]')).to_be_hidden()
        expect(card(alice, second).locator("details.ban > summary")).to_be_focused()  # not lost
        assert post_as(greta, "Back, and calmer", "Greta").status_code == 201
    assert alice.errors == []


def test_a_ban_is_lifted_from_the_desk_whose_audit_log_says_whom(cluster, new_page):
    with closing(reader_client(cluster.b)) as hal:
        comment_id = post_as(hal, "Spam spam spam", "Hal Spammer").json()["comment"]["id"]
        alice, bob = new_page(), new_page()
        log_in(alice, cluster.a, "alice", "/moderation")
        log_in(bob, cluster.b, "bob", "/moderation")
        for desk in (alice, bob):
            expect(desk.locator("[data-conn]")).to_have_attribute("data-state", "live")
        target = alice.locator(f"#desk-comment-{comment_id}")
        ban_from(target, "For good")
        expect(target.locator('[data-field="banned"]')).to_contain_text("Author banned by you")
        expect(target.locator('form[data-action-form="unban"]')).to_be_visible()
        for desk in (alice, bob):
            line = desk.locator(".audit-item").first
            expect(line).to_contain_text("alice banned Hal Spammer", timeout=LIVE)
            expect(line.locator('form[data-action-form="unban"]')).to_be_visible()
        assert post_as(hal, "Let me back", "Hal Spammer").status_code == 403

        bob.locator(".audit-item").first.locator('form[data-action-form="unban"] button').click()
        for desk in (alice, bob):
            expect(desk.locator(".audit-item").first).to_contain_text("bob lifted the ban on Hal Spammer", timeout=LIVE)
            # The ban's own line no longer offers to lift it.
            ban_line = desk.locator(".audit-item", has_text="alice banned Hal Spammer")
            expect(ban_line.locator('form[data-action-form="unban"]')).to_have_count(0)
            on_card = desk.locator(f"#desk-comment-{comment_id}")
            expect(on_card.locator("details.ban")).to_be_visible()
            expect(on_card.locator('form[data-action-form="unban"]')).to_be_hidden()
        expect(target.locator('[data-field="banned"]')).to_contain_text("Ban lifted by bob")
        assert post_as(hal, "Let me back, please", "Hal Spammer").status_code == 201
    assert alice.errors == [] and bob.errors == []


def test_a_banned_author_still_shows_as_banned_after_a_reload(cluster, new_page):
    """Needs the server's "banned": true in the moderator's view of a comment, and the audit
    entry's reader_name (engineer modsec's part)."""
    with closing(reader_client(cluster.a)) as jan:
        comment_id = post_as(jan, "Banned, and it should stay visible", "Jan Troll").json()["comment"]["id"]
        alice = new_page()
        log_in(alice, cluster.a, "alice", ARTICLE)
        open_live(alice, cluster.a.url + ARTICLE)
        ban_from(card(alice, comment_id))
        expect(card(alice, comment_id).locator('[data-field="banned"]')).to_be_visible()
        for page in (alice, new_page(javascript=False)):
            if page is not alice:
                log_in(page, cluster.b, "alice", ARTICLE)
            page.goto(cluster.b.url + ARTICLE)
            expect(card(page, comment_id).locator('[data-field="banned"]')).to_have_text("Author banned")
            expect(card(page, comment_id).locator("details.ban")).to_be_hidden()
            expect(card(page, comment_id).locator('form[data-action-form="unban"]')).to_be_visible()
            page.goto(cluster.b.url + "/moderation")
            desk_card = page.locator(f"#desk-comment-{comment_id}")
            expect(desk_card.locator('[data-field="banned"]')).to_contain_text("Author banned")
            expect(desk_card.locator('form[data-action-form="unban"]')).to_be_visible()
            expect(page.locator(".audit-item", has_text="banned Jan Troll").first).to_be_visible()
        # Lifted without JavaScript, from the article page.
        page.goto(cluster.b.url + ARTICLE)
        card(page, comment_id).locator('form[data-action-form="unban"] button').click()
        page.wait_for_url(f"**{ARTICLE}/comments/{comment_id}#c-{comment_id}")
        expect(card(page, comment_id).locator('[data-field="banned"]')).to_be_hidden()
        expect(card(page, comment_id).locator("details.ban")).to_be_visible()
        assert post_as(jan, "Back again", "Jan Troll").status_code == 201


def test_a_ban_is_made_and_lifted_without_javascript(cluster, new_page):
    with closing(reader_client(cluster.a)) as ivy:
        comment_id = post_as(ivy, "Words that earn a ban", "Ivy").json()["comment"]["id"]
        page = new_page(javascript=False)
        log_in(page, cluster.a, "alice", ARTICLE)
        ban_from(card(page, comment_id))
        page.wait_for_url(f"**{ARTICLE}/comments/{comment_id}#c-{comment_id}")
        assert post_as(ivy, "Anyone there?", "Ivy").status_code == 403
        page.goto(cluster.a.url + "/moderation")
        line = page.locator(".audit-item").first
        expect(line).to_contain_text("alice banned")
        with page.expect_response(lambda r: r.request.method == "POST" and "/unban" in r.url) as answer:
            line.locator('form[data-action-form="unban"] button').click()
        assert answer.value.status == 303
        page.wait_for_url("**/moderation")
        expect(page.locator(".audit-item").first).to_contain_text("alice lifted the ban on")
        expect(page.locator(".audit-item").nth(1)).to_contain_text("alice banned")
        expect(page.locator(".audit-item").nth(1).locator('form[data-action-form="unban"]')).to_have_count(0)
        assert post_as(ivy, "Thank you", "Ivy").status_code == 201


def test_the_desk_single_key_shortcuts_can_be_turned_off(cluster, new_page):
    comment_id = post(cluster.a, "Not removed by a stray key", name="Ian")
    desk = new_page()
    log_in(desk, cluster.a, "alice", "/moderation")
    expect(desk.locator("[data-conn]")).to_have_attribute("data-state", "live")
    target = desk.locator(f"#desk-comment-{comment_id}")
    desk.locator("#desk-keys > summary").click()
    switch = desk.get_by_label("Single-key shortcuts")
    expect(switch).to_be_checked()
    switch.uncheck()
    expect(target.locator(".key-hint").first).to_be_hidden()
    expect(target.locator('form[data-action-form="remove"] button')).not_to_have_attribute("aria-keyshortcuts", "r")
    target.focus()
    for key in ("r", "j", "k", "?"):
        desk.keyboard.press(key)
    expect(target).to_be_focused()
    expect(desk.locator("#desk-keys")).to_have_attribute("open", "")  # "?" did not toggle it
    assert status_of(cluster.a, comment_id) == "visible"

    desk.reload()  # the choice is remembered
    expect(desk.locator("[data-conn]")).to_have_attribute("data-state", "live")
    arrived = post(cluster.b, "A card that arrives while the keys are off", name="Ian")
    expect(desk.locator(f'#desk-comment-{arrived} form[data-action-form="remove"] button')).to_be_visible()
    expect(desk.locator(f"#desk-comment-{arrived} [aria-keyshortcuts]")).to_have_count(0)
    target.focus()
    desk.keyboard.press("r")
    expect(target.locator('[data-field="action-result"]')).to_be_empty()
    assert status_of(cluster.a, comment_id) == "visible"
    desk.locator("#desk-keys > summary").click()
    desk.get_by_label("Single-key shortcuts").check()
    target.focus()
    desk.keyboard.press("r")
    expect(target).to_have_attribute("data-status", "removed")
    assert desk.errors == []


def test_a_moderators_comment_carries_a_staff_badge_a_reader_cannot_fake(cluster, new_page):
    reader = open_live(new_page(), cluster.b.url + ARTICLE)
    alice = new_page()
    log_in(alice, cluster.a, "alice", ARTICLE)
    open_live(alice, cluster.a.url + ARTICLE)
    alice.fill(".composer textarea[name=body]", "A word from the moderators")
    alice.fill(".composer input[name=name]", "alice")
    alice.click(".composer [data-submit]")
    from_staff = reader.locator(
        "li.comment", has=reader.locator(".comment-body", has_text="A word from the moderators")
    )
    badge = from_staff.locator("> .comment-card [data-field=staff]")
    expect(badge).to_be_visible(timeout=LIVE)  # arriving live
    expect(badge).to_have_text("Staff (a moderator of this site)")
    post(cluster.b, "I am staff too, honest", name="Staff", parent=None)
    faker = reader.locator("li.comment", has=reader.locator(".comment-body", has_text="I am staff too"))
    expect(faker).to_be_visible()
    expect(faker.locator("> .comment-card [data-field=staff]")).to_be_hidden()
    reader.reload()  # rendered by the server
    expect(badge).to_be_visible()
    expect(faker.locator("> .comment-card [data-field=staff]")).to_be_hidden()
    assert reader.errors == [] and alice.errors == []
