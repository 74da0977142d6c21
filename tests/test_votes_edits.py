"""Votes and a reader's edits of their own comment (issue 14, points 4 and 6), in-process: who
may, with which checks (reader cookie, CSRF, bans, rate limits, EDIT_WINDOW, the spam rules,
a closed thread), what the API then answers, and what moderators keep. The live side (frames,
several instances) is in test_votes_live.py; browsers in e2e/test_votes_edits.py."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from server.comments import Comment
from server.settings import Settings
from server.threads import new_comment_id

from .servers import DEMO_SLUG
from .visitors import Visitor
from .visitors import token as csrf_token

ARTICLE = f"/articles/{DEMO_SLUG}"
API = f"/api/articles/{DEMO_SLUG}/comments"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Small limits, to reach them in a few requests."""
    return dataclasses.replace(settings, vote_rate_per_reader="6/minute", vote_flag_per_ip="8/hour")


def write(visitor: Visitor, body: str = "A first thought") -> dict:
    answer = visitor.post(
        API, json={"name": "Ann", "body": body}, headers={"X-CSRF-Token": csrf_token(visitor, ARTICLE)}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["comment"]


def vote(visitor: Visitor, comment_id: str, up: bool = True, **headers: str):
    headers = {"X-CSRF-Token": csrf_token(visitor, ARTICLE), **headers}
    return visitor.post(f"/api/comments/{comment_id}/vote", json={"up": up}, headers=headers)


def edit(visitor: Visitor, comment_id: str, body: str):
    return visitor.patch(
        f"/api/comments/{comment_id}", json={"body": body}, headers={"X-CSRF-Token": csrf_token(visitor, ARTICLE)}
    )


def delete(visitor: Visitor, comment_id: str):
    return visitor.delete(f"/api/comments/{comment_id}", headers={"X-CSRF-Token": csrf_token(visitor, ARTICLE)})


def listed(visitor: Visitor, comment_id: str) -> dict:
    return next(c for c in visitor.get(API, params={"limit": 200}).json()["comments"] if c["id"] == comment_id)


def error_code(answer) -> str:
    return answer.json()["error"]["code"]


def test_a_reader_recommends_once_and_can_take_it_back(new_visitor) -> None:
    author, ann, bob = new_visitor(), new_visitor(), new_visitor()
    comment = write(author)
    assert comment["votes"] == 0
    assert vote(ann, comment["id"]).json() == {"votes": 1}
    assert vote(ann, comment["id"]).json() == {"votes": 1}  # once per reader
    assert vote(bob, comment["id"]).json() == {"votes": 2}
    assert vote(ann, comment["id"], up=False).json() == {"votes": 1}
    assert listed(author, comment["id"])["votes"] == 1


def test_votes_are_checked_like_posts(new_visitor, moderator: Visitor) -> None:
    author, ann = new_visitor(), new_visitor()
    comment = write(author)
    own = vote(author, comment["id"])
    assert own.status_code == 403 and "own comment" in own.json()["error"]["message"]
    no_token = ann.post(f"/api/comments/{comment['id']}/vote", json={"up": True})
    assert no_token.status_code == 403
    foreign = vote(ann, comment["id"], Origin="https://evil.example")
    assert foreign.status_code == 403
    bad = ann.post(
        f"/api/comments/{comment['id']}/vote", json={"up": "yes"}, headers={"X-CSRF-Token": csrf_token(ann, ARTICLE)}
    )
    assert bad.status_code == 400 and error_code(bad) == "invalid_message"
    assert vote(ann, "nosuchcomment").status_code == 404
    assert listed(author, comment["id"])["votes"] == 0  # none of those counted
    # A banned reader's vote is refused, as their post would be.
    reader_id = next(c for c in moderator.get(API).json()["comments"] if c["id"] == comment["id"])["reader_id"]
    banned = moderator.post(
        f"/api/readers/{reader_id}/ban", json={}, headers={"X-CSRF-Token": csrf_token(moderator, "/moderation")}
    )
    assert banned.status_code == 200, banned.text
    other = write(ann, "Ann's own")
    refused = vote(author, other["id"])
    assert refused.status_code == 403 and error_code(refused) == "banned"


def test_a_vote_flood_is_rate_limited_and_the_address_is_shown_to_moderators(new_visitor, moderator: Visitor) -> None:
    author = new_visitor()
    comments = [write(author, f"Thought {n}") for n in range(4)]
    voters = [new_visitor() for _ in range(4)]
    answers = [vote(voter, c["id"], up) for voter in voters for c in comments for up in (True, False)]
    codes = [a.status_code for a in answers]
    assert 429 in codes and codes.index(429) == 6  # the seventh vote of a reader within a minute
    refused = answers[6]
    assert error_code(refused) == "rate_limited" and refused.json()["error"]["retry_after"] >= 1
    audit = moderator.get("/api/moderation/audit").json()
    flags = [entry for entry in audit if entry["action"] == "many_votes"]
    assert len(flags) == 1  # once an hour, not once per vote
    assert flags[0]["moderator"].startswith("address ") and flags[0]["detail"] == "8 per 1 hour"
    assert "testclient" not in json.dumps(flags)  # a tag of the address, not the address
    desk = moderator.get("/moderation").text
    assert flags[0]["moderator"] in desk and "cast many votes" in desk


def test_a_closed_thread_refuses_votes_and_edits(new_visitor, moderator: Visitor) -> None:
    author, ann = new_visitor(), new_visitor()
    comment = write(author)
    closed = moderator.post(
        f"/api/articles/{DEMO_SLUG}/close", json={}, headers={"X-CSRF-Token": csrf_token(moderator)}
    )
    assert closed.status_code == 200, closed.text
    assert error_code(vote(ann, comment["id"])) == "closed"
    assert error_code(edit(author, comment["id"], "Changed")) == "closed"
    assert error_code(delete(author, comment["id"])) == "closed"


def test_its_author_edits_a_comment_and_moderators_keep_the_previous_text(new_visitor, moderator: Visitor) -> None:
    author, ann = new_visitor(), new_visitor()
    comment = write(author, "Teh first thought")
    before = author.get(API).json()["seq"]
    answer = edit(author, comment["id"], "The first thought")
    assert answer.status_code == 200, answer.text
    edited = answer.json()
    assert edited["seq"] == before + 1 and edited["comment"]["body"] == "The first thought"
    assert edited["comment"]["edited_at"] and edited["comment"]["created_at"] == comment["created_at"]
    assert listed(ann, comment["id"])["body"] == "The first thought"
    page = ann.get(ARTICLE).text
    assert "The first thought" in page and "(edited)" in page
    audit = moderator.get("/api/moderation/audit").json()
    entry = next(e for e in audit if e["action"] == "edit")
    assert (entry["comment_id"], entry["detail"], entry["moderator"]) == (comment["id"], "Teh first thought", "Ann")


def test_only_the_author_may_edit_and_an_edit_passes_a_posts_checks(new_visitor, moderator: Visitor) -> None:
    author, ann = new_visitor(), new_visitor()
    comment = write(author)
    not_theirs = edit(ann, comment["id"], "Hijacked")
    assert not_theirs.status_code == 403 and error_code(not_theirs) == "forbidden"
    assert error_code(delete(ann, comment["id"])) == "forbidden"
    assert error_code(edit(author, comment["id"], "   ")) == "empty"
    assert error_code(edit(author, comment["id"], "x" * 20_000)) == "too_long"
    rules = moderator.get("/api/moderation/rules").json()
    saved = moderator.post(
        "/api/moderation/rules",
        json={**rules, "banned_words": ["spamword"]},
        headers={"X-CSRF-Token": csrf_token(moderator, "/moderation")},
    )
    assert saved.status_code == 200, saved.text
    assert error_code(edit(author, comment["id"], "now with spamword")) == "rejected"
    assert listed(ann, comment["id"])["body"] == "A first thought"


def test_an_edit_after_the_window_is_refused_with_a_clear_error(client) -> None:
    """Written ten minutes ago, straight into the store: the default window is five."""
    author = Visitor(client)
    author.get(ARTICLE)
    reader = client.app.state.security.reader_from_cookie(author.cookies.get("bc_reader"))
    old = Comment(
        id=new_comment_id(DEMO_SLUG),
        slug=DEMO_SLUG,
        parent=None,
        name="Ann",
        about=None,
        body="Old words",
        html="<p>Old words</p>",
        created_at=(datetime.now(UTC) - timedelta(minutes=10))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        reader_id=reader,
    )
    client.portal.call(client.app.state.backend.post, old, None)
    late = edit(author, old.id, "New words")
    assert late.status_code == 403 and error_code(late) == "edit_window_closed"
    assert "5 min after" in late.json()["error"]["message"]
    assert error_code(delete(author, old.id)) == "edit_window_closed"
    assert listed(author, old.id)["body"] == "Old words"


def test_a_deleted_comment_keeps_its_place_and_its_replies(new_visitor, moderator: Visitor) -> None:
    author, ann = new_visitor(), new_visitor()
    comment = write(author, "Regrettable words")
    reply = ann.post(
        API,
        json={"name": "Bo", "body": "A reply", "parent": comment["id"]},
        headers={"X-CSRF-Token": csrf_token(ann, ARTICLE)},
    ).json()["comment"]
    answer = delete(author, comment["id"])
    assert answer.status_code == 200 and answer.json()["seq"] == author.get(API).json()["seq"]
    gone = listed(ann, comment["id"])
    assert (gone["status"], gone["body"], gone["author"]["name"]) == ("deleted", "", "")
    assert listed(ann, reply["id"])["body"] == "A reply"
    page = ann.get(ARTICLE).text
    assert "Regrettable words" not in page and "A reply" in page
    audit = moderator.get("/api/moderation/audit").json()
    assert next(e for e in audit if e["action"] == "delete")["detail"] == "Regrettable words"
    assert error_code(edit(author, comment["id"], "Back again")) == "not_found"
    assert json.loads(moderator.get(API).text)["comments"]  # moderators still list it
