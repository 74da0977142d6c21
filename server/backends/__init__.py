"""Stores and buses, picked from the settings; each implementation is imported only when used.

DATABASE_URL  REDIS_URL   store        bus
unset         unset       SQLite       in-process   (one instance: the default)
unset         set         Redis        Redis        (several instances, Redis-only)
postgresql:// set         PostgreSQL   Redis        (several instances)
postgresql:// unset       PostgreSQL   in-process   (one instance)
"""

from __future__ import annotations

from ..settings import Settings
from .base import Backend, Bus, Store


def create_store(settings: Settings) -> Store:
    if settings.database_url:
        if not settings.database_url.startswith(("postgresql://", "postgres://")):
            raise RuntimeError("DATABASE_URL must be a postgresql:// URL")
        from .postgres import PostgresStore

        return PostgresStore(
            settings.database_url,
            history_size=settings.history_size,
            pool_size=settings.database_pool_size,
            slow_query_ms=settings.slow_query_ms,
        )
    if settings.redis_url:
        from .redis import RedisStore

        return RedisStore(settings.redis_url, history_size=settings.history_size, pool_size=settings.redis_pool_size)
    from .local import SqliteStore

    return SqliteStore(settings.data_dir / "backchannel.sqlite3", history_size=settings.history_size)


def create_bus(settings: Settings) -> Bus:
    if settings.redis_url:
        from .redis import RedisBus

        return RedisBus(settings.redis_url, pool_size=settings.redis_pool_size)
    from .local import MemoryBus

    return MemoryBus()


def create_backend(settings: Settings) -> Backend:
    backend = Backend(create_store(settings), create_bus(settings))
    backend.kill_after_commits = settings.fault_kill_after_commits
    return backend
