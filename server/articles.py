"""The articles every instance serves: the newsroom's (PUT /api/articles/…) and CONTENT_DIR's
(server/content_watch.py), both kept in the store.

Each instance holds every article's *summary* in memory (all of it but the paragraphs: what
the index, GET /api/articles, the 404/410 checks and the moderation desk need), with the
published ones in publication order, so paging the index is a bisect, not a query. Bodies are
read from the store when a page asks for one and kept in a small LRU (BODY_CACHE_SIZE): with
10,000 articles an instance holds the summaries (a few MiB) and the bodies being read now,
never every body. A body is one indexed read away, and the articles read are few and recent.

A change is written to the store, applied to this instance's memory at once, then announced
with ArticleChanged(slug) on the control bus: every instance re-reads that article from the
store. A control message lost while the bus's subscription was down is made up for when it is
rebuilt: every summary is read again (`on_control_resync`). A summary's updated_at keeps an
older read from undoing a newer one. With the embedded backend
there is one instance, and a restart reads the summaries back from the store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import dataclasses
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from .backends.base import Backend, StoredArticle
from .comments import Comment, utc_now_iso
from .content import Article
from .control import ArticleChanged, encode_control
from .errors import Gone, InvalidMessage, NotFound, Unavailable
from .i18n import ENGLISH, Language

log = logging.getLogger("backchannel.articles")

SLUG = re.compile(r"[a-z0-9-]{1,120}")
BODY_CACHE_SIZE = 256  # article bodies kept per instance (the ones being read now)
SUMMARY_READ = 1000  # summaries per store read at start

# Bounds of what the API takes (the request itself is capped at 256 KiB).
MAX_TITLE, MAX_BYLINE, MAX_DATELINE, MAX_CREDIT, MAX_SECTION = 300, 200, 1000, 500, 80
MAX_PARAGRAPHS, MAX_PARAGRAPH, MAX_BODY = 500, 20_000, 150_000
MAX_URL, MAX_TAGS, MAX_TAG = 2000, 20, 50
# Fields a client sends; the read-only ones of the article's JSON may be sent back and are ignored.
WRITABLE = frozenset({"title", "byline", "dateline", "paragraphs", "credit", "url", "published_at", "section", "tags"})
READ_ONLY = frozenset({"slug", "updated_at", "published", "source", "byline_name", "byline_role", "comment_count"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def check_slug(slug: str) -> str:
    if not SLUG.fullmatch(slug):
        raise InvalidMessage("slug must be 1 to 120 of a-z, 0-9 and -.")
    return slug


def iso_utc(value: str, field: str = "published_at") -> str:
    """An ISO-8601 time with its offset, as fixed-width UTC (utc_now_iso's form): the stores
    order articles by this text."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidField(field, "must be an ISO-8601 time, e.g. 2026-11-30T08:00:00Z.") from None
    if when.tzinfo is None:
        raise InvalidField(field, "must say its offset from UTC (Z, or +01:00).")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class InvalidField(InvalidMessage):
    """A field of an article that is not as documented; the answer names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field

    def to_wire(self, language: Language = ENGLISH) -> dict[str, Any]:
        return {**super().to_wire(language), "field": self.field}


def _text(data: dict[str, Any], field: str, limit: int, required: bool = False) -> str | None:
    value = data.get(field)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise InvalidField(field, "is required.")
        return None
    if not isinstance(value, str):
        raise InvalidField(field, "must be a string.")
    value = value.strip()
    if required and not value:
        raise InvalidField(field, "must not be empty.")
    if len(value) > limit:
        raise InvalidField(field, f"is longer than {limit} characters.")
    if _CONTROL.search(value):
        raise InvalidField(field, "must not hold control characters.")
    return value


def _paragraphs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidField("paragraphs", "must be a non-empty list of strings (plain text, one per paragraph).")
    if len(value) > MAX_PARAGRAPHS:
        raise InvalidField("paragraphs", f"has more than {MAX_PARAGRAPHS} paragraphs.")
    paragraphs = []
    for n, paragraph in enumerate(value):
        text = _text({"p": paragraph}, "p", MAX_PARAGRAPH) if isinstance(paragraph, str) else None
        if paragraph is not None and not isinstance(paragraph, str):
            raise InvalidField(f"paragraphs[{n}]", "must be a string.")
        if text:
            paragraphs.append(text)
    if not paragraphs:
        raise InvalidField("paragraphs", "are all empty.")
    if sum(map(len, paragraphs)) > MAX_BODY:
        raise InvalidField("paragraphs", f"hold more than {MAX_BODY} characters in all.")
    return tuple(paragraphs)


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise InvalidField("tags", f"must be a list of at most {MAX_TAGS} strings.")
    tags = [_text({"tag": t}, "tag", MAX_TAG) if isinstance(t, str) else False for t in value]
    if not all(isinstance(t, str) for t in tags):
        raise InvalidField("tags", f"must be non-empty strings of at most {MAX_TAG} characters.")
    return tuple(dict.fromkeys(t for t in tags if isinstance(t, str)))


def _url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise InvalidField("url", "must be an http(s) URL.")
    return value


def article_from_json(slug: str, data: Any, earlier: Article | None = None, partial: bool = False) -> Article:
    """The article a PUT (partial=False: every field as sent, the rest empty) or a PATCH
    (partial=True: the fields sent change `earlier`) describes. InvalidField names what is wrong."""
    if not isinstance(data, dict):
        raise InvalidMessage("Send the article as a JSON object.")
    for field in data:
        if field not in WRITABLE and field not in READ_ONLY:
            raise InvalidField(str(field)[:60], "is not a field of an article.")
    if data.get("slug", slug) != slug:
        raise InvalidField("slug", "differs from the one in the URL.")
    fields = {key: value for key, value in data.items() if key in WRITABLE}
    if partial and earlier is not None:
        base = article_json(earlier)
        fields = {**{key: base[key] for key in WRITABLE}, **fields}
    byline = _text(fields, "byline", MAX_BYLINE) or ""
    name, _, role = byline.partition("|")
    published_at = _text(fields, "published_at", 40)
    return Article(
        slug=slug,
        title=_text(fields, "title", MAX_TITLE, required=True) or "",
        byline_name=name.strip().removeprefix("By ").strip(),
        byline_role=role.strip() or None,
        dateline=_text(fields, "dateline", MAX_DATELINE) or "",
        paragraphs=_paragraphs(fields.get("paragraphs")),
        credit=_text(fields, "credit", MAX_CREDIT),
        seed_comments=(),
        source="api",
        # A replacement that does not say when keeps the first publication's time: a correction
        # does not move an article to the top of the index.
        published_at=iso_utc(published_at) if published_at else (earlier.published_at if earlier else None),
        url=_url(_text(fields, "url", MAX_URL)),
        section=_text(fields, "section", MAX_SECTION),
        tags=_tags(fields.get("tags")),
    )


def article_json(article: Article, published: bool = True) -> dict[str, Any]:
    """The article as the API answers it."""
    byline = article.byline_name + (f" | {article.byline_role}" if article.byline_role else "")
    return {
        "slug": article.slug,
        "title": article.title,
        "byline": byline or None,
        "byline_name": article.byline_name or None,
        "byline_role": article.byline_role,
        "dateline": article.dateline or None,
        "paragraphs": list(article.paragraphs),
        "credit": article.credit,
        "url": article.url,
        "published_at": article.published_at,
        "updated_at": article.updated_at,
        "section": article.section,
        "tags": list(article.tags),
        "published": published,
        "source": "file" if article.file_hash else "api",
    }


def article_summary(article: Article) -> dict[str, Any]:
    """An article in a list (GET /api/articles): its JSON without the text."""
    return {
        key: value
        for key, value in article_json(article).items()
        if key not in ("paragraphs", "dateline", "credit", "published", "source")
    }


# --- the stored form: meta (JSON of every field but the paragraphs) and the paragraphs ---

_META_FIELDS = [
    f.name for f in dataclasses.fields(Article) if f.name not in ("slug", "paragraphs", "seed_comments", "published_at")
]


def to_stored(article: Article, published: bool) -> StoredArticle:
    assert article.published_at is not None, "an article is stored with its publication time"
    meta = {name: getattr(article, name) for name in _META_FIELDS}
    return StoredArticle(
        slug=article.slug,
        published_at=article.published_at,
        published=published,
        meta=orjson.dumps(meta).decode(),
        paragraphs=orjson.dumps(article.paragraphs).decode(),
    )


def from_stored(stored: StoredArticle) -> Article:
    """The article (its summary when the paragraphs were not read)."""
    meta = orjson.loads(stored.meta)
    known = {name: meta[name] for name in _META_FIELDS if name in meta}  # a newer instance may add fields
    known["tags"] = tuple(known.get("tags") or ())
    paragraphs = tuple(orjson.loads(stored.paragraphs)) if stored.paragraphs is not None else ()
    return Article(slug=stored.slug, paragraphs=paragraphs, seed_comments=(), published_at=stored.published_at, **known)


Cursor = tuple[str, str]  # (published_at, slug): an article's place in the index


async def _cannot_restore(slug: str) -> bool:
    return False


def cursor_of(article: Article) -> Cursor:
    return (article.published_at or "", article.slug)


def encode_cursor(article: Article) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(cursor_of(article))).decode().rstrip("=")


def decode_cursor(raw: str | None, name: str) -> Cursor | None:
    """A cursor given back by a client (`next`, or a link of the index); InvalidMessage names the parameter."""
    if not raw:
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        value = None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise InvalidMessage("{name} must be a cursor given by an earlier page.", name=name)
    return value[0], value[1]


class Articles:
    """Every article's summary: this instance's view (see the module's doc)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._refreshing: set[asyncio.Task[None]] = set()
        self._reloading: asyncio.Task[None] | None = None
        # Writes an article the store lost (a Redis flushed) back from its source, if it has
        # one: ContentDir.restore for the files. Whether it could.
        self.restore: Callable[[str], Awaitable[bool]] = _cannot_restore
        self._summaries: dict[str, Article] = {}  # every article, published or not
        self._unpublished: set[str] = set()
        self._order: list[Cursor] = []  # the published ones, oldest first
        self._bodies: OrderedDict[str, Article] = OrderedDict()  # the LRU of whole articles

    async def load(self) -> None:
        """Read every summary from the store (at start)."""
        before: Cursor | None = None
        while page := await self.backend.article_summaries(before, SUMMARY_READ):
            for stored in page:
                self.apply(from_stored(stored), stored.published)
            before = (page[-1].published_at, page[-1].slug)

    # --- reads, from memory ---

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, slug: object) -> bool:
        return slug in self._summaries and slug not in self._unpublished

    def __iter__(self) -> Iterator[str]:
        """The published articles' slugs, newest first."""
        return (slug for _at, slug in reversed(self._order))

    def __getitem__(self, slug: str) -> Article:
        """The summary (paragraphs left empty) of any article, published or not; KeyError."""
        return self._summaries[slug]

    def every_slug(self) -> Iterator[str]:
        """Every article's slug, published or not."""
        return iter(self._summaries)

    def summary(self, slug: str) -> Article:
        """The published article's summary; NotFound, or Gone when it was unpublished."""
        if slug in self._unpublished:
            raise Gone("The newsroom has taken this article down. Its comments are kept, should it return.")
        try:
            return self._summaries[slug]
        except KeyError:
            raise NotFound("No such article.") from None

    def page(self, limit: int, before: Cursor | None = None, after: Cursor | None = None) -> list[Article]:
        """At most `limit` published articles, newest first: the ones older than `before`, or
        the ones just newer than `after` (the previous page), or the newest."""
        if after is not None:
            start = bisect.bisect_right(self._order, after)
            keys = self._order[start : start + limit]
        else:
            end = bisect.bisect_left(self._order, before) if before is not None else len(self._order)
            keys = self._order[max(0, end - limit) : end]
        return [self._summaries[slug] for _at, slug in reversed(keys)]

    def has_older(self, cursor: Cursor) -> bool:
        return bisect.bisect_left(self._order, cursor) > 0

    def has_newer(self, cursor: Cursor) -> bool:
        return bisect.bisect_right(self._order, cursor) < len(self._order)

    async def article(self, slug: str) -> Article:
        """The whole published article, paragraphs included: from the LRU, else one store read."""
        self.summary(slug)
        if (article := self._bodies.get(slug)) is not None:
            self._bodies.move_to_end(slug)
            return article
        stored = await self.backend.get_article(slug)
        if stored is None and await self.restore(slug):
            stored = await self.backend.get_article(slug)
        if stored is None or not stored.published:
            raise NotFound("No such article.")
        article = from_stored(stored)
        self._remember_body(article)
        return article

    def _remember_body(self, article: Article) -> None:
        self._bodies[article.slug] = article
        self._bodies.move_to_end(article.slug)
        while len(self._bodies) > BODY_CACHE_SIZE:
            self._bodies.popitem(last=False)

    # --- writes: the store, this instance's memory, then every other instance ---

    async def put(
        self, article: Article, seeds: Sequence[Comment] = (), published: bool = True
    ) -> tuple[Article, bool]:
        """Create or replace the article, published (again) unless told otherwise; its thread is
        created first, with `seeds` (a file's own comments). Returns it as stored, and whether
        it is new."""
        now = utc_now_iso()
        article = dataclasses.replace(article, updated_at=now, published_at=article.published_at or now)
        await self.backend.ensure_thread(article.slug, seeds)
        created = await self.backend.put_article(to_stored(article, published))
        self.apply(article, published)
        await self._announce(article.slug)
        return article, created

    async def unpublish(self, slug: str) -> bool:
        """Flag the article unpublished (kept, with its comments); False when there is none."""
        stored = await self.backend.get_article(slug)
        if stored is None:
            return False
        article = dataclasses.replace(from_stored(stored), updated_at=utc_now_iso())
        meta = to_stored(article, published=False).meta
        if not await self.backend.set_article_published(slug, False, meta):
            return False
        self.apply(article, published=False)
        await self._announce(slug)
        return True

    async def stored(self, slug: str) -> tuple[Article, bool] | None:
        """The article as the store holds it now, and whether it is published."""
        stored = await self.backend.get_article(slug)
        return (from_stored(stored), stored.published) if stored is not None else None

    async def refresh(self, slug: str) -> None:
        """Re-read one article from the store (another instance changed it)."""
        if (found := await self.stored(slug)) is not None:
            self.apply(*found)

    async def _announce(self, slug: str) -> None:
        try:
            await self.backend.publish_control(encode_control(ArticleChanged(slug)))
        except Unavailable:
            # Written and served here; the other instances read it at their next start.
            log.warning("article %s is stored, but the other instances could not be told now", slug)

    def on_article_changed(self, message: ArticleChanged) -> None:
        """The control bus's handler (it calls handlers synchronously): re-read in a task."""
        task = asyncio.create_task(self._refresh_logged(message.slug))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    def on_control_resync(self) -> None:
        """The bus's subscription was rebuilt: an ArticleChanged may have been lost meanwhile, so
        every summary is read again (about a second with 10,000 articles; rare)."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self._reload_logged())

    async def _reload_logged(self) -> None:
        try:
            await self.load()
            log.info("re-read %d article(s) after the bus reconnected", len(self._summaries))
        except Exception:
            log.exception("could not re-read the articles after the bus reconnected")

    async def _refresh_logged(self, slug: str) -> None:
        try:
            await self.refresh(slug)
        except Exception:
            log.exception("could not re-read article %s after a change", slug)

    def apply(self, article: Article, published: bool) -> None:
        """Take this version of the article into memory, unless a newer one is already here (a
        version read from the store, or just written)."""
        current = self._summaries.get(article.slug)
        if current is not None and (current.updated_at or "") > (article.updated_at or ""):
            return
        if current is not None and article.slug not in self._unpublished:
            self._order.pop(bisect.bisect_left(self._order, cursor_of(current)))
        self._bodies.pop(article.slug, None)
        if article.paragraphs:
            self._remember_body(article)
        self._summaries[article.slug] = dataclasses.replace(article, paragraphs=())
        if published:
            self._unpublished.discard(article.slug)
            bisect.insort(self._order, cursor_of(article))
        else:
            self._unpublished.add(article.slug)
