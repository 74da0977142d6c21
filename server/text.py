"""What readers write: cleaned, measured, and rendered as safe HTML. Pure.

Reader text is plain text. It is never parsed as markup: every character is escaped, blank
lines become paragraphs, and links found by linkify-it-py become anchors that carry
rel="nofollow ugc noopener". Only http(s) and mailto links are made.
"""

from __future__ import annotations

import unicodedata

import regex
from linkify_it import LinkifyIt
from markupsafe import Markup, escape

from .errors import Empty, TooLong

_linkify = LinkifyIt()
_SAFE_SCHEMES = ("http://", "https://", "mailto:")

# Bidi embeddings/overrides/isolates reorder the text around them (the "Trojan Source" trick);
# zero-width spaces and BOMs hide words from filters. ZWJ/ZWNJ stay: emoji and scripts need them.
_BODY_INVISIBLES = regex.compile(r"[\u202a-\u202e\u2066-\u2069\u200b\u2060\ufeff\u180e]")
# Controls other than newline and tab.
_CONTROLS = regex.compile(r"[\p{Cc}--[\n\t]]", flags=regex.V1)
# No script needs more than a few marks on one letter; longer runs are "zalgo" floods.
_MARK_FLOOD = regex.compile(r"(\p{M}{4})\p{M}+")


def grapheme_length(text: str) -> int:
    """Length in characters a person sees (extended grapheme clusters)."""
    return len(regex.findall(r"\X", text))


def clean_name(raw: str | None, limit: int, field: str, required: bool) -> str | None:
    """NFKC-normalised, every format/control character (bidi, zero-width) removed, spaces collapsed."""
    # Remove first, normalise after: removing a character from normalised text can leave it
    # unnormalised ("e\u200b\u0301" -> "e\u0301", not "\u00e9"), so that cleaning the result
    # again changed it, and a look-alike name slipped past NFKC (found by tests/test_fuzz.py).
    text = " ".join((raw or "").split())
    text = regex.sub(r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]", "", text)
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    text = _MARK_FLOOD.sub(r"\1", text)
    text = " ".join(text.split())
    if not text:
        if required:
            raise Empty(f"Please give a {field}.")
        return None
    if grapheme_length(text) > limit:
        raise TooLong(f"The {field} is limited to {limit} characters.")
    return text


def clean_body(raw: str | None, limit: int) -> str:
    text = (raw or "").replace("\r\n", "\n").replace("\r", "\n")
    text = _BODY_INVISIBLES.sub("", text)
    text = _CONTROLS.sub("", text)
    # Normalised after the removals, not before (see clean_name), and before the flood cut,
    # since NFC can turn one mark into two (U+0344 -> U+0308 U+0301).
    text = unicodedata.normalize("NFC", text)
    text = _MARK_FLOOD.sub(r"\1", text)
    text = regex.sub(r"\n{3,}", "\n\n", text).strip()
    if not text:
        raise Empty("The comment is empty.")
    if grapheme_length(text) > limit:
        raise TooLong(f"A comment is limited to {limit:,} characters.")
    return text


def _linkified(paragraph: str) -> Markup:
    out: list[str] = []
    pos = 0
    for match in _linkify.match(paragraph) or ():
        if not match.url.lower().startswith(_SAFE_SCHEMES):
            continue
        out.append(escape(paragraph[pos:match.index]))
        out.append(Markup('<a href="{}" rel="nofollow ugc noopener" target="_blank">{}</a>').format(
            match.url, match.text))
        pos = match.last_index
    out.append(escape(paragraph[pos:]))
    return Markup("").join(out)


def render_body(text: str) -> str:
    """Plain text -> safe HTML: escaped, paragraphs and line breaks kept, links clickable."""
    paragraphs = (p for p in regex.split(r"\n\s*\n", text) if p.strip())
    return "".join(
        Markup("<p>{}</p>").format(Markup("<br>").join(_linkified(line) for line in p.strip().split("\n")))
        for p in paragraphs
    )


def _confusable_representatives() -> dict[str, str]:
    """Each character that looks like another -> one ASCII letter or digit standing for its group."""
    from confusable_homoglyphs.confusables import confusables_data
    table = {}
    for char, homoglyphs in confusables_data.items():
        group = [char, *(h["c"].strip("\u200e") for h in homoglyphs)]
        ascii_like = sorted(c for c in group if len(c) == 1 and c.isascii() and c.isalnum())
        if ascii_like:
            table[char] = ascii_like[0]
    return table


_REPRESENTATIVES: dict[str, str] | None = None


def name_skeletons(name: str) -> set[str]:
    """What a name looks like, whatever the characters that draw it (a simplified UTS #39
    skeleton from confusable-homoglyphs' table): "Аlice" (Cyrillic А), "A1ice" and "alice"
    give a shared skeleton. Two are given, with and without case, since I/l/1 look alike only
    in some cases."""
    global _REPRESENTATIVES
    if _REPRESENTATIVES is None:
        _REPRESENTATIVES = _confusable_representatives()
    cleaned = regex.sub(r"[\p{Cc}\p{Cf}\p{M}\s\p{P}\p{S}]", "", unicodedata.normalize("NFKD", name))
    return {"".join(_REPRESENTATIVES.get(c, c) for c in variant).casefold()
            for variant in (cleaned, cleaned.casefold())}
