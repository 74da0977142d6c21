"""The embedded store and bus: one SQLite file, fan-out within this process. One instance only.

All database work runs on a single dedicated thread, which serialises writes (so the seq is
assigned without races) and keeps the event loop free while SQLite commits; each operation is
one hop to that thread and back. The queries and the store logic are sql.py's, shared with
PostgreSQL; what is here is only what SQLite does its own way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from limits.aio.storage import MemoryStorage

from ..comments import Head
from ..protocol import Event
from . import migrations, sql
from .base import Backend, Bus

T = TypeVar("T")

SQLITE = sql.Dialect(
    now="((julianday('now') - 2440587.5) * 86400.0)",  # unix seconds, as kv.expires_at holds them
    seconds_from_now="((julianday('now') - 2440587.5) * 86400.0 + {})",
    to_unix="{}",
    from_unix="{}",
    any_text="IN (SELECT value FROM json_each({}))",  # the list is bound as a JSON array
    bytewise="BINARY",
)


def LocalBackend(path: Path, history_size: int = 1000) -> Backend:
    """The one-command default: SQLite store, in-process bus."""
    return Backend(SqliteStore(path, history_size), MemoryBus())


@functools.lru_cache(maxsize=512)
def _sqlite_parameters(query: str) -> str:
    """`$N` → `?N`: SQLite's numbered parameter, bound to the N-th item of the arguments."""
    return re.sub(r"\$(\d+)", r"?\1", query)


def _bindable(args: Sequence[object]) -> tuple[object, ...]:
    return tuple(json.dumps(arg) if isinstance(arg, list) else arg for arg in args)


class SqliteSession(sql.Session):
    """The one connection, used only on the database thread. Nothing else runs on that thread
    while an operation does, so a write transaction needs no row lock: `BEGIN IMMEDIATE` takes
    the database's write lock at once (rather than at the first write), and a read sees one
    state without a transaction of its own."""

    queries = sql.Queries(SQLITE)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def _cursor(self, query: str, args: Sequence[object]) -> sqlite3.Cursor:
        return self.db.execute(_sqlite_parameters(query), _bindable(args))

    async def fetch(self, query: str, *args: object) -> list[Any]:
        return self._cursor(query, args).fetchall()

    async def fetchrow(self, query: str, *args: object) -> Any:
        return self._cursor(query, args).fetchone()

    async def fetchval(self, query: str, *args: object) -> Any:
        row = self._cursor(query, args).fetchone()
        return row[0] if row is not None else None

    async def execute(self, query: str, *args: object) -> None:
        self._cursor(query, args)

    async def executemany(self, query: str, args: Iterable[Sequence[object]]) -> None:
        self.db.executemany(_sqlite_parameters(query), (_bindable(row) for row in args))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def writing(self, slug: str) -> AsyncIterator[Head]:
        async with self.transaction():
            yield sql.head_of(await self.fetchrow(self.queries.head, slug))

    def consistent_read(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (datetime('now')))"
        )
        async with self.transaction():
            yield


class SqliteStore(sql.SqlStore):
    """All database work runs on one dedicated thread: see the module's docstring."""

    def __init__(self, path: Path, history_size: int = 1000) -> None:
        self.path = Path(path)
        self.history_size = history_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._session: SqliteSession | None = None

    async def run(self, operation: Callable[[sql.Session], Coroutine[Any, Any, T]]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run_here, operation)

    def _run_here(self, operation: Callable[[sql.Session], Coroutine[Any, Any, T]]) -> T:
        assert self._session is not None, "store not started"
        return sql.run_without_suspending(operation(self._session))

    # --- lifecycle ---

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

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
            sql.run_without_suspending(sql.migrate(SqliteSession(db), migrations.SQLITE))
        except BaseException:
            db.close()
            raise
        self._db, self._session = db, SqliteSession(db)

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
            self._db = self._session = None
        self._executor.shutdown(wait=True)

    async def ready(self) -> bool:
        return self._db is not None


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
