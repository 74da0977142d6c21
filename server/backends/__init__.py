"""Backends: where threads are stored and how their events travel. Picked by REDIS_URL."""

from __future__ import annotations

from ..settings import Settings
from .base import Backend


def create_backend(settings: Settings) -> Backend:
    if settings.redis_url:
        raise NotImplementedError("the Redis backend is not built yet (REDIS_URL must be unset)")
    from .local import LocalBackend  # imported lazily, like the Redis one will be
    return LocalBackend(settings.data_dir / "backchannel.sqlite3", history_size=settings.history_size)
