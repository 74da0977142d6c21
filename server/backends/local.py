"""The embedded store and bus: one SQLite file, fan-out within this process. One instance only.

All database work runs on a single dedicated thread, which serialises writes (so the seq is
assigned without races) and keeps the event loop free while SQLite commits; each operation is
one hop to that thread and back.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from limits.aio.storage import MemoryStorage

from ..comments import PENDING, VISIBLE, Comment, Head, Snapshot, comment_event, status_change, status_event
from ..errors import NotFound
from ..protocol import Event, decode_event, encode
from . import migrations
from .base import Backend, Bus, Record, Store, ThreadDump, Written

T = TypeVar("T")

_COLUMNS = (
    "id, slug, parent, name, about, body, html, created_at, status, reader_id, seq, removed_by, removed_at, ip, staff"
)


def _row_to_comment(row: sqlite3.Row) -> Comment:
    record = dict(zip(row.keys(), row, strict=True))
    record.pop("ref_key", None)  # read along by dump_thread
    return Comment(**{**record, "staff": bool(record["staff"])})  # SQLite keeps booleans as 0 / 1


def LocalBackend(path: Path, history_size: int = 1000) -> Backend:
    """The one-command default: SQLite store, in-process bus."""
    return Backend(SqliteStore(path, history_size), MemoryBus())


def migrate(db: sqlite3.Connection) -> int:
    """Run the migrations this database lacks, each in the transaction that records it.
    Returns the schema version."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (datetime('now')))"
    )
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        if version > len(migrations.SQLITE):
            raise migrations.SchemaTooNew(version, len(migrations.SQLITE))
        for number, statements in enumerate(migrations.SQLITE[version:], version + 1):
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(migrations.SQLITE)


class SqliteStore(Store):
    def __init__(self, path: Path, history_size: int = 1000) -> None:
        self.path = Path(path)
        self.history_size = history_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
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

    async def post(self, comment: Comment, ref_key: str | None) -> Written:
        return await self._run(self._post, comment, ref_key)

    def _post(self, comment: Comment, ref_key: str | None) -> Written:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            if ref_key is not None and (earlier := self._comment_by_ref(ref_key)) is not None:
                db.execute("ROLLBACK")
                return Written(earlier, None, self._head(earlier.slug).epoch, created=False)
            if (
                comment.parent is not None
                and db.execute(
                    "SELECT 1 FROM comments WHERE id = ? AND slug = ?", (comment.parent, comment.slug)
                ).fetchone()
                is None
            ):
                raise NotFound("The comment you are replying to does not exist.")
            head = self._head(comment.slug)
            event = None
            stored = comment
            if comment.status != PENDING:  # a pending comment is no event until it is approved
                stored = comment.with_seq(self._next_seq(comment.slug))
                event = comment_event(stored)
                self._append(stored.slug, event)
            record = stored.record()
            db.execute(
                f"INSERT INTO comments ({_COLUMNS}, ref_key) VALUES ({', '.join('?' * 16)})",
                (*(record[c] for c in _COLUMNS.split(", ")), ref_key),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Written(stored, event, head.epoch)

    def _next_seq(self, slug: str) -> int:
        assert self._db is not None
        seq: int = self._db.execute(
            "UPDATE threads SET seq = seq + 1 WHERE slug = ? RETURNING seq", (slug,)
        ).fetchone()[0]
        return seq

    async def set_status(self, slug: str, comment_id: str, status: str, moderator: str | None, at: str) -> Written:
        return await self._run(self._set_status, slug, comment_id, status, moderator, at)

    def _set_status(self, slug: str, comment_id: str, status: str, moderator: str | None, at: str) -> Written:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM comments WHERE id = ? AND slug = ?", (comment_id, slug)
            ).fetchone()
            if row is None:
                raise NotFound("No such comment.")
            before = _row_to_comment(row)
            changed, kind = status_change(before, status, moderator, at)
            if changed is None:
                db.execute("ROLLBACK")
                return Written(before, None, self._head(slug).epoch)
            event = None
            if kind is not None:
                seq = self._next_seq(slug)
                if kind == "comment":  # approval: the comment is published now, with this seq
                    changed = changed.with_seq(seq)
                event = status_event(kind, seq, changed)
                self._append(slug, event)
            db.execute(
                "UPDATE comments SET status = ?, removed_by = ?, removed_at = ?, seq = ? WHERE id = ?",
                (changed.status, changed.removed_by, changed.removed_at, changed.seq, comment_id),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Written(changed, event, self._head(slug).epoch)

    def _append(self, slug: str, event: Event) -> None:
        assert self._db is not None
        self._db.execute("INSERT INTO events (slug, seq, payload) VALUES (?, ?, ?)", (slug, event.seq, encode(event)))
        self._db.execute("DELETE FROM events WHERE slug = ? AND seq <= ?", (slug, event.seq - self.history_size))

    # --- reads ---

    async def get_comment(self, slug: str, comment_id: str) -> Comment | None:
        rows = await self._run(
            self._query, f"SELECT {_COLUMNS} FROM comments WHERE id = ? AND slug = ?", (comment_id, slug)
        )
        return _row_to_comment(rows[0]) if rows else None

    async def get_comments(self, refs: Sequence[tuple[str, str]]) -> list[Comment]:
        if not refs:
            return []
        wanted = set(refs)
        rows = await self._run(
            self._query,
            f"SELECT {_COLUMNS} FROM comments WHERE id IN ({', '.join('?' * len(wanted))})",
            tuple(comment_id for _slug, comment_id in wanted),
        )
        found = {(c.slug, c.id): c for c in map(_row_to_comment, rows)}
        return [found[ref] for ref in refs if ref in found]

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
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM comments WHERE slug = ? ORDER BY seq IS NULL, seq, created_at", (slug,)
        ).fetchall()
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
        rows = self._db.execute(
            "SELECT payload FROM events WHERE slug = ? AND seq > ? ORDER BY seq", (slug, since)
        ).fetchall()
        return [decode_event(r[0]) for r in rows]

    async def comment_counts(self) -> dict[str, int]:
        return await self._run(self._comment_counts)

    def _comment_counts(self) -> dict[str, int]:
        assert self._db is not None
        rows = self._db.execute("SELECT slug, COUNT(*) FROM comments WHERE status = ? GROUP BY slug", (VISIBLE,))
        return dict(rows)

    # --- small shared state ---

    async def kv_get(self, key: str) -> str | None:
        return await self._run(self._kv_get, key)

    def _kv_get(self, key: str) -> str | None:
        assert self._db is not None
        row = self._db.execute(
            "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)", (key, time.time())
        ).fetchone()
        return row[0] if row else None

    async def kv_set(self, key: str, value: str, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        return await self._run(self._kv_set, key, value, ttl, only_if_absent)

    def _kv_set(self, key: str, value: str, ttl: float | None, only_if_absent: bool) -> bool:
        assert self._db is not None
        if only_if_absent and self._kv_get(key) is not None:
            return False
        expires = time.time() + ttl if ttl else None
        self._db.execute("INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)", (key, value, expires))
        return True

    async def kv_delete(self, key: str) -> None:
        await self._run(self._execute, "DELETE FROM kv WHERE key = ?", (key,))

    async def set_add(self, key: str, member: str) -> None:
        await self._run(self._execute, "INSERT OR IGNORE INTO sets (key, member) VALUES (?, ?)", (key, member))

    async def set_remove(self, key: str, member: str) -> None:
        await self._run(self._execute, "DELETE FROM sets WHERE key = ? AND member = ?", (key, member))

    async def set_members(self, key: str) -> set[str]:
        rows = await self._run(self._query, "SELECT member FROM sets WHERE key = ?", (key,))
        return {r[0] for r in rows}

    async def list_push(self, key: str, value: str, keep: int) -> None:
        await self._run(self._list_push, key, value, keep)

    def _list_push(self, key: str, value: str, keep: int) -> None:
        assert self._db is not None
        self._db.execute("INSERT INTO lists (key, value) VALUES (?, ?)", (key, value))
        self._db.execute(
            "DELETE FROM lists WHERE key = ? AND n NOT IN (SELECT n FROM lists WHERE key = ? ORDER BY n DESC LIMIT ?)",
            (key, key, keep),
        )

    async def list_range(self, key: str, count: int | None = None) -> list[str]:
        rows = await self._run(
            self._query,
            "SELECT value FROM lists WHERE key = ? ORDER BY n DESC LIMIT ?",
            (key, -1 if count is None else count),
        )
        return [r[0] for r in rows]

    async def list_ranges(self, keys: Sequence[str]) -> list[list[str]]:
        if not keys:
            return []
        rows = await self._run(
            self._query,
            f"SELECT key, value FROM lists WHERE key IN ({', '.join('?' * len(keys))}) ORDER BY n DESC",
            tuple(keys),
        )
        lists: dict[str, list[str]] = {key: [] for key in keys}
        for key, value in rows:
            lists[key].append(value)
        return [lists[key] for key in keys]

    # --- moving data ---

    async def thread_slugs(self) -> list[str]:
        return [r[0] for r in await self._run(self._query, "SELECT slug FROM threads ORDER BY slug", ())]

    async def dump_thread(self, slug: str) -> ThreadDump:
        return await self._run(self._dump_thread, slug)

    def _dump_thread(self, slug: str) -> ThreadDump:
        assert self._db is not None
        row = self._db.execute("SELECT seq, epoch, seeded FROM threads WHERE slug = ?", (slug,)).fetchone()
        if row is None:
            raise NotFound("No such article.")
        comments = [
            {**_row_to_comment(r).record(), "ref_key": r["ref_key"]}
            for r in self._db.execute(
                f"SELECT {_COLUMNS}, ref_key FROM comments WHERE slug = ? ORDER BY seq IS NULL, seq, created_at, id",
                (slug,),
            )
        ]
        events = self._db.execute("SELECT seq, payload FROM events WHERE slug = ? ORDER BY seq", (slug,)).fetchall()
        return ThreadDump(slug, row[0], row[1], bool(row[2]), comments, [(seq, payload) for seq, payload in events])

    async def load_thread(self, thread: ThreadDump) -> None:
        await self._run(self._load_thread, thread)

    def _load_thread(self, thread: ThreadDump) -> None:
        db = self._db
        assert db is not None
        columns = [*_COLUMNS.split(", "), "ref_key"]
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO threads (slug, seq, epoch, seeded) VALUES (?, ?, ?, ?) ON CONFLICT (slug) DO UPDATE "
                "SET seq = excluded.seq, epoch = excluded.epoch, seeded = excluded.seeded",
                (thread.slug, thread.seq, thread.epoch, int(thread.seeded)),
            )
            db.executemany(
                f"INSERT OR REPLACE INTO comments ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [tuple(record[c] for c in columns) for record in thread.comments],
            )
            db.executemany(
                "INSERT OR REPLACE INTO events (slug, seq, payload) VALUES (?, ?, ?)",
                [(thread.slug, seq, payload) for seq, payload in thread.events],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def dump_records(self) -> list[Record]:
        return await self._run(self._dump_records)

    def _dump_records(self) -> list[Record]:
        assert self._db is not None
        kv = self._db.execute(
            "SELECT key, value, expires_at FROM kv WHERE expires_at IS NULL OR expires_at > ? ORDER BY key",
            (time.time(),),
        )
        records = [Record("kv", key, value, expires_at) for key, value, expires_at in kv]
        sets: dict[str, list[str]] = {}
        for key, member in self._db.execute("SELECT key, member FROM sets ORDER BY key, member"):
            sets.setdefault(key, []).append(member)
        lists: dict[str, list[str]] = {}
        for key, value in self._db.execute("SELECT key, value FROM lists ORDER BY key, n"):
            lists.setdefault(key, []).append(value)
        return [
            *records,
            *(Record("set", key, members) for key, members in sets.items()),
            *(Record("list", key, items) for key, items in lists.items()),
        ]

    async def load_records(self, records: Sequence[Record]) -> None:
        await self._run(self._load_records, records)

    def _load_records(self, records: Sequence[Record]) -> None:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            for record in records:
                if record.kind == "kv":
                    db.execute(
                        "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
                        (record.key, record.value, record.expires_at),
                    )
                elif record.kind == "set":
                    db.executemany(
                        "INSERT OR IGNORE INTO sets (key, member) VALUES (?, ?)",
                        [(record.key, member) for member in record.value],
                    )
                else:
                    db.execute("DELETE FROM lists WHERE key = ?", (record.key,))
                    db.executemany(
                        "INSERT INTO lists (key, value) VALUES (?, ?)", [(record.key, item) for item in record.value]
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _execute(self, sql: str, args: tuple[object, ...]) -> None:
        assert self._db is not None
        self._db.execute(sql, args)

    def _query(self, sql: str, args: tuple[object, ...]) -> list[Any]:  # sqlite3 rows
        assert self._db is not None
        return self._db.execute(sql, args).fetchall()


class MemoryBus(Bus):
    """This process is the whole world: an event goes straight to this instance's Hub."""

    def __init__(self) -> None:
        super().__init__()
        self.rate_limit_storage = MemoryStorage()
        self._subscribed: set[str] = set()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def publish(self, slug: str, event: Event, epoch: str) -> None:
        if slug in self._subscribed:
            self.on_event(slug, event, epoch)

    async def subscribe(self, slug: str) -> None:
        self._subscribed.add(slug)

    async def unsubscribe(self, slug: str) -> None:
        self._subscribed.discard(slug)

    async def presence(self, slug: str, local_readers: int) -> int:
        return local_readers

    async def publish_control(self, message: str) -> None:
        asyncio.get_running_loop().call_soon(self.on_control, message)
