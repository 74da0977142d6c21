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
import secrets
from collections.abc import AsyncIterator, Sequence

import asyncpg

from ..comments import PENDING, VISIBLE, Comment, Head, Snapshot, comment_event, status_change, status_event
from ..errors import NotFound, Unavailable
from ..protocol import Event, decode_event, encode
from . import migrations
from .base import Record, Store, ThreadDump, Written

log = logging.getLogger("backchannel.postgres")

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
_COLUMNS = (
    "id, slug, parent, name, about, body, html, created_at, status, reader_id, seq, removed_by, removed_at, ip, staff"
)
_PLACEHOLDERS = ", ".join(f"${n}" for n in range(1, 16))
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


def _comment(row: asyncpg.Record) -> Comment:
    return Comment(**dict(row))


async def migrate(connection: asyncpg.Connection) -> int:
    """Run the migrations this database lacks, each in the transaction that records it.
    Returns the schema version."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = await connection.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        if version > len(migrations.POSTGRES):
            raise migrations.SchemaTooNew(version, len(migrations.POSTGRES))
        for number, statements in enumerate(migrations.POSTGRES[version:], version + 1):
            for statement in statements:
                await connection.execute(statement)
            await connection.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
    return len(migrations.POSTGRES)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What the pool does to a connection given back (after rolling back a transaction left
    open): nothing more. asyncpg's default sends `RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()`, a round trip per acquire (nine per post), to undo session state
    this store never makes: no SET, no LISTEN, no cursor outside a transaction, and only
    transaction-scoped advisory locks."""


class PostgresStore(Store):
    def __init__(self, url: str, history_size: int = 1000, pool_size: int = 10, slow_query_ms: float = 100.0) -> None:
        self.url = url
        self.history_size = history_size
        self.pool_size = pool_size
        self.slow_query_ms = slow_query_ms
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        # min_size=0: connections are made when needed, so an outage logs no reconnect loop of its own.
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=0,
            max_size=self.pool_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            init=self._watch_slow_queries if self.slow_query_ms > 0 else None,
            reset=_keep_session,
        )
        try:
            async with self._pool.acquire() as connection:
                await migrate(connection)
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
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as connection:
                yield connection
        except _CONNECTION_ERRORS as exc:
            # The others in the pool most likely died with it (a restart): reconnect them lazily.
            await self._pool.expire_connections()
            raise Unavailable("Comments are unavailable for a moment; please retry.") from exc

    @contextlib.asynccontextmanager
    async def _consistent_read(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._connection() as connection, connection.transaction(isolation="repeatable_read", readonly=True):
            yield connection

    # --- writes ---

    async def ensure_thread(self, slug: str, seeds: Sequence[Comment]) -> None:
        async with self._connection() as connection:
            await connection.execute(
                "INSERT INTO threads (slug, epoch) VALUES ($1, $2) ON CONFLICT DO NOTHING", slug, secrets.token_hex(8)
            )
            if await connection.fetchval("SELECT seeded FROM threads WHERE slug = $1", slug):
                return
        for seed in seeds:  # fixed ids and ref keys: an import cut short (or run twice at once) adds no doubles
            await self.post(seed, f"seed:{seed.id}")
        async with self._connection() as connection:
            await connection.execute("UPDATE threads SET seeded = true WHERE slug = $1", slug)

    async def post(self, comment: Comment, ref_key: str | None) -> Written:
        try:
            async with self._connection() as connection, connection.transaction():
                epoch = await self._lock_thread(connection, comment.slug)
                if ref_key is not None and (earlier := await self._by_ref(connection, ref_key)) is not None:
                    return Written(earlier, None, epoch, created=False)
                if comment.parent is not None and not await connection.fetchval(
                    "SELECT true FROM comments WHERE id = $1 AND slug = $2", comment.parent, comment.slug
                ):
                    raise NotFound("The comment you are replying to does not exist.")
                event = None
                stored = comment
                if comment.status != PENDING:  # a pending comment is no event until it is approved
                    stored = comment.with_seq(await self._next_seq(connection, comment.slug))
                    event = comment_event(stored)
                    await self._append(connection, stored.slug, event)
                record = stored.record()
                await connection.execute(
                    f"INSERT INTO comments ({_COLUMNS}, ref_key) VALUES ({_PLACEHOLDERS}, $16)",
                    *(record[c] for c in _COLUMNS.split(", ")),
                    ref_key,
                )
        except asyncpg.UniqueViolationError:
            # The same ref was posted to another thread at the same moment (threads lock apart):
            # the first one won, and this is its retry.
            if ref_key is None or (earlier := await self.comment_by_ref(comment.slug, ref_key)) is None:
                raise
            return Written(earlier, None, (await self.head(earlier.slug)).epoch, created=False)
        return Written(stored, event, epoch)

    async def _lock_thread(self, connection: asyncpg.Connection, slug: str) -> str:
        """Take the thread's row lock for this transaction; every writer of the thread waits here."""
        epoch: str | None = await connection.fetchval("SELECT epoch FROM threads WHERE slug = $1 FOR UPDATE", slug)
        if epoch is None:
            raise NotFound("No such article.")
        return epoch

    async def _next_seq(self, connection: asyncpg.Connection, slug: str) -> int:
        seq: int = await connection.fetchval("UPDATE threads SET seq = seq + 1 WHERE slug = $1 RETURNING seq", slug)
        return seq

    async def _append(self, connection: asyncpg.Connection, slug: str, event: Event) -> None:
        await connection.execute(
            "INSERT INTO events (slug, seq, payload) VALUES ($1, $2, $3)", slug, event.seq, encode(event)
        )
        await connection.execute(
            "DELETE FROM events WHERE slug = $1 AND seq <= $2", slug, event.seq - self.history_size
        )

    async def set_status(self, slug: str, comment_id: str, status: str, moderator: str | None, at: str) -> Written:
        async with self._connection() as connection, connection.transaction():
            epoch = await self._lock_thread(connection, slug)
            row = await connection.fetchrow(
                f"SELECT {_COLUMNS} FROM comments WHERE id = $1 AND slug = $2", comment_id, slug
            )
            if row is None:
                raise NotFound("No such comment.")
            before = _comment(row)
            changed, kind = status_change(before, status, moderator, at)
            if changed is None:
                return Written(before, None, epoch)
            event = None
            if kind is not None:
                seq = await self._next_seq(connection, slug)
                if kind == "comment":  # approval: the comment is published now, with this seq
                    changed = changed.with_seq(seq)
                event = status_event(kind, seq, changed)
                await self._append(connection, slug, event)
            await connection.execute(
                "UPDATE comments SET status = $1, removed_by = $2, removed_at = $3, seq = $4 WHERE id = $5",
                changed.status,
                changed.removed_by,
                changed.removed_at,
                changed.seq,
                comment_id,
            )
        return Written(changed, event, epoch)

    # --- reads ---

    async def get_comment(self, slug: str, comment_id: str) -> Comment | None:
        async with self._connection() as connection:
            row = await connection.fetchrow(
                f"SELECT {_COLUMNS} FROM comments WHERE id = $1 AND slug = $2", comment_id, slug
            )
        return _comment(row) if row is not None else None

    async def get_comments(self, refs: Sequence[tuple[str, str]]) -> list[Comment]:
        if not refs:
            return []
        async with self._connection() as connection:
            rows = await connection.fetch(
                f"SELECT {_COLUMNS} FROM comments WHERE id = ANY($1::text[])",
                [comment_id for _slug, comment_id in refs],
            )
        found = {(c.slug, c.id): c for c in map(_comment, rows)}
        return [found[ref] for ref in refs if ref in found]

    async def comment_by_ref(self, slug: str, ref_key: str) -> Comment | None:
        async with self._connection() as connection:
            return await self._by_ref(connection, ref_key)

    async def _by_ref(self, connection: asyncpg.Connection, ref_key: str) -> Comment | None:
        row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM comments WHERE ref_key = $1", ref_key)
        return _comment(row) if row is not None else None

    async def _head(self, connection: asyncpg.Connection, slug: str) -> Head:
        row = await connection.fetchrow("SELECT seq, epoch FROM threads WHERE slug = $1", slug)
        if row is None:
            raise NotFound("No such article.")
        return Head(seq=row["seq"], epoch=row["epoch"])

    async def head(self, slug: str) -> Head:
        async with self._connection() as connection:
            return await self._head(connection, slug)

    async def snapshot(self, slug: str) -> Snapshot:
        async with self._consistent_read() as connection:
            head = await self._head(connection, slug)
            rows = await connection.fetch(
                f"SELECT {_COLUMNS} FROM comments WHERE slug = $1 ORDER BY seq IS NULL, seq, created_at", slug
            )
        return Snapshot(seq=head.seq, epoch=head.epoch, comments=[_comment(r) for r in rows])

    async def events_since(self, slug: str, since: int) -> list[Event] | None:
        async with self._consistent_read() as connection:
            head = await self._head(connection, slug)
            if since > head.seq or since < 0:
                return None
            if since == head.seq:
                return []
            oldest = await connection.fetchval("SELECT MIN(seq) FROM events WHERE slug = $1", slug)
            if oldest is None or since < oldest - 1:
                return None
            rows = await connection.fetch(
                "SELECT payload FROM events WHERE slug = $1 AND seq > $2 ORDER BY seq", slug, since
            )
        return [decode_event(r["payload"]) for r in rows]

    async def heads(self, slugs: Sequence[str]) -> dict[str, int]:
        async with self._connection() as connection:
            rows = await connection.fetch("SELECT slug, seq FROM threads WHERE slug = ANY($1::text[])", list(slugs))
        return {row["slug"]: row["seq"] for row in rows}

    async def comment_counts(self) -> dict[str, int]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT slug, COUNT(*) AS n FROM comments WHERE status = $1 GROUP BY slug", VISIBLE
            )
        return {row["slug"]: row["n"] for row in rows}

    # --- moderation records (accounts, bans, reports, audit, sessions): they last, so they are here ---

    async def kv_get(self, key: str) -> str | None:
        async with self._connection() as connection:
            value: str | None = await connection.fetchval(
                "SELECT value FROM kv WHERE key = $1 AND (expires_at IS NULL OR expires_at > clock_timestamp())", key
            )
        return value

    async def kv_set(self, key: str, value: str, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        # Expiry is reckoned on the database's clock, so instances with skewed clocks agree.
        only_if_expired = "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= clock_timestamp()"
        async with self._connection() as connection:
            written = await connection.fetchval(
                "INSERT INTO kv (key, value, expires_at) "
                "VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::float8)) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at "
                f"{only_if_expired if only_if_absent else ''} RETURNING true",
                key,
                value,
                ttl,
            )
        return bool(written)

    async def kv_delete(self, key: str) -> None:
        async with self._connection() as connection:
            await connection.execute("DELETE FROM kv WHERE key = $1", key)

    async def set_add(self, key: str, member: str) -> None:
        async with self._connection() as connection:
            await connection.execute(
                "INSERT INTO sets (key, member) VALUES ($1, $2) ON CONFLICT DO NOTHING", key, member
            )

    async def set_remove(self, key: str, member: str) -> None:
        async with self._connection() as connection:
            await connection.execute("DELETE FROM sets WHERE key = $1 AND member = $2", key, member)

    async def set_members(self, key: str) -> set[str]:
        async with self._connection() as connection:
            return {row["member"] for row in await connection.fetch("SELECT member FROM sets WHERE key = $1", key)}

    async def list_push(self, key: str, value: str, keep: int) -> None:
        async with self._connection() as connection, connection.transaction():
            await connection.execute("INSERT INTO lists (key, value) VALUES ($1, $2)", key, value)
            await connection.execute(
                "DELETE FROM lists WHERE key = $1 AND n NOT IN "
                "(SELECT n FROM lists WHERE key = $1 ORDER BY n DESC LIMIT $2)",
                key,
                keep,
            )

    async def list_range(self, key: str, count: int | None = None) -> list[str]:
        async with self._connection() as connection:
            rows = await connection.fetch("SELECT value FROM lists WHERE key = $1 ORDER BY n DESC LIMIT $2", key, count)
        return [row["value"] for row in rows]

    async def list_ranges(self, keys: Sequence[str]) -> list[list[str]]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT key, value FROM lists WHERE key = ANY($1::text[]) ORDER BY n DESC", list(keys)
            )
        lists: dict[str, list[str]] = {key: [] for key in keys}
        for row in rows:
            lists[row["key"]].append(row["value"])
        return [lists[key] for key in keys]

    # --- moving data ---

    async def thread_slugs(self) -> list[str]:
        async with self._connection() as connection:
            return [row["slug"] for row in await connection.fetch("SELECT slug FROM threads ORDER BY slug")]

    async def dump_thread(self, slug: str) -> ThreadDump:
        async with self._consistent_read() as connection:
            row = await connection.fetchrow("SELECT seq, epoch, seeded FROM threads WHERE slug = $1", slug)
            if row is None:
                raise NotFound("No such article.")
            comments = await connection.fetch(
                f"SELECT {_COLUMNS}, ref_key FROM comments WHERE slug = $1 "
                'ORDER BY seq IS NULL, seq, created_at COLLATE "C", id COLLATE "C"',
                slug,
            )
            events = await connection.fetch("SELECT seq, payload FROM events WHERE slug = $1 ORDER BY seq", slug)
        return ThreadDump(
            slug,
            row["seq"],
            row["epoch"],
            row["seeded"],
            [dict(comment) for comment in comments],
            [(event["seq"], event["payload"]) for event in events],
        )

    async def load_thread(self, thread: ThreadDump) -> None:
        columns = [*_COLUMNS.split(", "), "ref_key"]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
        async with self._connection() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO threads (slug, seq, epoch, seeded) VALUES ($1, $2, $3, $4) ON CONFLICT (slug) DO UPDATE "
                "SET seq = EXCLUDED.seq, epoch = EXCLUDED.epoch, seeded = EXCLUDED.seeded",
                thread.slug,
                thread.seq,
                thread.epoch,
                thread.seeded,
            )
            await connection.executemany(
                f"INSERT INTO comments ({', '.join(columns)}) VALUES ({_PLACEHOLDERS}, $16) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}",
                [tuple(record[c] for c in columns) for record in thread.comments],
            )
            await connection.executemany(
                "INSERT INTO events (slug, seq, payload) VALUES ($1, $2, $3) "
                "ON CONFLICT (slug, seq) DO UPDATE SET payload = EXCLUDED.payload",
                [(thread.slug, seq, payload) for seq, payload in thread.events],
            )

    async def dump_records(self) -> list[Record]:
        async with self._consistent_read() as connection:
            kv = await connection.fetch(
                "SELECT key, value, EXTRACT(EPOCH FROM expires_at)::float8 AS expires_at FROM kv "
                'WHERE expires_at IS NULL OR expires_at > clock_timestamp() ORDER BY key COLLATE "C"'
            )
            sets = await connection.fetch(
                'SELECT key, array_agg(member ORDER BY member COLLATE "C") AS members FROM sets '
                'GROUP BY key ORDER BY key COLLATE "C"'
            )
            lists = await connection.fetch(
                'SELECT key, array_agg(value ORDER BY n) AS items FROM lists GROUP BY key ORDER BY key COLLATE "C"'
            )
        return [
            *(Record("kv", row["key"], row["value"], row["expires_at"]) for row in kv),
            *(Record("set", row["key"], list(row["members"])) for row in sets),
            *(Record("list", row["key"], list(row["items"])) for row in lists),
        ]

    async def load_records(self, records: Sequence[Record]) -> None:
        async with self._connection() as connection, connection.transaction():
            for record in records:
                if record.kind == "kv":
                    await connection.execute(
                        "INSERT INTO kv (key, value, expires_at) VALUES ($1, $2, to_timestamp($3::float8)) "
                        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                        record.key,
                        record.value,
                        record.expires_at,
                    )
                elif record.kind == "set":
                    await connection.execute(
                        "INSERT INTO sets (key, member) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                        record.key,
                        record.value,
                    )
                else:
                    await connection.execute("DELETE FROM lists WHERE key = $1", record.key)
                    await connection.execute(
                        "INSERT INTO lists (key, value) SELECT $1, item FROM unnest($2::text[]) WITH ORDINALITY "
                        "AS items(item, n) ORDER BY n",
                        record.key,
                        record.value,
                    )
