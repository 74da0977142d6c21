"""The article page in French and German, in real Chromium: nothing of the English UI is left
(the server's page, the scripts' words, a comment that arrived live and its relative time), and
the plural forms follow the language."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx2 as httpx
import pytest
from playwright.sync_api import Page, expect

from server.i18n import load_languages, read_catalog

from ..servers import LOCAL_STORY_SLUG, ServerProcess
from .article_page import comment_by_body, post_from

pytestmark = pytest.mark.timeout(120)

ARTICLE = f"/articles/{LOCAL_STORY_SLUG}"
API = f"/api/articles/{LOCAL_STORY_SLUG}/comments"
PLACEHOLDER = re.compile(r"\{\w+\}|%\(\w+\)[sd]")
# Everything of the page a reader reads or hears: its chrome and the comments section, as
# shown and as written (hidden parts too), the blank comment live comments are made from, the
# labels and placeholders of controls, and the document's title.
UI_TEXT = """() => {
  const parts = [document.title];
  for (const el of document.querySelectorAll(".skip-link, .site-header, .story-header, #comments, .site-footer")) {
    parts.push(el.innerText, el.textContent);
  }
  const blank = document.getElementById("comment-template");
  if (blank) parts.push(blank.content.textContent);
  for (const el of document.querySelectorAll("[placeholder], [aria-label], [title]")) {
    for (const name of ["placeholder", "aria-label", "title"]) parts.push(el.getAttribute(name) || "");
  }
  return parts.join("\\n");
}"""


def english_ui_patterns(language: str) -> dict[str, re.Pattern[str]]:
    """The catalogue's English strings, as patterns (a placeholder matches any text), but those
    the language itself writes ("Actions" in French, "Moderator" in German: they are in its
    translations) and words of three letters or fewer ("on", "you"), which French or German
    text can hold as words of their own."""
    catalog = [message for message in read_catalog(language) if message.id]
    translations = "\n".join(
        string for message in catalog for string in (message.string if message.pluralizable else [message.string])
    )
    patterns = {}
    for message in catalog:
        for msgid in list(message.id) if message.pluralizable else [message.id]:
            text = re.sub(r"<[^>]+>", "", msgid)  # the markup of {% trans %} blocks
            literal = PLACEHOLDER.sub(" ", text).strip()
            if len(literal.split()) == 1 and len(literal) <= 3:
                continue
            body = r".+?".join(re.escape(part) for part in PLACEHOLDER.split(text))
            pattern = re.compile(r"(?<!\w)" + body + r"(?!\w)")
            if not pattern.search(translations):
                patterns[msgid] = pattern
    return patterns


def english_left(page: Page, language: str) -> list[str]:
    text = page.evaluate(UI_TEXT)
    patterns = english_ui_patterns(language)
    print(f"{len(patterns)} English UI strings looked for in {len(text)} characters of the page")
    return sorted(msgid for msgid, pattern in patterns.items() if pattern.search(text))


def post(server: ServerProcess, name: str, body: str, about: str = "") -> None:
    res = httpx.post(server.url + API, json={"name": name, "about": about, "body": body})
    assert res.status_code == 201, res.text


def open_live(new_page, server: ServerProcess, width: int = 1280) -> Page:
    page = new_page(width=width)
    page.goto(server.url + ARTICLE)
    expect(page.locator("[data-conn]")).to_have_attribute("data-state", "live")
    return page


def test_the_french_page_has_no_english_left(start_server, new_page, local_story):
    server = start_server(LANGUAGE="fr", content_dir=local_story)
    post(server, "Anne", "Très bonne nouvelle pour la ville.", about="Enseignante, Lyon")
    page = open_live(new_page, server)
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator("[data-conn]")).to_have_text("● En direct")

    # A comment that arrives live: the scripts' words, and its time, in French.
    post(server, "Bruno", "Je ne suis pas d'accord avec ce vote.")
    arrived = comment_by_body(page, "Je ne suis pas d'accord avec ce vote.")
    expect(arrived).to_be_visible()
    expect(arrived.locator("time").first).to_have_text("à l'instant")
    assert re.search(
        r"(lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche) \d",
        arrived.locator("time").first.get_attribute("title") or "",
    )
    expect(page.locator(".comments-sub [data-comment-count]")).to_have_text("2 commentaires")

    # The composer: its refusal, its counter, a reply form made from the blank comment.
    composer = page.locator(".composer form[data-comment-form]")
    composer.locator("input[name=name]").fill("Chloé")
    composer.locator("textarea[name=body]").fill("   ")
    composer.locator("[data-submit]").click()
    expect(composer.locator("[data-form-error]")).to_have_text("Veuillez d'abord écrire votre commentaire.")
    composer.locator("textarea[name=body]").fill("é" * 4990)
    expect(composer.locator("[data-counter]")).to_have_text("4\u202f990 / 5\u202f000 caractères")
    arrived.locator("details.reply summary").first.click()
    expect(arrived.locator("details.reply textarea")).to_be_visible()

    assert english_left(page, "fr") == []
    assert page.errors == []


# Moments before "now", in seconds: a minute, hours, days, weeks, and past the date cut-over.
AGES = [5, 60, 3 * 3600 + 5, 2 * 86400, 15 * 86400, 45 * 86400]
SCRIPT_AGO = """async ({ ages, now }) => {
  const i18n = await import("/static/lib/i18n.js");
  return ages.map((age) => i18n.ago(new Date(now - age * 1000).toISOString(), now));
}"""


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_the_script_says_relative_times_as_the_server_does(start_server, new_page, local_story, language):
    """The page's "il y a 3 heures" comes from the server (Babel) and is kept current by the
    script (Intl): both must say the same, or times would change words as the page runs."""
    server = start_server(LANGUAGE=language, content_dir=local_story)
    page = open_live(new_page, server)
    now = datetime.now(UTC).replace(microsecond=0)
    said_by_script = page.evaluate(SCRIPT_AGO, {"ages": AGES, "now": now.timestamp() * 1000})
    said_by_server = [load_languages()[language].ago((now - timedelta(seconds=age)).isoformat(), now) for age in AGES]
    print(language, said_by_script)
    assert said_by_script == said_by_server


def test_german_says_one_comment_and_two_comments(start_server, new_page, local_story):
    server = start_server(LANGUAGE="de", content_dir=local_story)
    page = open_live(new_page, server)
    count = page.locator(".comments-sub [data-comment-count]")
    expect(count).to_have_text("0 Kommentare")
    post_from(page, "Ein guter Beschluss.", name="Anna")
    expect(count).to_have_text("1 Kommentar")
    post(server, "Ben", "Da bin ich anderer Meinung.")
    expect(count).to_have_text("2 Kommentare")
    page.reload()
    expect(count).to_have_text("2 Kommentare")  # the server's words agree with the script's
    expect(page.locator(".story-tools [data-comment-count]")).to_have_text("2 Kommentare")
    assert english_left(page, "de") == []
