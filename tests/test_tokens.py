"""API tokens (issue 13, point 1): the command-line life cycle against a running server, and
every refusal: no token, a malformed, wrong or revoked one, a missing scope, a moderator's
session in a token's place and a token in a moderator's, and too many wrong tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx2 as httpx
import pytest

from server.tokens import TOKEN_PREFIX

from .servers import DEMO_SLUG, ROOT
from .test_api import write_comments
from .visitors import token as csrf_token

WHOAMI = "/api/tokens/whoami"
WEBHOOK_TEST = "/api/webhooks/test"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(client, name: str = "cms", scopes: tuple[str, ...] = ("articles:write",), webhook: str | None = None) -> str:
    token, _record = client.portal.call(client.app.state.tokens.create, name, list(scopes), webhook)
    return token


def assert_refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code


def run_cli(data_dir, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATA_DIR": str(data_dir), "SECRET_KEY": "test-secret-key"}
    return subprocess.run(
        [sys.executable, "-m", "server", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_command_line_life_cycle_against_a_running_server(start_server, tmp_path) -> None:
    server = start_server(data_dir=tmp_path / "data")
    created = run_cli(tmp_path / "data", "create-token", "cms", "--scope", "articles:write")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    listed = run_cli(tmp_path / "data", "list-tokens")
    assert listed.stdout.startswith("cms\tarticles:write\t") and token not in listed.stdout

    with httpx.Client(base_url=server.url) as http:
        answer = http.get(WHOAMI, headers=bearer(token))
        assert answer.status_code == 200 and answer.json()["name"] == "cms"
        assert answer.json()["scopes"] == ["articles:write"]
        assert run_cli(tmp_path / "data", "create-token", "cms").returncode != 0  # the name is taken
        revoked = run_cli(tmp_path / "data", "revoke-token", "cms")
        assert revoked.returncode == 0, revoked.stderr
        # Revoked in the store: the running server refuses it on the next request.
        assert_refused(http.get(WHOAMI, headers=bearer(token)), 401, "unauthorized")
    assert run_cli(tmp_path / "data", "revoke-token", "cms").returncode != 0
    assert run_cli(tmp_path / "data", "list-tokens").stdout == ""


def test_only_the_hash_is_stored(client) -> None:
    token = create(client)
    backend = client.app.state.backend
    record = client.portal.call(backend.kv_get, "api-token:cms")
    assert token not in record and token[len(TOKEN_PREFIX) :] not in record
    assert set(json.loads(record)) == {"name", "scopes", "created_at", "webhook_url", "webhook_secret", "hash"}


def test_what_a_token_cannot_be_created_with(client) -> None:
    tokens = client.app.state.tokens
    create(client, "cms")
    for name, scopes, webhook in [
        ("cms", [], None),
        ("Bad Name", [], None),
        ("x", ["moderator"], None),
        ("y", [], "ftp://example.com/"),
        ("z", [], "https://user:pw@example.com/"),
    ]:
        with pytest.raises(ValueError, match=r"name|scope|URL|exists"):
            client.portal.call(tokens.create, name, scopes, webhook)


def test_requests_without_a_right_token_are_refused_with_json(client) -> None:
    token = create(client)
    assert_refused(client.get(WHOAMI), 401, "unauthorized")
    for header in [f"Bearer {token}x", "Bearer bc_nothing", f"bearer {token[:-1]}", "Bearer ", "bearer"]:
        response = client.get(WHOAMI, headers={"Authorization": header})
        assert_refused(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Another scheme is not a token (a staging site behind HTTP Basic auth keeps working).
    assert_refused(client.get(WHOAMI, headers={"Authorization": f"Basic {token}"}), 401, "unauthorized")
    assert client.get(f"/articles/{DEMO_SLUG}", headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 200
    assert client.get(WHOAMI, headers=bearer(token)).status_code == 200


def test_a_token_without_the_scope_gets_403(client) -> None:
    token = create(client, "reader-only", scopes=())
    assert client.get(WHOAMI, headers=bearer(token)).json()["scopes"] == []
    assert_refused(client.post(WEBHOOK_TEST, headers=bearer(token)), 403, "forbidden")


def test_a_bearer_request_needs_no_csrf_token(client) -> None:
    token = create(client, webhook="http://127.0.0.1:9/hook")
    assert client.post(WEBHOOK_TEST, headers=bearer(token)).status_code == 202


def test_a_revoked_token_is_refused_at_once(client) -> None:
    token = create(client)
    assert client.get(WHOAMI, headers=bearer(token)).status_code == 200
    assert client.portal.call(client.app.state.tokens.revoke, "cms")
    assert_refused(client.get(WHOAMI, headers=bearer(token)), 401, "unauthorized")


def test_a_moderators_session_never_satisfies_a_token_route(moderator) -> None:
    assert_refused(moderator.get(WHOAMI), 401, "unauthorized")
    assert_refused(moderator.post(WEBHOOK_TEST, headers={"X-CSRF-Token": csrf_token(moderator)}), 401, "unauthorized")


def test_a_token_never_has_a_moderators_powers(moderator) -> None:
    """Not alone, and not beside a moderator's session cookie: a request with a token is judged
    by the token alone."""
    client = moderator.client
    token = create(client)
    [comment_id] = write_comments(client, 1)
    csrf = csrf_token(moderator)
    assert moderator.get("/api/moderation/queue").status_code == 200  # the session works on its own
    for request in [
        lambda: client.get("/api/moderation/queue", headers=bearer(token)),
        lambda: moderator.get("/api/moderation/queue", headers=bearer(token)),
        lambda: moderator.post(f"/api/comments/{comment_id}/remove", headers={**bearer(token), "X-CSRF-Token": csrf}),
        lambda: client.post(f"/api/comments/{comment_id}/remove", headers=bearer(token)),
    ]:
        assert request().status_code in (401, 403)
    # A wrong token beside a valid session is still a wrong token.
    assert_refused(moderator.get("/api/moderation/queue", headers=bearer("bc_wrong")), 401, "unauthorized")
    comment = client.portal.call(client.app.state.backend.get_comment, DEMO_SLUG, comment_id)
    assert comment.status == "visible"


def test_wrong_tokens_are_rate_limited_per_address(client) -> None:
    token = create(client)
    answers = [client.get(WHOAMI, headers=bearer(f"bc_guess{n}")).status_code for n in range(10)]
    assert answers == [401] * 10
    limited = client.get(WHOAMI, headers=bearer("bc_guess10"))
    assert_refused(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    # While the address is over the limit no token is looked at, a right one included: guessing
    # stops, whatever the guess.
    assert_refused(client.get(WHOAMI, headers=bearer(token)), 429, "rate_limited")
    # Requests without a token are not affected.
    assert client.get(f"/api/articles/{DEMO_SLUG}/comments").status_code == 200
