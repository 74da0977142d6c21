"""Importers for the formats newsrooms migrate from: Disqus XML exports and WordPress WXR.

Both files are read as a stream (defusedxml's iterparse: no entity expansion, no external
entities, and each thread or item is dropped once read), so a large export is never one tree
in memory; the posts themselves are kept as small records, to be written in created order.

Threads are mapped by URL: a thread joins an article when the last segment of its link's path
(or, in WXR, its post_name) is that article's slug, or when its title makes that slug;
otherwise it becomes a thread of its own, under the slug of its whole URL path
(`https://example.com/2019/05/a-story/` -> `2019-05-a-story`).

Comment HTML becomes plain text (tags dropped, the text of <script> and <style> dropped with
them, paragraphs and line breaks kept, a link's address kept after its text), then goes
through the product's own cleaning and rendering, as a posted comment does; no markup is
stored. Deleted and spam comments (Disqus isDeleted / isSpam, WordPress spam / trash) are
imported as removed, so they keep their place and their replies keep their parent, but
readers see neither their text nor their author; WordPress comments awaiting approval stay
pending. Pingbacks and trackbacks are not comments and are skipped.

Each comment is posted through the store like any comment, so it gets the next seq of its
thread as a `comment` event, in created order, under an idempotency key made from its
source id: importing the same file again adds nothing.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import IO
from urllib.parse import unquote, urlsplit

from defusedxml.ElementTree import iterparse
from tqdm import tqdm

from ..backends.base import Store
from ..comments import PENDING, REMOVED, VISIBLE, Comment
from ..content import Article, slugify
from ..errors import Empty, TooLong
from ..settings import MAX_NAME_CHARS
from ..text import clean_body, clean_name, render_body
from ..threads import Threads, thread_tag

REMOVED_BY = "import"  # the moderator name a removed imported comment carries
# The length limit guards what readers post now; an archive is taken whole.
_NO_LIMIT = sys.maxsize


@dataclass(frozen=True)
class LegacyThread:
    ident: str
    link: str
    title: str
    name: str = ""  # WordPress post_name


@dataclass(frozen=True)
class LegacyPost:
    ident: str
    thread: str
    parent: str | None
    author: str
    html: str
    created_at: str  # ISO-8601 UTC, as the store keeps it
    status: str


class _TextOf(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "blockquote", "li", "ul", "ol", "pre", "h1", "h2", "h3", "h4", "h5", "h6"})
    _HIDDEN = frozenset({"script", "style", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._hrefs: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a":
            self._hrefs.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a" and self._hrefs:
            href = self._hrefs.pop()
            if href and href.startswith(("http://", "https://")) and href not in self.parts[-1:]:
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The text a reader saw of a comment's HTML; markup, scripts and styles dropped."""
    parser = _TextOf()
    parser.feed(html)
    parser.close()
    lines = "".join(parser.parts).split("\n")
    return "\n".join(" ".join(line.split()) for line in lines)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _utc(text: str) -> str:
    """'2019-03-04T10:11:12Z' (Disqus) or '2019-03-04 10:11:12' (WordPress GMT) -> the store's form."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _child(element: object, name: str) -> str:
    for child in element:  # type: ignore[attr-defined]
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def _child_ref(element: object, name: str) -> str | None:
    for child in element:  # type: ignore[attr-defined]
        if _local(child.tag) == name:
            return next((value for key, value in child.attrib.items() if _local(key) == "id"), None)
    return None


def _true(text: str) -> bool:
    return text.strip().lower() == "true"


def read_disqus(source: IO[bytes]) -> tuple[list[LegacyThread], list[LegacyPost]]:
    threads: list[LegacyThread] = []
    posts: list[LegacyPost] = []
    depth = 0
    for event, element in iterparse(source, events=("start", "end")):
        if event == "start":
            depth += 1
            continue
        depth -= 1
        if depth != 1:  # only <disqus>'s own children: a <post> has a <thread> reference inside
            continue
        kind = _local(element.tag)
        ident = next((value for key, value in element.attrib.items() if _local(key) == "id"), "")
        if kind == "thread":
            threads.append(LegacyThread(ident, _child(element, "link"), _child(element, "title")))
        elif kind == "post":
            author = next((child for child in element if _local(child.tag) == "author"), None)
            removed = _true(_child(element, "isDeleted")) or _true(_child(element, "isSpam"))
            posts.append(
                LegacyPost(
                    ident=ident,
                    thread=_child_ref(element, "thread") or "",
                    parent=_child_ref(element, "parent"),
                    author=_child(author, "name") if author is not None else "",
                    html=_child(element, "message"),
                    created_at=_utc(_child(element, "createdAt")),
                    status=REMOVED if removed else VISIBLE,
                )
            )
        element.clear()
    return threads, posts


_WXR_STATUS = {"1": VISIBLE, "approve": VISIBLE, "0": PENDING, "hold": PENDING, "spam": REMOVED, "trash": REMOVED}


def read_wxr(source: IO[bytes]) -> tuple[list[LegacyThread], list[LegacyPost]]:
    threads: list[LegacyThread] = []
    posts: list[LegacyPost] = []
    for _event, element in iterparse(source, events=("end",)):
        if _local(element.tag) != "item":
            continue
        ident = _child(element, "post_id")
        threads.append(
            LegacyThread(ident, _child(element, "link"), _child(element, "title"), _child(element, "post_name"))
        )
        for comment in (child for child in element if _local(child.tag) == "comment"):
            if _child(comment, "comment_type") in ("pingback", "trackback"):
                continue
            parent = _child(comment, "comment_parent")
            posts.append(
                LegacyPost(
                    ident=_child(comment, "comment_id"),
                    thread=ident,
                    parent=parent if parent not in ("", "0") else None,
                    author=_child(comment, "comment_author"),
                    html=_child(comment, "comment_content"),
                    created_at=_utc(_child(comment, "comment_date_gmt")),
                    status=_WXR_STATUS.get(_child(comment, "comment_approved"), REMOVED),
                )
            )
        element.clear()
    return threads, posts


def thread_slug(thread: LegacyThread, articles: Mapping[str, Article]) -> str:
    """The article this thread joins, or the slug of a thread of its own (see the module's doc)."""
    path = unquote(urlsplit(thread.link).path)
    segments = [segment for segment in path.split("/") if segment]
    for candidate in (thread.name, segments[-1] if segments else "", thread.title):
        if (slug := slugify(candidate)) in articles:
            return slug
    return slugify(path) or slugify(thread.title) or f"thread-{slugify(thread.ident)}"


def _comment_id(slug: str, source: str, ident: str) -> str:
    """Fixed per source comment, with the thread's tag (how /api/comments/{id} finds its thread)."""
    return thread_tag(slug) + hashlib.sha256(f"{source}:{ident}".encode()).hexdigest()[:10]


async def load_legacy(
    store: Store,
    source: str,
    threads: list[LegacyThread],
    posts: list[LegacyPost],
    articles: Mapping[str, Article],
    progress: bool = True,
) -> Counter[str]:
    """Write the threads and posts read from a Disqus or WXR file; returns counts by outcome."""
    counts: Counter[str] = Counter()
    slugs = {thread.ident: thread_slug(thread, articles) for thread in threads}
    for slug in sorted(set(slugs.values())):
        # An article's thread is created with the article's own comments, as the server does
        # at start: once a thread exists, the server imports them no more.
        await store.ensure_thread(slug, Threads._seed_comments(articles[slug]) if slug in articles else ())
    counts["threads"] = len(set(slugs.values()))
    ids: dict[str, str] = {}
    for post in tqdm(
        sorted(posts, key=lambda p: p.created_at),
        desc=f"import {source}",
        unit="comment",
        disable=not progress,
        file=sys.stderr,
    ):
        thread = slugs.get(post.thread)
        comment = _comment(post, thread, source, ids) if thread is not None else None
        if comment is None:
            counts["skipped"] += 1
            continue
        written = await store.post(comment, ref_key=f"{source}:{post.ident}")
        ids[post.ident] = written.comment.id
        counts["imported" if written.created else "already there"] += 1
    return counts


def _comment(post: LegacyPost, slug: str, source: str, ids: Mapping[str, str]) -> Comment | None:
    try:
        body = clean_body(html_to_text(post.html), _NO_LIMIT)
    except Empty:
        return None  # nothing a reader could see: no comment
    try:
        name = clean_name(post.author, MAX_NAME_CHARS, "name", required=True) or ""
    except (Empty, TooLong):
        name = clean_name(post.author, _NO_LIMIT, "name", required=False) or "Anonymous"
    removed = post.status == REMOVED
    return Comment(
        id=_comment_id(slug, source, post.ident),
        slug=slug,
        # A reply whose parent was not imported (missing from the file) becomes a top-level comment.
        parent=ids.get(post.parent) if post.parent is not None else None,
        name=name,
        about=None,
        body=body,
        html=render_body(body),
        created_at=post.created_at,
        status=post.status,
        removed_by=REMOVED_BY if removed else None,
        removed_at=post.created_at if removed else None,
    )
