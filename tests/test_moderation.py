"""Moderation, in-process on the embedded backend: every role enforced on the server, case by case."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from .servers import DEMO_SLUG
from .visitors import PASSWORD, login, token


def first_comment(client: TestClient) -> dict:
    return client.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"][0]


def status_of(client: TestClient, comment_id: str) -> str:
    return next(c["status"] for c in client.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]
                if c["id"] == comment_id)


MODERATOR_ACTIONS = ["/api/comments/{id}/remove", "/api/comments/{id}/restore", "/api/comments/{id}/approve",
                     "/api/comments/{id}/dismiss", "/api/readers/{reader}/ban", "/api/readers/{reader}/unban",
                     f"/api/articles/{DEMO_SLUG}/premoderation"]


@pytest.mark.parametrize("route", MODERATOR_ACTIONS)
def test_a_reader_cannot_moderate(reader, moderator, route):
    comment = first_comment(moderator)
    path = route.format(id=comment["id"], reader=comment["reader_id"] or "x")
    response = reader.post(path, json={"enabled": "1"}, headers={"X-CSRF-Token": token(reader)})
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert status_of(moderator, comment["id"]) == "visible"


@pytest.mark.parametrize("route", MODERATOR_ACTIONS)
def test_a_moderator_request_without_the_csrf_token_or_from_another_site_changes_nothing(moderator, route):
    comment = first_comment(moderator)
    path = route.format(id=comment["id"], reader=comment["reader_id"] or "x")
    assert moderator.post(path, json={}).status_code == 403
    foreign = moderator.post(path, json={}, headers={"X-CSRF-Token": token(moderator), "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert status_of(moderator, comment["id"]) == "visible"
    assert moderator.get("/api/moderation/audit").json() == []


def test_a_forged_or_tampered_session_cookie_is_no_session(new_visitor, moderator):
    real = moderator.cookies["bc_session"]
    for forged in (real[:-2] + ("AA" if not real.endswith("AA") else "BB"), "InNvbWVvbmUi.forged", ""):
        attacker = new_visitor()
        attacker.cookies.set("bc_session", forged)
        assert attacker.get("/moderation", follow_redirects=False).status_code == 303  # to /login
        assert attacker.get("/api/moderation/queue").status_code == 401


def test_logout_ends_the_session_even_for_a_copied_cookie(new_visitor, moderator):
    copied = moderator.cookies["bc_session"]
    assert moderator.get("/api/moderation/queue").status_code == 200
    moderator.post("/logout", data={"csrf_token": token(moderator)}, follow_redirects=False)
    thief = new_visitor()
    thief.cookies.set("bc_session", copied)
    assert thief.get("/api/moderation/queue").status_code == 401


def test_the_session_id_changes_at_every_login(moderator):
    before = moderator.cookies["bc_session"]
    assert login(moderator).status_code == 303
    assert moderator.cookies["bc_session"] != before


def test_the_session_cookie_is_httponly_and_samesite(new_visitor):
    cookie = login(new_visitor()).headers["set-cookie"]
    assert "bc_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http here; https gets Secure


def test_wrong_passwords_are_refused_and_then_slowed_down(new_visitor):
    guesser = new_visitor()
    codes = [login(guesser, "alice", "wrong password").status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    assert login(guesser, "alice", PASSWORD).status_code == 429  # even the right one, for a while
    assert login(guesser, "nobody", "x").status_code == 429  # the same address


def test_remove_and_restore_show_the_same_state_in_the_page_and_the_api(moderator, reader):
    comment = first_comment(moderator)
    response = moderator.post(f"/api/comments/{comment['id']}/remove", json={"reason": "insult"},
                              headers={"X-CSRF-Token": token(moderator)})
    assert response.status_code == 200 and response.json()["comment"]["removed_by"] == "alice"
    public = next(c for c in reader.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"] if c["id"] == comment["id"])
    assert public == {**public, "status": "removed", "body": "", "html": "", "author": {"name": "", "about": None}}
    page = reader.get(f"/articles/{DEMO_SLUG}").text
    assert "removed by a moderator" in page and comment["body"][:40] not in page
    moderator_view = next(c for c in moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]
                          if c["id"] == comment["id"])
    assert moderator_view["body"] == comment["body"] and moderator_view["removed_by"] == "alice"
    assert comment["body"][:40] in moderator.get(f"/articles/{DEMO_SLUG}").text  # moderators still see the text
    moderator.post(f"/api/comments/{comment['id']}/restore", json={}, headers={"X-CSRF-Token": token(moderator)})
    assert comment["body"][:40] in reader.get(f"/articles/{DEMO_SLUG}").text


def test_moderation_forms_work_without_javascript(moderator):
    comment = first_comment(moderator)
    response = moderator.post(f"/api/comments/{comment['id']}/remove", follow_redirects=False,
                              data={"csrf_token": token(moderator), "next": f"/articles/{DEMO_SLUG}#c-{comment['id']}"})
    assert response.status_code == 303 and response.headers["location"] == f"/articles/{DEMO_SLUG}#c-{comment['id']}"
    assert status_of(moderator, comment["id"]) == "removed"
    offsite = moderator.post(f"/api/comments/{comment['id']}/restore", follow_redirects=False,
                             data={"csrf_token": token(moderator), "next": "//evil.example/"})
    assert offsite.headers["location"] == "/"  # never redirected off the site


def test_a_banned_reader_cannot_post_until_unbanned(moderator, reader):
    reader_token = token(reader, f"/articles/{DEMO_SLUG}")
    posted = reader.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Troll", "body": "first"},
                         headers={"X-CSRF-Token": reader_token}).json()["comment"]
    reader_id = next(c["reader_id"] for c in moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]
                     if c["id"] == posted["id"])
    ban = moderator.post(f"/api/readers/{reader_id}/ban", json={"duration": "60", "reason": "trolling"},
                         headers={"X-CSRF-Token": token(moderator)})
    assert ban.status_code == 200 and ban.json()["ban"]["until"]
    refused = reader.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Troll", "body": "again"},
                          headers={"X-CSRF-Token": reader_token})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"
    moderator.post(f"/api/readers/{reader_id}/unban", json={}, headers={"X-CSRF-Token": token(moderator)})
    assert reader.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Troll", "body": "sorry"},
                       headers={"X-CSRF-Token": reader_token}).status_code == 201


def test_a_reader_reports_a_comment_once_and_the_desk_lists_it(moderator, reader):
    comment = first_comment(moderator)
    reader_token = token(reader)
    first = reader.post(f"/api/comments/{comment['id']}/report", json={"reason": "spam"},
                        headers={"X-CSRF-Token": reader_token})
    again = reader.post(f"/api/comments/{comment['id']}/report", json={"reason": "spam!"},
                        headers={"X-CSRF-Token": reader_token})
    assert first.json() == {"ok": True, "reported": True, "already": False}
    assert again.json()["already"] is True
    reports = moderator.get("/api/moderation/queue").json()["reports"]
    assert [(r["comment"]["id"], r["count"], r["reasons"]) for r in reports] == [(comment["id"], 1, ["spam"])]
    moderator.post(f"/api/comments/{comment['id']}/dismiss", json={}, headers={"X-CSRF-Token": token(moderator)})
    assert moderator.get("/api/moderation/queue").json()["reports"] == []


def test_reports_are_rate_limited(moderator, reader):
    comments = moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]
    reader_token = token(reader)
    for n in range(11):
        body = {"name": "Ann", "body": f"filler {n}"}
        reader.post(f"/api/articles/{DEMO_SLUG}/comments", json=body, headers={"X-CSRF-Token": reader_token})
    ids = [c["id"] for c in moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]] + [c["id"] for c in comments]
    codes = [reader.post(f"/api/comments/{i}/report", json={}, headers={"X-CSRF-Token": reader_token}).status_code
             for i in ids[:11]]
    assert 429 in codes and codes[:10] == [200] * 10


def test_premoderation_holds_comments_until_approved(moderator, reader, new_visitor):
    moderator.post(f"/api/articles/{DEMO_SLUG}/premoderation", json={"enabled": "1"},
                   headers={"X-CSRF-Token": token(moderator)})
    reader_token = token(reader, f"/articles/{DEMO_SLUG}")
    held = reader.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Newcomer", "body": "held back"},
                       headers={"X-CSRF-Token": reader_token})
    assert held.status_code == 202 and held.json()["comment"]["status"] == "pending" and held.json()["seq"] is None
    assert "held back" in reader.get(f"/articles/{DEMO_SLUG}").text  # its author sees it, marked pending
    someone_else = new_visitor()
    assert "held back" not in someone_else.get(f"/articles/{DEMO_SLUG}").text
    assert someone_else.get(f"/api/articles/{DEMO_SLUG}/comments").json()["seq"] == 4
    approved = moderator.post(f"/api/comments/{held.json()['comment']['id']}/approve", json={},
                              headers={"X-CSRF-Token": token(moderator)})
    assert approved.json()["comment"]["status"] == "visible"
    thread = someone_else.get(f"/api/articles/{DEMO_SLUG}/comments").json()
    assert thread["seq"] == 5 and thread["comments"][-1]["body"] == "held back"


def test_a_reader_cannot_take_a_moderators_name_or_a_lookalike(moderator, reader):
    reader_token = token(reader)
    for name in ("alice", "ALICE", "Аlice", "A1ice", "al\u200bice"):  # Cyrillic А, digit 1, zero-width space
        response = reader.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": name, "body": "hi"},
                               headers={"X-CSRF-Token": reader_token})
        assert response.status_code == 403, name
    assert reader.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Alicia", "body": "hi"},
                       headers={"X-CSRF-Token": reader_token}).status_code == 201
    assert moderator.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "alice", "body": "mod here"},
                          headers={"X-CSRF-Token": token(moderator)}).status_code == 201


def test_every_moderator_action_is_in_the_audit_log(moderator):
    comment = first_comment(moderator)
    headers = {"X-CSRF-Token": token(moderator)}
    moderator.post(f"/api/comments/{comment['id']}/remove", json={"reason": "off topic"}, headers=headers)
    moderator.post(f"/api/comments/{comment['id']}/restore", json={}, headers=headers)
    moderator.post("/api/readers/r123/ban", json={"reason": "spam"}, headers=headers)
    audit = moderator.get("/api/moderation/audit")
    assert audit.headers["content-disposition"].startswith("attachment")
    entries = audit.json()
    assert [(e["action"], e["moderator"]) for e in entries] == [("ban", "alice"), ("restore", "alice"), ("remove", "alice")]
    assert entries[2]["comment_id"] == comment["id"] and entries[2]["reason"] == "off topic" and entries[2]["at"]
    assert entries[0]["reader_id"] == "r123" and entries[0]["detail"] == "for good"


def test_the_desk_is_for_moderators_only(moderator, reader):
    # Starlette's requires() writes the redirect and its next= as absolute URLs of this site.
    to_login = urlsplit(reader.get("/moderation", follow_redirects=False).headers["location"])
    assert to_login.path == "/login" and to_login.query == "next=http%3A%2F%2Ftestserver%2Fmoderation"
    assert 'name="next" value="/moderation"' in reader.get(f"/login?{to_login.query}").text
    assert moderator.get("/moderation").status_code == 200
    assert reader.get("/api/moderation/queue").status_code == 401
    assert reader.get("/api/moderation/audit").status_code == 401
    # The desk's socket is tested against real servers: tests/faults/test_moderation_instances.py.
