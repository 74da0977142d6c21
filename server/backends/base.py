"""The two interfaces under the service, the store and the bus, and the Backend that joins them.

The store is the system of record: threads, comments, each thread's contiguous seq, the event
log kept for `since` catch-up, and the moderation records (plain kv / set / list primitives,
so that what they mean is written once, above the stores). A write is acknowledged only once
the store has committed it.

The bus carries what does not need to last: each thread's events to every instance that has
readers of it, control messages, presence, rate-limit counters. Delivery may lose or reorder
events (Redis pub/sub does); the Hub above fills every gap from the store's log, so neither
the bus nor the store needs to be exactly-once.

Stores and buses combine (SQLite + in-process, PostgreSQL + Redis, PostgreSQL + in-process,
Redis + Redis); nothing above `Backend` knows which pair it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from limits.aio.storage import Storage

from .. import metrics
from ..comments import Comment, Head, Snapshot, ThreadState
from ..errors import NotFound, Unavailable
from ..protocol import Event

log = logging.getLogger("backchannel.backend")

# How often an instance compares the heads of the threads it serves with what the bus brought.
RECONCILE_INTERVAL = 1.0


@dataclass(frozen=True)
class Written:
    """What a store committed: the comment as stored, and the event to publish (if readers
    must hear of it) with the thread's epoch (left empty by a store that publishes itself)."""

    comment: Comment
    event: Event | None
    epoch: str
    created: bool = True


@dataclass(frozen=True)
class StateWritten:
    """What a store committed for a change of a thread's state: the state now, and the event
    to publish when it changed (with the thread's epoch, as for Written)."""

    state: ThreadState
    event: Event | None
    epoch: str


@dataclass(frozen=True)
class ThreadDump:
    """One thread as `python -m server export` moves it between stores: its head, every comment
    record with its idempotency key, and its event log as stored (seqs kept, so a reader's
    `since` still works after the move)."""

    slug: str
    seq: int
    epoch: str
    seeded: bool
    comments: list[dict[str, Any]]  # Comment.record() plus "ref_key": published in seq order, then pending
    events: list[tuple[int, str]]  # (seq, the event exactly as stored)
    state: ThreadState = field(default_factory=ThreadState)
    votes: list[tuple[str, str]] = field(default_factory=list)  # (comment id, voter), sorted


@dataclass(frozen=True)
class CommentPage:
    """One page of a thread's comments with the same parent (Store.comment_page)."""

    comments: list[Comment]  # published ones (visible or removed), in the order asked
    more: bool  # published ones follow the last of these
    reply_counts: dict[str, int]  # published direct replies of each comment of the page (absent: none)
    held: list[Comment]  # the pending ones with this parent (first page only); callers choose who sees them


@dataclass(frozen=True)
class Record:
    """A moderation record: a kv value (expires_at: unix time or None), a set (members sorted)
    or a list (oldest item first)."""

    kind: str  # "kv", "set", "list"
    key: str
    value: str | list[str]
    expires_at: float | None = None


@dataclass(frozen=True)
class StoredArticle:
    """An article as the stores keep it. What its fields mean is written once, in
    server/articles.py; a store only keeps them, and orders articles by (published_at, slug)."""

    slug: str
    published_at: str  # ISO-8601 UTC, fixed width (utc_now_iso's form), so text order is time order
    published: bool  # False: unpublished, kept (its page answers 410 until it is put again)
    meta: str  # JSON: every field but the paragraphs
    paragraphs: str | None = None  # JSON list of str; None where only summaries were read


class Store(ABC):
    # True when the store's own write already published the event on the bus (the Redis store
    # does, inside the script that assigns the seq), so the Backend must not publish it again.
    publishes: bool = False

    @abstractmethod
    async def start(self) -> None:
        """Connect, and bring the schema up to date (refusing one newer than the code)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ready(self) -> bool:
        """True while the store can take writes."""

    def admitting_post(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held around all the store work of one post. A store with few connections (PostgreSQL)
        admits only as many posts at a time as it has, and refuses one that waited too long
        with Unavailable before it did any work: under load a post admitted finishes rather
        than queue behind the first reads of newer ones and time out half done."""
        return contextlib.nullcontext()

    @abstractmethod
    async def ensure_thread(self, slug: str, seeds: Sequence[Comment]) -> None:
        """Create the thread if new and import its seed comments exactly once, ever."""

    @abstractmethod
    async def post(self, comment: Comment, ref_key: str | None) -> Written:
        """Atomically assign the next seq, store the comment, append its event to the log.
        A ref_key seen before returns the comment stored then, with created=False and no event:
        retries never double-post. Raises Closed when the thread is not open (checked in the
        same transaction, so no post lands after a close), NotFound when comment.parent is not
        a comment of the same thread, or the thread does not exist."""

    @abstractmethod
    async def set_thread_state(
        self, slug: str, state: str, by: str, at: str, expect: ThreadState | None = None
    ) -> StateWritten:
        """Atomically change the thread's state and append its event (`opened`, `closed`,
        `hidden`, made by comments.state_event). Nothing changes, and no event is made, when
        the thread is in that state already, or when `expect` is given and the thread's state
        is no longer exactly it (so that of several instances deciding at once, one acts).
        Raises NotFound."""

    @abstractmethod
    async def set_status(self, slug: str, comment_id: str, status: str, moderator: str | None, at: str) -> Written:
        """Atomically change a comment's status and, when readers must hear of it, append the
        event: visible->removed `removed`, removed->visible `restored`, pending->visible
        `comment` (approval publishes it for the first time). An unchanged status, or a pending
        comment rejected, makes no event. Raises NotFound."""

    @abstractmethod
    async def change_comment(
        self, slug: str, comment_id: str, kind: str, change: Callable[[Comment], Comment]
    ) -> Written:
        """Atomically replace a comment by change(the comment as stored) and append the event
        of `kind` (`edited` or `deleted`, made by comments.change_event); whatever change()
        raises (not the author, too late) leaves everything as it was. Raises Closed when the
        thread is not open (checked in the same transaction), NotFound."""

    @abstractmethod
    async def vote(self, slug: str, comment_id: str, voter: str, up: bool) -> int:
        """Record (up) or withdraw the voter's recommendation of a visible comment, at most one
        per voter, and return the comment's count after it; the count is the comment's `votes`
        in every read. Raises Closed when the thread is not open, NotFound when the comment is
        not visible (or not of this thread)."""

    @abstractmethod
    async def vote_counts(self, slug: str, comment_ids: Sequence[str]) -> dict[str, int]:
        """The vote count of each of these comments of the thread, in one read."""

    @abstractmethod
    async def votes_by(self, slug: str, voter: str) -> set[str]:
        """The comments of the thread this voter recommends."""

    @abstractmethod
    async def get_comment(self, slug: str, comment_id: str) -> Comment | None: ...

    @abstractmethod
    async def get_comments(self, refs: Sequence[tuple[str, str]]) -> list[Comment]:
        """The comments named by (slug, comment id), in one read, in the order asked; the
        ones that do not exist are left out (the moderation desk's reported comments)."""

    @abstractmethod
    async def comment_by_ref(self, slug: str, ref_key: str) -> Comment | None:
        """The comment stored earlier under this idempotency key, if any."""

    @abstractmethod
    async def snapshot(self, slug: str) -> Snapshot:
        """Every comment of the thread, consistent with the seq it is taken at."""

    @abstractmethod
    async def comment_page(
        self, slug: str, parent: str | None, newest_first: bool, after: int | None, limit: int
    ) -> CommentPage:
        """At most `limit` published comments whose parent is `parent` (None: the top level), by
        seq (newest_first: descending), starting after the one whose seq is `after`. A seq never
        changes once given, and a new comment's is higher than every other's, so following the
        pages shows each comment once while comments arrive. With the page: its comments' direct
        reply counts, and when `after` is None the held (pending) comments with that parent.
        A thread that does not exist has no comments."""

    @abstractmethod
    async def top_page(self, slug: str, parent: str | None, after: tuple[int, int] | None, limit: int) -> CommentPage:
        """As comment_page, most recommended first: by (votes, seq) descending, starting after the
        comment whose (votes, seq) is `after`. A comment whose count changes while a reader pages
        may move across the cursor (the page's script shows a comment once, by id)."""

    @abstractmethod
    async def head(self, slug: str) -> Head:
        """The thread's latest seq, its epoch and its state."""

    @abstractmethod
    async def events_since(self, slug: str, since: int) -> list[Event] | None:
        """Events with seq > since, in order; None when the log no longer reaches back to since."""

    async def heads(self, slugs: Sequence[str]) -> dict[str, Head]:
        """The head of each of these threads (those that exist); the SQL stores read them in
        one query."""
        found = await asyncio.gather(*(self.head(slug) for slug in slugs), return_exceptions=True)
        for head in found:
            if isinstance(head, BaseException) and not isinstance(head, NotFound):
                raise head
        return {slug: head for slug, head in zip(slugs, found, strict=True) if isinstance(head, Head)}

    @abstractmethod
    async def comment_counts(self, slugs: Sequence[str]) -> dict[str, int]:
        """Visible comments of each of these threads, in one read (those without any may be left out)."""

    @abstractmethod
    async def thread_states(self, slugs: Sequence[str]) -> dict[str, ThreadState]:
        """The state of each of these threads, in one read (those that do not exist are left out)."""

    # --- articles (server/articles.py gives them their meaning) ---

    @abstractmethod
    async def put_article(self, article: StoredArticle) -> bool:
        """Create or replace the article, paragraphs included, published or not as given.
        Returns True when it is new."""

    @abstractmethod
    async def get_article(self, slug: str) -> StoredArticle | None:
        """The article with its paragraphs, published or not."""

    @abstractmethod
    async def set_article_published(self, slug: str, published: bool, meta: str) -> bool:
        """Flag the article published or not (its paragraphs kept) and store its new meta;
        False when there is no such article."""

    @abstractmethod
    async def article_summaries(self, before: tuple[str, str] | None, limit: int) -> list[StoredArticle]:
        """At most `limit` articles, published or not, without their paragraphs, newest first:
        by (published_at, slug) descending, starting after `before` (the published_at and slug
        of the last one of the previous page). Stable while articles are added."""

    @abstractmethod
    async def kv_get(self, key: str) -> str | None: ...

    @abstractmethod
    async def kv_set(self, key: str, value: str, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        """Set key (expiring after ttl seconds); with only_if_absent, only when it is not set.
        Returns whether it was set."""

    @abstractmethod
    async def kv_delete(self, key: str) -> None: ...

    @abstractmethod
    async def set_add(self, key: str, member: str) -> None: ...

    @abstractmethod
    async def set_remove(self, key: str, member: str) -> None: ...

    @abstractmethod
    async def set_members(self, key: str) -> set[str]: ...

    @abstractmethod
    async def list_push(self, key: str, value: str, keep: int) -> None:
        """Prepend value; keep only the newest `keep` items."""

    @abstractmethod
    async def list_range(self, key: str, count: int | None = None) -> list[str]:
        """The newest `count` items (all when None), newest first."""

    @abstractmethod
    async def list_ranges(self, keys: Sequence[str]) -> list[list[str]]:
        """list_range(key) of every key, in one read."""

    async def read_records(
        self, kv_keys: Sequence[str], lists: Sequence[tuple[str, int]]
    ) -> tuple[list[str | None], list[list[str]]]:
        """kv_get of each key and list_range(key, count) of each (key, count), together: what a
        post checks before it is stored (bans, reserved names, the reader's history). A store
        with round trips to pay (Redis) reads them all in one."""
        values = [await self.kv_get(key) for key in kv_keys]
        return values, [await self.list_range(key, count) for key, count in lists]

    # --- moving data (server/transfer): bulk reads in a stable order, idempotent writes ---

    @abstractmethod
    async def thread_slugs(self) -> list[str]:
        """Every thread, sorted."""

    @abstractmethod
    async def dump_thread(self, slug: str) -> ThreadDump:
        """The thread, consistent with its seq."""

    @abstractmethod
    async def load_thread(self, thread: ThreadDump) -> None:
        """Write the thread as dumped, in one transaction: head, comments keyed by id, events
        keyed by seq. Loading it twice is loading it once."""

    @abstractmethod
    async def dump_records(self) -> list[Record]:
        """Every unexpired moderation record, sorted by kind then key."""

    @abstractmethod
    async def load_records(self, records: Sequence[Record]) -> None:
        """Write the records as dumped (a list replaces the one stored); idempotent."""


class Bus(ABC):
    """The callbacks are set by the Hub: on_event(slug, event, epoch) for each event received,
    on_resync(slug) when events may have been lost (the Hub then re-reads the log),
    on_presence(slug, readers) when another instance changed a thread's reader count,
    on_control(message) for each control message (moderation desk, ended sessions), and
    on_control_resync() when control messages may have been lost (a subscription rebuilt):
    what is kept from them and has a record in the store (the articles) is re-read."""

    rate_limit_storage: Storage  # where rate-limit counters live: in-process, or shared by all instances
    shared: bool = False  # other instances publish on it too

    def __init__(self) -> None:
        self.on_event: Callable[[str, Event, str | None], None] = lambda slug, event, epoch: None
        self.on_resync: Callable[[str], None] = lambda slug: None
        self.on_presence: Callable[[str, int], None] = lambda slug, readers: None
        self.on_control: Callable[[str], None] = lambda message: None
        self.on_control_resync: Callable[[], None] = lambda: None

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish(self, slug: str, event: Event, epoch: str) -> None:
        """Hand a committed event to every instance subscribed to the thread."""

    @abstractmethod
    async def subscribe(self, slug: str) -> None:
        """Start delivering this thread's events to on_event (first local reader arrived). Once
        this returns, every later publish reaches on_event (or a resync says it may not have)."""

    @abstractmethod
    async def unsubscribe(self, slug: str) -> None:
        """Stop delivering (last local reader left)."""

    @abstractmethod
    async def presence(self, slug: str, local_readers: int) -> int:
        """Report this instance's reader count for the thread; return the count everywhere."""

    @abstractmethod
    async def publish_control(self, message: str) -> None:
        """Send message to on_control on every instance, this one included (not sequenced)."""


class Backend:
    """What the service uses: a store and a bus, joined. Writes go to the store; once it has
    committed, the event is published on the bus.

    An instance can die between its commit and its publish, and then no bus ever carries that
    event. Where that can happen (a shared bus, and a store that does not publish in the
    commit itself), each instance compares, every RECONCILE_INTERVAL, the heads of the threads
    it serves with the highest seq the bus brought; a seq stored but still missing one
    interval later has the Hub read the log (on_resync). So readers have it within about two
    intervals, and the same holds while the bus is down."""

    def __init__(self, store: Store, bus: Bus) -> None:
        self.store, self.bus = store, bus
        self._on_event: Callable[[str, Event, str | None], None] = lambda slug, event, epoch: None
        bus.on_event = self._received
        self._reconciling = bus.shared and not store.publishes
        self._seen: dict[str, int] = {}  # subscribed thread -> the highest seq known delivered
        self._suspect: dict[str, int] = {}  # thread -> a head seq that had not arrived at the last look
        self._reconciler: asyncio.Task[None] | None = None
        # Fault injection for the fault tests (Settings.fault_kill_after_commits); 0: never.
        self.kill_after_commits = 0
        self._commits = 0

    def __repr__(self) -> str:
        return f"{type(self.store).__name__} + {type(self.bus).__name__}"

    # The Hub and the app set these; the bus calls them.
    on_event = property(lambda self: self._on_event, lambda self, f: setattr(self, "_on_event", f))
    on_resync = property(lambda self: self.bus.on_resync, lambda self, f: setattr(self.bus, "on_resync", f))
    on_presence = property(lambda self: self.bus.on_presence, lambda self, f: setattr(self.bus, "on_presence", f))
    on_control = property(lambda self: self.bus.on_control, lambda self, f: setattr(self.bus, "on_control", f))
    on_control_resync = property(
        lambda self: self.bus.on_control_resync, lambda self, f: setattr(self.bus, "on_control_resync", f)
    )

    @property
    def rate_limit_storage(self) -> Storage:
        return self.bus.rate_limit_storage

    async def start(self) -> None:
        await self.store.start()
        try:
            await self.bus.start()
        except BaseException:
            await self.store.close()
            raise
        if self._reconciling:
            self._reconciler = asyncio.create_task(self._reconcile(), name="reconcile-heads")

    async def close(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        try:
            await self.bus.close()
        finally:
            await self.store.close()

    def admitting_post(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.store.admitting_post()

    async def ready(self) -> bool:
        """Whether this instance can take writes: the store decides (a bus that is away delays
        delivery, and the log makes up for it)."""
        return await self.store.ready()

    # --- writes: committed in the store, then published ---

    async def post(self, comment: Comment, ref_key: str | None) -> tuple[Comment, bool]:
        written = await self.store.post(comment, ref_key)
        if self.kill_after_commits and written.created:
            self._commits += 1
            if self._commits == self.kill_after_commits:
                log.warning("FAULT_KILL_AFTER_COMMITS: killed after committing seq %s", written.comment.seq)
                os.kill(os.getpid(), signal.SIGKILL)  # committed, never published, never acknowledged
        await self._publish(comment.slug, written.event, written.epoch)
        return written.comment, written.created

    async def set_status(
        self, slug: str, comment_id: str, status: str, moderator: str | None, at: str
    ) -> tuple[Comment, Event | None]:
        written = await self.store.set_status(slug, comment_id, status, moderator, at)
        await self._publish(slug, written.event, written.epoch)
        return written.comment, written.event

    async def set_thread_state(
        self, slug: str, state: str, by: str, at: str, expect: ThreadState | None = None
    ) -> tuple[ThreadState, Event | None]:
        written = await self.store.set_thread_state(slug, state, by, at, expect)
        await self._publish(slug, written.event, written.epoch)
        return written.state, written.event

    async def change_comment(
        self, slug: str, comment_id: str, kind: str, change: Callable[[Comment], Comment]
    ) -> tuple[Comment, Event | None]:
        written = await self.store.change_comment(slug, comment_id, kind, change)
        await self._publish(slug, written.event, written.epoch)
        return written.comment, written.event

    async def vote(self, slug: str, comment_id: str, voter: str, up: bool) -> int:
        """Not an event: the count reaches readers coalesced (server/votes.py)."""
        return await self.store.vote(slug, comment_id, voter, up)

    async def _publish(self, slug: str, event: Event | None, epoch: str) -> None:
        if event is None or self.store.publishes:
            return
        try:
            await self.bus.publish(slug, event, epoch)
        except Unavailable:
            # The write is committed, so it is acknowledged: readers get the event from the
            # log when the bus is back (the bus resyncs every thread after it reconnects).
            log.warning("thread %s: seq %d is stored but could not be published now", slug, event.seq)

    async def ensure_thread(self, slug: str, seeds: Sequence[Comment]) -> None:
        await self.store.ensure_thread(slug, seeds)

    # --- reads ---

    async def get_comment(self, slug: str, comment_id: str) -> Comment | None:
        return await self.store.get_comment(slug, comment_id)

    async def vote_counts(self, slug: str, comment_ids: Sequence[str]) -> dict[str, int]:
        return await self.store.vote_counts(slug, comment_ids)

    async def votes_by(self, slug: str, voter: str) -> set[str]:
        return await self.store.votes_by(slug, voter)

    async def get_comments(self, refs: Sequence[tuple[str, str]]) -> list[Comment]:
        return await self.store.get_comments(refs)

    async def comment_by_ref(self, slug: str, ref_key: str) -> Comment | None:
        return await self.store.comment_by_ref(slug, ref_key)

    async def snapshot(self, slug: str) -> Snapshot:
        return await self.store.snapshot(slug)

    async def comment_page(
        self, slug: str, parent: str | None, newest_first: bool, after: int | None, limit: int
    ) -> CommentPage:
        metrics.store_reads.labels("comment_page").inc()
        return await self.store.comment_page(slug, parent, newest_first, after, limit)

    async def top_page(self, slug: str, parent: str | None, after: tuple[int, int] | None, limit: int) -> CommentPage:
        metrics.store_reads.labels("comment_page").inc()
        return await self.store.top_page(slug, parent, after, limit)

    async def head(self, slug: str) -> Head:
        metrics.store_reads.labels("head").inc()
        return await self.store.head(slug)

    async def heads(self, slugs: Sequence[str]) -> dict[str, Head]:
        metrics.store_reads.labels("heads").inc()
        return await self.store.heads(slugs)

    async def events_since(self, slug: str, since: int) -> list[Event] | None:
        metrics.store_reads.labels("events_since").inc()
        return await self.store.events_since(slug, since)

    async def comment_counts(self, slugs: Sequence[str]) -> dict[str, int]:
        return await self.store.comment_counts(slugs)

    async def thread_states(self, slugs: Sequence[str]) -> dict[str, ThreadState]:
        return await self.store.thread_states(slugs)

    # --- articles, in the store (ArticleChanged on the control bus tells the other instances) ---

    async def put_article(self, article: StoredArticle) -> bool:
        return await self.store.put_article(article)

    async def get_article(self, slug: str) -> StoredArticle | None:
        return await self.store.get_article(slug)

    async def set_article_published(self, slug: str, published: bool, meta: str) -> bool:
        return await self.store.set_article_published(slug, published, meta)

    async def article_summaries(self, before: tuple[str, str] | None, limit: int) -> list[StoredArticle]:
        return await self.store.article_summaries(before, limit)

    # --- the bus ---

    async def subscribe(self, slug: str) -> None:
        await self.bus.subscribe(slug)
        if self._reconciling:
            # Read after subscribing: whatever is in this head, readers get from the log as they join.
            self._seen[slug] = (await self.store.head(slug)).seq

    async def unsubscribe(self, slug: str) -> None:
        self._seen.pop(slug, None)
        self._suspect.pop(slug, None)
        await self.bus.unsubscribe(slug)

    def _received(self, slug: str, event: Event, epoch: str | None) -> None:
        if slug in self._seen and event.seq > self._seen[slug]:
            self._seen[slug] = event.seq
        self._on_event(slug, event, epoch)

    async def _reconcile(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL)
            if not self._seen:
                continue
            try:
                heads = await self.store.heads(list(self._seen))
            except Exception:  # the store is away: the Hub finds out on its own
                log.debug("cannot read the heads to reconcile", exc_info=True)
                continue
            for slug, head in heads.items():
                seq, seen = head.seq, self._seen.get(slug)
                if seen is None or seq <= seen:
                    self._suspect.pop(slug, None)
                elif (suspected := self._suspect.pop(slug, None)) is not None and seen < suspected:
                    # Stored a whole interval ago and still not here: it will not come by the bus.
                    log.warning(
                        "thread %s: seq %d is stored but never arrived on the bus; reading the log", slug, suspected
                    )
                    self._seen[slug] = seq
                    self.bus.on_resync(slug)
                else:
                    self._suspect[slug] = seq  # perhaps still on its way: look again next time

    async def presence(self, slug: str, local_readers: int) -> int:
        return await self.bus.presence(slug, local_readers)

    async def publish_control(self, message: str) -> None:
        await self.bus.publish_control(message)

    # --- moderation records, in the store ---

    async def kv_get(self, key: str) -> str | None:
        return await self.store.kv_get(key)

    async def kv_set(self, key: str, value: str, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        return await self.store.kv_set(key, value, ttl, only_if_absent)

    async def kv_delete(self, key: str) -> None:
        await self.store.kv_delete(key)

    async def set_add(self, key: str, member: str) -> None:
        await self.store.set_add(key, member)

    async def set_remove(self, key: str, member: str) -> None:
        await self.store.set_remove(key, member)

    async def set_members(self, key: str) -> set[str]:
        return await self.store.set_members(key)

    async def list_push(self, key: str, value: str, keep: int) -> None:
        await self.store.list_push(key, value, keep)

    async def list_range(self, key: str, count: int | None = None) -> list[str]:
        return await self.store.list_range(key, count)

    async def list_ranges(self, keys: Sequence[str]) -> list[list[str]]:
        return await self.store.list_ranges(keys)

    async def read_records(
        self, kv_keys: Sequence[str], lists: Sequence[tuple[str, int]]
    ) -> tuple[list[str | None], list[list[str]]]:
        return await self.store.read_records(kv_keys, lists)
