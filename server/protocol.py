"""The wire vocabulary: client frames -> typed messages, typed frames -> JSON. Pure, no I/O.

Every frame the server sends is one of the dataclasses below, turned into one JSON object
with a "type" by `encode` and nowhere else. Sequenced thread events (`comment`, `removed`,
`restored`, `closed`, `opened`, `hidden`, ...) are `Event`s: they are stored in the thread's
log exactly as they go on the wire, so a replay from the log and a live delivery are the same
bytes. The moderation desk's
socket has frames of its own (`desk_*`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import orjson

from .errors import InvalidMessage

# Application close codes (4000-4999 are ours; the rest are RFC 6455's, sent by uvicorn).
CLOSE_TOO_SLOW = 4000  # the reader's send queue overflowed: reconnect with since=<last seq>
CLOSE_SESSION_ENDED = 4003  # the moderator's session ended (logout): reconnect as a reader
CLOSE_THREAD_HIDDEN = 4010  # the thread is hidden from readers: nothing to stay connected for
CLOSE_TOO_MANY_CONNECTIONS = 4029  # this network holds MAX_CONNECTIONS_PER_IP sockets: retry later
CLOSE_POLICY = 1008  # Origin refused (answered as HTTP 403), or a flood of invalid frames
CLOSE_TOO_BIG = 1009  # a frame over MAX_FRAME_BYTES (sent by uvicorn)
CLOSE_SERVICE_RESTART = 1012  # the instance is shutting down (sent by uvicorn on SIGTERM)
CLOSE_TRY_AGAIN = 1013  # the backend (Redis) is unavailable: reconnect with since, after a backoff


# --- client -> server ---------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    type: ClassVar[str] = "post"
    ref: str | None
    body: str
    parent: str | None
    name: str
    about: str | None


def _optional_str(data: dict[str, Any], key: str, max_len: int = 10_000) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMessage(f'"{key}" must be a string or null')
    if len(value) > max_len:
        raise InvalidMessage(f'"{key}" is too long')
    return value


@dataclass(frozen=True)
class Vote:
    """Recommend a comment (up) or withdraw the recommendation."""

    type: ClassVar[str] = "vote"
    id: str
    up: bool


def parse_client_frame(text: str | bytes) -> Post | Vote:
    """One client frame -> a typed message, or InvalidMessage saying what is wrong with it."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidMessage("the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidMessage("a frame must be a JSON object")
    kind = data.get("type")
    if kind == "vote":
        comment_id, up = data.get("id"), data.get("up")
        if not isinstance(comment_id, str) or not 0 < len(comment_id) <= 64 or not isinstance(up, bool):
            raise InvalidMessage('a vote is {"type": "vote", "id": "<comment id>", "up": true or false}')
        return Vote(id=comment_id, up=up)
    if kind != "post":
        raise InvalidMessage(
            f"unknown message type {str(kind)[:40]!r}" if kind is not None else 'the frame has no "type"'
        )
    # Lengths of the texts are judged later in characters a person sees; these caps only
    # stop absurd values before any work is done on them (the frame itself is capped at 64 KiB).
    return Post(
        ref=_optional_str(data, "ref", 128),
        body=_optional_str(data, "body", 64_000) or "",
        parent=_optional_str(data, "parent", 64) or None,
        name=_optional_str(data, "name", 1000) or "",
        about=_optional_str(data, "about", 1000),
    )


# --- server -> client ---------------------------------------------------------------------


@dataclass(frozen=True)
class Welcome:
    type: ClassVar[str] = "welcome"
    seq: int
    readers: int
    epoch: str
    state: str = "open"  # the thread's state as of seq: open, closed or hidden


@dataclass(frozen=True)
class Event:
    """A sequenced thread event: `comment`, `removed`, `restored`, ... `data` holds its fields.
    `wire` is the event already encoded, when it arrived that way (from the log or Redis), so
    that an instance serialises each event once, not once per reader."""

    type: str
    seq: int
    data: dict[str, Any] = field(default_factory=dict)
    wire: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Votes:
    """Vote counts that changed (not sequenced; coalesced: server/votes.py)."""

    type: ClassVar[str] = "votes"
    counts: dict[str, int]


@dataclass(frozen=True)
class Reset:
    type: ClassVar[str] = "reset"
    seq: int
    epoch: str


@dataclass(frozen=True)
class Presence:
    type: ClassVar[str] = "presence"
    readers: int


@dataclass(frozen=True)
class Ack:
    type: ClassVar[str] = "ack"
    ref: str | None
    id: str
    seq: int | None  # None when the comment is held for moderation and is not an event yet
    comment: dict[str, Any] | None = None  # the held comment, for its author's page


@dataclass(frozen=True)
class Error:
    type: ClassVar[str] = "error"
    code: str
    message: str
    ref: str | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class Pending:
    """To moderators reading the article: a comment held for moderation (not sequenced)."""

    type: ClassVar[str] = "pending"
    comment: dict[str, Any]


# --- server -> the moderation desk (not sequenced: a desk reloads its queue after a reconnect) ---


@dataclass(frozen=True)
class DeskWelcome:
    type: ClassVar[str] = "desk_welcome"
    moderator: str


@dataclass(frozen=True)
class DeskComment:
    """A new comment on any article, held ones included (with slug, article_title, held_for)."""

    type: ClassVar[str] = "desk_comment"
    comment: dict[str, Any]


@dataclass(frozen=True)
class DeskReport:
    type: ClassVar[str] = "desk_report"
    report: dict[str, Any]


@dataclass(frozen=True)
class DeskAction:
    """A moderator's action, as kept in the audit log."""

    type: ClassVar[str] = "desk_action"
    action: dict[str, Any]


DeskFrame = DeskComment | DeskReport | DeskAction
Frame = Welcome | Event | Reset | Presence | Votes | Ack | Error | Pending | DeskWelcome | DeskFrame
_DESK_FRAMES: dict[str, type[DeskFrame]] = {cls.type: cls for cls in (DeskComment, DeskReport, DeskAction)}


def payload(frame: Frame) -> dict[str, Any]:
    """A frame as a JSON object. None-valued optional fields are left out."""
    if isinstance(frame, Event):
        return {"type": frame.type, "seq": frame.seq, **frame.data}
    # Shallow: a frame's fields are JSON values already (asdict would deep-copy each comment).
    return {
        "type": frame.type,
        **{f.name: value for f in fields(frame) if (value := getattr(frame, f.name)) is not None},
    }


def encode(frame: Frame) -> str:
    """The one place frames become JSON."""
    if isinstance(frame, Event) and frame.wire is not None:
        return frame.wire
    return orjson.dumps(payload(frame)).decode()


def desk_frame(data: dict[str, Any]) -> DeskFrame:
    """A desk frame as carried on the control channel -> its dataclass (KeyError, TypeError if
    it is not one)."""
    fields = dict(data)
    return _DESK_FRAMES[fields.pop("type")](**fields)


def decode_event(text: str | bytes) -> Event:
    """An event as stored in the log (or published) -> Event."""
    data = orjson.loads(text)
    kind, seq = data.pop("type"), data.pop("seq")
    return Event(type=kind, seq=seq, data=data, wire=text if isinstance(text, str) else text.decode())
