"""The backend interface, tested once and run on every store and bus pairing.

Whatever store keeps a thread and whatever bus carries it, its events carry seq 1, 2, 3, ...
with no gaps, the log answers `since` exactly, and a retried post is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import orjson
import pytest

from server.backends import migrations
from server.backends.base import Backend, StoredArticle
from server.backends.local import LocalBackend, MemoryBus, SqliteStore
from server.backends.migrations import SchemaTooNew
from server.backends.postgres import PostgresStore
from server.backends.redis import RedisBackend, RedisBus
from server.comments import HIDDEN, OPEN, Comment, Head, utc_now_iso
from server.errors import NotFound
from server.fanout import Hub
from server.protocol import Event
from server.threads import new_comment_id

from .servers import ROOT, free_port

SLUG, OTHER = "a-thread", "another-thread"


def make_comment(slug: str = SLUG, body: str = "hello", parent: str | None = None) -> Comment:
    return Comment(
        id=new_comment_id(slug),
        slug=slug,
        parent=parent,
        name="Ann",
        about=None,
        body=body,
        html=f"<p>{body}</p>",
        created_at=utc_now_iso(),
        reader_id="reader-1",
    )


BackendFactory = Callable[..., Backend]


@pytest.fixture(params=["sqlite", "redis", "redis-cluster", "postgres+redis", "postgres"])
def backend_factory(request, tmp_path: Path) -> BackendFactory:
    """Makes backends that share one store, so a test can reopen it (or run two instances)."""
    if request.param == "sqlite":
        return lambda history_size=1000: LocalBackend(tmp_path / "store.sqlite3", history_size=history_size)
    if request.param == "postgres":
        url = request.getfixturevalue("database_url")
        return lambda history_size=1000: Backend(PostgresStore(url, history_size), MemoryBus())
    if request.param == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return lambda history_size=1000: RedisBackend(cluster.url, history_size=history_size)
    redis_server = request.getfixturevalue("redis_server")
    redis_server.client().flushall()
    if request.param == "redis":
        return lambda history_size=1000: RedisBackend(redis_server.url, history_size=history_size)
    url = request.getfixturevalue("database_url")
    return lambda history_size=1000: Backend(PostgresStore(url, history_size), RedisBus(redis_server.url))


@pytest.fixture
async def backend(backend_factory: BackendFactory) -> AsyncIterator[Backend]:
    backend = backend_factory()
    await backend.start()
    await backend.ensure_thread(SLUG, [])
    await backend.ensure_thread(OTHER, [])
    yield backend
    await backend.close()


async def test_seqs_are_contiguous_even_under_concurrent_posts(backend: Backend):
    results = await asyncio.gather(*(backend.post(make_comment(body=f"c{n}"), None) for n in range(50)))
    assert sorted(comment.seq for comment, _ in results) == list(range(1, 51))
    snapshot = await backend.snapshot(SLUG)
    assert snapshot.seq == 50 and [c.seq for c in snapshot.comments] == list(range(1, 51))
    assert (await backend.head(OTHER)).seq == 0  # threads count separately


async def test_events_since_returns_exactly_what_was_missed(backend: Backend):
    posted = [(await backend.post(make_comment(body=f"c{n}"), None))[0] for n in range(5)]
    missed = await backend.events_since(SLUG, 2)
    assert [e.seq for e in missed] == [3, 4, 5]
    assert [e.data["comment"]["id"] for e in missed] == [c.id for c in posted[2:]]
    assert await backend.events_since(SLUG, 5) == []
    assert await backend.events_since(SLUG, 6) is None  # ahead of the server: reset, never silence


async def test_history_older_than_the_log_answers_reset(backend_factory: BackendFactory):
    backend = backend_factory(history_size=3)
    await backend.start()
    try:
        await backend.ensure_thread(SLUG, [])
        for n in range(6):
            await backend.post(make_comment(body=f"c{n}"), None)
        assert [e.seq for e in await backend.events_since(SLUG, 3)] == [4, 5, 6]
        assert await backend.events_since(SLUG, 2) is None
        assert len((await backend.snapshot(SLUG)).comments) == 6  # trimming the log keeps every comment
    finally:
        await backend.close()


async def test_a_retried_post_is_stored_once(backend: Backend):
    first, created = await backend.post(make_comment(body="once"), "reader-1:ref-1")
    again, created_again = await backend.post(make_comment(body="once"), "reader-1:ref-1")
    assert created and not created_again
    assert (again.id, again.seq) == (first.id, first.seq)
    assert len((await backend.snapshot(SLUG)).comments) == 1


@pytest.mark.parametrize("backend_factory", ["redis", "redis-cluster"], indirect=True)
async def test_the_post_script_run_twice_for_one_post_stores_it_once(backend: Backend):
    """redis-py re-runs a script whose connection closed mid-command (in a cluster, up to 9
    times for one call): the same comment id, even without a ref, is one post and one seq."""
    comment = make_comment(body="run twice")
    first = await backend.store.post(comment, None)
    again = await backend.store.post(comment, None)
    assert (again.comment.id, again.comment.seq) == (first.comment.id, first.comment.seq) == (comment.id, 1)
    assert (await backend.head(SLUG)).seq == 1
    assert [e.seq for e in await backend.events_since(SLUG, 0) or []] == [1]
    assert len((await backend.snapshot(SLUG)).comments) == 1


async def test_a_reply_needs_a_parent_in_the_same_thread(backend: Backend):
    parent, _ = await backend.post(make_comment(), None)
    reply, _ = await backend.post(make_comment(parent=parent.id), None)
    assert reply.parent == parent.id
    with pytest.raises(NotFound):
        await backend.post(make_comment(parent="no-such-comment"), None)
    with pytest.raises(NotFound):
        await backend.post(make_comment(slug=OTHER, parent=parent.id), None)
    assert (await backend.head(SLUG)).seq == 2 and (await backend.head(OTHER)).seq == 0  # refusals use no seq


async def test_seeds_are_imported_once_across_restarts(backend_factory: BackendFactory):
    seeds = [make_comment(slug="seeded", body=f"seed {n}") for n in range(3)]
    for _ in range(2):
        backend = backend_factory()
        await backend.start()
        await backend.ensure_thread("seeded", seeds)
        snapshot = await backend.snapshot("seeded")
        await backend.close()
        assert [c.body for c in snapshot.comments] == ["seed 0", "seed 1", "seed 2"]
        assert snapshot.seq == 3


async def test_comments_and_seq_survive_a_restart(backend_factory: BackendFactory):
    backend = backend_factory()
    await backend.start()
    await backend.ensure_thread(SLUG, [])
    await backend.post(make_comment(body="kept"), None)
    epoch = (await backend.head(SLUG)).epoch
    await backend.close()

    backend = backend_factory()
    await backend.start()
    try:
        await backend.ensure_thread(SLUG, [])
        comment, _ = await backend.post(make_comment(body="next"), None)
        assert comment.seq == 2
        assert (await backend.head(SLUG)).epoch == epoch
        assert [c.body for c in (await backend.snapshot(SLUG)).comments] == ["kept", "next"]
    finally:
        await backend.close()


async def test_subscribers_receive_each_event_in_order_until_they_unsubscribe(backend: Backend):
    received: list[tuple[str, int]] = []
    arrived = asyncio.Event()

    def on_event(slug: str, event: Event, epoch: str | None) -> None:
        received.append((slug, event.seq))
        if len(received) == 3:
            arrived.set()

    backend.on_event = on_event
    await backend.subscribe(SLUG)
    for _ in range(3):  # one after another: concurrent posts may be published in either order
        await backend.post(make_comment(), None)
    await backend.post(make_comment(slug=OTHER), None)  # not subscribed
    await asyncio.wait_for(arrived.wait(), 5)
    await backend.unsubscribe(SLUG)
    await backend.post(make_comment(), None)
    await backend.post(make_comment(slug=OTHER), None)
    assert received == [(SLUG, 1), (SLUG, 2), (SLUG, 3)]


class Recorder:
    """A Hub subscriber that records the seqs it is given."""

    moderator = False

    def __init__(self, expect: int) -> None:
        self.seqs: list[int] = []
        self.expect = expect
        self.done = asyncio.Event()

    def send(self, seq: int | None, frame: str) -> None:
        if seq is not None:
            self.seqs.append(seq)
            if len(self.seqs) >= self.expect:
                self.done.set()

    def reset(self, seq: int, frame: str) -> None:
        raise AssertionError("no reset expected")


async def test_the_hub_fills_a_gap_from_the_log_before_delivering_newer_events(backend: Backend):
    hub = Hub(backend)
    reader = Recorder(expect=4)
    await hub.join(SLUG, reader)
    await backend.post(make_comment(), None)
    # The subscription is lost behind the hub's back (as when Redis drops a subscriber):
    await backend.unsubscribe(SLUG)
    await backend.post(make_comment(), None)
    await backend.post(make_comment(), None)
    await backend.subscribe(SLUG)
    await backend.post(make_comment(), None)  # seq 4 arrives; 2 and 3 never did
    await asyncio.wait_for(reader.done.wait(), 5)
    assert reader.seqs == [1, 2, 3, 4]
    await hub.leave(SLUG, reader)
    await hub.close()


async def test_remove_restore_and_approve_are_sequenced_events(backend: Backend):
    received: list[Event] = []
    backend.on_event = lambda slug, event, epoch: received.append(event)
    await backend.subscribe(SLUG)
    comment, _ = await backend.post(make_comment(body="rude"), None)
    removed, event = await backend.set_status(SLUG, comment.id, "removed", "alice", "2026-11-26T12:00:00.000Z")
    assert (removed.status, removed.removed_by, event.type, event.seq) == ("removed", "alice", "removed", 2)
    assert event.data == {"id": comment.id, "removed_by": "alice", "removed_at": "2026-11-26T12:00:00.000Z"}
    again, no_event = await backend.set_status(SLUG, comment.id, "removed", "bob", "2026-11-26T12:01:00.000Z")
    assert no_event is None and again.removed_by == "alice"  # removing twice changes nothing
    restored, event = await backend.set_status(SLUG, comment.id, "visible", "alice", "2026-11-26T12:02:00.000Z")
    assert (restored.status, restored.seq, event.type, event.seq) == ("visible", 1, "restored", 3)
    assert event.data["comment"]["body"] == "rude"
    assert [e.type for e in await backend.events_since(SLUG, 0)] == ["comment", "removed", "restored"]
    assert (await backend.comment_counts([SLUG]))[SLUG] == 1
    with pytest.raises(NotFound):
        await backend.set_status(SLUG, "no-such-id", "removed", "alice", "2026-11-26T12:00:00.000Z")


async def test_a_pending_comment_is_no_event_until_approved(backend: Backend):
    from dataclasses import replace

    pending, _ = await backend.post(replace(make_comment(body="wait"), status="pending"), None)
    assert pending.seq is None and (await backend.head(SLUG)).seq == 0
    assert (await backend.comment_counts([SLUG])).get(SLUG, 0) == 0
    approved, event = await backend.set_status(SLUG, pending.id, "visible", "alice", "2026-11-26T12:00:00.000Z")
    assert (approved.seq, event.type, event.seq) == (1, "comment", 1)
    rejected, _ = await backend.post(replace(make_comment(body="spam"), status="pending"), None)
    _, no_event = await backend.set_status(SLUG, rejected.id, "removed", "alice", "2026-11-26T12:00:00.000Z")
    assert no_event is None and (await backend.head(SLUG)).seq == 1  # nobody saw it: nothing to tell
    snapshot = await backend.snapshot(SLUG)
    assert [(c.body, c.status) for c in snapshot.comments] == [("wait", "visible"), ("spam", "removed")]


async def test_shared_state_primitives(backend: Backend):
    assert await backend.kv_get("k") is None
    assert await backend.kv_set("k", "v1", only_if_absent=True)
    assert not await backend.kv_set("k", "v2", only_if_absent=True)
    assert await backend.kv_get("k") == "v1"
    await backend.kv_set("short", "x", ttl=0.05)
    await asyncio.sleep(0.1)  # let the entry expire: expiry is the behaviour under test
    assert await backend.kv_get("short") is None
    await backend.kv_delete("k")
    assert await backend.kv_get("k") is None
    await backend.set_add("s", "a")
    await backend.set_add("s", "b")
    await backend.set_remove("s", "a")
    assert await backend.set_members("s") == {"b"}
    for n in range(5):
        await backend.list_push("l", f"item {n}", keep=3)
    await backend.list_push("other", "x", keep=3)
    assert await backend.list_range("l") == ["item 4", "item 3", "item 2"]
    assert await backend.list_range("l", 2) == ["item 4", "item 3"]


async def test_control_messages_reach_this_instance(backend: Backend):
    got = asyncio.Event()
    messages = []
    backend.on_control = lambda message: (messages.append(message), got.set())
    await backend.publish_control('{"kind": "hello"}')
    await asyncio.wait_for(got.wait(), 5)
    assert messages == ['{"kind": "hello"}']


@pytest.mark.parametrize("backend_factory", ["redis", "postgres+redis", "postgres"], indirect=True)
async def test_two_instances_posting_at_once_share_one_contiguous_seq(backend_factory: BackendFactory):
    instances = [backend_factory(), backend_factory()]
    for instance in instances:
        await instance.start()
        await instance.ensure_thread(SLUG, [])
    try:
        results = await asyncio.gather(
            *(instance.post(make_comment(body=f"{n}"), None) for n in range(40) for instance in instances)
        )
        assert sorted(comment.seq for comment, _ in results) == list(range(1, 81))
        for instance in instances:
            assert [e.seq for e in await instance.events_since(SLUG, 0)] == list(range(1, 81))
            assert len((await instance.snapshot(SLUG)).comments) == 80
    finally:
        for instance in instances:
            await instance.close()


# --- schema versions (the SQL stores) ---


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request, tmp_path: Path):
    """(make a store, run one SQL statement on its database behind its back)."""
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite3"

        async def execute(sql: str) -> list:
            with contextlib.closing(sqlite3.connect(path)) as db, db:
                return db.execute(sql).fetchall()

        return (lambda: SqliteStore(path)), execute
    url = request.getfixturevalue("database_url")

    async def execute(sql: str) -> list:
        connection = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return (lambda: PostgresStore(url)), execute


async def test_migrations_run_once_and_are_recorded(sql_store):
    make, execute = sql_store
    for _ in range(2):
        store = make()
        await store.start()
        await store.close()
    assert len(migrations.SQLITE) == len(migrations.POSTGRES)  # a schema change is made on both stores
    assert await execute("SELECT version FROM schema_version ORDER BY version") == [
        (n,) for n in range(1, len(migrations.SQLITE) + 1)
    ]


async def test_expired_kv_rows_are_purged_so_the_table_does_not_grow(sql_store):
    """Every post writes an expiring kv row (its repeat check); reads ignore expired rows, and
    writes remove them, so the table holds about what is live, not every post ever made."""
    make, execute = sql_store
    store = make()
    await store.start()
    try:
        for round_ in range(10):
            for n in range(30):
                await store.kv_set(f"recent:{round_}:{n}", "ref", ttl=0.05, only_if_absent=n % 2 == 0)
            await asyncio.sleep(0.06)  # this round expires
        await store.kv_set("kept", "1")
        rows = (await execute("SELECT COUNT(*) FROM kv"))[0][0]
        print(f"300 expiring rows written, {rows} left in the table")
        assert rows <= 30 + 1, rows  # at most the last round (expired, not yet purged) and the kept one
        assert await store.kv_get("kept") == "1"
        assert await store.kv_get("recent:9:0") is None
    finally:
        await store.close()


async def test_a_schema_newer_than_the_code_is_refused(sql_store):
    make, execute = sql_store
    store = make()
    await store.start()
    await store.close()
    await execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(SchemaTooNew, match="version 99, newer than this code knows"):
        await make().start()


async def test_a_database_from_before_versioning_is_adopted_with_its_comments(tmp_path: Path):
    path = tmp_path / "store.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        for statement in migrations.SQLITE[0]:  # exactly what the unversioned code created
            db.execute(statement)
        db.execute("INSERT INTO threads (slug, seq, epoch) VALUES ('old', 0, 'e1')")
    backend = LocalBackend(path)
    await backend.start()
    try:
        await backend.post(make_comment(slug="old"), None)
        assert (await backend.head("old")) == Head(seq=1, epoch="e1")
    finally:
        await backend.close()


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_the_commands_refuse_a_newer_schema_in_one_line(tmp_path: Path, command: str):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "SECRET_KEY": "k", "PORT": str(free_port())}
    ok = subprocess.run([sys.executable, "-m", "server", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "backchannel.sqlite3")) as db, db:
        db.execute("INSERT INTO schema_version (version) VALUES (99)")
    refused = subprocess.run(
        [sys.executable, "-m", "server", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"backchannel: the database schema is version 99, newer than this code knows ({len(migrations.SQLITE)}); "
        "not starting: run the newer code, or restore a backup taken before the upgrade"
    ]


@pytest.mark.parametrize("backend_factory", ["postgres+redis"], indirect=True)
async def test_an_event_committed_but_never_published_reaches_readers_within_5_s(backend_factory: BackendFactory):
    writer, server = backend_factory(), backend_factory()  # two instances
    for instance in (writer, server):
        await instance.start()
        await instance.ensure_thread(SLUG, [])
    hub = Hub(server)
    reader = Recorder(expect=3)
    try:
        await hub.join(SLUG, reader)
        await writer.post(make_comment(), None)
        await writer.post(make_comment(), None)
        # The writer commits seq 3 and dies before it publishes: the store alone has it.
        await writer.store.post(make_comment(body="orphan"), None)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(reader.done.wait(), 5)
        print(f"the unpublished event reached the reader after {loop.time() - began:.2f} s")
        assert reader.seqs == [1, 2, 3]
    finally:
        await hub.leave(SLUG, reader)
        await hub.close()
        for instance in (writer, server):
            await instance.close()


# --- articles: create and replace, unpublish and republish, paging newest first ---


def stored_article(slug: str, at: str, title: str = "A title", published: bool = True) -> StoredArticle:
    return StoredArticle(
        slug=slug,
        published_at=at,
        published=published,
        meta=orjson.dumps({"title": title}).decode(),
        paragraphs=orjson.dumps([f"The text of {slug}."]).decode(),
    )


def at(minute: int) -> str:
    return f"2026-11-30T08:{minute:02d}:00.000Z"


async def test_an_article_is_created_then_replaced(backend: Backend):
    assert await backend.get_article("story") is None
    assert await backend.put_article(stored_article("story", at(1), "First")) is True
    assert await backend.put_article(stored_article("story", at(1), "Second")) is False
    stored = await backend.get_article("story")
    assert stored == stored_article("story", at(1), "Second")


async def test_unpublished_is_kept_with_its_text_and_put_republishes_it(backend: Backend):
    await backend.put_article(stored_article("story", at(1)))
    new_meta = orjson.dumps({"title": "A title", "updated_at": "later"}).decode()
    assert await backend.set_article_published("story", False, new_meta) is True
    stored = await backend.get_article("story")
    assert stored is not None and not stored.published and stored.meta == new_meta
    assert stored.paragraphs == stored_article("story", at(1)).paragraphs
    assert await backend.set_article_published("no-such-story", False, new_meta) is False
    [summary] = await backend.article_summaries(None, 10)
    assert (summary.slug, summary.published) == ("story", False)  # listed, flagged
    await backend.put_article(stored_article("story", at(1)))
    assert (await backend.get_article("story")).published


async def test_summaries_page_newest_first_and_each_article_once(backend: Backend):
    # Two share a time: the slug orders them (descending), the same way on every store.
    for slug, minute in [("b-story", 5), ("a-story", 5), ("c-story", 1), ("d-2", 9), ("e", 3)]:
        await backend.put_article(stored_article(slug, at(minute)))
    first = await backend.article_summaries(None, 2)
    assert [s.slug for s in first] == ["d-2", "b-story"]
    assert all(s.paragraphs is None for s in first)  # summaries only
    await backend.put_article(stored_article("newer", at(30)))  # arrives between two pages: not in the next ones
    rest = await backend.article_summaries((first[-1].published_at, first[-1].slug), 10)
    assert [s.slug for s in rest] == ["a-story", "e", "c-story"]
    assert await backend.article_summaries((rest[-1].published_at, rest[-1].slug), 10) == []


async def test_a_new_publication_time_moves_the_article(backend: Backend):
    await backend.put_article(stored_article("moves", at(1)))
    await backend.put_article(stored_article("stays", at(2)))
    await backend.put_article(stored_article("moves", at(3)))
    assert [(s.slug, s.published_at) for s in await backend.article_summaries(None, 10)] == [
        ("moves", at(3)),
        ("stays", at(2)),
    ]


async def test_comment_counts_of_the_threads_asked(backend: Backend):
    await backend.post(make_comment(SLUG), None)
    await backend.post(make_comment(OTHER), None)
    await backend.post(make_comment(OTHER), None)
    assert await backend.comment_counts([OTHER]) == {OTHER: 2}
    assert (await backend.comment_counts([SLUG, OTHER, "no-thread"])).get(SLUG) == 1


async def test_a_hidden_thread_counts_no_comments(backend: Backend):
    """Readers see none of a hidden thread's comments, so an index page must not count them."""
    await backend.post(make_comment(SLUG), None)
    await backend.post(make_comment(OTHER), None)
    await backend.set_thread_state(SLUG, HIDDEN, "mod", "2026-11-30T00:00:00Z")
    counts = await backend.comment_counts([SLUG, OTHER])
    assert (counts.get(SLUG, 0), counts[OTHER]) == (0, 1)
    await backend.set_thread_state(SLUG, OPEN, "mod", "2026-11-30T00:01:00Z")
    assert (await backend.comment_counts([SLUG]))[SLUG] == 1
