"""The site's own origins come from PUBLIC_URL (or, in development, the loopback origins of the
port served on), never from the Host header a client writes."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.app import create_app
from server.security import origin_of
from server.settings import Settings, SettingsError, load

from .servers import DEMO_SLUG, ROOT
from .visitors import PASSWORD, token

PUBLIC = "https://comments.example"


@pytest.fixture
def public_client(tmp_path: Path) -> Iterator[TestClient]:
    """The app as deployed behind a TLS proxy at PUBLIC (the proxy does not forward the scheme)."""
    settings = Settings(
        data_dir=tmp_path / "data", content_dir=ROOT / "content", secret_key="test-secret-key", public_url=(PUBLIC,)
    )
    with TestClient(create_app(settings), base_url="http://comments.example") as client:
        yield client


def test_origins_are_compared_in_one_spelling() -> None:
    assert origin_of("https://Comments.Example:443/") == "https://comments.example"
    assert origin_of("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert origin_of("http://[::1]:8000") == "http://[::1]:8000"
    for not_an_origin in (
        "comments.example",
        "https://comments.example/path",
        "javascript:alert(1)",
        "https://user@comments.example",
        "ftp://comments.example",
    ):
        with pytest.raises(ValueError, match="is not an origin"):
            origin_of(not_an_origin)


def test_a_request_for_another_host_is_refused(client: TestClient) -> None:
    for path in ("/", f"/articles/{DEMO_SLUG}", f"/api/articles/{DEMO_SLUG}/comments", "/login"):
        response = client.get(path, headers={"Host": "attacker.example"})
        assert response.status_code == 400, path
        assert response.json()["error"]["code"] == "invalid_host"
        assert "set-cookie" not in response.headers
    assert client.get("/", headers={"Host": "testserver"}).status_code == 200


def test_health_checks_answer_whatever_host_they_are_asked_by(client: TestClient) -> None:
    """A load balancer asks by the instance's address, not the site's name."""
    assert client.get("/healthz", headers={"Host": "10.0.0.7:8000"}).status_code == 200
    assert client.get("/readyz", headers={"Host": "10.0.0.7:8000"}).status_code == 200


def test_with_public_url_only_its_host_and_origin_are_the_sites_own(public_client: TestClient) -> None:
    page = public_client.get(f"/articles/{DEMO_SLUG}")
    assert page.status_code == 200
    assert public_client.get("/", headers={"Host": "comments.example:443"}).status_code == 200
    assert public_client.get("/", headers={"Host": "testserver"}).status_code == 400
    csrf = token(public_client, f"/articles/{DEMO_SLUG}")
    body = {"name": "Ann", "body": "from the site itself"}
    # The request came in as http:// (TLS ended at the proxy), but the page's origin is PUBLIC.
    accepted = public_client.post(
        f"/api/articles/{DEMO_SLUG}/comments", json=body, headers={"Origin": PUBLIC, "X-CSRF-Token": csrf}
    )
    assert accepted.status_code == 201
    # The origin the Host header and the request's scheme spell is not the site's.
    refused = public_client.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json=body,
        headers={"Origin": "http://comments.example", "X-CSRF-Token": csrf},
    )
    assert refused.status_code == 403


def test_an_https_public_url_makes_the_cookies_secure(public_client: TestClient) -> None:
    """Behind a TLS proxy that does not say the scheme, the request looks like plain http."""
    cookie = public_client.get("/").headers["set-cookie"]
    assert cookie.startswith("bc_reader=") and "; Secure" in cookie
    public_client.portal.call(public_client.app.state.moderation.create_moderator, "alice", PASSWORD)
    # The client keeps a Secure cookie for https only: send the reader's back by hand.
    reader = cookie.split(";", 1)[0]
    page = public_client.get("/login", headers={"Cookie": reader}).text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    response = public_client.post(
        "/login",
        headers={"Cookie": reader},
        follow_redirects=False,
        data={"username": "alice", "password": PASSWORD, "csrf_token": csrf},
    )
    assert response.status_code == 303
    assert response.headers["set-cookie"].startswith("bc_session=") and "; Secure" in response.headers["set-cookie"]


async def test_a_rebound_host_name_reaches_nothing(start_server) -> None:
    """DNS rebinding: a page of attacker.example whose name now points at the server's address.
    In development the server answers its loopback names on its own port, and nothing else."""
    server = start_server()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
            assert (await client.get(f"{server.url}/", headers={"Host": host})).status_code == 200, host
        for host in (
            f"attacker.example:{server.port}",
            "attacker.example",
            f"127.0.0.1.attacker.example:{server.port}",
        ):
            response = await client.get(f"{server.url}/articles/{DEMO_SLUG}", headers={"Host": host})
            assert response.status_code == 400, host
    # The live socket too: its upgrade is answered 400 before any frame.
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"ws://attacker.example:{server.port}/articles/{DEMO_SLUG}/live",
            host="127.0.0.1",
            port=server.port,
            origin=f"http://attacker.example:{server.port}",
            proxy=None,
            open_timeout=5,
        ):
            pass
    assert refused.value.response.status_code == 400


def test_the_csp_allows_a_newsrooms_stylesheet_origin_only_when_one_is_set(settings: Settings) -> None:
    with TestClient(create_app(settings), base_url="http://testserver") as plain:
        csp = plain.get("/").headers["content-security-policy"]
    assert "style-src 'self';" in csp and "font-src" not in csp
    themed = dataclasses.replace(settings, theme_css_url="https://static.news.example:8443/css/comments.css")
    with TestClient(create_app(themed), base_url="http://testserver") as client:
        page = client.get("/login")
    csp = page.headers["content-security-policy"]
    assert "style-src 'self' https://static.news.example:8443;" in csp
    assert "font-src 'self' https://static.news.example:8443;" in csp
    assert "script-src 'self';" in csp  # styles only: never scripts from there
    assert '<link rel="stylesheet" href="https://static.news.example:8443/css/comments.css">' in page.text


@pytest.mark.parametrize(
    "value", ["javascript:alert(1)", "//cdn.example/x.css", "comments.css", "ftp://x.example/a.css"]
)
def test_theme_css_url_must_be_an_http_url_or_a_path_here(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("THEME_CSS_URL", value)
    monkeypatch.setenv("SECRET_KEY", "test-secret-key")
    with pytest.raises(SettingsError, match="THEME_CSS_URL"):
        load(env_file=None)
