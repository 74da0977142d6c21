"""Backends: where threads are stored and how their events travel. Picked by REDIS_URL."""

from __future__ import annotations

from ..settings import Settings
from .base import Backend


def create_backend(settings: Settings) -> Backend:
    if settings.redis_url:
        from .redis import RedisBackend  # imported lazily: only one backend is ever loaded
        return RedisBackend(settings.redis_url, history_size=settings.history_size)
    from .local import LocalBackend
    return LocalBackend(settings.data_dir / "backchannel.sqlite3", history_size=settings.history_size)
