"""Threads open, close and hide (issue 13, point 4), in-process: the routes and who may use
them, what a closed or hidden thread refuses and shows, the audit log and the webhook, and
AUTO_CLOSE_DAYS driven by a clock the test moves.

The live side (sockets, `since` across a close) is in test_lifecycle_live.py; two real
browsers watching a thread close are in e2e/test_thread_close.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from server.comments import CLOSED, OPEN
from server.lifecycle import AUTO_CLOSE_BY, AutoClose
from server.threads import Threads

from . import test_webhooks
from .servers import DEMO_SLUG
from .test_tokens import assert_refused, bearer, create
from .test_webhooks import Receiver, moderator_of, newsroom_app, verify
from .visitors import Visitor
from .visitors import token as csrf_token

receiver = test_webhooks.receiver  # the fixture: a newsroom's webhook endpoint

ARTICLE = f"/articles/{DEMO_SLUG}"
API = f"/api/articles/{DEMO_SLUG}/comments"


def state_route(action: str, slug: str = DEMO_SLUG) -> str:
    return f"/api/articles/{slug}/{action}"


def thread_state(client: TestClient | Visitor) -> str:
    return client.get(API).json()["state"]


def post_json(visitor: Visitor, body: str):
    return visitor.post(
        API, json={"name": "Reader", "body": body}, headers={"X-CSRF-Token": csrf_token(visitor, ARTICLE)}
    )


def post_form(visitor: Visitor, body: str):
    return visitor.post(
        f"{ARTICLE}/comments",
        data={"name": "Reader", "body": body, "csrf_token": csrf_token(visitor, ARTICLE)},
        follow_redirects=False,
    )


# --- who may close a thread ------------------------------------------------------------------


def test_a_token_with_articles_write_closes_and_reopens_a_thread(app_client: TestClient, reader: Visitor) -> None:
    token = create(app_client)
    closed = app_client.post(state_route("close"), headers=bearer(token))
    assert closed.status_code == 200, closed.text
    answer = closed.json()
    assert (answer["slug"], answer["state"], answer["changed"], answer["by"]) == (DEMO_SLUG, CLOSED, True, "api:cms")
    assert answer["seq"] == app_client.get(API).json()["seq"]  # the event it made is the thread's latest
    again = app_client.post(state_route("close"), headers=bearer(token), json={"reason": "twice"})
    assert again.status_code == 200 and (again.json()["changed"], again.json()["seq"]) == (False, None)
    assert thread_state(reader) == CLOSED

    reopened = app_client.post(state_route("open"), headers=bearer(token))
    assert reopened.status_code == 200 and reopened.json()["state"] == OPEN
    assert post_json(reader, "Open again").status_code == 201


def test_every_refusal_changes_nothing(app_client: TestClient, moderator: Visitor, reader: Visitor) -> None:
    no_scope = create(app_client, "reader-bot", scopes=())
    refusals = [
        (app_client.post(state_route("close")), 401, "unauthorized"),  # no token, no session
        (app_client.post(state_route("close"), headers=bearer("bc_wrong")), 401, "unauthorized"),
        (app_client.post(state_route("close"), headers=bearer(no_scope)), 403, "forbidden"),
        # A reader, even with a valid CSRF token of their own.
        (reader.post(state_route("close"), headers={"X-CSRF-Token": csrf_token(reader)}), 401, "unauthorized"),
        # A moderator's session without its CSRF token (or from another site's page).
        (moderator.post(state_route("close"), json={}), 403, "forbidden"),
        (
            moderator.post(
                state_route("close"),
                headers={"X-CSRF-Token": csrf_token(moderator), "Origin": "https://evil.example"},
            ),
            403,
            "forbidden",
        ),
    ]
    for response, status, code in refusals:
        assert_refused(response, status, code)
    assert thread_state(reader) == OPEN
    token = create(app_client)
    assert_refused(app_client.post(state_route("close", "no-such-article"), headers=bearer(token)), 404, "not_found")
    assert_refused(app_client.post(state_route("close"), headers=bearer(token), content=b"[1"), 400, "invalid_message")
    assert thread_state(reader) == OPEN


def test_a_moderator_closes_from_the_page_with_or_without_javascript(moderator: Visitor, reader: Visitor) -> None:
    with_js = moderator.post(state_route("close"), json={}, headers={"X-CSRF-Token": csrf_token(moderator)})
    assert with_js.status_code == 200 and with_js.json()["by"] == "alice"
    # The page's plain form: 303 back to the thread.
    without_js = moderator.post(
        state_route("open"),
        data={"csrf_token": csrf_token(moderator, ARTICLE), "next": f"{ARTICLE}#comments"},
        follow_redirects=False,
    )
    assert without_js.status_code == 303 and without_js.headers["location"] == f"{ARTICLE}#comments"
    assert thread_state(reader) == OPEN


def test_the_moderators_close_is_audited_and_sent_to_the_webhook(tmp_path, receiver: Receiver) -> None:
    with newsroom_app(tmp_path) as client:
        _token, record = client.portal.call(client.app.state.tokens.create, "analytics", [], receiver.url)
        alice = moderator_of(client)
        closed = alice.post(
            state_route("close"), json={"reason": "off topic"}, headers={"X-CSRF-Token": csrf_token(alice)}
        )
        assert closed.status_code == 200, closed.text
        audit = alice.get("/api/moderation/audit").json()
        deliveries = receiver.wait_for(1)
    entry = next(e for e in audit if e["action"] == "close")
    assert (entry["moderator"], entry["slug"], entry["reason"]) == ("alice", DEMO_SLUG, "off topic")
    [(headers, body)] = [(h, b) for h, b in deliveries if json.loads(b)["type"] == "moderation.close"]
    assert verify(record.webhook_secret, headers, body)
    assert json.loads(body)["data"]["slug"] == DEMO_SLUG


# --- what a closed thread refuses and shows ----------------------------------------------------


def test_a_closed_thread_refuses_posts_over_the_api_and_the_form_and_keeps_the_text(
    moderator: Visitor, reader: Visitor
) -> None:
    assert post_json(reader, "Before the close").status_code == 201
    moderator.post(state_route("close"), json={}, headers={"X-CSRF-Token": csrf_token(moderator)})

    refused = post_json(reader, "After the close")
    assert_refused(refused, 403, "closed")
    assert "closed" in refused.json()["error"]["message"]
    # Without JavaScript: the page again, 403, the reader's words still in the form, and why.
    form = post_form(reader, "My long considered reply, typed before it closed")
    assert form.status_code == 403
    assert "My long considered reply, typed before it closed" in form.text
    assert "Comments on this article are closed" in form.text
    assert "data-kept" in form.text  # so the page shows that form, closed thread or not
    # Nothing already written is lost.
    comments = reader.get(API).json()["comments"]
    assert [c["body"] for c in comments if c["body"] == "Before the close"] == ["Before the close"]
    assert not any(c["body"].startswith(("After", "My long")) for c in comments)


def test_the_page_says_a_thread_is_closed_without_javascript(moderator: Visitor, reader: Visitor) -> None:
    page = reader.get(ARTICLE).text
    assert 'data-thread-state="open"' in page
    moderator.post(state_route("close"), json={}, headers={"X-CSRF-Token": csrf_token(moderator)})
    page = reader.get(ARTICLE).text
    assert 'data-thread-state="closed"' in page
    note = re.search(r'<p class="thread-note"[^>]*>([^<]*)</p>', page)
    assert note is not None and note.group(1).startswith("Comments are closed.")
    # The moderator's page offers to reopen it.
    mod_page = moderator.get(ARTICLE).text
    assert re.search(
        r'action="/api/articles/[^"]+/open" data-action-form="thread-open" data-to-state="open">', mod_page
    )


def test_a_hidden_thread_shows_readers_nothing_and_moderators_everything(moderator: Visitor, reader: Visitor) -> None:
    assert post_json(reader, "Said before it was hidden").status_code == 201
    moderator.post(state_route("hide"), json={}, headers={"X-CSRF-Token": csrf_token(moderator)})

    listed = reader.get(API).json()
    assert (listed["state"], listed["comments"]) == ("hidden", [])
    page = reader.get(ARTICLE).text
    assert "Said before it was hidden" not in page and "Comments on this article are hidden." in page
    assert_refused(post_json(reader, "Still here?"), 403, "closed")

    assert any(c["body"] == "Said before it was hidden" for c in moderator.get(API).json()["comments"])
    assert "Said before it was hidden" in moderator.get(ARTICLE).text
    # Moderation goes on while it is hidden.
    comment_id = next(c["id"] for c in moderator.get(API).json()["comments"] if c["body"].startswith("Said"))
    removed = moderator.post(f"/api/comments/{comment_id}/remove", headers={"X-CSRF-Token": csrf_token(moderator)})
    assert removed.status_code == 200


# --- AUTO_CLOSE_DAYS, by a clock the test moves ----------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def published(client: TestClient, at: datetime) -> None:
    """The demo article as the newsroom published it at `at` (through the articles' own put,
    as PUT /api/articles/{slug} does)."""
    articles = client.app.state.threads.articles
    article = client.portal.call(articles.article, DEMO_SLUG)
    iso = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    client.portal.call(articles.put, dataclasses.replace(article, published_at=iso))


def test_a_thread_closes_by_itself_auto_close_days_after_publication(app_client: TestClient, moderator) -> None:
    threads: Threads = app_client.app.state.threads
    publication = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    published(app_client, publication)
    clock = Clock(publication + timedelta(days=2, hours=23))
    auto_close = AutoClose(threads, 3, clock=clock)

    assert app_client.portal.call(auto_close.sweep) == []  # an hour early
    assert thread_state(app_client) == OPEN
    clock.now += timedelta(hours=1)
    assert app_client.portal.call(auto_close.sweep) == [DEMO_SLUG]
    assert thread_state(app_client) == CLOSED
    assert app_client.portal.call(auto_close.sweep) == []  # once

    entry = next(e for e in moderator.get("/api/moderation/audit").json() if e["action"] == "close")
    assert (entry["moderator"], entry["detail"]) == (AUTO_CLOSE_BY, "3 days after publication")
    head = app_client.portal.call(threads.backend.head, DEMO_SLUG)
    assert (head.state.by, head.state.at) == (AUTO_CLOSE_BY, "2026-11-04T12:00:00.000Z")  # the clock's time


def test_a_thread_reopened_by_hand_after_its_time_stays_open(app_client: TestClient, moderator: Visitor) -> None:
    threads: Threads = app_client.app.state.threads
    publication = datetime.now(UTC) - timedelta(days=10)
    published(app_client, publication)
    assert app_client.portal.call(AutoClose(threads, 3).sweep) == [DEMO_SLUG]
    moderator.post(state_route("open"), json={}, headers={"X-CSRF-Token": csrf_token(moderator)})
    # Another instance (or this one after a restart) looks again later: the moderator's reopening stands.
    later = AutoClose(threads, 3, clock=Clock(datetime.now(UTC) + timedelta(days=1)))
    assert app_client.portal.call(later.sweep) == []
    assert thread_state(app_client) == OPEN


def test_an_article_without_published_at_never_closes_by_itself(app_client: TestClient) -> None:
    threads: Threads = app_client.app.state.threads
    undated = dataclasses.replace(threads.articles[DEMO_SLUG], published_at=None)
    assert AutoClose(threads, 1).due(undated) is None


def test_of_two_instances_sweeping_at_once_one_closes(tmp_path, redis_server) -> None:
    """Two instances on one Redis, each with its AutoClose: one `closed` event in all."""
    redis_server.client().flushall()
    publication = datetime(2026, 11, 1, tzinfo=UTC)
    settings = {"redis_url": redis_server.url}
    with newsroom_app(tmp_path / "a", **settings) as a, newsroom_app(tmp_path / "b", **settings) as b:
        sweeps = []
        published(a, publication)
        b.portal.call(b.app.state.threads.articles.refresh, DEMO_SLUG)  # (the control bus tells it too)
        for client in (a, b):
            sweeps.append(AutoClose(client.app.state.threads, 3, clock=Clock(publication + timedelta(days=4))))
        first = a.portal.start_task_soon(sweeps[0].sweep)
        second = b.portal.start_task_soon(sweeps[1].sweep)
        closed = first.result(timeout=10) + second.result(timeout=10)
        events = a.portal.call(a.app.state.backend.events_since, DEMO_SLUG, 0)
    assert closed == [DEMO_SLUG]
    assert [e.type for e in events or []].count("closed") == 1


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "nan", "inf"])
def test_auto_close_days_must_be_a_number_of_days(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from server import settings as settings_module

    monkeypatch.setenv("SECRET_KEY", "test-secret-key")
    monkeypatch.setenv("AUTO_CLOSE_DAYS", raw)
    with pytest.raises(settings_module.SettingsError, match="AUTO_CLOSE_DAYS"):
        settings_module.load(env_file=None)
    monkeypatch.setenv("AUTO_CLOSE_DAYS", "2.5")
    assert settings_module.load(env_file=None).auto_close_days == 2.5


def test_the_index_and_the_articles_api_say_which_threads_are_closed(app_client: TestClient) -> None:
    index = app_client.get("/").text
    assert "story-state" not in index  # an open thread needs no word
    assert app_client.get("/api/articles").json()[0]["state"] == OPEN
    token = create(app_client)
    app_client.post(state_route("close"), headers=bearer(token))
    assert '<span class="story-state" data-state="closed">Comments closed</span>' in app_client.get("/").text
    listed = {a["slug"]: a["state"] for a in app_client.get("/api/articles").json()}
    assert listed[DEMO_SLUG] == CLOSED
    assert app_client.get(f"/api/articles/{DEMO_SLUG}").json()["state"] == CLOSED
