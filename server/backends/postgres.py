"""The PostgreSQL store: the system of record when several instances share one database.

Every write to a thread first locks that thread's row (`SELECT … FOR UPDATE`), so the writers
of one thread, from any instance, take turns: the seq is `seq + 1` of a row nobody else can
change until this transaction ends, and the comment, its event and the new seq commit together
or not at all. Seqs are therefore contiguous and gap-free across instances; writers of
different threads never wait for each other. A write is acknowledged only after COMMIT
returned; the Backend publishes it on the bus after that.

Reads that must agree with each other (a snapshot and its seq; a head and the log after it)
run in one REPEATABLE READ transaction, which sees a single committed state.

A lost or refused connection is `Unavailable` (503) at once, never a hang: connecting and every
command have timeouts, and the pool drops its connections after such an error, so the next
request connects afresh (after PostgreSQL restarts, the first one already succeeds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from ..comments import Comment, Head
from ..errors import Unavailable
from . import migrations, sql
from .base import Written

log = logging.getLogger("backchannel.postgres")

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
# How long an operation waits for a free connection when all are busy. Connecting has its own
# CONNECT_TIMEOUT and a dead server fails at once, so this bounds only waiting behind busy ones:
# under load a post waits its turn rather than fail half done (and be retried, doubling the work).
POOL_WAIT = COMMAND_TIMEOUT
# Two instances starting at once must not both run a migration: they queue on this lock.
_MIGRATION_LOCK = 0x6263_6D69  # "bcmi"

# What a dead, refused or restarting server raises; anything else is a bug and stays a 500.
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)

T = TypeVar("T")

POSTGRES = sql.Dialect(
    now="clock_timestamp()",
    seconds_from_now="clock_timestamp() + make_interval(secs => {}::float8)",
    to_unix="EXTRACT(EPOCH FROM {})::float8",
    from_unix="to_timestamp({}::float8)",
    any_text="= ANY({}::text[])",
    bytewise='"C"',
)


class PostgresSession(sql.Session):
    """A pooled connection, for one operation."""

    queries = sql.Queries(POSTGRES)

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def fetch(self, query: str, *args: object) -> list[Any]:
        rows: list[Any] = await self.connection.fetch(query, *args)
        return rows

    async def fetchrow(self, query: str, *args: object) -> Any:
        return await self.connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: object) -> Any:
        return await self.connection.fetchval(query, *args)

    async def execute(self, query: str, *args: object) -> None:
        await self.connection.execute(query, *args)

    async def executemany(self, query: str, args: Iterable[Sequence[object]]) -> None:
        await self.connection.executemany(query, args)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        transaction: contextlib.AbstractAsyncContextManager[None] = self.connection.transaction()
        return transaction

    @contextlib.asynccontextmanager
    async def writing(self, slug: str) -> AsyncIterator[Head]:
        async with self.connection.transaction():
            # The thread's row lock, held until this transaction ends: every writer of the thread waits here.
            yield sql.head_of(await self.connection.fetchrow(f"{self.queries.head} FOR UPDATE", slug))

    def consistent_read(self) -> contextlib.AbstractAsyncContextManager[None]:
        transaction: contextlib.AbstractAsyncContextManager[None] = self.connection.transaction(
            isolation="repeatable_read", readonly=True
        )
        return transaction

    @contextlib.asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        async with self.connection.transaction():
            await self.connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await self.connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            yield


class PostgresStore(sql.SqlStore):
    def __init__(self, url: str, history_size: int = 1000, pool_size: int = 10, slow_query_ms: float = 100.0) -> None:
        self.url = url
        self.history_size = history_size
        self.pool_size = pool_size
        self.slow_query_ms = slow_query_ms
        self._pool: asyncpg.Pool | None = None
        self._posts = asyncio.Semaphore(pool_size)  # posts under way: see admitting_post

    async def start(self) -> None:
        # min_size=0: connections are made when needed, so an outage logs no reconnect loop of its own.
        # asyncpg's own reset query runs as each connection goes back (one round trip): it is what
        # finds a connection left mid-protocol and drops it. Without it (tried) such a connection
        # went to the next caller, whose query failed with "another operation is in progress":
        # a 500, seen in about half the runs of the PostgreSQL-restart fault test.
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=0,
            max_size=self.pool_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            init=self._watch_slow_queries if self.slow_query_ms > 0 else None,
        )
        try:
            async with self._pool.acquire() as connection:
                await sql.migrate(PostgresSession(connection), migrations.POSTGRES)
        except BaseException:
            await self._pool.close()
            raise

    async def _watch_slow_queries(self, connection: asyncpg.Connection) -> None:
        connection.add_query_logger(self._log_if_slow)

    def _log_if_slow(self, query: asyncpg.connection.LoggedQuery) -> None:
        elapsed_ms = query.elapsed * 1000
        if elapsed_ms >= self.slow_query_ms:
            log.warning(
                "slow query: %.0f ms (SLOW_QUERY_MS=%g): %s",
                elapsed_ms,
                self.slow_query_ms,
                " ".join(query.query.split()),
            )

    async def close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await asyncio.wait_for(self._pool.close(), COMMAND_TIMEOUT)
            self._pool = None

    async def ready(self) -> bool:
        try:
            async with self._connection() as connection:
                return bool(await connection.fetchval("SELECT true"))
        except Unavailable:
            return False

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; a lost link becomes Unavailable."""
        assert self._pool is not None, "store not started"
        pool = self._pool
        try:
            connection = await pool.acquire(timeout=POOL_WAIT)
        except TimeoutError as exc:
            # Every connection busy for that long, or a server that does not answer: either way
            # no connection is known dead, and dropping them all under load (they were only
            # busy) would make every next operation connect afresh: a collapse, measured.
            raise Unavailable("Comments are unavailable for a moment; please retry.") from exc
        except _CONNECTION_ERRORS as exc:
            raise await self._lost(exc) from exc
        try:
            yield connection
        except _CONNECTION_ERRORS as exc:  # a command's timeout too: that connection is not reused
            raise await self._lost(exc) from exc
        finally:
            await pool.release(connection)

    async def _lost(self, exc: BaseException) -> Unavailable:
        # The others in the pool most likely died with it (a restart): reconnect them lazily.
        assert self._pool is not None
        await self._pool.expire_connections()
        return Unavailable("Comments are unavailable for a moment; please retry.")

    @contextlib.asynccontextmanager
    async def admitting_post(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._posts.acquire(), POOL_WAIT)
        except TimeoutError:
            raise Unavailable("Comments are unavailable for a moment; please retry.") from None
        try:
            yield
        finally:
            self._posts.release()

    async def run(self, operation: Callable[[sql.Session], Coroutine[Any, Any, T]]) -> T:
        async with self._connection() as connection:
            return await operation(PostgresSession(connection))

    async def post(self, comment: Comment, ref_key: str | None) -> Written:
        try:
            return await super().post(comment, ref_key)
        except asyncpg.UniqueViolationError:
            # The same ref was posted to another thread at the same moment (threads lock apart):
            # the first one won, and this is its retry.
            if ref_key is None or (earlier := await self.comment_by_ref(comment.slug, ref_key)) is None:
                raise
            return Written(earlier, None, (await self.head(earlier.slug)).epoch, created=False)
