"""A thread read a page at a time: the sorts a reader chooses, the cursors that continue a page,
and the pages themselves, as GET /api/articles/{slug}/comments and the article page use them.

A page is one parent's comments (the top level, or one comment's replies), read by
Store.comment_page: keyset on the comment's seq, which never changes once given and grows
with every new comment, so following the cursors shows each comment once while comments arrive.
New comments land after the last page in "oldest" order, and before the first in "newest".

A sort is added here: its name in SORTS and what it asks the store for. "top" (most
recommended) needs the comments' votes in the store, and is refused until they are there.
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

OLDEST, NEWEST = "oldest", "newest"
SORTS = {OLDEST: False, NEWEST: True}  # a sort -> whether the store reads newest first
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
    return base64.urlsafe_b64encode(orjson.dumps([sort, comment.seq])).decode().rstrip("=")


def decode_cursor(raw: str | None, sort: str) -> int | None:
    """The seq a page continues after (None: the first page). A cursor of another sort is refused:
    it would skip or repeat comments."""
    if raw is None or raw == "":
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        value = None
    if not (isinstance(value, list) and len(value) == 2 and value[0] == sort and type(value[1]) is int):
        raise InvalidMessage("after must be a cursor given as next by an earlier page of this sort.")
    return int(value[1])


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
    after: int | None,
    limit: int,
    may_see_held: Callable[[Comment], bool],
) -> Page:
    stored = await backend.comment_page(slug, parent, SORTS[sort], after, limit)
    cursor = encode_cursor(sort, stored.comments[-1]) if stored.more and stored.comments else None
    return Page([*filter(may_see_held, stored.held), *stored.comments], stored.reply_counts, cursor)
