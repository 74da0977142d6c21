"""The UI's languages: the catalogues are complete and in step with the code, and the server
speaks the configured language (pages, plural forms, relative times, error messages)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from starlette.testclient import TestClient

from server import errors
from server.app import create_app
from server.i18n import LANGUAGES, SOURCE_LANGUAGE, load_languages, read_catalog
from server.pages import audit_detail
from server.settings import Settings

from .servers import LOCAL_STORY_SLUG, ROOT

TRANSLATED = [code for code in LANGUAGES if code != SOURCE_LANGUAGE]
PLACEHOLDER = re.compile(r"\{\w+\}|%\(\w+\)[sd]")
ARTICLE = f"/articles/{LOCAL_STORY_SLUG}"
API = f"/api/articles/{LOCAL_STORY_SLUG}/comments"


def error_classes() -> set[str]:
    """The error classes whose first argument is a message of the catalogue (HttpError carries
    Starlette's own words; a subclass elsewhere, like articles.InvalidField, builds its own)."""
    found: set[str] = set()
    todo = [errors.BackchannelError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__ == errors.__name__:
                found.add(sub.__name__)
            todo.append(sub)
    return found - {"HttpError"}


def extracted_messages() -> set[tuple[str | None, str]]:
    """(context, msgid) of every string the code marks now, as `make messages` extracts them."""
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    keywords = {**DEFAULT_KEYWORDS, **dict.fromkeys(error_classes(), None)}
    found = set()
    for _path, _line, message, _comments, context in extract_from_dir(ROOT, method_map, options_map, keywords=keywords):
        msgid = message[0] if isinstance(message, tuple | list) else message
        found.add((context, msgid))
    return found


def catalog_messages(language: str) -> Iterator:
    return (message for message in read_catalog(language) if message.id)


def test_the_makefile_extracts_the_first_argument_of_every_error_class() -> None:
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"ERROR_CLASSES := (.*?)\n\.PHONY", makefile, re.S)
    assert listed is not None
    assert set(listed.group(1).replace("\\", " ").split()) == error_classes()


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_string_of_the_code_is_in_the_catalogue(language: str) -> None:
    """A string added to a template, a script or a reader-facing error without `make messages`
    (and its translation) fails here."""
    in_catalog = {(m.context, m.id[0] if m.pluralizable else m.id) for m in catalog_messages(language)}
    missing = extracted_messages() - in_catalog
    assert missing == set(), f"run `make messages` and translate: {sorted(missing, key=str)}"


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated_with_its_placeholders(language: str) -> None:
    untranslated, fuzzy, placeholders = [], [], []
    forms = read_catalog(language).num_plurals
    for message in catalog_messages(language):
        ids = list(message.id) if message.pluralizable else [message.id]
        strings = list(message.string) if message.pluralizable else [message.string]
        if message.fuzzy:
            fuzzy.append(message.id)
        if not all(strings) or (message.pluralizable and len(strings) != forms):
            untranslated.append(message.id)
        wanted = set(PLACEHOLDER.findall(ids[-1]))
        for string in strings:
            if string and set(PLACEHOLDER.findall(string)) != wanted:
                placeholders.append((message.id, string))
    assert untranslated == []
    assert fuzzy == []
    assert placeholders == []


def test_french_and_german_have_two_plural_forms_like_the_scripts() -> None:
    """lib/i18n.js picks form 0 for CLDR's "one" and form 1 otherwise."""
    for language in TRANSLATED:
        assert read_catalog(language).num_plurals == 2
    assert str(read_catalog("fr").plural_expr) == "(n > 1)"


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", ["just now", "1 minute ago", "3 hours ago", "2 days ago", "2 weeks ago", "Jan 2, 2026"]),
        (
            "fr",
            [
                "à l'instant",
                "il y a 1 minute",
                "il y a 3 heures",
                "il y a 2 jours",
                "il y a 2 semaines",
                "2 janv. 2026",
            ],
        ),
        ("de", ["gerade eben", "vor 1 Minute", "vor 3 Stunden", "vor 2 Tagen", "vor 2 Wochen", "02.01.2026"]),
    ],
)
def test_relative_times_and_dates_read_naturally_in_each_language(language: str, expected: list[str]) -> None:
    ago = load_languages()[language].ago
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    times = ["11-26T11:59:30", "11-26T11:59:00", "11-26T09:00:00", "11-24T12:00:00", "11-12T12:00:00", "01-02T12:00:00"]
    assert [ago(f"2026-{t}.000Z", now) for t in times] == expected


@pytest.fixture
def speaking(settings: Settings, local_story: Path):
    """speaking(LANG) -> a TestClient of the app with LANGUAGE=LANG, on the local story."""
    clients = []

    def start(language: str) -> TestClient:
        app = create_app(dataclasses.replace(settings, language=language, content_dir=local_story))
        client = TestClient(app, base_url="http://testserver")
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def post(client: TestClient, name: str, body: str):
    """A reader's post from the page: its cookie, and the page's CSRF token."""
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get(ARTICLE).text)
    assert token is not None
    return client.post(API, json={"name": name, "body": body}, headers={"X-CSRF-Token": token.group(1)})


def test_german_pages_use_german_plural_forms(speaking) -> None:
    client = speaking("de")
    page = client.get(ARTICLE).text
    assert '<html lang="de"' in page
    assert "0 Kommentare<" in page and "Von Claire Martin" in page
    assert post(client, "Anna", "Erster!").status_code == 201
    assert "1 Kommentar<" in client.get(ARTICLE).text
    assert post(client, "Ben", "Zweiter.").status_code == 201
    page = client.get(ARTICLE).text
    assert "2 Kommentare<" in page and "gerade eben" in page and "Antworten" in page
    assert "2 Kommentare" in client.get("/").text


def test_a_reader_is_told_what_went_wrong_in_the_sites_language(speaking) -> None:
    client = speaking("fr")
    refused = client.post(API, json={"name": "Anne", "body": "   "})
    assert refused.status_code == 422
    assert refused.json()["error"] == {"code": "empty", "message": "Le commentaire est vide."}
    too_long = client.post(API, json={"name": "Anne", "body": "x" * 5001})
    assert too_long.json()["error"]["message"] == "Un commentaire est limité à 5\u202f000 caractères."
    missing = client.get("/articles/no-such-story")
    assert missing.status_code == 404
    assert "Introuvable" in missing.text and "Cet article n&#39;existe pas." in missing.text
    assert "Il n&#39;y a rien à cette adresse." in client.get("/no/such/page").text


def test_the_scripts_get_their_messages_as_a_module_per_language(speaking) -> None:
    client = speaking("fr")
    page = client.get(ARTICLE).text
    url = re.search(r'<html lang="fr" data-messages="([^"]+)"', page)
    assert url is not None and url.group(1).startswith("/i18n/fr.js?v=")
    module = client.get(url.group(1))
    assert module.headers["content-type"].startswith("text/javascript")
    assert "immutable" in module.headers["cache-control"]
    body = module.content.removeprefix(b"export default ").removesuffix(b";\n")
    messages = orjson.loads(body)
    assert messages["Read more"] == "Lire la suite"
    assert messages["{n} comment"] == ["{n} commentaire", "{n} commentaires"]
    assert messages["pre-moderation\x04on"] == "activée"
    assert "Join the discussion" not in messages  # a template's string: the page has it already
    assert client.get("/i18n/de.js").status_code == 200  # an embed may ask for any language
    assert client.get("/i18n/xx.js").status_code == 404
    assert "data-messages" not in speaking("en").get(ARTICLE).text  # English is the source


def test_language_must_be_one_the_site_ships(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.settings import SettingsError, load

    monkeypatch.setenv("SECRET_KEY", "test-secret-key")
    monkeypatch.setenv("LANGUAGE", "es")
    with pytest.raises(SettingsError, match="LANGUAGE must be one of en, fr, de"):
        load(env_file=None)
    monkeypatch.setenv("LANGUAGE", "FR")
    assert load(env_file=None).language == "fr"


def test_locale_files_are_the_only_catalogue_there_is() -> None:
    """No compiled .mo files to fall out of step with the .po: the server reads the .po."""
    assert list((ROOT / "web" / "locale").rglob("*.mo")) == []
    assert {p.parent.parent.name for p in Path(ROOT / "web" / "locale").rglob("messages.po")} == set(TRANSLATED)


def test_the_audit_logs_stored_details_are_said_in_the_desks_language() -> None:
    """Details are stored in English (a record); the desk says the known shapes in its language."""
    french = load_languages()["fr"]
    assert audit_detail(french, "for good") == "définitivement"
    assert audit_detail(french, "until 2026-12-01T15:31:00Z") == "jusqu'au 1 déc. 2026, 15:31:00 UTC"
    assert audit_detail(french, "from 10.0.0.1") == "depuis 10.0.0.1"
    assert audit_detail(french, "on") == "activée"
    assert audit_detail(french, "3 days after publication") == "3 jours après la publication"
    assert audit_detail(french, "a shape nobody wrote") == "a shape nobody wrote"
    assert (
        audit_detail(load_languages()["en"], "until 2026-12-01T15:31:00Z") == "until Dec 1, 2026, 3:31:00\u202fPM UTC"
    )
