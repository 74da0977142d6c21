"""A thread read a page at a time: the sorts a reader chooses, the cursors that continue a page,
and the pages themselves, as GET /api/articles/{slug}/comments and the article page use them.

A page is one parent's comments (the top level, or one comment's replies), read by
Store.comment_page: keyset on the comment's seq, which never changes once given and grows
with every new comment, so following the cursors shows each comment once while comments arrive.
New comments land after the last page in "oldest" order, and before the first in "newest".

A sort is added here: its name in SORTS, its cursor's position, and what it asks the store
for. "top" (most recommended) pages by (votes, seq) descending: a count that changes while a
reader pages can move its comment across the cursor, which the page's script absorbs (it shows
a comment once, by id).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from .backends.base import Backend
from .comments import Comment
from .errors import InvalidMessage

OLDEST, NEWEST, TOP = "oldest", "newest", "top"
SORTS = (OLDEST, NEWEST, TOP)
Cursor = tuple[int, ...]  # where the following page begins: (seq,), for top (votes, seq)
TOP_LEVEL_SORT = NEWEST  # the article page's order when the reader chose none
REPLIES_SORT = OLDEST  # a comment's replies read as a conversation


def sort_of(raw: str | None, default: str) -> str:
    if raw is None or raw == "":
        return default
    if raw not in SORTS:
        raise InvalidMessage("sort must be one of: {sorts}.", sorts=", ".join(SORTS))
    return raw


def encode_cursor(sort: str, comment: Comment) -> str:
    """Where the page after `comment` begins, in `sort`: opaque to clients."""
    position = [comment.votes, comment.seq] if sort == TOP else [comment.seq]
    return base64.urlsafe_b64encode(orjson.dumps([sort, *position])).decode().rstrip("=")


def decode_cursor(raw: str | None, sort: str) -> Cursor | None:
    """The position a page continues after (None: the first page). A cursor of another sort is
    refused: it would skip or repeat comments."""
    if raw is None or raw == "":
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        value = None
    size = 3 if sort == TOP else 2
    if not (
        isinstance(value, list) and len(value) == size and value[0] == sort and all(type(v) is int for v in value[1:])
    ):
        raise InvalidMessage("after must be a cursor given as next by an earlier page of this sort.")
    return tuple(value[1:])


@dataclass(frozen=True)
class Page:
    """One parent's comments as a reader gets them, and where the following page begins."""

    comments: list[Comment]  # the held ones this reader may see (first page only), then the published ones
    reply_counts: dict[str, int]  # published direct replies of each (absent: none)
    next: str | None  # the cursor of the following page, or None after the last


async def read_page(
    backend: Backend,
    slug: str,
    parent: str | None,
    sort: str,
    after: Cursor | None,
    limit: int,
    may_see_held: Callable[[Comment], bool],
) -> Page:
    if sort == TOP:
        votes_seq = (after[0], after[1]) if after is not None else None
        stored = await backend.top_page(slug, parent, votes_seq, limit)
    else:
        stored = await backend.comment_page(slug, parent, sort == NEWEST, after[0] if after else None, limit)
    cursor = encode_cursor(sort, stored.comments[-1]) if stored.more and stored.comments else None
    return Page([*filter(may_see_held, stored.held), *stored.comments], stored.reply_counts, cursor)
