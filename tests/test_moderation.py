"""Moderation, in-process on the embedded backend: every role enforced on the server, case by case."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import replace
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.backends import migrations
from server.backends.local import LocalBackend
from server.comments import Comment
from server.errors import RateLimited, Repeat, Unauthorized
from server.identity import client_network
from server.moderation import (
    REPORT_FRAME_INTERVAL,
    REPORTS_KEPT,
    SESSION_CHECK_INTERVAL,
    Moderation,
    password_hasher,
)
from server.settings import Settings
from server.spam import text_fingerprint
from server.text import name_skeletons
from server.threads import Author

from .servers import DEMO_SLUG, ROOT, ServerProcess
from .visitors import PASSWORD, Visitor, login, token


def create_moderator(server: ServerProcess, name: str) -> None:
    server.command("create-moderator", name, stdin=PASSWORD + "\n")


def first_comment(client: TestClient) -> dict:
    return client.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"][0]


def field_of(client: TestClient, comment_id: str, field: str) -> str:
    """One field of a comment as this client's view of the thread has it."""
    return next(
        c[field] for c in client.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"] if c["id"] == comment_id
    )


def status_of(client: TestClient, comment_id: str) -> str:
    return field_of(client, comment_id, "status")


MODERATOR_ACTIONS = [
    "/api/comments/{id}/remove",
    "/api/comments/{id}/restore",
    "/api/comments/{id}/approve",
    "/api/comments/{id}/dismiss",
    "/api/readers/{reader}/ban",
    "/api/readers/{reader}/unban",
    f"/api/articles/{DEMO_SLUG}/premoderation",
]


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
    assert [e["action"] for e in moderator.get("/api/moderation/audit").json()] == ["login"]


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
    response = moderator.post(
        f"/api/comments/{comment['id']}/remove", json={"reason": "insult"}, headers={"X-CSRF-Token": token(moderator)}
    )
    assert response.status_code == 200 and response.json()["comment"]["removed_by"] == "alice"
    public = next(
        c for c in reader.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"] if c["id"] == comment["id"]
    )
    assert public == {**public, "status": "removed", "body": "", "html": "", "author": {"name": "", "about": None}}
    page = reader.get(f"/articles/{DEMO_SLUG}").text
    assert "removed by a moderator" in page and comment["body"][:40] not in page
    moderator_view = next(
        c for c in moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"] if c["id"] == comment["id"]
    )
    assert moderator_view["body"] == comment["body"] and moderator_view["removed_by"] == "alice"
    assert comment["body"][:40] in moderator.get(f"/articles/{DEMO_SLUG}").text  # moderators still see the text
    moderator.post(f"/api/comments/{comment['id']}/restore", json={}, headers={"X-CSRF-Token": token(moderator)})
    assert comment["body"][:40] in reader.get(f"/articles/{DEMO_SLUG}").text


def test_moderation_forms_work_without_javascript(moderator):
    comment = first_comment(moderator)
    response = moderator.post(
        f"/api/comments/{comment['id']}/remove",
        follow_redirects=False,
        data={"csrf_token": token(moderator), "next": f"/articles/{DEMO_SLUG}#c-{comment['id']}"},
    )
    assert response.status_code == 303 and response.headers["location"] == f"/articles/{DEMO_SLUG}#c-{comment['id']}"
    assert status_of(moderator, comment["id"]) == "removed"
    offsite = moderator.post(
        f"/api/comments/{comment['id']}/restore",
        follow_redirects=False,
        data={"csrf_token": token(moderator), "next": "//evil.example/"},
    )
    assert offsite.headers["location"] == "/"  # never redirected off the site


def test_a_banned_reader_cannot_post_until_unbanned(moderator, reader):
    reader_token = token(reader, f"/articles/{DEMO_SLUG}")
    posted = reader.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Troll", "body": "first"},
        headers={"X-CSRF-Token": reader_token},
    ).json()["comment"]
    reader_id = field_of(moderator, posted["id"], "reader_id")
    ban = moderator.post(
        f"/api/readers/{reader_id}/ban",
        json={"duration": "60", "reason": "trolling"},
        headers={"X-CSRF-Token": token(moderator)},
    )
    assert ban.status_code == 200 and ban.json()["ban"]["until"]
    refused = reader.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Troll", "body": "again"},
        headers={"X-CSRF-Token": reader_token},
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"
    moderator.post(f"/api/readers/{reader_id}/unban", json={}, headers={"X-CSRF-Token": token(moderator)})
    assert (
        reader.post(
            f"/api/articles/{DEMO_SLUG}/comments",
            json={"name": "Troll", "body": "sorry"},
            headers={"X-CSRF-Token": reader_token},
        ).status_code
        == 201
    )


def test_a_reader_reports_a_comment_once_and_the_desk_lists_it(moderator, reader):
    comment = first_comment(moderator)
    reader_token = token(reader)
    first = reader.post(
        f"/api/comments/{comment['id']}/report", json={"reason": "spam"}, headers={"X-CSRF-Token": reader_token}
    )
    again = reader.post(
        f"/api/comments/{comment['id']}/report", json={"reason": "spam!"}, headers={"X-CSRF-Token": reader_token}
    )
    assert first.json() == {"ok": True, "reported": True, "already": False}
    assert again.json()["already"] is True
    reports = moderator.get("/api/moderation/queue").json()["reports"]
    assert [(r["comment"]["id"], r["count"], r["reasons"]) for r in reports] == [(comment["id"], 1, ["spam"])]
    moderator.post(f"/api/comments/{comment['id']}/dismiss", json={}, headers={"X-CSRF-Token": token(moderator)})
    assert moderator.get("/api/moderation/queue").json()["reports"] == []


def test_a_reports_reason_reaches_the_desk_without_bidi_overrides_or_invisible_characters(moderator, reader):
    # "\u202e" would show the rest of the reason reversed on the desk: a reader could make
    # "harassment" read as something else to the moderator who decides.
    comment = first_comment(moderator)
    reader.post(
        f"/api/comments/{comment['id']}/report",
        json={"reason": "\u202eoff\u200b topic\u2066 \u0000" + "x" * 600},
        headers={"X-CSRF-Token": token(reader)},
    )
    [report] = moderator.get("/api/moderation/queue").json()["reports"]
    [reason] = report["reasons"]
    assert reason.startswith("off topic x") and len(reason) == 500
    assert not any(ch in reason for ch in "\u202e\u200b\u2066\u0000")


def test_reports_are_rate_limited(moderator, reader):
    comments = moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]
    reader_token = token(reader)
    for n in range(11):
        body = {"name": "Ann", "body": f"filler {n}"}
        reader.post(f"/api/articles/{DEMO_SLUG}/comments", json=body, headers={"X-CSRF-Token": reader_token})
    ids = [c["id"] for c in moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]]
    ids += [c["id"] for c in comments]
    codes = [
        reader.post(f"/api/comments/{i}/report", json={}, headers={"X-CSRF-Token": reader_token}).status_code
        for i in ids[:11]
    ]
    assert 429 in codes and codes[:10] == [200] * 10


def test_premoderation_holds_comments_until_approved(moderator, reader, new_visitor):
    moderator.post(
        f"/api/articles/{DEMO_SLUG}/premoderation", json={"enabled": "1"}, headers={"X-CSRF-Token": token(moderator)}
    )
    reader_token = token(reader, f"/articles/{DEMO_SLUG}")
    held = reader.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Newcomer", "body": "held back"},
        headers={"X-CSRF-Token": reader_token},
    )
    assert held.status_code == 202 and held.json()["comment"]["status"] == "pending" and held.json()["seq"] is None
    assert "held back" in reader.get(f"/articles/{DEMO_SLUG}").text  # its author sees it, marked pending
    someone_else = new_visitor()
    assert "held back" not in someone_else.get(f"/articles/{DEMO_SLUG}").text
    assert someone_else.get(f"/api/articles/{DEMO_SLUG}/comments").json()["seq"] == 4
    approved = moderator.post(
        f"/api/comments/{held.json()['comment']['id']}/approve", json={}, headers={"X-CSRF-Token": token(moderator)}
    )
    assert approved.json()["comment"]["status"] == "visible"
    thread = someone_else.get(f"/api/articles/{DEMO_SLUG}/comments").json()
    assert thread["seq"] == 5 and thread["comments"][-1]["body"] == "held back"


def post_as(client: Visitor, name: str, body: str | None = None) -> httpx.Response:
    return client.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": name, "body": body or f"hi from {name}"},
        headers={"X-CSRF-Token": token(client)},
    )


def test_a_login_name_is_never_reserved(moderator, reader):
    # alice has no display name: a refusal would tell readers that "alice" logs in.
    posted = post_as(reader, "alice")
    assert posted.status_code == 201 and "staff" not in posted.json()["comment"]["author"]
    mod_posted = post_as(moderator, "alice", "mod here")
    assert mod_posted.status_code == 201 and mod_posted.json()["comment"]["author"]["staff"] is True


def test_a_reader_cannot_take_a_moderators_display_name_or_a_lookalike(app_client, new_visitor, reader):
    app_client.portal.call(app_client.app.state.moderation.create_moderator, "alice", PASSWORD, "Desk Editor")
    for name in ("Desk Editor", "desk editor", "Dеsk Editor", "Desk Edit0r", "Desk\u200b Editor"):  # Cyrillic е
        response = post_as(reader, name)
        assert response.status_code == 403, name
        assert response.json()["error"]["message"] == "That name is reserved. Please choose another.", name
    assert post_as(reader, "alice").status_code == 201  # the login name stays unreserved
    assert post_as(reader, "Desk Editors Fan").status_code == 201
    moderator = new_visitor()
    assert login(moderator).status_code == 303
    assert post_as(moderator, "Desk Editor", "mod here").status_code == 201


def test_a_reset_with_another_display_name_frees_the_old_one(app_client, reader):
    moderation = app_client.app.state.moderation
    app_client.portal.call(moderation.create_moderator, "alice", PASSWORD, "Desk Editor")
    app_client.portal.call(moderation.create_moderator, "alice", PASSWORD, "Night Editor")
    assert post_as(reader, "Desk Editor").status_code == 201
    assert post_as(reader, "Night Editor").status_code == 403
    app_client.portal.call(moderation.create_moderator, "ALICE", PASSWORD)  # no display name: nothing reserved
    assert post_as(reader, "Night Editor").status_code == 201


def test_a_reset_removes_what_older_versions_reserved_from_the_login_name(app_client, reader):
    moderation = app_client.app.state.moderation
    for legacy in ("Alice", "carol"):  # as versions before display names reserved login names
        for skeleton in name_skeletons(legacy):
            app_client.portal.call(moderation.backend.kv_set, f"reserved-name:{skeleton}", legacy)
    app_client.portal.call(moderation.create_moderator, "bob", PASSWORD, "alice")  # now bob's public name
    assert post_as(reader, "carol").status_code == 403
    app_client.portal.call(moderation.create_moderator, "carol", PASSWORD)
    assert post_as(reader, "carol").status_code == 201
    app_client.portal.call(moderation.create_moderator, "alice", PASSWORD)
    assert post_as(reader, "alice").status_code == 403  # still bob's display name: his keys stay


def test_create_moderator_says_what_it_reserves(server):
    env = {**os.environ, "DATA_DIR": str(server.data_dir), "SECRET_KEY": "test-secret-key", **server.env}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server", "create-moderator", *args],
            input=PASSWORD + "\n",
            text=True,
            capture_output=True,
            cwd=ROOT,
            env=env,
            timeout=60,
        )

    plain = run("alice")
    assert plain.returncode == 0 and "no name is reserved" in plain.stdout and "staff badge" in plain.stdout
    named = run("alice", "--display-name", " Desk  Editor ")
    assert named.returncode == 0 and "reserved display name 'Desk Editor'" in named.stdout, named.stderr
    assert "login name is not reserved" in named.stdout


def test_every_moderator_action_is_in_the_audit_log(moderator):
    comment = first_comment(moderator)
    headers = {"X-CSRF-Token": token(moderator)}
    moderator.post(f"/api/comments/{comment['id']}/remove", json={"reason": "off topic"}, headers=headers)
    moderator.post(f"/api/comments/{comment['id']}/restore", json={}, headers=headers)
    moderator.post("/api/readers/r123/ban", json={"reason": "spam"}, headers=headers)
    audit = moderator.get("/api/moderation/audit")
    assert audit.headers["content-disposition"].startswith("attachment")
    entries = audit.json()
    assert [(e["action"], e["moderator"]) for e in entries] == [
        ("ban", "alice"),
        ("restore", "alice"),
        ("remove", "alice"),
        ("login", "alice"),
    ]
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


# --- logins: counted before the password is checked, on one form of the name ---------------


def test_every_spelling_of_a_name_counts_against_one_limit_and_logs_into_one_account(app_client):
    moderation = app_client.app.state.moderation
    spellings = [" alice", "alice\u3000", "\u2003alice", "ALICE", "alice\u200b", "ａｌｉｃｅ"]  # fullwidth too
    outcomes = []
    for n, name in enumerate(spellings * 2):  # each from its own address: only the name's limit applies
        try:
            app_client.portal.call(moderation.login, name, "wrong password", f"10.0.0.{n}")
            outcomes.append("in")
        except (Unauthorized, RateLimited) as exc:
            outcomes.append(exc.code)
    assert outcomes == ["unauthorized"] * 10 + ["rate_limited"] * 2, outcomes
    with pytest.raises(RateLimited):  # the right password too, from a new address, for a while
        app_client.portal.call(moderation.login, "Alice", PASSWORD, "10.0.1.1")


def test_a_locked_name_still_lets_its_owner_in_from_an_address_they_used_before(app_client):
    moderation = app_client.app.state.moderation
    app_client.portal.call(moderation.login, "alice", PASSWORD, "192.0.2.7")  # the owner's usual address
    for n in range(30):
        with pytest.raises((Unauthorized, RateLimited)):
            app_client.portal.call(moderation.login, "alice", f"guess {n}", f"198.51.100.{n}")
    with pytest.raises(RateLimited):
        app_client.portal.call(moderation.login, "alice", PASSWORD, "203.0.113.1")  # a new address: locked
    assert app_client.portal.call(moderation.login, "alice", PASSWORD, "192.0.2.7").name == "alice"
    # ... and resetting the password lifts the lock everywhere.
    app_client.portal.call(moderation.create_moderator, "alice", PASSWORD)
    assert app_client.portal.call(moderation.login, "alice", PASSWORD, "203.0.113.1").name == "alice"


async def test_parallel_wrong_logins_are_counted_before_the_password_is_checked(start_server):
    # The library's default cost (about 80 ms a check), so that the guesses overlap as they would.
    server = start_server(PASSWORD_HASH_PROFILE="RFC_9106_LOW_MEMORY")
    create_moderator(server, "alice")

    async def guess(client: httpx.AsyncClient, name: str, address: str) -> int:
        headers = {"X-Forwarded-For": address}
        page = await client.get(server.url + "/login", headers=headers)
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        response = await client.post(
            server.url + "/login", headers=headers, data={"username": name, "password": "wrong", "csrf_token": token}
        )
        return response.status_code

    # From 40 addresses at one name (its limit: 10 a minute), then from one address at another.
    for name, addresses, allowed in (
        ("alice", [f"198.51.100.{n}" for n in range(40)], 10),
        ("bob", ["192.0.2.1"] * 40, 5),
    ):
        clients = [httpx.AsyncClient(timeout=60) for _ in addresses]
        start = asyncio.get_running_loop().time()
        codes = await asyncio.gather(*(guess(c, name, a) for c, a in zip(clients, addresses, strict=True)))
        took = asyncio.get_running_loop().time() - start
        for client in clients:
            await client.aclose()
        print(
            f"40 parallel wrong logins as {name} from {len(set(addresses))} address(es) in {took:.1f} s: "
            f"{codes.count(401)} x 401, {codes.count(429)} x 429"
        )
        assert set(codes) == {401, 429} and codes.count(401) <= allowed


def test_logins_and_failed_logins_are_in_the_audit_log(new_visitor, moderator):
    login(new_visitor(), "alice", "not the password")
    login(new_visitor(), "nobody", "not the password")  # no such moderator: nothing to audit
    entries = moderator.get("/api/moderation/audit").json()
    assert [(e["action"], e["moderator"]) for e in entries] == [("login_failed", "alice"), ("login", "alice")]
    assert entries[0]["detail"] == "from testclient"


def test_the_dummy_password_hash_is_made_at_first_use_not_at_import():
    """It costs a login (64 MiB and tens of ms with the defaults): every start and command paid it."""
    probe = (
        "import argon2; hashed = []; real = argon2.PasswordHasher.hash; "
        "argon2.PasswordHasher.hash = lambda self, *a, **k: hashed.append(1) or real(self, *a, **k); "
        "import server.moderation; print(len(hashed))"
    )
    hashes = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert hashes.stdout.strip() == "0"


async def test_a_password_hashed_at_another_cost_still_verifies_and_is_rehashed_at_login(tmp_path):
    backend = LocalBackend(tmp_path / "db.sqlite3")
    await backend.start()
    try:
        settings = Settings(data_dir=tmp_path, secret_key="k", password_hash_profile="RFC_9106_LOW_MEMORY")
        await Moderation(backend, settings).create_moderator("alice", PASSWORD)
        assert "m=65536" in json.loads(await backend.kv_get("moderator:alice"))["hash"]
        cheap = Moderation(backend, replace(settings, password_hash_profile="CHEAPEST"))
        assert (await cheap.login("alice", PASSWORD, "192.0.2.1")).name == "alice"
        assert "m=8," in json.loads(await backend.kv_get("moderator:alice"))["hash"]
        assert (await cheap.login("alice", PASSWORD, "192.0.2.1")).name == "alice"
    finally:
        await backend.close()
    with pytest.raises(ValueError, match="PASSWORD_HASH_PROFILE"):
        password_hasher("FASTEST")


# --- sessions end when they should ----------------------------------------------------------


def test_the_csrf_token_changes_at_login_and_at_logout(new_visitor):
    visitor = new_visitor()
    before = token(visitor)
    assert login(visitor).status_code == 303
    during = token(visitor)
    assert during != before
    comment_id = first_comment(visitor)["id"]
    refused = visitor.post(f"/api/comments/{comment_id}/remove", json={}, headers={"X-CSRF-Token": before})
    assert refused.status_code == 403  # a token from before the login is no moderator's
    visitor.post("/logout", data={"csrf_token": during}, follow_redirects=False)
    after = token(visitor)
    assert after not in (before, during)
    for old in (before, during):
        assert (
            visitor.post(f"/api/comments/{comment_id}/report", json={}, headers={"X-CSRF-Token": old}).status_code
            == 403
        )
    assert (
        visitor.post(f"/api/comments/{comment_id}/report", json={}, headers={"X-CSRF-Token": after}).status_code == 200
    )


def test_moderators_pages_and_json_are_never_cached(moderator, reader):
    for path in (
        "/moderation",
        "/moderation/rules",
        "/api/moderation/queue",
        "/api/moderation/audit",
        f"/articles/{DEMO_SLUG}",
        f"/api/articles/{DEMO_SLUG}/comments",
    ):
        assert moderator.get(path).headers.get("cache-control") == "no-store", path
    assert login(moderator).headers["cache-control"] == "no-store"
    assert reader.get(f"/articles/{DEMO_SLUG}").headers.get("cache-control") != "no-store"


def test_end_sessions_and_a_password_reset_log_a_moderator_out(app_client, settings, new_visitor):
    laptop, phone = new_visitor(), new_visitor()
    for device in (laptop, phone):
        assert login(device).status_code == 303 and device.get("/api/moderation/queue").status_code == 200
    env = {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "SECRET_KEY": "test-secret-key",
        "PASSWORD_HASH_PROFILE": "CHEAPEST",
    }
    ended = subprocess.run(
        [sys.executable, "-m", "server", "end-sessions", " ALICE"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ended.returncode == 0 and "ended 2 session(s)" in ended.stdout, ended.stderr
    assert [d.get("/api/moderation/queue").status_code for d in (laptop, phone)] == [401, 401]
    assert login(laptop).status_code == 303
    app_client.portal.call(app_client.app.state.moderation.create_moderator, "alice", "a new password")
    assert laptop.get("/api/moderation/queue").status_code == 401


# --- abuse that costs nothing is bounded ----------------------------------------------------


def test_reports_are_limited_per_address_too(moderator, new_visitor):
    comment = first_comment(moderator)
    codes = []
    for _ in range(21):  # a fresh reader (cookie) each time, all from one address
        visitor = new_visitor()
        codes.append(
            visitor.post(
                f"/api/comments/{comment['id']}/report", json={}, headers={"X-CSRF-Token": token(visitor)}
            ).status_code
        )
    assert codes == [200] * 20 + [429]


def test_a_banned_reader_cannot_report(moderator, reader):
    comment = first_comment(moderator)
    reader_token = token(reader, f"/articles/{DEMO_SLUG}")
    posted = reader.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Troll", "body": "hello"},
        headers={"X-CSRF-Token": reader_token},
    ).json()["comment"]
    reader_id = field_of(moderator, posted["id"], "reader_id")
    moderator.post(f"/api/readers/{reader_id}/ban", json={}, headers={"X-CSRF-Token": token(moderator)})
    refused = reader.post(f"/api/comments/{comment['id']}/report", json={}, headers={"X-CSRF-Token": reader_token})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"
    assert moderator.get("/api/moderation/queue").json()["reports"] == []


@pytest.mark.parametrize("duration", [10**12, 527041, -5, 0, "1e9", "٣", True, 1.5, [60]])
def test_a_ban_duration_out_of_range_is_a_400(moderator, duration):
    response = moderator.post(
        "/api/readers/r1/ban", json={"duration": duration}, headers={"X-CSRF-Token": token(moderator)}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_message", response.text
    assert moderator.get(f"/api/articles/{DEMO_SLUG}/comments").status_code == 200


def test_without_a_cookie_the_reader_limits_the_repeat_rule_and_bans_still_hold(app_client, moderator):
    def post(body: str, cookie: bool = False):
        visitor = Visitor(app_client)  # a new one each time: no cookie kept from the last post
        headers = {"X-CSRF-Token": token(visitor)} if cookie else {}  # token() gets the visitor a cookie
        return visitor.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Bot", "body": body}, headers=headers)

    first = post("buy cheap watches")
    assert first.status_code == 201
    assert post("buy cheap watches").json()["error"]["code"] == "repeat"
    codes = [post(f"watch number {n}").status_code for n in range(5)]
    assert codes == [201] * 3 + [429] * 2  # the reader's 5 attempts in 10 s, the first two included
    comment_id = first.json()["comment"]["id"]
    reader_id = field_of(moderator, comment_id, "reader_id")
    assert (
        moderator.post(
            f"/api/readers/{reader_id}/ban", json={"comment_id": comment_id}, headers={"X-CSRF-Token": token(moderator)}
        ).status_code
        == 200
    )
    refused = post("something else entirely")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"
    # Taking a cookie makes a new reader; banning the address as well stops that too.
    assert post("a new reader here", cookie=True).status_code == 201
    assert (
        moderator.post(
            f"/api/readers/{reader_id}/ban",
            json={"comment_id": comment_id, "ip": "1"},
            headers={"X-CSRF-Token": token(moderator)},
        ).status_code
        == 200
    )
    refused = post("and another one", cookie=True)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"


def test_a_banned_author_shows_as_banned_after_a_reload_and_the_audit_names_them(moderator, reader):
    reader_token = token(reader, f"/articles/{DEMO_SLUG}")
    posted = reader.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Troll", "body": "hello"},
        headers={"X-CSRF-Token": reader_token},
    ).json()["comment"]

    def views() -> dict[str, dict]:
        return {c["id"]: c for c in moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]}

    reader_id = views()[posted["id"]]["reader_id"]
    headers = {"X-CSRF-Token": token(moderator)}
    moderator.post(
        f"/api/readers/{reader_id}/ban", json={"comment_id": posted["id"], "duration": "60"}, headers=headers
    )
    assert views()[posted["id"]]["banned"] is True
    assert not any(c.get("banned") for i, c in views().items() if i != posted["id"])
    queue = moderator.get("/api/moderation/queue").json()
    assert next(c for c in queue["comments"] if c["id"] == posted["id"])["banned"] is True
    assert "banned" not in reader.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"][-1]
    moderator.post(f"/api/readers/{reader_id}/unban", json={}, headers=headers)
    assert "banned" not in views()[posted["id"]]
    audit = moderator.get("/api/moderation/audit").json()
    assert [(e["action"], e["reader_name"]) for e in audit[:2]] == [("unban", "Troll"), ("ban", "Troll")]


# --- the staff badge ------------------------------------------------------------------------


def test_a_moderators_comment_carries_a_staff_badge_a_reader_cannot_fake(moderator, reader):
    mine = moderator.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "alice", "body": "From the desk"},
        headers={"X-CSRF-Token": token(moderator)},
    ).json()["comment"]
    assert mine["author"] == {"name": "alice", "about": None, "staff": True}
    faked = reader.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Bob", "body": "me too", "staff": True, "author": {"staff": True}},
        headers={"X-CSRF-Token": token(reader)},
    ).json()["comment"]
    assert faked["author"] == {"name": "Bob", "about": None}
    for viewer in (reader, moderator):
        authors = {c["id"]: c["author"] for c in viewer.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]}
        assert authors[mine["id"]]["staff"] is True and "staff" not in authors[faked["id"]]


async def test_a_database_from_before_the_staff_column_gets_it(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        for statement in migrations.SQLITE[0]:  # the schema before the staff column (migration 2)
            db.execute(statement)
        db.execute("INSERT INTO threads (slug, epoch) VALUES ('t', 'e')")
        db.execute(
            "INSERT INTO comments (id, slug, seq, name, body, html, created_at, status) "
            "VALUES ('c1', 't', NULL, 'Ann', 'hi', '<p>hi</p>', '2026-01-01T00:00:00Z', 'pending')"
        )
    backend = LocalBackend(path)
    await backend.start()
    try:
        assert (await backend.get_comment("t", "c1")).staff is False
        staff_comment = Comment(
            id="c2",
            slug="t",
            parent=None,
            name="alice",
            about=None,
            body="x",
            html="<p>x</p>",
            created_at="2026-01-01T00:00:01Z",
            staff=True,
        )
        await backend.post(staff_comment, None)
        assert (await backend.get_comment("t", "c2")).staff is True
    finally:
        await backend.close()


async def test_a_flood_of_reports_reaches_the_desk_as_a_few_frames_with_the_whole_count(start_server):
    server = start_server()
    create_moderator(server, "alice")
    async with httpx.AsyncClient(base_url=server.url) as moderator:
        page = await moderator.get("/login")
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        await moderator.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf})
        comment_id = (await moderator.get(f"/api/articles/{DEMO_SLUG}/comments")).json()["comments"][0]["id"]
        cookie = "; ".join(f"{name}={value}" for name, value in moderator.cookies.items())
        async with connect(f"{server.ws_url}/moderation/live", additional_headers={"Cookie": cookie}) as desk:
            assert json.loads(await desk.recv())["type"] == "desk_welcome"

            at_once = asyncio.Semaphore(20)

            async def report(n: int) -> int:
                headers = {"X-Forwarded-For": f"10.1.{n // 250}.{n % 250}"}  # 150 readers, each at home
                async with at_once, httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as reader:
                    token = re.search(r'name="csrf-token" content="([^"]+)"', (await reader.get("/")).text).group(1)
                    response = await reader.post(
                        f"/api/comments/{comment_id}/report", json={"reason": f"r{n}"}, headers={"X-CSRF-Token": token}
                    )
                    return response.status_code

            loop = asyncio.get_running_loop()
            start = loop.time()
            codes = await asyncio.gather(*(report(n) for n in range(150)))
            took = loop.time() - start
            assert codes == [200] * 150
            counts = []
            while not counts or counts[-1] < REPORTS_KEPT:  # at most an interval after the last report
                frame = json.loads(await asyncio.wait_for(desk.recv(), 10))
                if frame["type"] == "desk_report":
                    counts.append(frame["report"]["count"])
            print(f"150 reports in {took:.1f} s reached the desk as {len(counts)} frames: counts {counts}")
            assert len(counts) <= 2 * (took / REPORT_FRAME_INTERVAL + 1)


async def test_end_sessions_on_the_embedded_backend_closes_the_moderators_open_desk(start_server):
    """The command is another process: the server notices the session is gone within seconds."""
    server = start_server()
    create_moderator(server, "alice")
    async with httpx.AsyncClient(base_url=server.url) as moderator:
        page = await moderator.get("/login")
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        await moderator.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf})
        cookie = "; ".join(f"{name}={value}" for name, value in moderator.cookies.items())
    async with connect(f"{server.ws_url}/moderation/live", additional_headers={"Cookie": cookie}) as desk:
        assert json.loads(await desk.recv())["type"] == "desk_welcome"
        env = {**os.environ, "DATA_DIR": str(server.data_dir), "SECRET_KEY": "test-secret-key", **server.env}
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "server", "end-sessions", "alice"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )

        async def until_closed() -> None:
            while True:
                await asyncio.wait_for(desk.recv(), 4 * SESSION_CHECK_INTERVAL)

        with pytest.raises(ConnectionClosed):
            await until_closed()
        assert desk.close_code == 4003


def test_a_host_cannot_side_step_the_address_limits_with_a_new_ipv6_address_each_time(app_client):
    moderation = app_client.app.state.moderation
    outcomes = []
    for n in range(7):  # one /64, a new address each time, as any IPv6 host can
        try:
            app_client.portal.call(moderation.login, f"nobody{n}", "guess", f"2001:db8:5:6::{n + 1:x}")
        except (Unauthorized, RateLimited) as exc:
            outcomes.append(exc.code)
    assert outcomes == ["unauthorized"] * 5 + ["rate_limited"] * 2
    assert client_network("::ffff:192.0.2.9") == client_network("192.0.2.9") == "192.0.2.9"
    assert client_network("2001:db8:5:7::1") == "2001:db8:5:7::/64"  # the next /64 is another network


def test_a_retry_of_a_post_cut_short_after_the_repeat_rule_saw_it_is_no_repeat(app_client):
    """An instance that dies between remembering the text and storing the comment leaves the
    repeat key behind; the reader's retry (the same ref, on another instance) must go through."""
    threads = app_client.app.state.threads
    author = Author(reader_id="r-retry", ip="192.0.2.44")
    key = f"recent:r-retry:{text_fingerprint('first try')}"
    app_client.portal.call(threads.backend.kv_set, key, "r-retry:ref-1", 600)  # what the dead instance left
    comment, created = app_client.portal.call(
        lambda: threads.post(DEMO_SLUG, author, name="Ann", about=None, body="first try", parent=None, ref="ref-1")
    )
    assert created and comment.body == "first try"
    with pytest.raises(Repeat):  # another post of the same words is still a repeat
        app_client.portal.call(
            lambda: threads.post(DEMO_SLUG, author, name="Ann", about=None, body="First try!", parent=None, ref="ref-2")
        )
