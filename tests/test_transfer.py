"""Moving data (issue 12, point 5): export -> import -> export between stores, byte for byte;
imports are idempotent and checked; Disqus and WordPress files become threads on the page."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from server.app import create_app
from server.backends.base import Store, StoredArticle
from server.backends.local import SqliteStore
from server.backends.postgres import PostgresStore
from server.backends.redis import RedisStore
from server.comments import PENDING, REMOVED, VISIBLE, Comment, utc_now_iso
from server.content import load_articles
from server.settings import Settings
from server.text import render_body
from server.transfer.export import ImportFailed, export, import_file
from server.transfer.legacy import html_to_text, load_legacy, read_disqus, read_wxr

from .servers import ROOT

DATA = Path(__file__).resolve().parent / "data"
DEMO = "moscow-warns-western-troops-in-ukraine-would-be-legitimate-targets"


def _comment(slug: str, n: int, parent: str | None = None, status: str = VISIBLE, staff: bool = False) -> Comment:
    body = f'Comment {n} on {slug}: ünïcode, "quotes", <b>not markup</b>'
    return Comment(
        id=f"{slug[:4]}{n:010x}",
        slug=slug,
        parent=parent,
        name=f"Reader {n}",
        about="Oslo" if n % 2 else None,
        body=body,
        html=render_body(body),
        created_at=f"2026-11-30T05:{n % 60:02d}:00.000Z",
        status=status,
        reader_id=f"r{n}",
        ip=f"192.0.2.{n % 250}",
        staff=staff,
    )


async def _fill(store: Store) -> None:
    """A store as the service leaves it: seeds, replies, a pending, a removed and a restored comment,
    a staff comment, and moderation records of every shape (one of them a session)."""
    await store.ensure_thread("alpha", [_comment("alpha", 0)])
    await store.ensure_thread("beta", [])
    await store.post(_comment("alpha", 1), "reader:r1:ref-1")
    await store.post(_comment("alpha", 2, parent="alph0000000001"), "reader:r2:ref-1")
    await store.post(_comment("alpha", 3, status=PENDING), "reader:r3:ref-1")
    await store.post(_comment("alpha", 4, staff=True), None)
    await store.set_status("alpha", "alph0000000001", REMOVED, "alice", utc_now_iso())
    await store.set_status("alpha", "alph0000000004", REMOVED, "alice", utc_now_iso())
    await store.set_status("alpha", "alph0000000004", VISIBLE, "alice", utc_now_iso())
    for n in range(5, 12):
        await store.post(_comment("beta", n), f"reader:r{n}:ref-1")
    await store.kv_set("moderator:alice", '{"name": "alice", "hash": "$argon2id$..."}')
    await store.kv_set("ban:reader:r9", '{"by": "alice"}', ttl=3600)
    await store.kv_set("premoderation:beta", "1")
    await store.kv_set("session:secret-session-id", '{"name": "alice"}', ttl=3600)
    await store.set_add("sessions-of:alice", "secret-session-id")
    await store.set_add("bans", '["reader", "r9", 1}')
    await store.set_add("reports-open", "alpha/alph0000000002")
    await store.set_add("reports-open", "beta/beta0000000005")
    for n in range(3):
        await store.list_push("audit", f'{{"n": {n}}}', keep=100)
    await store.list_push("reports:alph0000000002", '{"reason": "rude"}', keep=100)
    for slug, published in (("alpha", True), ("beta", False)):  # an unpublished one is kept too
        meta = orjson.dumps({"title": f"The {slug} story", "tags": ["x"]}).decode()
        await store.put_article(StoredArticle(slug, "2026-11-30T08:00:00.000Z", published, meta, '["Text."]'))


async def _exported(store: Store) -> bytes:
    out = io.BytesIO()
    await export(store, out, progress=False)
    return out.getvalue()


async def _imported(store: Store, data: bytes) -> dict[str, int]:
    return dict(await import_file(store, io.BytesIO(data), progress=False))


def _started(make: Callable[[], Store]) -> Callable[[], Awaitable[Store]]:
    async def start() -> Store:
        store = make()
        await store.start()
        return store

    return start


async def test_sqlite_to_postgres_round_trip_is_byte_identical(tmp_path: Path, database_url: str) -> None:
    source = SqliteStore(tmp_path / "source.sqlite3")
    target = PostgresStore(database_url)
    await source.start()
    await target.start()
    try:
        await _fill(source)
        first = await _exported(source)
        counts = await _imported(target, first)
        assert counts == {"thread": 2, "comment": 12, "event": 14, "kv": 3, "set": 2, "list": 2, "article": 2}
        assert await target.get_article("beta") == await source.get_article("beta")
        assert await _exported(target) == first
        assert await _imported(target, first) == counts  # twice is once
        assert await _exported(target) == first
        # Seqs and epochs kept: a reader's `since` reads the same events from either store.
        assert await target.head("alpha") == await source.head("alpha")
        assert await target.events_since("alpha", 3) == await source.events_since("alpha", 3)
        assert (await target.snapshot("beta")).comments == (await source.snapshot("beta")).comments
        assert await target.comment_by_ref("beta", "reader:r5:ref-1") is not None  # retries still deduplicate
    finally:
        await source.close()
        await target.close()
    lines = [orjson.loads(line) for line in first.splitlines()]
    assert lines[0] == {"kind": "header", "format": "backchannel-export", "version": 1}
    assert lines[-1]["kind"] == "end"
    assert not any("session" in (line.get("key") or "") for line in lines)  # credentials stay out of files
    print(f"export of the sample: {len(first)} bytes, {len(lines)} lines")


async def test_redis_to_postgres_round_trip_is_byte_identical(redis_server, database_url: str) -> None:
    redis_server.client().flushall()
    source = RedisStore(redis_server.url)
    target = PostgresStore(database_url)
    await source.start()
    await target.start()
    try:
        await _fill(source)
        first = await _exported(source)
        await _imported(target, first)
        assert await _exported(target) == first
        # ... and back into an emptied Redis.
        redis_server.client().flushall()
        await _imported(source, first)
        assert await _exported(source) == first
    finally:
        await source.close()
        await target.close()


async def test_a_cut_or_altered_file_is_refused(tmp_path: Path) -> None:
    source = SqliteStore(tmp_path / "source.sqlite3")
    target = SqliteStore(tmp_path / "target.sqlite3")
    await source.start()
    await target.start()
    try:
        await _fill(source)
        data = await _exported(source)
        with pytest.raises(ImportFailed, match="cut short"):
            await _imported(target, data[: data.rindex(b"\n", 0, -1) + 1])  # without the end line
        without_a_comment = b"".join(line for line in data.splitlines(True) if b'"id":"beta0000000005"' not in line)
        with pytest.raises(ImportFailed, match="end line counts"):
            await _imported(target, without_a_comment)
        with pytest.raises(ImportFailed, match="no header"):
            await _imported(target, b'{"kind": "thread"}\n')
    finally:
        await source.close()
        await target.close()


def _server_command(cwd: Path, data_dir: Path, *args: str, text: bool = True) -> subprocess.CompletedProcess:
    """`python -m server ARGS` on the embedded store in data_dir, as an operator would run it."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env = {**env, "DATA_DIR": str(data_dir), "CONTENT_DIR": str(ROOT / "content"), "SECRET_KEY": "test"}
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=cwd, env=env, capture_output=True, text=text)


def test_export_and_import_commands_with_10000_comments(tmp_path: Path) -> None:
    """The commands end to end, SQLite to SQLite, with a progress bar and the counts; timed."""
    import asyncio

    async def fill() -> None:
        store = SqliteStore(tmp_path / "a" / "backchannel.sqlite3")
        await store.start()
        for t in range(10):
            slug = f"thread-{t}"
            await store.ensure_thread(slug, [])
            for n in range(1000):
                await store.post(_comment(slug, t * 1000 + n), None)
        await store.close()

    asyncio.run(fill())
    dump = tmp_path / "dump.jsonl"
    started = time.perf_counter()
    exported = _server_command(tmp_path, tmp_path / "a", "export", str(dump))
    export_seconds = time.perf_counter() - started
    assert exported.returncode == 0, exported.stderr
    assert "10000 comment" in exported.stderr
    started = time.perf_counter()
    imported = _server_command(tmp_path, tmp_path / "b", "import", str(dump))
    import_seconds = time.perf_counter() - started
    assert imported.returncode == 0, imported.stderr
    assert "import" in imported.stderr and "10000 comment" in imported.stderr  # the bar, then the counts
    again = _server_command(tmp_path, tmp_path / "b", "export", text=False)
    assert again.stdout == dump.read_bytes()
    print(
        f"10,000 comments (10 threads, 10,000 events): export {export_seconds:.1f} s, "
        f"import {import_seconds:.1f} s (each with interpreter start), {dump.stat().st_size:,} bytes"
    )

    dump.write_bytes(dump.read_bytes()[:-50])  # cut short: the command says so and fails
    cut = _server_command(tmp_path, tmp_path / "c", "import", str(dump))
    assert cut.returncode != 0
    assert "import:" in cut.stderr


def test_html_becomes_text() -> None:
    text = html_to_text(
        '<p>A <b>bold</b> claim &amp; a <a href="https://example.org/x">source</a>.'
        '<script>alert("x")</script><style>p{}</style></p><p>Line one<br>line two</p>'
    )
    assert text.strip() == "A bold claim & a source (https://example.org/x).\n\n\n\nLine one\nline two"


async def _import_legacy(settings: Settings, source: str, reader: Callable, path: Path) -> dict[str, int]:
    store = SqliteStore(settings.data_dir / "backchannel.sqlite3")
    await store.start()
    try:
        with path.open("rb") as file:
            threads, posts = reader(file)
        articles, _problems = load_articles(settings.content_dir)
        return dict(await load_legacy(store, source, threads, posts, articles, progress=False))
    finally:
        await store.close()


def _thread(client: TestClient, slug: str) -> list[dict]:
    response = client.get(f"/api/articles/{slug}/comments")
    assert response.status_code == 200
    return response.json()["comments"]


async def test_disqus_export_imported_and_shown(settings: Settings) -> None:
    counts = await _import_legacy(settings, "disqus", read_disqus, DATA / "disqus-sample.xml")
    assert counts == {"threads": 2, "imported": 6}
    assert await _import_legacy(settings, "disqus", read_disqus, DATA / "disqus-sample.xml") == {
        "threads": 2,
        "already there": 6,
    }

    with TestClient(create_app(settings), base_url="http://testserver") as client:
        page = client.get(f"/articles/{DEMO}").text
        thread = _thread(client, DEMO)
        imported_ids = [c["id"] for c in thread if c["created_at"].startswith("2025-03-06")]
        chain = client.get(f"/articles/{DEMO}/comments/{imported_ids[2]}").text  # a reply's reply: on its permalink
        imported = [c for c in thread if c["created_at"].startswith("2025-03-06")]
        harbour = client.app.state.backend  # a thread of its own, under the slug of its URL path
        snapshot = client.portal.call(harbour.snapshot, "2025-03-council-votes-on-harbour-plan")
    assert [c["author"]["name"] for c in imported] == ["Margit Olsen", "Tomas Varga", "Margit Olsen", "", ""]
    assert len(thread) > len(imported)  # the article file's own comments are there too
    first, reply, reply_to_reply, deleted, spam = imported
    assert (reply["parent"], reply_to_reply["parent"]) == (first["id"], reply["id"])  # the chain, in created order
    assert first["body"] == (
        "This is a serious escalation.\n\nSee the UN Charter (https://www.un.org/en/about-us/un-charter), article 51."
    )
    assert "<script" not in first["html"] and "document.cookie" not in page
    assert "serious escalation" in page and f'id="c-{reply["id"]}"' in page
    assert f'id="c-{reply_to_reply["id"]}"' in chain
    assert (deleted["status"], deleted["body"], spam["status"]) == ("removed", "", "removed")
    assert "I take back" not in page and "Cheap watches" not in page
    assert [c.body for c in snapshot.comments] == ["About time the harbour got a plan."]
    assert [c.seq for c in snapshot.comments] == [1]


async def test_wxr_export_imported_and_shown(settings: Settings) -> None:
    counts = await _import_legacy(settings, "wxr", read_wxr, DATA / "wxr-sample.xml")
    assert counts == {"threads": 2, "imported": 5}

    with TestClient(create_app(settings), base_url="http://testserver") as client:
        page = client.get(f"/articles/{DEMO}").text
        imported = [c for c in _thread(client, DEMO) if c["created_at"].startswith("2025-03-06")]
        ferry = client.portal.call(client.app.state.backend.snapshot, "2025-02-ferry-timetable-changes")
    assert [c["author"]["name"] for c in imported] == ["Henrik Dahl", "Ana Lopes", "Henrik Dahl", ""]
    first, reply, reply_to_reply, trashed = imported
    assert (reply["parent"], reply_to_reply["parent"]) == (first["id"], reply["id"])
    assert (
        first["body"]
        == "Deterrence only works if it is credible.\n\nSecond paragraph, with a link (https://www.nato.int/)."
    )
    assert first["created_at"] == "2025-03-06T09:02:44.000Z"  # comment_date_gmt, not the local time
    assert "evil.example" not in page and trashed["status"] == "removed"
    assert "as the Ledger reported" not in page  # a pingback is no comment
    assert [(c.status, c.seq) for c in ferry.comments] == [(PENDING, None)]  # awaiting approval: still held
