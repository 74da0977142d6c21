"""Operations settings of the stores: pool sizes from the settings, slow queries logged."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from server.backends import create_bus, create_store
from server.settings import Settings


def _settings(tmp_path: Path, **changes: object) -> Settings:
    return dataclasses.replace(Settings(data_dir=tmp_path, secret_key="test-secret-key"), **changes)


async def test_database_pool_size_and_slow_queries(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = create_store(_settings(tmp_path, database_url=database_url, database_pool_size=3, slow_query_ms=0.001))
    await store.start()
    try:
        assert store._pool is not None and store._pool.get_max_size() == 3
        with caplog.at_level(logging.WARNING, logger="backchannel.postgres"):
            await store.kv_get("nothing-here")
        slow = [r.getMessage() for r in caplog.records if r.name == "backchannel.postgres"]
        assert any("slow query" in m and "FROM kv" in m for m in slow), slow
    finally:
        await store.close()


async def test_no_slow_query_logged_under_the_threshold(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = create_store(_settings(tmp_path, database_url=database_url, slow_query_ms=60_000))
    await store.start()
    try:
        with caplog.at_level(logging.WARNING, logger="backchannel.postgres"):
            await store.kv_get("nothing-here")
        assert not [r for r in caplog.records if r.name == "backchannel.postgres"]
    finally:
        await store.close()


async def test_redis_pool_size(tmp_path: Path, redis_server) -> None:
    settings = _settings(tmp_path, redis_url=redis_server.url, redis_pool_size=7)
    store, bus = create_store(settings), create_bus(settings)
    try:
        assert store.redis.connection_pool.max_connections == 7
        assert bus.redis.connection_pool.max_connections == 7
    finally:
        await store.close()
