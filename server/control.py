"""The control bus: what every instance must act on that is not a thread event — a moderator's
session ended, something happened for the moderation desks, the spam rules changed, an
article was created, changed or unpublished, votes were taken.

A control message is published through the backend to every instance (this one included),
decoded once here into its dataclass, and handed to whoever subscribed to its kind. Unknown
kinds are ignored (a newer instance may send them); malformed ones are logged and dropped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import orjson

from .protocol import DeskFrame, desk_frame, payload

log = logging.getLogger("backchannel.control")


@dataclass(frozen=True)
class SessionEnded:
    """A moderator logged out: every instance closes that session's sockets."""

    kind: ClassVar[str] = "session_ended"
    session: str


@dataclass(frozen=True)
class DeskUpdate:
    """A frame for every open moderation desk."""

    kind: ClassVar[str] = "desk"
    frame: DeskFrame


@dataclass(frozen=True)
class RulesChanged:
    """The spam rules changed; they travel with the message, so they apply at once."""

    kind: ClassVar[str] = "rules_changed"
    rules: dict[str, Any]


@dataclass(frozen=True)
class ArticleChanged:
    """An article was written to the store: every instance re-reads it (server/articles.py)."""

    kind: ClassVar[str] = "article_changed"
    slug: str


@dataclass(frozen=True)
class VotesChanged:
    """Votes were taken on these comments (slug -> comment ids) since the instance's last
    notice: instances with readers of those threads read the counts (server/votes.py)."""

    kind: ClassVar[str] = "votes"
    threads: dict[str, list[str]]


ControlMessage = SessionEnded | DeskUpdate | RulesChanged | ArticleChanged | VotesChanged
M = TypeVar("M", SessionEnded, DeskUpdate, RulesChanged, ArticleChanged, VotesChanged)


def encode_control(message: ControlMessage) -> str:
    if isinstance(message, DeskUpdate):
        fields: dict[str, Any] = {"frame": payload(message.frame)}
    elif isinstance(message, SessionEnded):
        fields = {"session": message.session}
    elif isinstance(message, ArticleChanged):
        fields = {"slug": message.slug}
    elif isinstance(message, VotesChanged):
        fields = {"threads": message.threads}
    else:
        fields = {"rules": message.rules}
    return orjson.dumps({"kind": message.kind, **fields}).decode()


def decode_control(text: str | bytes) -> ControlMessage | None:
    """A control message, or None for a kind this instance does not know. ValueError, KeyError
    or TypeError when it is malformed."""
    data = orjson.loads(text)
    kind = data["kind"]
    if kind == SessionEnded.kind:
        return SessionEnded(session=str(data["session"]))
    if kind == DeskUpdate.kind:
        return DeskUpdate(frame=desk_frame(data["frame"]))
    if kind == ArticleChanged.kind:
        return ArticleChanged(slug=str(data["slug"]))
    if kind == VotesChanged.kind:
        threads = data["threads"]
        if not isinstance(threads, dict) or not all(isinstance(ids, list) for ids in threads.values()):
            raise TypeError("threads must map slugs to lists of comment ids")
        return VotesChanged(threads={str(slug): [str(i) for i in ids] for slug, ids in threads.items()})
    if kind == RulesChanged.kind:
        if not isinstance(data["rules"], dict):
            raise TypeError("rules must be an object")
        return RulesChanged(rules=data["rules"])
    return None


class ControlBus:
    """Decodes each control message the backend receives once, and dispatches it by kind."""

    def __init__(self) -> None:
        self._handlers: defaultdict[type, list[Callable[[Any], None]]] = defaultdict(list)

    def subscribe(self, kind: type[M], handler: Callable[[M], None]) -> None:
        self._handlers[kind].append(handler)

    def dispatch(self, text: str) -> None:
        """The backend's on_control."""
        try:
            message = decode_control(text)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed control message: %.200s", text)
            return
        if message is None:
            return
        for handler in self._handlers[type(message)]:
            try:
                handler(message)
            except Exception:  # one subscriber's bug must not keep the message from the others
                log.exception("a %s handler failed", message.kind)
