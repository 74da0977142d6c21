"""What readers write: cleaned, measured, and rendered as safe HTML. Pure.

Reader text is plain text. It is never parsed as markup: every character is escaped, blank
lines become paragraphs, and links found by linkify-it-py become anchors that carry
rel="nofollow ugc noopener". Only http(s) and mailto links are made.
"""

from __future__ import annotations

import unicodedata
from typing import Literal, overload

import regex
from linkify_it import LinkifyIt
from markupsafe import Markup, escape

from .errors import Empty, InvalidMessage, TooLong
from .i18n import N_
from .settings import MAX_REF_CHARS

_linkify = LinkifyIt()
_SAFE_SCHEMES = ("http://", "https://", "mailto:")

# Default-ignorable code points draw nothing: bidi controls reorder the text around them (the
# "Trojan Source" trick), and the rest (zero-width spaces and joiners, soft hyphens, U+034F,
# invisible operators, tags, variation selectors, Hangul fillers...) hide words from filters
# and make one name look like another. All go, but where Unicode gives one a visible job:
# joiners and presentation selectors inside emoji, a flag's tag sequence, ZWJ/ZWNJ between
# letters of scripts whose shaping needs them, and variation selectors after ideographs and
# Mongolian letters. (Spam matching strips even these: see `skeleton`.)
_JOINING_SCRIPTS = (
    r"\p{Arabic}\p{Syriac}\p{Nko}\p{Devanagari}\p{Bengali}\p{Gurmukhi}\p{Gujarati}\p{Oriya}"
    r"\p{Tamil}\p{Telugu}\p{Kannada}\p{Malayalam}\p{Sinhala}\p{Mongolian}"
)
_IGNORABLE = regex.compile(
    r"(?P<keep>(?<=[\p{Extended_Pictographic}\p{Emoji_Modifier}\ufe0f])\u200d(?=\p{Extended_Pictographic})"
    r"|(?<=\p{Emoji})[\ufe0e\ufe0f]"
    r"|(?<=\U0001F3F4[\U000E0020-\U000E007E]*)[\U000E0020-\U000E007F]"
    rf"|(?<=[{_JOINING_SCRIPTS}]\p{{M}}*)[\u200c\u200d](?=[{_JOINING_SCRIPTS}])"
    r"|(?<=\p{Han})[\ufe00-\ufe0f\U000E0100-\U000E01EF]"
    r"|(?<=\p{Mongolian})[\u180b-\u180d\u180f])"
    r"|\p{Default_Ignorable_Code_Point}"
)
# Controls other than newline and tab.
_CONTROLS = regex.compile(r"[\p{Cc}--[\n\t]]", flags=regex.V1)
# No script needs more than a few marks on one letter; longer runs are "zalgo" floods.
_MARK_FLOOD = regex.compile(r"(\p{M}{4})\p{M}+")


# A limit in characters a person sees lets one "character" carry any number of code points (a
# run of U+1100 is one grapheme cluster): a cleaned text is also capped at this many code points
# per character allowed (an emoji family is 5 to 10, an accented letter 1 or 2), checked first,
# so that the grapheme count never runs on more. (The request and frame caps bound the raw text.)
CODE_POINTS_PER_CHARACTER = 4


def grapheme_length(text: str) -> int:
    """Length in characters a person sees (extended grapheme clusters)."""
    return len(regex.findall(r"\X", text))


def _check_length(text: str, limit: int, message: str) -> None:
    if len(text) > limit * CODE_POINTS_PER_CHARACTER or grapheme_length(text) > limit:
        raise TooLong(message, limit=limit)


def strip_ignorables(text: str) -> str:
    """Every default-ignorable code point removed, but where it does a visible job (see above)."""
    return _IGNORABLE.sub(lambda m: m["keep"] or "", text)


def clean_ref(raw: str | None) -> str | None:
    """A client's idempotency key: any text, at most MAX_REF_CHARS code points."""
    if raw and len(raw) > MAX_REF_CHARS:
        raise InvalidMessage('"ref" is too long (at most {max} characters).', max=MAX_REF_CHARS)
    return raw or None


# Each field's own sentences, whole: a field's name put into one sentence cannot be translated
# (French and German nouns each need their own article and agreement).
_NAME_MESSAGES = {
    "name": (N_("Please give a name."), N_("The name is limited to {limit} characters.")),
    "description": (N_("Please give a description."), N_("The description is limited to {limit} characters.")),
    "moderator name": (
        N_("Please give a moderator name."),
        N_("The moderator name is limited to {limit} characters."),
    ),
    "display name": (N_("Please give a display name."), N_("The display name is limited to {limit} characters.")),
}
NameField = Literal["name", "description", "moderator name", "display name"]


@overload
def clean_name(raw: str | None, limit: int, field: NameField, required: Literal[True]) -> str: ...
@overload
def clean_name(raw: str | None, limit: int, field: NameField, required: bool) -> str | None: ...


def clean_name(raw: str | None, limit: int, field: NameField, required: bool) -> str | None:
    """NFKC-normalised, every format/control and default-ignorable character (bidi, zero-width,
    joiners, fillers) removed, spaces collapsed: a name shows as exactly what it is."""
    # Remove first, normalise after: removing a character from normalised text can leave it
    # unnormalised ("e\u200b\u0301" -> "e\u0301", not "\u00e9"), so that cleaning the result
    # again changed it, and a look-alike name slipped past NFKC (found by tests/test_fuzz.py).
    text = " ".join((raw or "").split())
    text = regex.sub(r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}]", "", text)
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    text = _MARK_FLOOD.sub(r"\1", text)
    text = " ".join(text.split())
    if not text:
        if required:
            raise Empty(_NAME_MESSAGES[field][0])
        return None
    _check_length(text, limit, _NAME_MESSAGES[field][1])
    return text


# Passes of clean_body's removals at most. Each pass only removes characters (or composes them),
# so it stops as soon as one changes nothing: one pass for ordinary text, two when a cut changed
# what a kept joiner stood between. The bound keeps an adversarial chain linear.
_CLEAN_PASSES = 4


def _clean_body_pass(text: str) -> str:
    text = strip_ignorables(text)
    text = _CONTROLS.sub("", text)
    # Normalised after the removals, not before (see clean_name), and before the flood cut,
    # since NFC can turn one mark into two (U+0344 -> U+0308 U+0301).
    text = unicodedata.normalize("NFC", text)
    return _MARK_FLOOD.sub(r"\1", text)


def _cleaned_text(raw: str | None) -> str:
    """Free text as stored: cleaning it again changes nothing (a flood cut can leave a joiner
    between characters that no longer need it, so the removals repeat until nothing changes)."""
    text = (raw or "").replace("\r\n", "\n").replace("\r", "\n")
    for _ in range(_CLEAN_PASSES):
        cleaned = _clean_body_pass(text)
        if cleaned == text:
            break
        text = cleaned
    return regex.sub(r"\n{3,}", "\n\n", text).strip()


def clean_note(raw: str | None, limit: int) -> str | None:
    """A short free text beside an action (a report's or a ban's reason): cleaned like a
    comment, so no bidi override or invisible character misleads the moderator who reads it,
    and cut at `limit` code points; None when nothing is left."""
    return _cleaned_text(raw)[:limit].strip() or None


def clean_body(raw: str | None, limit: int) -> str:
    """The text as stored (see _cleaned_text); Empty or TooLong when it cannot be."""
    text = _cleaned_text(raw)
    if not text:
        raise Empty("The comment is empty.")
    _check_length(text, limit, N_("A comment is limited to {limit} characters."))
    return text


def _linkified(paragraph: str) -> Markup:
    out: list[str] = []
    pos = 0
    for match in _linkify.match(paragraph) or ():
        if not match.url.lower().startswith(_SAFE_SCHEMES):
            continue
        out.append(escape(paragraph[pos : match.index]))
        out.append(
            Markup('<a href="{}" rel="nofollow ugc noopener" target="_blank">{}</a>').format(match.url, match.text)
        )
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


def _confusable_table() -> dict[int, str]:
    """Each character that looks like an ASCII letter (or digit) -> that letter, lower case, for
    str.translate. Groups are the connected sets of confusable-homoglyphs' table (UTS #39
    confusables): l, I, 1 and | are one group, O and 0 another. A group's letter wins over its
    digit; ASCII digits themselves are left to `fold_digits`, which knows when they are words."""
    from confusable_homoglyphs.confusables import confusables_data

    parent: dict[str, str] = {}

    def root(char: str) -> str:
        while parent.get(char, char) != char:
            char = parent[char]
        return char

    for char, homoglyphs in confusables_data.items():
        for homoglyph in homoglyphs:
            other = homoglyph["c"].strip("\u200e")
            if len(char) == 1 and len(other) == 1 and root(char) != root(other):
                parent[root(char)] = root(other)
    groups: dict[str, list[str]] = {}
    for char in {*parent, *parent.values()}:
        groups.setdefault(root(char), []).append(char)
    table = {}
    for group in groups.values():
        ascii_like = sorted(c.casefold() for c in group if c.isascii() and c.isalnum())
        letters = [c for c in ascii_like if c.isalpha()]
        if ascii_like:
            table.update({ord(c): (letters or ascii_like)[0] for c in group if not (c.isascii() and c.isdigit())})
    return table


_SKELETON_TABLE: dict[int, str] | None = None
# Marks are dropped from the scripts look-alike letters come from (spám, ѕраṁ), not from scripts
# where a mark is a vowel and dropping it would make different words one.
_DECORATING_MARKS = regex.compile(r"(?<=[\p{Latin}\p{Greek}\p{Cyrillic}\p{Common}])\p{M}+")
_DIGITS_AS_LETTERS = str.maketrans("013457", "oieast")


def skeleton(text: str) -> str:
    """What text looks like, whatever draws it: compatibility forms decomposed (NFKD), every
    default-ignorable code point removed, decorating marks dropped, case folded, and each
    character that looks like an ASCII letter replaced by it (UTS #39 confusables). "Ѕраm",
    "s\u200dpam" and "SPAM" give "spam". Linear in the text."""
    global _SKELETON_TABLE
    if _SKELETON_TABLE is None:
        _SKELETON_TABLE = _confusable_table()
    text = regex.sub(r"\p{Default_Ignorable_Code_Point}", "", unicodedata.normalize("NFKD", text))
    return _DECORATING_MARKS.sub("", text).casefold().translate(_SKELETON_TABLE)


def fold_digits(word: str) -> str:
    """Digits standing for letters (sp4m, 1d10t) read as those letters; a number stays a number."""
    return word if word.isdecimal() else word.translate(_DIGITS_AS_LETTERS)


_REPRESENTATIVES: dict[str, str] | None = None


def _confusable_representatives() -> dict[str, str]:
    from confusable_homoglyphs.confusables import confusables_data

    table = {}
    for char, homoglyphs in confusables_data.items():
        group = [char, *(h["c"].strip("\u200e") for h in homoglyphs)]
        ascii_like = sorted(c for c in group if len(c) == 1 and c.isascii() and c.isalnum())
        if ascii_like:
            table[char] = ascii_like[0]
    return table


def name_skeletons(name: str) -> set[str]:
    """The keys a name is reserved under and looked up by: "Аlice" (Cyrillic А), "A1ice",
    "al\u200dice" and "alice" share one. The first two are the form names were reserved under
    before `skeleton` (kept so that moderators created then stay protected), the last is
    `skeleton` with every space, punctuation and symbol dropped and digits read as letters."""
    global _REPRESENTATIVES
    if _REPRESENTATIVES is None:
        _REPRESENTATIVES = _confusable_representatives()
    cleaned = regex.sub(
        r"[\p{Cc}\p{Cf}\p{M}\s\p{P}\p{S}\p{Default_Ignorable_Code_Point}]", "", unicodedata.normalize("NFKD", name)
    )
    earlier = {
        "".join(_REPRESENTATIVES.get(c, c) for c in variant).casefold() for variant in (cleaned, cleaned.casefold())
    }
    return earlier | {fold_digits(regex.sub(r"[^\p{L}\p{N}]", "", skeleton(name)))}
