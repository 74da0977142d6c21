"""CONTENT_DIR watched (issue 13, point 3): a file added or changed is published without a
restart, a broken one is logged and skipped (the article stays as it was), a deleted one
unpublishes its article. Each step waits for the watcher's batch, never a blind sleep."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from server.app import create_app
from server.settings import Settings

from .servers import DEMO_SLUG, ServerProcess

WAIT = 15.0  # seconds, generous: the watcher publishes within about a second
FILES_AT_ONCE = 200  # article files two instances write at once (a second or so of start-up each)


def story(title: str, text: str = "The text.") -> str:
    return f"{title}\n\nBy Ann Writer | Reporter\n\nTOWN, Nov 30 – {text}\n\nMore of it.\n\n(Reporting by Ann)\n"


@pytest.fixture
def content(tmp_path: Path) -> Path:
    directory = tmp_path / "content"
    directory.mkdir()
    (directory / "first.txt").write_text(story("First story"))
    return directory


@pytest.fixture
def watched(settings: Settings, content: Path) -> Iterator[tuple[TestClient, Callable[..., float]]]:
    settings = dataclasses.replace(settings, content_dir=content, content_watch=True)
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        batches = threading.Semaphore(0)
        client.app.state.content.on_batch = batches.release

        def change(write: Callable[[], None], done: Callable[[], bool]) -> float:
            """Make the change, then wait for the watcher's batches until `done()` says it is
            served. The watcher starts a moment after the app: a change it did not see within a
            second is made again."""
            started = time.monotonic()
            write()
            while True:
                if not batches.acquire(timeout=1.0):
                    write()
                elif done():
                    return time.monotonic() - started
                assert time.monotonic() - started < WAIT, "the watcher never published the change"

        yield client, change


def test_a_file_added_changed_broken_and_deleted(watched, content: Path, caplog: pytest.LogCaptureFixture):
    client, change = watched
    assert client.get("/articles/first-story").status_code == 200

    def served(slug: str, text: str) -> Callable[[], bool]:
        return lambda: text in client.get(f"/articles/{slug}").text

    took = change(
        lambda: (content / "second.txt").write_text(story("Second story", "Fresh news.")),
        served("second-story", "Fresh news."),
    )
    print(f"\na new file was published {took:.2f} s after it was written")
    assert "Second story" in client.get("/").text

    change(
        lambda: (content / "second.txt").write_text(story("Second story", "Corrected news.")),
        served("second-story", "Corrected news."),
    )

    def logged() -> bool:
        return any("second.txt" in r.getMessage() and "byline" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.ERROR, logger="backchannel.content"):
        change(lambda: (content / "second.txt").write_text("Second story\n\nno byline here\n"), logged)
    assert "Corrected news." in client.get("/articles/second-story").text  # as it was
    assert client.get("/healthz").status_code == 200

    change(
        lambda: (content / "first.txt").unlink(missing_ok=True),
        lambda: client.get("/articles/first-story").status_code == 410,
    )
    assert "First story" not in client.get("/").text


def test_an_unchanged_file_is_not_written_again_at_a_restart(settings: Settings, content: Path):
    settings = dataclasses.replace(settings, content_dir=content, content_watch=False)
    with TestClient(create_app(settings)) as first:
        before = first.get("/api/articles").json()[0]["updated_at"]
    with TestClient(create_app(settings)) as again:
        assert again.get("/api/articles").json()[0]["updated_at"] == before


def test_a_file_article_a_flushed_redis_lost_is_written_again_with_its_comments(settings: Settings, redis_server):
    """Redis-only, two instances: a flush loses the articles with the threads; the instance
    that had not kept the body writes it again from its file when a reader asks, and the
    thread comes back with the file's own comments (as it did before articles were stored)."""
    redis_server.client().flushall()
    settings = dataclasses.replace(settings, redis_url=redis_server.url, content_watch=False)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        assert first.get(f"/articles/{DEMO_SLUG}").status_code == 200
        redis_server.client().flushall()
        page = second.get(f"/articles/{DEMO_SLUG}")
        assert page.status_code == 200 and "MOSCOW, Feb 2 (Reuters)" in page.text
        authors = [c["author"]["name"] for c in second.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]]
        assert authors == ["Markus Scholz", "Anya Petrova", "David Chen", "Claire Dubois"]


def test_two_instances_started_at_once_on_an_empty_redis_both_serve_every_file_article(tmp_path: Path, redis_server):
    """Two real instances starting at the same moment on one flushed Redis write the same files:
    each finds some of them already written by the other (unchanged, so not written again) and
    must serve them all the same, not answer 'No such article.' for them until a restart. Many
    files, so that the two start-ups overlap whatever the machine's load."""
    content = tmp_path / "content"
    content.mkdir()
    slugs = [f"story-{n:03d}" for n in range(FILES_AT_ONCE)]
    for slug in slugs:
        (content / f"{slug}.txt").write_text(story(slug.replace("-", " ").capitalize()))
    redis_server.client().flushall()
    servers = [ServerProcess(tmp_path / name, content, REDIS_URL=redis_server.url) for name in "ab"]
    try:
        started = time.monotonic()
        with ThreadPoolExecutor() as pool:
            list(pool.map(ServerProcess.start, servers))
        print(f"two instances started on {FILES_AT_ONCE} files in {time.monotonic() - started:.1f} s")
        for server in servers:
            with httpx.Client(base_url=server.url) as client:
                missing = [slug for slug in slugs if client.get(f"/articles/{slug}").status_code != 200]
            assert missing == [], f"{server.url} does not serve {len(missing)} file article(s): {missing[:5]}…"
    finally:
        for server in servers:
            server.stop()
