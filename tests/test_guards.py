"""The request-guard layer: redirects stay on the site, the moderator gate is Starlette's."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from .servers import DEMO_SLUG
from .visitors import token


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "/\\evil.example",
        "/\\/evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "https://evil.example/moderation",
        "http://testserver.evil.example/",
        "javascript:alert(1)",
        "moderation",
        "",
    ],
)
def test_a_form_redirect_never_leaves_the_site(moderator, target: str) -> None:
    """Browsers read "/\\evil" and "/<tab>/evil" as "//evil": another host."""
    comment = moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"][0]
    response = moderator.post(
        f"/api/comments/{comment['id']}/restore",
        follow_redirects=False,
        data={"csrf_token": token(moderator), "next": target},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        (f"/articles/{DEMO_SLUG}#c-1", f"/articles/{DEMO_SLUG}#c-1"),
        ("/moderation?tab=reports", "/moderation?tab=reports"),
        ("http://testserver/moderation/rules", "/moderation/rules"),  # as Starlette's requires() writes it
    ],
)
def test_a_form_redirect_goes_back_to_a_page_of_the_site(moderator, target: str, kept: str) -> None:
    comment = moderator.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"][0]
    response = moderator.post(
        f"/api/comments/{comment['id']}/restore",
        follow_redirects=False,
        data={"csrf_token": token(moderator), "next": target},
    )
    assert response.headers["location"] == kept


def test_the_login_page_keeps_only_a_next_on_the_site(client: TestClient) -> None:
    assert (
        'name="next" value="/moderation/rules"'
        in client.get("/login", params={"next": "http://testserver/moderation/rules"}).text
    )
    assert 'name="next" value="/moderation"' in client.get("/login", params={"next": "/\\evil.example"}).text


def test_pages_for_moderators_send_a_reader_to_the_login_page_and_back(reader) -> None:
    for page in ("/moderation", "/moderation/rules"):
        response = reader.get(page, follow_redirects=False)
        assert response.status_code == 303
        login_page = reader.get(response.headers["location"])
        assert f'name="next" value="{page}"' in login_page.text


def test_a_reader_gets_the_same_json_error_from_every_moderator_route(reader) -> None:
    for path in ("/api/moderation/queue", "/api/moderation/audit", "/api/moderation/rules"):
        response = reader.get(path)
        assert response.status_code == 401
        assert response.json() == {"error": {"code": "unauthorized", "message": "Moderators only: please log in."}}


def test_a_method_not_allowed_is_answered_in_the_error_shape(client: TestClient) -> None:
    response = client.delete("/api/articles")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "http_error"
