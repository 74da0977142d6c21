"""What the browser tests do on the article page, written once."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
from playwright.sync_api import Page

from ..servers import DEMO_SLUG

ARTICLE = f"/articles/{DEMO_SLUG}"
API = f"/api/articles/{DEMO_SLUG}/comments"


def post_from(
    page: Page, body: str, name: str = "Reader One", parent: str | None = None, javascript: bool = True
) -> None:
    scope = page.locator(f"#c-{parent}") if parent else page.locator(".composer")
    if parent:
        scope.locator("summary").first.click()
        if not javascript:  # the page carries no reply form: the link asks for the page with it
            scope.locator("details.reply [data-lazy-form]").first.click()
            page.wait_for_url(f"**?reply={parent}#c-{parent}")
    form = scope.locator("form[data-comment-form]").first
    form.locator("textarea[name=body]").fill(body)
    form.locator("input[name=name]").fill(name)
    form.locator("[data-submit]").click()


def comment_by_body(page: Page, body: str):
    return page.locator("li.comment", has=page.locator(".comment-body", has_text=body))


def thread_comments(base_url: str, api: str = API) -> list[dict[str, Any]]:
    """Every comment of the thread through the API, following its `next` cursor page by page."""
    comments: list[dict[str, Any]] = []
    params = {"limit": "200"}  # the most a page may hold
    while True:
        page = httpx.get(base_url + api, params=params, timeout=10).json()
        comments += page["comments"]
        if not page.get("next"):
            return comments
        params["after"] = page["next"]
