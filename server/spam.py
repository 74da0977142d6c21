"""Spam rules: what a comment must pass before it is published, held, or refused.

Each rule is configurable (README, "Spam rules") and moderators edit them from the desk; they
live in the backend, and a change is sent to every instance on the control channel, so it
applies everywhere at once. Matching costs O(length of the comment) whatever the size of
the word lists: the text is split into words once and each word (and each phrase of up to
MAX_PHRASE_WORDS words) is looked up in a dict, with no regular expression built from the lists.

Words are compared by what they look like, not by their code points, so that a listed word
cannot be dodged: the text and the lists both go through `text.skeleton` (invisible characters
gone, look-alike letters and marks folded), digits inside words read as letters ("sp4m"), and a
run of single letters is read as one word too ("s p a m", "s.p.a.m"). Whole words only: "class"
does not match "ass". The price: letters that look alike are one letter here (l and I are i),
so a listed "fall" also holds "fail".
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

import regex

from .backends.base import Backend
from .control import RulesChanged, encode_control
from .text import fold_digits, skeleton

MAX_PHRASE_WORDS = 3
MAX_LIST_ENTRIES = 5000
RULES_KEY = "spam-rules"
_WORD = regex.compile(r"[\p{L}\p{N}]+(?:['’][\p{L}]+)?")
_INVISIBLE = regex.compile(r"\p{Default_Ignorable_Code_Point}")


@dataclass(frozen=True)
class Rules:
    repeat_window_minutes: int = 10  # the same text from the same reader within this is refused
    max_links_new_reader: int = 2  # more links than this from a reader new to the site: held
    new_reader_comments: int = 3  # a reader is new until this many of their comments were published
    premoderate_first_comments: int = 0  # a reader's first N comments wait for a moderator
    banned_words: tuple[str, ...] = ()  # refused outright
    suspect_words: tuple[str, ...] = ()  # held for a moderator
    # skeleton phrase -> the listed entry it came from
    _banned: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _suspect: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rules:
        def words(key: str) -> tuple[str, ...]:
            entries = data.get(key) or []
            if isinstance(entries, str):
                entries = entries.splitlines()
            cleaned = {_normalise(" ".join(_words(_INVISIBLE.sub("", str(e))))) for e in entries}
            return tuple(sorted(w for w in cleaned if w and len(w.split()) <= MAX_PHRASE_WORDS))[:MAX_LIST_ENTRIES]

        def number(key: str, default: int) -> int:
            try:
                return max(0, min(int(data.get(key, default)), 100_000))
            except (TypeError, ValueError):
                return default

        def by_skeleton(entries: tuple[str, ...]) -> dict[str, str]:
            return {" ".join(_skeleton_words(entry)): entry for entry in entries}

        defaults = cls()
        banned, suspect = words("banned_words"), words("suspect_words")
        return cls(
            repeat_window_minutes=number("repeat_window_minutes", defaults.repeat_window_minutes),
            max_links_new_reader=number("max_links_new_reader", defaults.max_links_new_reader),
            new_reader_comments=number("new_reader_comments", defaults.new_reader_comments),
            premoderate_first_comments=number("premoderate_first_comments", defaults.premoderate_first_comments),
            banned_words=banned,
            suspect_words=suspect,
            _banned=by_skeleton(banned),
            _suspect=by_skeleton(suspect),
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if not k.startswith("_")}

    def matches(self, text: str, banned: bool) -> str | None:
        """The first listed word or phrase in text, if any. Linear in the text's length."""
        listed = self._banned if banned else self._suspect
        if not listed:
            return None
        words = _skeleton_words(text)
        spelled = _single_letters_joined(words)
        for sequence in (words, spelled) if spelled != words else (words,):
            for size in range(1, MAX_PHRASE_WORDS + 1):
                for start in range(len(sequence) - size + 1):
                    if (entry := listed.get(" ".join(sequence[start : start + size]))) is not None:
                        return entry
        return None


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _skeleton_words(text: str) -> list[str]:
    """The words of text as they look (see the module's docstring)."""
    return [fold_digits(word) for word in _WORD.findall(skeleton(text))]


def _single_letters_joined(words: list[str]) -> list[str]:
    """Each run of two or more one-letter words as one word: "s p a m" -> "spam"."""
    joined: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:  # the empty word ends the last run
        if len(word) == 1:
            run.append(word)
            continue
        joined += [fold_digits("".join(run))] if len(run) > 1 else run  # "5 p 4 m" is a word now
        run = []
        if word:
            joined.append(word)
    return joined


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def text_fingerprint(text: str) -> str:
    """The same words in the same order, whatever the case, spacing, punctuation, invisible
    characters or look-alike letters."""
    return hashlib.sha256(" ".join(_skeleton_words(text)).encode()).hexdigest()[:32]


class SpamRules:
    """The rules in force on this instance, reloaded when any instance changes them."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.current = Rules()

    async def load(self) -> Rules:
        stored = await self.backend.kv_get(RULES_KEY)
        self.current = Rules.from_dict(json.loads(stored)) if stored else Rules()
        return self.current

    def on_rules_changed(self, message: RulesChanged) -> None:
        """Another instance (or this one) changed the rules: they come with the message, so they
        apply here before anything published after them is seen."""
        self.current = Rules.from_dict(message.rules)

    async def save(self, data: dict[str, Any]) -> Rules:
        rules = Rules.from_dict({**self.current.to_dict(), **data})
        await self.backend.kv_set(RULES_KEY, json.dumps(rules.to_dict()))
        await self.backend.publish_control(encode_control(RulesChanged(rules.to_dict())))
        self.current = rules
        return rules
