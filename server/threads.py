"""The comment service: what the HTTP routes and the WebSocket share.

It validates and renders what a reader wrote, applies the rate limits, and hands the result
to the backend, which stores it and publishes the event. It never knows which backend it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import limits
from limits.errors import StorageError

from . import metrics
from .articles import Articles
from .backends.base import Backend
from .comments import (
    CLOSED,
    HIDDEN,
    OPEN,
    PENDING,
    VISIBLE,
    Comment,
    Snapshot,
    ThreadState,
    delete_change,
    edit_change,
    may_change,
    utc_now_iso,
)
from .content import Article
from .errors import Forbidden, NotFound, RateLimited, Rejected, Repeat, Unavailable
from .i18n import N_
from .identity import client_network
from .moderation import Bans, Moderation
from .protocol import DeskComment, Event
from .rate_limits import Check, Limits
from .settings import MAX_ABOUT_CHARS, MAX_BODY_CHARS, MAX_NAME_CHARS, Settings
from .spam import Rules, SpamRules, text_fingerprint
from .text import clean_body, clean_name, clean_ref, render_body

# What the audit log (and so the webhooks: moderation.close, ...) calls each change of state.
STATE_ACTIONS = {OPEN: "open", CLOSED: "close", HIDDEN: "hide"}


@dataclass(frozen=True)
class Author:
    """Who is posting: the reader id from their signed cookie, where from, and the moderator's
    name when it is a moderator's session."""

    reader_id: str
    ip: str
    moderator: str | None = None


def thread_tag(slug: str) -> str:
    return hashlib.sha256(slug.encode()).hexdigest()[:4]


def new_comment_id(slug: str) -> str:
    """Random, prefixed with a tag of its thread, so that /api/comments/{id} finds the thread
    without a global index (which a Redis Cluster could not update atomically with the thread)."""
    return thread_tag(slug) + secrets.token_hex(5)


class Threads:
    def __init__(
        self,
        backend: Backend,
        articles: Articles,
        settings: Settings,
        moderation: Moderation,
        spam: SpamRules,
    ) -> None:
        self.backend = backend
        self.moderation = moderation
        self.spam = spam
        self.articles = articles
        self.on_published: Callable[[Comment], None] | None = None  # the webhooks; must not block
        self.on_changed: Callable[[str, Comment], None] | None = None  # ("edited" / "deleted", comment): the same
        self.on_voted: Callable[[str, str], None] | None = None  # (slug, comment id): the coalesced counts
        self.edit_window = settings.edit_window
        self._limits = Limits(backend.rate_limit_storage)  # exact moving windows, shared through Redis if any
        self._post_limits = self._checks("", settings.post_rate_per_reader, settings.post_rate_per_ip)
        self._vote_limits = self._checks("vote-", settings.vote_rate_per_reader, settings.vote_rate_per_ip)
        self._vote_flag = limits.parse_many(settings.vote_flag_per_ip)

    @staticmethod
    def _seed_comments(article: Article) -> list[Comment]:
        created_at = utc_now_iso()
        seeds = []
        for n, seed in enumerate(article.seed_comments):
            body = clean_body(seed.body, MAX_BODY_CHARS)
            # A fixed id per seed makes the import idempotent across restarts.
            seed_id = thread_tag(article.slug) + hashlib.sha256(f"{article.slug}/{n}".encode()).hexdigest()[:10]
            seeds.append(
                Comment(
                    id=seed_id,
                    slug=article.slug,
                    parent=None,
                    name=seed.name,
                    about=seed.about,
                    body=body,
                    html=render_body(body),
                    created_at=created_at,
                )
            )
        return seeds

    def article(self, slug: str) -> Article:
        """The published article's summary (no paragraphs: `articles.article` reads them);
        NotFound, or Gone (410) when the newsroom unpublished it."""
        return self.articles.summary(slug)

    async def post(
        self,
        slug: str,
        author: Author,
        *,
        name: str | None,
        about: str | None,
        body: str | None,
        parent: str | None,
        ref: str | None = None,
    ) -> tuple[Comment, bool]:
        """Validate, rate-limit, store and publish one comment. Returns (comment, created)."""
        async with self.backend.admitting_post():
            return await self._post(slug, author, name=name, about=about, body=body, parent=parent, ref=ref)

    async def _post(
        self,
        slug: str,
        author: Author,
        *,
        name: str | None,
        about: str | None,
        body: str | None,
        parent: str | None,
        ref: str | None,
    ) -> tuple[Comment, bool]:
        self.article(slug)
        clean_author = clean_name(name, MAX_NAME_CHARS, "name", required=True)
        clean_about = clean_name(about, MAX_ABOUT_CHARS, "description", required=False)
        text = clean_body(body, MAX_BODY_CHARS)
        ref = clean_ref(ref)
        ref_key = f"{author.reader_id}:{ref}" if ref else None
        # Before the post is stored and published, each Redis round trip delays every reader of
        # it: the records it is checked against are read in one, the limits counted in one.
        # Whether the thread is open is checked by the store as it writes (Closed), in the same
        # transaction, so no post lands after a close and checking costs no round trip of its own.
        rules = self.spam.current
        author_keys = self.moderation.author_check_keys(author.reader_id, author.ip, clean_author, author.moderator)
        history = 0 if author.moderator else max(rules.new_reader_comments, rules.premoderate_first_comments)
        reading = self.backend.read_records(
            [*author_keys, self.moderation.premoderation_key(slug)],
            [(f"published-by:{author.reader_id}", history)] if history else [],
        )
        # A retry of a post already stored is answered as before, and is not counted again
        # (also when the thread has closed since: that post made it).
        if ref_key:
            earlier, (records, lists) = await asyncio.gather(self.backend.comment_by_ref(slug, ref_key), reading)
            if earlier is not None:
                return earlier, False
        else:
            records, lists = await reading
        self.moderation.check_author_records(records[: len(author_keys)])
        await self._check_rate(author, self._post_limits)
        html = render_body(text)
        self._check_words(rules, f"{clean_author} {clean_about or ''} {text}")
        repeat_key = await self._check_repeat(author, text, ref_key) if rules.repeat_window_minutes else None
        premoderated = records[-1] is not None
        published = len(lists[0]) if lists else 0
        held_for = None if author.moderator else self._hold_reason(rules, premoderated, published, text, html)
        comment = Comment(
            id=new_comment_id(slug),
            slug=slug,
            parent=parent or None,
            name=clean_author,
            about=clean_about,
            body=text,
            html=html,
            created_at=utc_now_iso(),
            status=PENDING if held_for else VISIBLE,
            reader_id=author.reader_id,
            ip=author.ip,
            staff=author.moderator is not None,
        )  # from the session only, never from the request
        try:
            stored, created = await self.backend.post(comment, ref_key)
        except BaseException:
            if repeat_key:  # not stored: the same text may be sent again
                await self.backend.kv_delete(repeat_key)
            raise
        if created:
            metrics.comments_posted.inc()
            if stored.status == VISIBLE:
                await self.backend.list_push(f"published-by:{author.reader_id}", stored.id, keep=100)
                if self.on_published:
                    self.on_published(stored)
            # The comment is committed, so the post succeeds even when the bus cannot tell the
            # desk now (Redis down, PostgreSQL up): the desk shows it on its next load.
            with contextlib.suppress(Unavailable):
                await self.moderation.publish_desk(DeskComment({**self.desk_view(stored), "held_for": held_for}))
        return stored, created

    async def _check_repeat(self, author: Author, text: str, ref_key: str | None) -> str:
        """Refuse the same text again from the same reader within the window; returns the key
        that now remembers it. The key holds the post's ref: a retry of a post whose storing was
        cut short (its instance died) is that post again, not a repeat."""
        key = f"recent:{author.reader_id}:{text_fingerprint(text)}"
        ttl = self.spam.current.repeat_window_minutes * 60
        if not await self.backend.kv_set(key, ref_key or "", ttl=ttl, only_if_absent=True) and (
            not ref_key or await self.backend.kv_get(key) != ref_key
        ):
            raise Repeat("You posted this a moment ago.")
        return key

    @staticmethod
    def _hold_reason(rules: Rules, premoderated: bool, published: int, text: str, html: str) -> str | None:
        """Why this comment must wait for a moderator, if it must (published: how many of the
        reader's comments were published, counted up to what the rules look at)."""
        if premoderated:
            return "the article is pre-moderated"
        if (word := rules.matches(text, banned=False)) is not None:
            return f"it uses “{word}”"
        if published < rules.premoderate_first_comments:
            return "a reader's first comments are pre-moderated"
        if published < rules.new_reader_comments and html.count("<a ") > rules.max_links_new_reader:
            return "many links from a reader new to the site"
        return None

    def desk_view(self, comment: Comment, bans: Bans | None = None) -> dict[str, Any]:
        return {
            **moderator_view(comment, bans),
            "slug": comment.slug,
            "article_title": self.articles[comment.slug].title,
        }

    def find_thread(self, comment_id: str) -> list[str]:
        """The threads a comment id may belong to (its tag names one, rarely a few)."""
        return [slug for slug in self.articles.every_slug() if comment_id.startswith(thread_tag(slug))]

    async def find(self, comment_id: str) -> Comment:
        for slug in self.find_thread(comment_id):
            if (comment := await self.backend.get_comment(slug, comment_id)) is not None:
                return comment
        raise NotFound("No such comment.")

    async def set_status(self, comment_id: str, status: str, moderator: str) -> Comment:
        """Remove, restore or approve a comment; the backend tells every reader."""
        comment = await self.find(comment_id)
        changed, _event = await self.backend.set_status(comment.slug, comment.id, status, moderator, utc_now_iso())
        if comment.status == PENDING and changed.status == VISIBLE and changed.reader_id:
            await self.backend.list_push(f"published-by:{changed.reader_id}", changed.id, keep=100)
        if comment.status == PENDING and changed.status == VISIBLE and self.on_published:
            self.on_published(changed)
        return changed

    async def set_state(
        self,
        slug: str,
        state: str,
        by: str,
        *,
        expect: ThreadState | None = None,
        at: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> tuple[ThreadState, Event | None]:
        """Open, close or hide a thread: (its state now, the event when this call changed it).
        The backend tells every reader; the audit log, and so the webhooks, keep who did it: a
        moderator's name, `api:TOKEN`, or `auto-close`. See Store.set_thread_state for expect."""
        self.article(slug)
        after, event = await self.backend.set_thread_state(slug, state, by, at or utc_now_iso(), expect)
        if event is not None:
            await self.moderation.record(by, STATE_ACTIONS[state], slug=slug, reason=reason, detail=detail)
        return after, event

    @staticmethod
    def _checks(prefix: str, per_reader: str, per_ip: str) -> list[tuple[limits.RateLimitItem, str, bool]]:
        """The limits of one action: (limit, counter kind, whether it counts per address)."""
        return [(item, f"{prefix}reader", False) for item in limits.parse_many(per_reader)] + [
            (item, f"{prefix}ip", True) for item in limits.parse_many(per_ip)
        ]

    async def _check_rate(self, author: Author, action: list[tuple[limits.RateLimitItem, str, bool]]) -> None:
        checks: list[Check] = [
            (item, kind, client_network(author.ip) if per_ip else author.reader_id) for item, kind, per_ip in action
        ]
        try:
            retry_after = await self._limits.hit(checks)  # checks and counts every limit in one step
        except StorageError as exc:  # the shared counters (Redis) are out of reach
            raise Unavailable("Comments are unavailable for a moment; please retry.") from exc
        if retry_after is not None:
            raise RateLimited("You are posting too fast. Try again in {retry_after} s.", retry_after)

    @staticmethod
    def _check_words(rules: Rules, text: str) -> None:
        if (word := rules.matches(text, banned=True)) is not None:
            raise Rejected("Comments here may not use the word “{word}”.", word=word)

    async def _check_author(self, author: Author) -> None:
        """Bans, as a post checks them (reserved names aside: no name is given)."""
        records, _lists = await self.backend.read_records(
            self.moderation.author_check_keys(author.reader_id, author.ip, None, author.moderator), []
        )
        self.moderation.check_author_records(records)

    # --- votes -------------------------------------------------------------------------------

    async def vote(self, comment_id: str, author: Author, up: bool) -> tuple[Comment, int]:
        """Recommend a comment (up) or withdraw the recommendation: one per reader, checked and
        rate-limited like a post. Returns the comment and its count now. Readers hear of it
        coalesced (on_voted), not as an event of the thread's log."""
        comment = await self.find(comment_id)
        self.article(comment.slug)
        if comment.reader_id == author.reader_id:
            raise Forbidden(N_("You cannot recommend your own comment."))
        await self._check_author(author)
        await self._check_rate(author, self._vote_limits)
        count = await self.backend.vote(comment.slug, comment.id, author.reader_id, up)
        if self.on_voted:
            self.on_voted(comment.slug, comment.id)
        await self._watch_voting(author, comment)
        return comment, count

    async def _watch_voting(self, author: Author, comment: Comment) -> None:
        """One address voting far more than a reader does (one person with many cookies) is
        put in front of the moderators: an audit entry (action `many_votes`, by `address TAG`,
        the limit it went over in `detail`), at most one an hour per network."""
        network = client_network(author.ip)
        try:
            over = await self._limits.hit([(item, "vote-flag", network) for item in self._vote_flag])
        except StorageError:
            return  # only a warning sign: the vote itself is counted
        if over is not None and await self.backend.kv_set(f"vote-flag:{network}", "1", ttl=3600, only_if_absent=True):
            # Named by a tag of the address, never the address: the audit log goes to webhooks.
            tag = hashlib.sha256(f"{network}".encode()).hexdigest()[:8]
            await self.moderation.record(
                f"address {tag}",
                "many_votes",
                slug=comment.slug,
                comment_id=comment.id,
                detail=";".join(str(item) for item in self._vote_flag),
            )

    # --- a reader's own comment: edit, delete ---------------------------------------------------

    async def edit(self, comment_id: str, author: Author, body: str | None) -> tuple[Comment, int]:
        """Its author replaces the text, within EDIT_WINDOW, through a post's checks (length,
        banned words, bans, rate limits). Returns the comment and the seq of its `edited` event.
        The previous text stays in the audit log."""
        comment = await self.find(comment_id)
        self.article(comment.slug)
        text = clean_body(body, MAX_BODY_CHARS)
        html = render_body(text)
        at = utc_now_iso()
        may_change(comment, author.reader_id, at, self.edit_window)  # early, for a clear answer
        await self._check_author(author)
        await self._check_rate(author, self._post_limits)
        self._check_words(self.spam.current, text)
        window = self.edit_window
        changed, event = await self.backend.change_comment(
            comment.slug,
            comment.id,
            "edited",
            lambda stored: edit_change(stored, author.reader_id, text, html, at, window),
        )
        assert event is not None
        await self._changed("edited", "edit", comment, changed)
        return changed, event.seq

    async def delete(self, comment_id: str, author: Author) -> int:
        """Its author takes the comment down within EDIT_WINDOW; it keeps its place, and its
        replies stay, as with a removal. Returns the seq of its `deleted` event."""
        comment = await self.find(comment_id)
        self.article(comment.slug)
        at = utc_now_iso()
        may_change(comment, author.reader_id, at, self.edit_window)
        window = self.edit_window
        changed, event = await self.backend.change_comment(
            comment.slug, comment.id, "deleted", lambda stored: delete_change(stored, author.reader_id, at, window)
        )
        assert event is not None
        await self._changed("deleted", "delete", comment, changed)
        return event.seq

    async def _changed(self, kind: str, action: str, before: Comment, after: Comment) -> None:
        if self.on_changed:
            self.on_changed(kind, after)
        with contextlib.suppress(Unavailable):  # committed: the desk reads the log on its next load
            await self.moderation.record(
                before.name,
                action,
                slug=before.slug,
                comment_id=before.id,
                reader_id=before.reader_id,
                detail=before.body,
            )

    async def snapshot(self, slug: str) -> Snapshot:
        self.article(slug)
        return await self.backend.snapshot(slug)

    async def comment_counts(self, slugs: Sequence[str]) -> dict[str, int]:
        """Visible comments of each of these threads, in one store read."""
        counts = await self.backend.comment_counts(slugs)
        return {slug: counts.get(slug, 0) for slug in slugs}

    async def states(self, slugs: Sequence[str]) -> dict[str, str]:
        """The state (open, closed, hidden) of each of these threads, in one store read."""
        states = await self.backend.thread_states(slugs)
        return {slug: states[slug].name if slug in states else OPEN for slug in slugs}


def visible_to(comments: list[Comment], reader_id: str, moderator: bool) -> list[Comment]:
    """A pending comment is seen only by its author and by moderators."""
    return [c for c in comments if c.status != PENDING or moderator or c.reader_id == reader_id]


def moderator_view(comment: Comment, bans: Bans | None) -> dict[str, Any]:
    """The moderator view, with "banned": true when its author (reader or address) is banned now."""
    view = comment.moderator_view()
    return {**view, "banned": True} if bans is not None and bans.covers(comment) else view
