"""The UI's languages: one gettext catalogue per language, for the pages, the scripts and the
error messages a reader sees.

The catalogues are web/locale/LANG/LC_MESSAGES/messages.po, read with Babel when the server
starts (no compiled .mo files: nothing to rebuild by hand after an edit, nothing to fall out of
step in a fresh clone). `make messages` extracts the strings from the templates (Jinja2's i18n
extension), the scripts (`_()` / `ngettext()` in web/static) and server/ (`N_()` and the error
classes' first argument) into messages.pot and merges it into each .po (babel.cfg).

English is the source language: its strings are the msgids, so it has no catalogue of its own.
The scripts get the msgids found in web/static only (`script_messages`), as an ES module per
language (`/i18n/LANG.js`, pages.py) that lib/i18n.js imports; an embed can load any language's
the same way.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date, format_datetime, format_timedelta
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

LANGUAGES = ("en", "fr", "de")
SOURCE_LANGUAGE = "en"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "web" / "locale"
# The units of relative times, in seconds: weeks, days, hours, minutes (lib/i18n.js the same).
TIME_UNITS = (7 * 86400, 86400, 3600, 60)
DATE_AFTER_DAYS = 30  # older than this, a comment shows its date instead of "… ago"


def N_(message: str) -> str:
    """Marks a message for the catalogue where it is written; it is translated where shown."""
    return message


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"


def read_catalog(language: str) -> Catalog:
    with po_path(language).open("rb") as f:
        return read_po(f, locale=language)


@dataclass(frozen=True)
class Language:
    """One UI language: its gettext translations, and what the scripts need of them."""

    code: str
    translations: NullTranslations
    script_messages: dict[str, Any] = field(default_factory=dict)

    @property
    def locale(self) -> Locale:
        return _locale(self.code)

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations.ngettext(singular, plural, n)

    def pgettext(self, context: str, message: str) -> str:
        return str(self.translations.pgettext(context, message))

    def moment(self, iso: str) -> str:
        """A moment as the language writes it, in UTC: Dec 1, 2026, 3:31:00 PM UTC."""
        try:
            when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        except ValueError:
            return iso
        return format_datetime(when, format="medium", tzinfo=UTC, locale=self.locale) + " UTC"

    def format(self, template: str, params: dict[str, Any]) -> str:
        """A message of the catalogue in this language, its {named} values filled in (numbers
        written as the language writes them: 5,000 / 5 000 / 5.000)."""
        text = self.gettext(template)
        if not params:
            return text
        return text.format(
            **{
                key: format_decimal(value, locale=self.locale) if isinstance(value, int) else value
                for key, value in params.items()
            }
        )

    def day(self, iso: str) -> str:
        """An article's publication day, as the index shows it: Nov 30, 2026 / 30 nov. 2026."""
        return _date(self.code, datetime.fromisoformat(iso.replace("Z", "+00:00")).date())

    def ago(self, iso: str, now: datetime | None = None) -> str:
        """'just now', '5 minutes ago', 'il y a 5 minutes', … and past DATE_AFTER_DAYS the date."""
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
        if seconds >= DATE_AFTER_DAYS * 86400:
            return _date(self.code, then.date())
        for size in TIME_UNITS:
            if seconds >= size:
                return _time_ago(self.code, seconds // size * size)
        return self.gettext("just now")


# Babel takes about 100 µs to say a time or a date, and a page says one per comment (a 10,000-
# comment thread: a second). The phrases are few, so each is made once per language.


@functools.cache
def _locale(code: str) -> Locale:
    return Locale.parse(code)


@functools.lru_cache(maxsize=4096)
def _time_ago(code: str, seconds: int) -> str:
    """`seconds`, a whole number of one unit, ago: Babel says it in that unit (threshold=1), in
    CLDR's words, exactly as the browser's Intl.RelativeTimeFormat does."""
    return format_timedelta(timedelta(seconds=-seconds), threshold=1, add_direction=True, locale=_locale(code))


@functools.lru_cache(maxsize=4096)
def _date(code: str, day: date) -> str:
    return format_date(day, format="medium", locale=_locale(code))


ENGLISH = Language(SOURCE_LANGUAGE, NullTranslations())


def _translations(catalog: Catalog) -> Translations:
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer)


def _script_messages(catalog: Catalog) -> dict[str, Any]:
    """The translated messages the scripts use: {msgid: msgstr}, {singular: [forms…]}; a
    message with a context is keyed "CONTEXT\x04MSGID", as in a .mo file."""
    messages: dict[str, Any] = {}
    for message in catalog:
        if not message.id or message.fuzzy or not any(path.endswith(".js") for path, _ in message.locations):
            continue
        prefix = f"{message.context}\x04" if message.context else ""
        if message.pluralizable:
            forms = [str(form) for form in message.string] if isinstance(message.string, tuple | list) else []
            if all(forms):
                messages[prefix + message.id[0]] = forms
        elif message.string:
            messages[prefix + str(message.id)] = message.string
    return messages


def load_languages() -> dict[str, Language]:
    languages = {SOURCE_LANGUAGE: ENGLISH}
    for code in LANGUAGES:
        if code != SOURCE_LANGUAGE:
            catalog = read_catalog(code)
            languages[code] = Language(code, _translations(catalog), _script_messages(catalog))
    return languages
