"""The embedded backend: one SQLite file, fan-out within this process. One instance only.

All database work runs on a single dedicated thread, which serialises writes (so the seq is
assigned without races) and keeps the event loop free while SQLite commits. That thread
hands each committed event to the event loop with call_soon_threadsafe, which runs callbacks
in the order they were queued, so local delivery is in commit order.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..comments import VISIBLE, Comment, Head, Snapshot, comment_event
from ..errors import NotFound
from limits.aio.storage import MemoryStorage

from ..protocol import Event, decode_event, encode
from .base import Backend

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    slug   TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL DEFAULT 0,   -- the latest event's seq
    epoch  TEXT NOT NULL,                -- new whenever the thread's history starts afresh
    seeded INTEGER NOT NULL DEFAULT 0    -- the article's own comments have been imported
);
CREATE TABLE IF NOT EXISTS comments (
    id         TEXT PRIMARY KEY,
    slug       TEXT NOT NULL REFERENCES threads(slug),
    seq        INTEGER NOT NULL,
    parent     TEXT,
    name       TEXT NOT NULL,
    about      TEXT,
    body       TEXT NOT NULL,
    html       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    status     TEXT NOT NULL,
    reader_id  TEXT,
    ref_key    TEXT UNIQUE                -- reader + client ref: a retried post is stored once
);
CREATE INDEX IF NOT EXISTS comments_by_thread ON comments (slug, seq);
CREATE TABLE IF NOT EXISTS events (
    slug    TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    payload TEXT NOT NULL,               -- the event exactly as it goes on the wire
    PRIMARY KEY (slug, seq)
) WITHOUT ROWID;
"""

_COLUMNS = "id, slug, parent, name, about, body, html, created_at, status, reader_id, seq"


def _row_to_comment(row: sqlite3.Row) -> Comment:
    return Comment(**{key: row[key] for key in row.keys()})


class LocalBackend(Backend):
    def __init__(self, path: Path, history_size: int = 1000) -> None:
        super().__init__()
        self.path = Path(path)
        self.history_size = history_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribed: set[str] = set()
        self.rate_limit_storage = MemoryStorage()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        assert self._loop is not None, "backend not started"
        return await self._loop.run_in_executor(self._executor, fn, *args)

    # --- lifecycle ---

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        # WAL + NORMAL: a commit survives a process crash (the WAL is in the page cache);
        # only a power cut can lose the last transactions.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def ready(self) -> bool:
        return self._db is not None

    # --- writes (on the database thread) ---

    async def ensure_thread(self, slug: str, seeds: Sequence[Comment]) -> None:
        await self._run(self._ensure_thread, slug, seeds)

    def _ensure_thread(self, slug: str, seeds: Sequence[Comment]) -> None:
        assert self._db is not None
        self._db.execute("INSERT OR IGNORE INTO threads (slug, epoch) VALUES (?, ?)", (slug, secrets.token_hex(8)))
        seeded = self._db.execute("SELECT seeded FROM threads WHERE slug = ?", (slug,)).fetchone()[0]
        if seeded:
            return
        for seed in seeds:  # seed ids are fixed, so a half-finished import resumes without doubles
            self._post(seed, f"seed:{seed.id}")
        self._db.execute("UPDATE threads SET seeded = 1 WHERE slug = ?", (slug,))

    async def post(self, comment: Comment, ref_key: str | None) -> tuple[Comment, bool]:
        return await self._run(self._post, comment, ref_key)

    def _post(self, comment: Comment, ref_key: str | None) -> tuple[Comment, bool]:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            if ref_key is not None and (earlier := self._comment_by_ref(ref_key)) is not None:
                db.execute("ROLLBACK")
                return earlier, False
            if comment.parent is not None and db.execute(
                    "SELECT 1 FROM comments WHERE id = ? AND slug = ?", (comment.parent, comment.slug)).fetchone() is None:
                raise NotFound("The comment you are replying to does not exist.")
            row = db.execute("UPDATE threads SET seq = seq + 1 WHERE slug = ? RETURNING seq", (comment.slug,)).fetchone()
            if row is None:
                raise NotFound("No such article.")
            stored = comment.with_seq(row[0])
            db.execute(
                f"INSERT INTO comments ({_COLUMNS}, ref_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (stored.id, stored.slug, stored.parent, stored.name, stored.about, stored.body, stored.html,
                 stored.created_at, stored.status, stored.reader_id, stored.seq, ref_key))
            event = comment_event(stored)
            self._append(stored.slug, event)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._publish(stored.slug, event)
        return stored, True

    def _append(self, slug: str, event: Event) -> None:
        assert self._db is not None
        self._db.execute("INSERT INTO events (slug, seq, payload) VALUES (?, ?, ?)", (slug, event.seq, encode(event)))
        self._db.execute("DELETE FROM events WHERE slug = ? AND seq <= ?", (slug, event.seq - self.history_size))

    def _publish(self, slug: str, event: Event) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, slug, event)

    def _deliver(self, slug: str, event: Event) -> None:
        if slug in self._subscribed:
            self.on_event(slug, event, None)

    # --- reads ---

    async def comment_by_ref(self, slug: str, ref_key: str) -> Comment | None:
        return await self._run(self._comment_by_ref, ref_key)

    def _comment_by_ref(self, ref_key: str) -> Comment | None:
        assert self._db is not None
        row = self._db.execute(f"SELECT {_COLUMNS} FROM comments WHERE ref_key = ?", (ref_key,)).fetchone()
        return _row_to_comment(row) if row is not None else None

    async def snapshot(self, slug: str) -> Snapshot:
        return await self._run(self._snapshot, slug)

    def _snapshot(self, slug: str) -> Snapshot:
        assert self._db is not None
        head = self._head(slug)  # one thread does every write, so nothing changes between these reads
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM comments WHERE slug = ? ORDER BY seq", (slug,)).fetchall()
        return Snapshot(seq=head.seq, epoch=head.epoch, comments=[_row_to_comment(r) for r in rows])

    async def head(self, slug: str) -> Head:
        return await self._run(self._head, slug)

    def _head(self, slug: str) -> Head:
        assert self._db is not None
        row = self._db.execute("SELECT seq, epoch FROM threads WHERE slug = ?", (slug,)).fetchone()
        if row is None:
            raise NotFound("No such article.")
        return Head(seq=row[0], epoch=row[1])

    async def events_since(self, slug: str, since: int) -> list[Event] | None:
        return await self._run(self._events_since, slug, since)

    def _events_since(self, slug: str, since: int) -> list[Event] | None:
        assert self._db is not None
        head = self._head(slug)
        if since > head.seq or since < 0:
            return None
        if since == head.seq:
            return []
        oldest = self._db.execute("SELECT MIN(seq) FROM events WHERE slug = ?", (slug,)).fetchone()[0]
        if oldest is None or since < oldest - 1:
            return None
        rows = self._db.execute("SELECT payload FROM events WHERE slug = ? AND seq > ? ORDER BY seq",
                                (slug, since)).fetchall()
        return [decode_event(r[0]) for r in rows]

    async def comment_counts(self) -> dict[str, int]:
        return await self._run(self._comment_counts)

    def _comment_counts(self) -> dict[str, int]:
        assert self._db is not None
        rows = self._db.execute("SELECT slug, COUNT(*) FROM comments WHERE status = ? GROUP BY slug", (VISIBLE,))
        return {slug: count for slug, count in rows}

    # --- fan-out and presence: this process is the whole world ---

    async def subscribe(self, slug: str) -> None:
        self._subscribed.add(slug)

    async def unsubscribe(self, slug: str) -> None:
        self._subscribed.discard(slug)

    async def presence(self, slug: str, local_readers: int) -> int:
        return local_readers
