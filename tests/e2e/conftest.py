"""Real headless Chromium (Debian's, driven by Playwright) for the browser tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ..servers import CHROMIUM_ARGS, ServerProcess, chromium_path
from .article_page import ARTICLE


# Per module, not per session: Playwright's sync API keeps an event loop running in this
# thread while it is open, and the asyncio tests that follow cannot start theirs beside it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Browser):
    """new_page(javascript=True, width=1280) -> a page in a context of its own (its own cookies),
    collecting console errors (CSP violations included) into page.errors."""
    contexts = []

    def open_(javascript: bool = True, width: int = 1280, height: int = 900) -> Page:
        context = browser.new_context(java_script_enabled=javascript, viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def open_page(new_page):
    """open_page(server, javascript=True, width=1280) -> a new page on the article, live."""

    def open_(server: ServerProcess, javascript: bool = True, width: int = 1280, height: int = 900) -> Page:
        page = new_page(javascript, width, height)
        page.goto(server.url + ARTICLE)
        if javascript:
            expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live")
        return page

    return open_
