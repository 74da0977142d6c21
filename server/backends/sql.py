"""The two SQL stores' queries and logic, written once: SQLite (local.py) and PostgreSQL
(postgres.py) differ only in how they hold a connection and a transaction.

How to extend it: add the query to `Queries` (plain SQL with `$1`-style numbered parameters,
as PostgreSQL takes them; the SQLite session turns `$N` into SQLite's own `?N`, which binds
the N-th item of the same argument sequence), then write the store method once in `SqlStore`
as an `@operation`: an `async def` that takes a `Session` (one connection, for the length of
the operation) after `self`. Callers call it without the session. A schema change is a
migration at the end of both lists in migrations.py; that DDL stays per dialect.

Where the dialects really differ, and only there, the query takes a fragment of `Dialect`
(the database's clock, expiry arithmetic, "one of these texts", byte-order sorting), and the
store's `Session` supplies the transactions: how a thread's writers take turns
(`BEGIN IMMEDIATE` on SQLite's one connection, `SELECT … FOR UPDATE` of the thread's row on
PostgreSQL), a consistent read, and the migration lock.

An operation must await nothing but its session: SQLite runs the whole operation as one hop
to its database thread, driving the coroutine there without an event loop (a post is one hop,
not six); anything else it awaited would fail loudly there (`run_without_suspending`).
"""

from __future__ import annotations

import contextlib
import functools
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeAlias, TypeVar

from ..comments import (
    HIDDEN,
    PENDING,
    VISIBLE,
    Comment,
    Head,
    Snapshot,
    ThreadState,
    change_event,
    comment_event,
    state_change,
    state_event,
    status_change,
    status_event,
)
from ..errors import Closed, NotFound
from ..protocol import Event, decode_event, encode
from .base import CommentPage, Record, StateWritten, Store, StoredArticle, ThreadDump, Written
from .migrations import SchemaTooNew

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="SqlStore")

# A result row: sqlite3.Row or asyncpg.Record. Both index by column name and by position,
# and dict(row) takes either.
Row: TypeAlias = Any

COMMENT_COLUMNS = (
    "id",
    "slug",
    "parent",
    "name",
    "about",
    "body",
    "html",
    "created_at",
    "status",
    "reader_id",
    "seq",
    "removed_by",
    "removed_at",
    "ip",
    "staff",
    "edited_at",
    "votes",
)
_STORED_COLUMNS = (*COMMENT_COLUMNS, "ref_key")  # what a dump carries and a load writes back
PURGE_BATCH = 10  # expired kv rows removed by each write of an expiring one
# Columns that exports written before them lack: loaded as these.
_ADDED_LATER: dict[str, object] = {"edited_at": None, "votes": 0}


def _numbered(count: int) -> str:
    return ", ".join(f"${n}" for n in range(1, count + 1))


@dataclass(frozen=True)
class Dialect:
    """The few SQL fragments that no one spelling serves both databases."""

    now: str  # the database's clock, comparable with kv.expires_at
    seconds_from_now: str  # format with a parameter: now + that many seconds, as kv.expires_at
    to_unix: str  # format with a column: kv.expires_at as unix seconds
    from_unix: str  # format with a parameter: unix seconds as kv.expires_at
    any_text: str  # format with a parameter bound to a list of texts: "is one of them"
    bytewise: str  # a collation that sorts by bytes, so exports are the same on both stores


class Queries:
    """Every statement the SQL stores run outside migrations, for one dialect."""

    def __init__(self, d: Dialect) -> None:
        columns = ", ".join(COMMENT_COLUMNS)
        stored = ", ".join(_STORED_COLUMNS)

        # threads: the head (latest seq, epoch, state), the seq assignment, the state's changes
        self.create_thread = "INSERT INTO threads (slug, epoch) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        self.thread_seeded = "SELECT seeded FROM threads WHERE slug = $1"
        self.mark_seeded = "UPDATE threads SET seeded = true WHERE slug = $1"
        # Session.writing() locks the thread with it.
        self.head = "SELECT seq, epoch, state, state_by, state_at FROM threads WHERE slug = $1"
        self.set_state = "UPDATE threads SET state = $1, state_by = $2, state_at = $3 WHERE slug = $4"
        self.heads = (
            f"SELECT slug, seq, epoch, state, state_by, state_at FROM threads WHERE slug {d.any_text.format('$1')}"
        )
        self.states = f"SELECT slug, state, state_by, state_at FROM threads WHERE slug {d.any_text.format('$1')}"
        self.next_seq = "UPDATE threads SET seq = seq + 1 WHERE slug = $1 RETURNING seq"
        self.thread_slugs = "SELECT slug FROM threads ORDER BY slug"
        self.dump_head = "SELECT seq, epoch, seeded, state, state_by, state_at FROM threads WHERE slug = $1"
        self.load_head = (
            "INSERT INTO threads (slug, seq, epoch, seeded, state, state_by, state_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (slug) DO UPDATE SET seq = excluded.seq, "
            "epoch = excluded.epoch, seeded = excluded.seeded, state = excluded.state, "
            "state_by = excluded.state_by, state_at = excluded.state_at"
        )

        # comments
        self.insert_comment = f"INSERT INTO comments ({stored}) VALUES ({_numbered(len(_STORED_COLUMNS))})"
        self.comment = f"SELECT {columns} FROM comments WHERE id = $1 AND slug = $2"
        self.comment_exists = "SELECT true FROM comments WHERE id = $1 AND slug = $2"
        self.comments_by_id = f"SELECT {columns} FROM comments WHERE id {d.any_text.format('$1')}"
        self.comment_by_ref = f"SELECT {columns} FROM comments WHERE ref_key = $1"
        self.set_status = "UPDATE comments SET status = $1, removed_by = $2, removed_at = $3, seq = $4 WHERE id = $5"
        self.change_comment = "UPDATE comments SET body = $1, html = $2, status = $3, edited_at = $4 WHERE id = $5"
        # votes: one row per voter and comment; comments.votes counts them, updated in the same transaction
        self.visible_comment = "SELECT true FROM comments WHERE id = $1 AND slug = $2 AND status = $3"
        self.add_vote = (
            "INSERT INTO votes (comment_id, voter, slug) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true"
        )
        self.remove_vote = "DELETE FROM votes WHERE comment_id = $1 AND voter = $2 RETURNING true"
        self.count_vote = "UPDATE comments SET votes = votes + $1 WHERE id = $2 RETURNING votes"
        self.vote_count = "SELECT votes FROM comments WHERE id = $1"
        self.vote_counts = f"SELECT id, votes FROM comments WHERE slug = $1 AND id {d.any_text.format('$2')}"
        self.votes_by = "SELECT comment_id FROM votes WHERE slug = $1 AND voter = $2"
        self.dump_votes = (
            "SELECT comment_id, voter FROM votes WHERE slug = $1 "
            f"ORDER BY comment_id COLLATE {d.bytewise}, voter COLLATE {d.bytewise}"
        )
        self.load_vote = "INSERT INTO votes (comment_id, voter, slug) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        self.thread_comments = f"SELECT {columns} FROM comments WHERE slug = $1 ORDER BY seq IS NULL, seq, created_at"
        # a page of the comments with one parent (the top level: NULL), by seq either way, after
        # the seq of the previous page's last (comments_by_parent serves each as a range scan)
        for parent, where_parent in (("top", "parent IS NULL"), ("replies", "parent = $4")):
            for order, compare, direction in (("oldest", ">", "ASC"), ("newest", "<", "DESC")):
                setattr(
                    self,
                    f"page_{parent}_{order}",
                    f"SELECT {columns} FROM comments WHERE slug = $1 AND {where_parent} AND seq {compare} $2 "
                    f"ORDER BY seq {direction} LIMIT $3",
                )
        # most recommended first: by (votes, seq) descending, after the previous page's last
        most_voted = (
            f"SELECT {columns} FROM comments WHERE slug = $1 AND {{}} AND seq IS NOT NULL "
            "AND (votes < $2 OR (votes = $2 AND seq < $3)) ORDER BY votes DESC, seq DESC LIMIT $4"
        )
        self.page_top_most_voted = most_voted.format("parent IS NULL")
        self.page_replies_most_voted = most_voted.format("parent = $5")
        self.reply_counts = (
            "SELECT parent, COUNT(*) AS n FROM comments "
            f"WHERE slug = $1 AND parent {d.any_text.format('$2')} AND seq IS NOT NULL GROUP BY parent"
        )
        held = f"SELECT {columns} FROM comments WHERE slug = $1 AND seq IS NULL AND status = $2"
        self.held_top = f"{held} AND parent IS NULL ORDER BY created_at"
        self.held_replies = f"{held} AND parent = $3 ORDER BY created_at"
        self.visible_counts = (
            "SELECT slug, COUNT(*) AS n FROM comments "
            f"WHERE status = $1 AND slug {d.any_text.format('$2')} "
            "AND slug NOT IN (SELECT slug FROM threads WHERE state = $3) GROUP BY slug"
        )
        self.dump_comments = (
            f"SELECT {stored} FROM comments WHERE slug = $1 "
            f"ORDER BY seq IS NULL, seq, created_at COLLATE {d.bytewise}, id COLLATE {d.bytewise}"
        )
        self.load_comment = (
            f"INSERT INTO comments ({stored}) VALUES ({_numbered(len(_STORED_COLUMNS))}) ON CONFLICT (id) DO UPDATE "
            f"SET {', '.join(f'{c} = excluded.{c}' for c in _STORED_COLUMNS[1:])}"
        )

        # articles, ordered by (published_at, slug): fixed-width UTC text, compared bytewise (the
        # columns' collation), so every store pages them in the same order
        article_columns = "slug, published_at, published, meta"
        self.article_exists = "SELECT true FROM articles WHERE slug = $1"
        self.put_article = (
            "INSERT INTO articles (slug, published_at, published, meta, paragraphs) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (slug) DO UPDATE SET published_at = excluded.published_at, published = excluded.published, "
            "meta = excluded.meta, paragraphs = excluded.paragraphs"
        )
        self.article = f"SELECT {article_columns}, paragraphs FROM articles WHERE slug = $1"
        self.set_article_published = "UPDATE articles SET published = $1, meta = $2 WHERE slug = $3 RETURNING true"
        newest_first = "ORDER BY published_at DESC, slug DESC"
        self.newest_articles = f"SELECT {article_columns} FROM articles {newest_first} LIMIT $1"
        self.articles_before = (
            f"SELECT {article_columns} FROM articles WHERE (published_at, slug) < ($1, $2) {newest_first} LIMIT $3"
        )

        # the event log, trimmed to the newest history_size events of each thread
        self.append_event = "INSERT INTO events (slug, seq, payload) VALUES ($1, $2, $3)"
        self.trim_events = "DELETE FROM events WHERE slug = $1 AND seq <= $2"
        self.oldest_event = "SELECT MIN(seq) FROM events WHERE slug = $1"
        self.events_after = "SELECT payload FROM events WHERE slug = $1 AND seq > $2 ORDER BY seq"
        self.dump_events = "SELECT seq, payload FROM events WHERE slug = $1 ORDER BY seq"
        self.load_event = (
            "INSERT INTO events (slug, seq, payload) VALUES ($1, $2, $3) "
            "ON CONFLICT (slug, seq) DO UPDATE SET payload = excluded.payload"
        )

        # kv: expiry is reckoned on the database's clock, so instances with skewed clocks agree
        unexpired = f"(expires_at IS NULL OR expires_at > {d.now})"
        upsert_kv = "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
        self.kv_get = f"SELECT value FROM kv WHERE key = $1 AND {unexpired}"
        self.kv_values = f"SELECT key, value FROM kv WHERE key {d.any_text.format('$1')} AND {unexpired}"
        self.kv_set = (
            f"INSERT INTO kv (key, value, expires_at) VALUES ($1, $2, {d.seconds_from_now.format('$3')}) {upsert_kv}"
        )
        self.kv_set_unless_present = (
            f"{self.kv_set} WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= {d.now} RETURNING true"
        )
        self.kv_delete = "DELETE FROM kv WHERE key = $1"
        self.kv_purge = (  # the oldest expired rows, a few at a time (kv_by_expiry finds them)
            f"DELETE FROM kv WHERE key IN (SELECT key FROM kv WHERE expires_at <= {d.now} ORDER BY expires_at LIMIT $1)"
        )
        self.dump_kv = (
            f"SELECT key, value, {d.to_unix.format('expires_at')} AS expires_at FROM kv "
            f"WHERE {unexpired} ORDER BY key COLLATE {d.bytewise}"
        )
        self.load_kv = (
            f"INSERT INTO kv (key, value, expires_at) VALUES ($1, $2, {d.from_unix.format('$3')}) {upsert_kv}"
        )

        # sets and lists
        self.set_add = "INSERT INTO sets (key, member) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        self.set_remove = "DELETE FROM sets WHERE key = $1 AND member = $2"
        self.set_members = "SELECT member FROM sets WHERE key = $1"
        self.dump_sets = f"SELECT key, member FROM sets ORDER BY key COLLATE {d.bytewise}, member COLLATE {d.bytewise}"
        self.list_push = "INSERT INTO lists (key, value) VALUES ($1, $2)"
        self.list_trim = (
            "DELETE FROM lists WHERE key = $1 AND n NOT IN "
            "(SELECT n FROM lists WHERE key = $1 ORDER BY n DESC LIMIT $2)"
        )
        self.list_newest = "SELECT value FROM lists WHERE key = $1 ORDER BY n DESC LIMIT $2"
        self.list_all = "SELECT value FROM lists WHERE key = $1 ORDER BY n DESC"
        self.lists_all = f"SELECT key, value FROM lists WHERE key {d.any_text.format('$1')} ORDER BY n DESC"
        self.list_delete = "DELETE FROM lists WHERE key = $1"
        self.dump_lists = f"SELECT key, value FROM lists ORDER BY key COLLATE {d.bytewise}, n"

        # schema versions (the migrations themselves are per dialect, in migrations.py)
        self.schema_version = "SELECT COALESCE(MAX(version), 0) FROM schema_version"
        self.record_migration = "INSERT INTO schema_version (version) VALUES ($1)"


class Session(ABC):
    """One connection, for the length of one operation: the statements, and the transactions,
    which are what differs between the two databases."""

    queries: Queries

    @abstractmethod
    async def fetch(self, query: str, *args: object) -> list[Row]: ...

    @abstractmethod
    async def fetchrow(self, query: str, *args: object) -> Row | None: ...

    @abstractmethod
    async def fetchval(self, query: str, *args: object) -> Any: ...

    @abstractmethod
    async def execute(self, query: str, *args: object) -> None: ...

    @abstractmethod
    async def executemany(self, query: str, args: Iterable[Sequence[object]]) -> None: ...

    @abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A write transaction: committed when the block ends, rolled back if it raises."""

    @abstractmethod
    def writing(self, slug: str) -> contextlib.AbstractAsyncContextManager[Head]:
        """A write transaction in which the writers of this thread, from every instance, take
        turns (so its seq is assigned without races); yields the thread's head (read with
        queries.head, and head_of) as the transaction found it. Raises NotFound when there is
        no such thread."""

    @abstractmethod
    def consistent_read(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Reads that see one committed state (a head and the log after it)."""

    @abstractmethod
    def migrating(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A transaction that no other instance migrates in at the same time, with the
        schema_version table present."""


def run_without_suspending(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that awaits nothing which suspends (an operation on SQLite's session)
    to its end, here, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    coroutine.close()
    raise RuntimeError("a store operation awaited something other than its session")


def operation(
    body: Callable[Concatenate[S, Session, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """A store method that runs on one session; called without it."""

    @functools.wraps(body)
    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run(lambda db: body(self, db, *args, **kwargs))

    return run


def head_of(row: Row | None) -> Head:
    """A thread's head from a queries.head row (None: NotFound)."""
    if row is None:
        raise NotFound("No such article.")
    return Head(row["seq"], row["epoch"], _state(row))


def _state(row: Row) -> ThreadState:
    return ThreadState(row["state"], row["state_by"], row["state_at"])


def _comment(row: Row) -> Comment:
    record = dict(row)
    record.pop("ref_key", None)  # read along by dump_thread
    return Comment(**{**record, "staff": bool(record["staff"])})  # SQLite keeps booleans as 0 / 1


def _article(row: Row) -> StoredArticle:
    record = dict(row)
    return StoredArticle(**{**record, "published": bool(record["published"])})  # SQLite: 0 / 1


class SqlStore(Store, ABC):
    """The store logic both SQL databases share: see the module's docstring."""

    history_size: int

    @abstractmethod
    async def run(self, operation: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
        """operation(session) on one session of this store (SQLite: one hop to its thread)."""

    # --- writes ---

    async def ensure_thread(self, slug: str, seeds: Sequence[Comment]) -> None:
        if await self._create_thread(slug):
            return
        for seed in seeds:  # fixed ids and ref keys: an import cut short (or run twice at once) adds no doubles
            await self.post(seed, f"seed:{seed.id}")
        await self._mark_seeded(slug)

    @operation
    async def _create_thread(self, db: Session, slug: str) -> bool:
        """Create the thread if new; whether its seeds are already imported."""
        await db.execute(db.queries.create_thread, slug, secrets.token_hex(8))
        return bool(await db.fetchval(db.queries.thread_seeded, slug))

    @operation
    async def _mark_seeded(self, db: Session, slug: str) -> None:
        await db.execute(db.queries.mark_seeded, slug)

    @operation
    async def post(self, db: Session, comment: Comment, ref_key: str | None) -> Written:
        q = db.queries
        async with db.writing(comment.slug) as head:
            epoch = head.epoch
            if ref_key is not None and (earlier := await self._by_ref(db, ref_key)) is not None:
                return Written(earlier, None, epoch, created=False)
            if not head.state.open:
                raise Closed.because(head.state.name)
            if comment.parent is not None and not await db.fetchval(q.comment_exists, comment.parent, comment.slug):
                raise NotFound("The comment you are replying to does not exist.")
            event = None
            stored = comment
            if comment.status != PENDING:  # a pending comment is no event until it is approved
                stored = comment.with_seq(await db.fetchval(q.next_seq, comment.slug))
                event = comment_event(stored)
                await self._append(db, stored.slug, event)
            record = stored.record()
            await db.execute(q.insert_comment, *(record[c] for c in COMMENT_COLUMNS), ref_key)
        return Written(stored, event, epoch)

    @operation
    async def set_status(
        self, db: Session, slug: str, comment_id: str, status: str, moderator: str | None, at: str
    ) -> Written:
        q = db.queries
        async with db.writing(slug) as head:
            epoch = head.epoch
            row = await db.fetchrow(q.comment, comment_id, slug)
            if row is None:
                raise NotFound("No such comment.")
            before = _comment(row)
            changed, kind = status_change(before, status, moderator, at)
            if changed is None:
                return Written(before, None, epoch)
            event = None
            if kind is not None:
                seq = await db.fetchval(q.next_seq, slug)
                if kind == "comment":  # approval: the comment is published now, with this seq
                    changed = changed.with_seq(seq)
                event = status_event(kind, seq, changed)
                await self._append(db, slug, event)
            await db.execute(
                q.set_status, changed.status, changed.removed_by, changed.removed_at, changed.seq, comment_id
            )
        return Written(changed, event, epoch)

    @operation
    async def set_thread_state(
        self, db: Session, slug: str, state: str, by: str, at: str, expect: ThreadState | None = None
    ) -> StateWritten:
        async with db.writing(slug) as head:
            after = state_change(head.state, state, by, at, expect)
            if after is None:
                return StateWritten(head.state, None, head.epoch)
            event = state_event(await db.fetchval(db.queries.next_seq, slug), after)
            await self._append(db, slug, event)
            await db.execute(db.queries.set_state, after.name, after.by, after.at, slug)
        return StateWritten(after, event, head.epoch)

    @operation
    async def change_comment(
        self, db: Session, slug: str, comment_id: str, kind: str, change: Callable[[Comment], Comment]
    ) -> Written:
        q = db.queries
        async with db.writing(slug) as head:
            row = await db.fetchrow(q.comment, comment_id, slug)
            if row is None:
                raise NotFound("No such comment.")
            if not head.state.open:
                raise Closed.because(head.state.name)
            after = change(_comment(row))
            event = change_event(kind, await db.fetchval(q.next_seq, slug), after)
            await self._append(db, slug, event)
            await db.execute(q.change_comment, after.body, after.html, after.status, after.edited_at, comment_id)
        return Written(after, event, head.epoch)

    @operation
    async def vote(self, db: Session, slug: str, comment_id: str, voter: str, up: bool) -> int:
        q = db.queries
        async with db.writing(slug) as head:
            if not head.state.open:
                raise Closed.because(head.state.name)
            if not await db.fetchval(q.visible_comment, comment_id, slug, VISIBLE):
                raise NotFound("No such comment.")
            if up:
                changed = await db.fetchval(q.add_vote, comment_id, voter, slug)
            else:
                changed = await db.fetchval(q.remove_vote, comment_id, voter)
            if not changed:  # voted so already: the count stands
                count: int = await db.fetchval(q.vote_count, comment_id)
                return count
            count = await db.fetchval(q.count_vote, 1 if up else -1, comment_id)
            return count

    @operation
    async def vote_counts(self, db: Session, slug: str, comment_ids: Sequence[str]) -> dict[str, int]:
        return {row["id"]: row["votes"] for row in await db.fetch(db.queries.vote_counts, slug, list(comment_ids))}

    @operation
    async def votes_by(self, db: Session, slug: str, voter: str) -> set[str]:
        return {row["comment_id"] for row in await db.fetch(db.queries.votes_by, slug, voter)}

    async def _append(self, db: Session, slug: str, event: Event) -> None:
        await db.execute(db.queries.append_event, slug, event.seq, encode(event))
        await db.execute(db.queries.trim_events, slug, event.seq - self.history_size)

    # --- reads ---

    @operation
    async def get_comment(self, db: Session, slug: str, comment_id: str) -> Comment | None:
        row = await db.fetchrow(db.queries.comment, comment_id, slug)
        return _comment(row) if row is not None else None

    async def get_comments(self, refs: Sequence[tuple[str, str]]) -> list[Comment]:
        if not refs:
            return []
        rows = await self._comments_by_id(list(dict.fromkeys(comment_id for _slug, comment_id in refs)))
        found = {(c.slug, c.id): c for c in map(_comment, rows)}
        return [found[ref] for ref in refs if ref in found]

    @operation
    async def _comments_by_id(self, db: Session, ids: list[str]) -> list[Row]:
        return await db.fetch(db.queries.comments_by_id, ids)

    @operation
    async def comment_by_ref(self, db: Session, slug: str, ref_key: str) -> Comment | None:
        return await self._by_ref(db, ref_key)

    async def _by_ref(self, db: Session, ref_key: str) -> Comment | None:
        row = await db.fetchrow(db.queries.comment_by_ref, ref_key)
        return _comment(row) if row is not None else None

    async def _head(self, db: Session, slug: str) -> Head:
        return head_of(await db.fetchrow(db.queries.head, slug))

    @operation
    async def head(self, db: Session, slug: str) -> Head:
        return await self._head(db, slug)

    @operation
    async def heads(self, db: Session, slugs: Sequence[str]) -> dict[str, Head]:
        rows = await db.fetch(db.queries.heads, list(slugs))
        return {row["slug"]: head_of(row) for row in rows}

    @operation
    async def snapshot(self, db: Session, slug: str) -> Snapshot:
        async with db.consistent_read():
            head = await self._head(db, slug)
            rows = await db.fetch(db.queries.thread_comments, slug)
        return Snapshot(seq=head.seq, epoch=head.epoch, comments=[_comment(r) for r in rows], state=head.state)

    @operation
    async def comment_page(
        self, db: Session, slug: str, parent: str | None, newest_first: bool, after: int | None, limit: int
    ) -> CommentPage:
        query = getattr(
            db.queries, f"page_{'top' if parent is None else 'replies'}_{'newest' if newest_first else 'oldest'}"
        )
        start = after if after is not None else (2**62 if newest_first else 0)
        return await self._page(db, slug, parent, after is None, limit, query, start, limit + 1)

    @operation
    async def top_page(
        self, db: Session, slug: str, parent: str | None, after: tuple[int, int] | None, limit: int
    ) -> CommentPage:
        query = db.queries.page_top_most_voted if parent is None else db.queries.page_replies_most_voted
        votes, seq = after if after is not None else (2**31 - 1, 2**62)  # votes: a 32-bit column
        return await self._page(db, slug, parent, after is None, limit, query, votes, seq, limit + 1)

    async def _page(
        self, db: Session, slug: str, parent: str | None, first: bool, limit: int, query: str, *args: object
    ) -> CommentPage:
        """One page by `query` (slug, then args, then the parent when there is one), with its reply
        counts, and on the first page the held comments."""
        q = db.queries
        async with db.consistent_read():
            rows = await db.fetch(query, slug, *args, *(() if parent is None else (parent,)))
            page = [_comment(r) for r in rows[:limit]]
            counts = await db.fetch(q.reply_counts, slug, [c.id for c in page]) if page else []
            held = []
            if first:
                held_rows = await (
                    db.fetch(q.held_top, slug, PENDING)
                    if parent is None
                    else db.fetch(q.held_replies, slug, PENDING, parent)
                )
                held = [_comment(r) for r in held_rows]
        return CommentPage(page, len(rows) > limit, {r["parent"]: r["n"] for r in counts}, held)

    @operation
    async def events_since(self, db: Session, slug: str, since: int) -> list[Event] | None:
        async with db.consistent_read():
            head = await self._head(db, slug)
            if since > head.seq or since < 0:
                return None
            if since == head.seq:
                return []
            oldest = await db.fetchval(db.queries.oldest_event, slug)
            if oldest is None or since < oldest - 1:
                return None
            rows = await db.fetch(db.queries.events_after, slug, since)
        return [decode_event(r["payload"]) for r in rows]

    @operation
    async def comment_counts(self, db: Session, slugs: Sequence[str]) -> dict[str, int]:
        # A hidden thread shows readers no comments, so it counts none on an index page either.
        rows = await db.fetch(db.queries.visible_counts, VISIBLE, list(slugs), HIDDEN)
        return {row["slug"]: row["n"] for row in rows}

    @operation
    async def thread_states(self, db: Session, slugs: Sequence[str]) -> dict[str, ThreadState]:
        return {row["slug"]: _state(row) for row in await db.fetch(db.queries.states, list(slugs))}

    # --- articles ---

    @operation
    async def put_article(self, db: Session, article: StoredArticle) -> bool:
        q = db.queries
        async with db.transaction():
            # Two first PUTs of one slug at once may both answer "created"; the article is one.
            new = not await db.fetchval(q.article_exists, article.slug)
            await db.execute(
                q.put_article,
                article.slug,
                article.published_at,
                article.published,
                article.meta,
                article.paragraphs or "[]",
            )
        return new

    @operation
    async def get_article(self, db: Session, slug: str) -> StoredArticle | None:
        row = await db.fetchrow(db.queries.article, slug)
        return _article(row) if row is not None else None

    @operation
    async def set_article_published(self, db: Session, slug: str, published: bool, meta: str) -> bool:
        return bool(await db.fetchval(db.queries.set_article_published, published, meta, slug))

    @operation
    async def article_summaries(self, db: Session, before: tuple[str, str] | None, limit: int) -> list[StoredArticle]:
        if before is None:
            rows = await db.fetch(db.queries.newest_articles, limit)
        else:
            rows = await db.fetch(db.queries.articles_before, *before, limit)
        return [_article(row) for row in rows]

    # --- moderation records (accounts, bans, reports, audit, sessions): they last, so they are here ---

    @operation
    async def kv_get(self, db: Session, key: str) -> str | None:
        value: str | None = await db.fetchval(db.queries.kv_get, key)
        return value

    @operation
    async def kv_set(
        self, db: Session, key: str, value: str, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        if ttl is not None:
            # Each expiring row written removes up to PURGE_BATCH that have expired, so they
            # never pile up (reads already ignore them), at a bounded cost per write.
            await db.execute(db.queries.kv_purge, PURGE_BATCH)
        if not only_if_absent:
            await db.execute(db.queries.kv_set, key, value, ttl)
            return True
        return bool(await db.fetchval(db.queries.kv_set_unless_present, key, value, ttl))

    @operation
    async def kv_delete(self, db: Session, key: str) -> None:
        await db.execute(db.queries.kv_delete, key)

    @operation
    async def set_add(self, db: Session, key: str, member: str) -> None:
        await db.execute(db.queries.set_add, key, member)

    @operation
    async def set_remove(self, db: Session, key: str, member: str) -> None:
        await db.execute(db.queries.set_remove, key, member)

    @operation
    async def set_members(self, db: Session, key: str) -> set[str]:
        return {row["member"] for row in await db.fetch(db.queries.set_members, key)}

    @operation
    async def list_push(self, db: Session, key: str, value: str, keep: int) -> None:
        async with db.transaction():
            await db.execute(db.queries.list_push, key, value)
            await db.execute(db.queries.list_trim, key, keep)

    @operation
    async def list_range(self, db: Session, key: str, count: int | None = None) -> list[str]:
        return await self._list_range(db, key, count)

    async def _list_range(self, db: Session, key: str, count: int | None) -> list[str]:
        if count is None:
            rows = await db.fetch(db.queries.list_all, key)
        else:
            rows = await db.fetch(db.queries.list_newest, key, count)
        return [row["value"] for row in rows]

    @operation
    async def read_records(
        self, db: Session, kv_keys: Sequence[str], lists: Sequence[tuple[str, int]]
    ) -> tuple[list[str | None], list[list[str]]]:
        # One operation, so a post's checks take the pool once, not once per record.
        values = {row["key"]: row["value"] for row in await db.fetch(db.queries.kv_values, list(kv_keys))}
        return [values.get(key) for key in kv_keys], [await self._list_range(db, key, count) for key, count in lists]

    @operation
    async def list_ranges(self, db: Session, keys: Sequence[str]) -> list[list[str]]:
        if not keys:
            return []
        lists: dict[str, list[str]] = {key: [] for key in keys}
        for row in await db.fetch(db.queries.lists_all, list(keys)):
            lists[row["key"]].append(row["value"])
        return [lists[key] for key in keys]

    # --- moving data ---

    @operation
    async def thread_slugs(self, db: Session) -> list[str]:
        return [row["slug"] for row in await db.fetch(db.queries.thread_slugs)]

    @operation
    async def dump_thread(self, db: Session, slug: str) -> ThreadDump:
        q = db.queries
        async with db.consistent_read():
            head = await db.fetchrow(q.dump_head, slug)
            if head is None:
                raise NotFound("No such article.")
            comments = await db.fetch(q.dump_comments, slug)
            events = await db.fetch(q.dump_events, slug)
            votes = await db.fetch(q.dump_votes, slug)
        return ThreadDump(
            slug,
            head["seq"],
            head["epoch"],
            bool(head["seeded"]),
            [{**_comment(row).record(), "ref_key": row["ref_key"]} for row in comments],
            [(row["seq"], row["payload"]) for row in events],
            _state(head),
            [(row["comment_id"], row["voter"]) for row in votes],
        )

    @operation
    async def load_thread(self, db: Session, thread: ThreadDump) -> None:
        q = db.queries
        async with db.transaction():
            state = thread.state
            await db.execute(
                q.load_head, thread.slug, thread.seq, thread.epoch, thread.seeded, state.name, state.by, state.at
            )
            await db.executemany(
                q.load_comment,
                [tuple({**_ADDED_LATER, **c}[column] for column in _STORED_COLUMNS) for c in thread.comments],
            )
            await db.executemany(q.load_event, [(thread.slug, seq, payload) for seq, payload in thread.events])
            await db.executemany(q.load_vote, [(comment_id, voter, thread.slug) for comment_id, voter in thread.votes])

    @operation
    async def dump_records(self, db: Session) -> list[Record]:
        q = db.queries
        async with db.consistent_read():
            kv = await db.fetch(q.dump_kv)
            sets: dict[str, list[str]] = {}
            for row in await db.fetch(q.dump_sets):
                sets.setdefault(row["key"], []).append(row["member"])
            lists: dict[str, list[str]] = {}
            for row in await db.fetch(q.dump_lists):
                lists.setdefault(row["key"], []).append(row["value"])
        return [
            *(Record("kv", row["key"], row["value"], row["expires_at"]) for row in kv),
            *(Record("set", key, members) for key, members in sets.items()),
            *(Record("list", key, items) for key, items in lists.items()),
        ]

    @operation
    async def load_records(self, db: Session, records: Sequence[Record]) -> None:
        q = db.queries
        async with db.transaction():
            for record in records:
                if record.kind == "kv":
                    await db.execute(q.load_kv, record.key, record.value, record.expires_at)
                elif record.kind == "set":
                    await db.executemany(q.set_add, [(record.key, member) for member in record.value])
                else:
                    await db.execute(q.list_delete, record.key)
                    await db.executemany(q.list_push, [(record.key, item) for item in record.value])


async def migrate(db: Session, steps: Sequence[Sequence[str]]) -> int:
    """Run the migrations this database lacks, each in the transaction that records it.
    Returns the schema version."""
    async with db.migrating():
        version = await db.fetchval(db.queries.schema_version)
        if version > len(steps):
            raise SchemaTooNew(version, len(steps))
        for number, statements in enumerate(steps[version:], version + 1):
            for statement in statements:
                await db.execute(statement)
            await db.execute(db.queries.record_migration, number)
    return len(steps)
