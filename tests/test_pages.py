"""The pages and JSON routes in-process (Starlette's TestClient), on the embedded backend."""

from __future__ import annotations

import re

import jinja2
import pytest
from markupsafe import escape

from server.i18n import ENGLISH
from server.pages import WEB_DIR, create_templates
from server.settings import Settings

from .servers import DEMO_SLUG

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=1">'


def csrf_token(page_html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page_html).group(1)


def test_the_index_lists_the_demo_article_with_its_comment_count(client):
    page = client.get("/")
    assert page.status_code == 200
    assert f'href="/articles/{DEMO_SLUG}"' in page.text
    assert "Moscow Warns Western Troops" in page.text
    # The fields old clients read, as they always were (the newsroom API added more beside them).
    [listed] = client.get("/api/articles").json()
    assert {key: listed[key] for key in ("slug", "title", "comment_count")} == {
        "slug": DEMO_SLUG,
        "title": "Moscow Warns Western Troops in Ukraine Would Be 'Legitimate Targets'",
        "comment_count": 4,
    }


def test_the_article_page_renders_the_article_and_its_thread(client):
    page = client.get(f"/articles/{DEMO_SLUG}")
    assert page.status_code == 200
    text = page.text
    for expected in (
        "Moscow Warns Western Troops in Ukraine Would Be &#39;Legitimate Targets&#39;",
        "Sophia Reynolds",
        "Financial Markets Editor",
        "MOSCOW, Feb 2 (Reuters)",
        "Reporting by Reuters",
        "Markus Scholz",
        "Political Analyst, Berlin",
        "This is reckless brinkmanship.",
    ):
        assert expected in text
    assert "Leave a Reply" not in text and "This Post Has 0 Comments" not in text
    assert 'data-seq="4"' in text
    assert csrf_token(text)


def test_every_response_carries_the_security_headers(client):
    for path in ("/", f"/articles/{DEMO_SLUG}", "/api/articles", "/articles/nope"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "strict-origin-when-cross-origin"


def test_the_page_has_no_inline_script_or_style_that_the_csp_would_block(client):
    text = client.get(f"/articles/{DEMO_SLUG}").text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), "inline <script> would be blocked by the CSP"
    assert not re.search(r"\sstyle=", text), "inline style attributes would be blocked by the CSP"
    assert not re.search(r"\son[a-z]+=", text), "inline event handlers would be blocked by the CSP"


def test_the_reader_cookie_is_signed_httponly_and_samesite(client):
    cookie = client.get("/").headers["set-cookie"]
    assert cookie.startswith("bc_reader=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_what_a_reader_writes_is_escaped_everywhere_it_is_shown(client):
    token = csrf_token(client.get(f"/articles/{DEMO_SLUG}").text)
    response = client.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        headers={"X-CSRF-Token": token},
        json={"name": "<b>Eve</b>", "about": HOSTILE[:100], "body": HOSTILE},
    )
    assert response.status_code == 201
    page = client.get(f"/articles/{DEMO_SLUG}").text
    assert "<script>window.pwned" not in page and "<img src=x" not in page and "<b>Eve" not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
    assert "&lt;b&gt;Eve&lt;/b&gt;" in page


def test_every_template_autoescapes_whatever_its_file_name():
    """Starlette's default escapes only .html/.htm/.xml; ours escapes every name, .j2 included."""
    env = create_templates(Settings(), ENGLISH).env
    names = [p.name for p in (WEB_DIR / "templates").iterdir()] + ["comment.j2", "fragment.txt"]
    probe = env.overlay(loader=jinja2.DictLoader(dict.fromkeys(names, "{{ value }}")))
    for name in names:
        assert probe.get_template(name).render(value=HOSTILE) == str(escape(HOSTILE)), name


def test_the_json_api_posts_and_lists_comments(client):
    response = client.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Ann", "about": "Teacher, Leeds", "body": "Hello\n\nworld"},
        headers={"X-CSRF-Token": csrf_token(client.get("/").text)},
    )
    assert response.status_code == 201
    created = response.json()
    assert created["seq"] == 5
    comment = created["comment"]
    assert comment["author"] == {"name": "Ann", "about": "Teacher, Leeds"}
    assert comment["html"] == "<p>Hello</p><p>world</p>" and comment["status"] == "visible"
    thread = client.get(f"/api/articles/{DEMO_SLUG}/comments").json()
    assert thread["seq"] == 5 and thread["comments"][-1] == comment


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"name": "Ann", "body": "   "}, 422, "empty"),
        ({"name": "", "body": "hi"}, 422, "empty"),
        ({"name": "Ann", "body": "x" * 5001}, 422, "too_long"),
        ({"name": "N" * 81, "body": "hi"}, 422, "too_long"),
        ({"name": "Ann", "body": "hi", "parent": "nope"}, 404, "not_found"),
        ({"name": "Ann", "body": 5}, 400, "invalid_message"),
    ],
)
def test_the_json_api_refuses_bad_comments_with_a_clear_error(client, payload, status, code):
    token = csrf_token(client.get("/").text)
    response = client.post(f"/api/articles/{DEMO_SLUG}/comments", json=payload, headers={"X-CSRF-Token": token})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]
    assert client.get(f"/api/articles/{DEMO_SLUG}/comments").json()["seq"] == 4  # nothing stored


def test_malformed_json_and_wrong_content_type_are_refused(client):
    token = csrf_token(client.get("/").text)
    for body, content_type in (("{not json", "application/json"), ("name=Ann&body=hi", "text/plain")):
        response = client.post(
            f"/api/articles/{DEMO_SLUG}/comments",
            content=body,
            headers={"Content-Type": content_type, "X-CSRF-Token": token},
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_message"


def test_a_session_without_its_csrf_token_cannot_post(client):
    client.get("/")  # the reader cookie is set
    response = client.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Ann", "body": "hi"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    form = client.post(f"/articles/{DEMO_SLUG}/comments", data={"name": "Ann", "body": "hi"}, follow_redirects=False)
    assert form.status_code == 403
    assert client.get(f"/api/articles/{DEMO_SLUG}/comments").json()["seq"] == 4


def test_the_form_post_redirects_to_the_new_comment(client):
    token = csrf_token(client.get(f"/articles/{DEMO_SLUG}").text)
    response = client.post(
        f"/articles/{DEMO_SLUG}/comments",
        follow_redirects=False,
        data={"name": "Ann", "about": "", "body": "From a form", "parent": "", "csrf_token": token},
    )
    assert response.status_code == 303
    comment_id = client.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"][-1]["id"]
    assert response.headers["location"] == f"/articles/{DEMO_SLUG}/comments/{comment_id}#c-{comment_id}"


def test_a_refused_form_post_shows_the_page_again_with_the_text_kept(client):
    token = csrf_token(client.get(f"/articles/{DEMO_SLUG}").text)
    response = client.post(
        f"/articles/{DEMO_SLUG}/comments",
        follow_redirects=False,
        data={"name": "Keep Me", "body": "x" * 5001, "parent": "", "csrf_token": token},
    )
    assert response.status_code == 422
    assert "limited to 5,000 characters" in response.text and 'value="Keep Me"' in response.text


def test_unknown_articles_are_404_as_page_and_as_json(client):
    page = client.get("/articles/no-such-article")
    assert page.status_code == 404 and "<html" in page.text
    api = client.get("/api/articles/no-such-article/comments")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ok"}


def test_an_oversized_request_body_is_refused_before_it_is_read(client):
    token = csrf_token(client.get(f"/articles/{DEMO_SLUG}").text)
    huge = "x" * (300 * 1024)
    api = client.post(
        f"/api/articles/{DEMO_SLUG}/comments", headers={"X-CSRF-Token": token}, json={"name": "Ann", "body": huge}
    )
    assert api.status_code == 413 and api.json()["error"]["code"] == "too_long"

    def chunked():  # no Content-Length: the size is only known while reading
        for _ in range(300):
            yield b"x" * 1024

    form = client.post(
        f"/articles/{DEMO_SLUG}/comments",
        content=chunked(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 413
    assert client.get(f"/api/articles/{DEMO_SLUG}/comments").json()["seq"] == 4


def test_metrics_are_served_to_loopback_only(client, settings):
    # The TestClient's address is "testclient", not loopback: refused like any outsider.
    assert client.get("/metrics").status_code == 403


def test_metrics_count_what_operators_need(settings, tmp_path):
    from dataclasses import replace

    from starlette.testclient import TestClient

    from server.app import create_app

    def metric(text: str, name: str) -> float:
        return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))

    with TestClient(create_app(replace(settings, metrics_allow=("testclient",)))) as client:
        before = metric(client.get("/metrics").text, "backchannel_comments_posted_total")
        client.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": "Ann", "body": "counted"})
        text = client.get("/metrics").text
    assert metric(text, "backchannel_comments_posted_total") == before + 1
    assert metric(text, "backchannel_live_connections") == 0 and metric(text, "process_resident_memory_bytes") > 0
