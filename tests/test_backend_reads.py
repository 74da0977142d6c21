"""The batched reads (one round trip for many comments or lists), on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.backends import create_backend
from server.backends.base import Backend
from server.comments import Comment, utc_now_iso
from server.settings import Settings
from server.threads import new_comment_id

SLUGS = ("a-thread", "another-thread")


@pytest.fixture(params=["local", "redis", "redis-cluster", "postgres"])
async def backend(request, tmp_path: Path) -> AsyncIterator[Backend]:
    redis_url = database_url = None
    if request.param == "postgres":
        database_url = request.getfixturevalue("database_url")
    if request.param == "redis":
        redis_server = request.getfixturevalue("redis_server")
        redis_server.client().flushall()
        redis_url = redis_server.url
    if request.param == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        redis_url = cluster.url
    backend = create_backend(Settings(data_dir=tmp_path, redis_url=redis_url, database_url=database_url))
    await backend.start()
    for slug in SLUGS:
        await backend.ensure_thread(slug, [])
    yield backend
    await backend.close()


async def post(backend: Backend, slug: str) -> Comment:
    comment = Comment(
        id=new_comment_id(slug),
        slug=slug,
        parent=None,
        name="Ann",
        about=None,
        body="hi",
        html="<p>hi</p>",
        created_at=utc_now_iso(),
    )
    return (await backend.post(comment, None))[0]


async def test_get_comments_reads_many_threads_at_once(backend: Backend) -> None:
    first, second, third = await post(backend, SLUGS[0]), await post(backend, SLUGS[1]), await post(backend, SLUGS[0])
    asked = [(SLUGS[0], third.id), (SLUGS[1], "missing"), (SLUGS[1], second.id), (SLUGS[0], first.id)]
    assert await backend.get_comments(asked) == [third, second, first]
    assert await backend.get_comments([]) == []


async def test_list_ranges_reads_many_lists_at_once(backend: Backend) -> None:
    for value in ("1", "2", "3"):
        await backend.list_push("reports:a", value, keep=10)
    await backend.list_push("reports:b", "x", keep=10)
    assert await backend.list_ranges(["reports:b", "reports:none", "reports:a"]) == [["x"], [], ["3", "2", "1"]]
    assert await backend.list_ranges([]) == []
