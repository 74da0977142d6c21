"""How many comments can the article page render, server side, in under 100 ms? And how fast
are the index and an article page with 10,000 articles in the store?

Fills a thread on the embedded backend with N comments (a third of them replies), then times
GET /articles/{slug} in-process: snapshot from SQLite + tree + Jinja2 render, no network.
Then stores 10,000 articles (as the API does) and times GET / on pages all through the list
(the newest, and random older ones by their cursor) and one article's page: median and p99
of the server's time in-process, the HTML's size, and the memory the articles' summaries take
in each instance.
Last, issue 14's numbers on a 20,000-comment thread (many of them replies, in long chains): the
article page (median server time, HTML size), a page of the API, a permalink to a reply deep
in the thread, and how soon Chromium shows the page (a real server, headless Chromium).
Run: make bench-page
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.app import create_app  # noqa: E402
from server.articles import Articles, encode_cursor, to_stored  # noqa: E402
from server.backends.local import LocalBackend  # noqa: E402
from server.comments import Comment, utc_now_iso  # noqa: E402
from server.content import Article  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.text import render_body  # noqa: E402
from server.threads import new_comment_id  # noqa: E402

SLUG = "moscow-warns-western-troops-in-ukraine-would-be-legitimate-targets"
BODY = (
    "I read this twice and I still think the ministry is talking to two audiences at once. "
    "See https://example.org/analysis for the background.\n\nSecond paragraph of the comment."
)


async def fill(data_dir: Path, count: int) -> None:
    backend = LocalBackend(data_dir / "backchannel.sqlite3")
    await backend.start()
    await backend.ensure_thread(SLUG, [])
    ids: list[str] = []
    rng = random.Random(1)
    for _ in range(count):
        parent = rng.choice(ids) if ids and rng.random() < 0.33 else None
        comment = Comment(
            id=new_comment_id(SLUG),
            slug=SLUG,
            parent=parent,
            name="Reader Name",
            about="Teacher, Leeds",
            body=BODY,
            html=render_body(BODY),
            created_at=utc_now_iso(),
        )
        stored, _ = await backend.post(comment, None)
        ids.append(stored.id)
    await backend.close()


def time_page(count: int, runs: int = 15) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        asyncio.run(fill(data_dir, count))
        settings = Settings(data_dir=data_dir, content_dir=ROOT / "content", secret_key="bench")
        with TestClient(create_app(settings)) as client:
            client.get(f"/articles/{SLUG}")  # warm the template cache
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                assert client.get(f"/articles/{SLUG}").status_code == 200
                samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


ARTICLES = 10_000
PARAGRAPH = (
    "The council met late into the evening and heard from residents on both sides of the river, "
    "who described years of detours, a ferry that rarely ran on time, and the cost of both."
)


def newsroom_article(n: int) -> Article:
    day, minute = divmod(n, 24 * 60)
    return Article(
        slug=f"story-number-{n:05d}",
        title=f"Council votes on the bridge, part {n}: what it means for the east bank",
        byline_name="Ann Writer",
        byline_role="City desk",
        dateline="RIVERTON, Nov 30 – " + PARAGRAPH[:150],
        paragraphs=tuple(f"{PARAGRAPH} ({p})" for p in range(12)),
        credit="Reporting by Ann Writer; editing by Bo Editor",
        seed_comments=(),
        source="api",
        published_at=f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}T{minute // 60:02d}:{minute % 60:02d}:00.000Z",
        updated_at=utc_now_iso(),
        url=f"https://news.example/city/{n}",
        section="City",
        tags=("council", "bridge"),
    )


async def fill_articles(data_dir: Path, count: int) -> float:
    """Store `count` articles; returns the MiB their summaries take in one instance's memory."""
    backend = LocalBackend(data_dir / "backchannel.sqlite3")
    await backend.start()
    for n in range(count):
        await backend.put_article(to_stored(newsroom_article(n), published=True))
    await backend.ensure_thread(newsroom_article(count // 2).slug, [])
    tracemalloc.start()
    articles = Articles(backend)
    await articles.load()
    mib = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    await backend.close()
    return mib


def percentiles(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples) * 1000, statistics.quantiles(samples, n=100)[98] * 1000


def print_page_table(client: TestClient, title: str, targets: dict[str, Callable[[], str]], runs: int) -> None:
    """One row per page: median and p99 server time, and the HTML's size (the template cache warmed first)."""
    print(f"{title:<36} {'median ms':>10} {'p99 ms':>8} {'HTML KiB':>9}")
    for name, path in targets.items():
        client.get(path())  # warm the template cache
        samples, sizes = [], []
        for _ in range(runs):
            url = path()
            start = time.perf_counter()
            response = client.get(url)
            samples.append(time.perf_counter() - start)
            assert response.status_code == 200, url
            sizes.append(len(response.content))
        median, p99 = percentiles(samples)
        print(f"{name:<36} {median:>10.2f} {p99:>8.2f} {statistics.median(sizes) / 1024:>9.1f}")


def time_articles(count: int = ARTICLES, runs: int = 200) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        summaries_mib = asyncio.run(fill_articles(data_dir, count))
        print(
            f"\n{count} articles stored in {time.perf_counter() - started:.1f} s; their summaries take "
            f"{summaries_mib:.1f} MiB in each instance (bodies are read on demand, at most 256 kept)"
        )
        settings = Settings(
            data_dir=data_dir, content_dir=Path(tmp) / "no-content", secret_key="bench", content_watch=False
        )
        rng = random.Random(2)
        cursors = [encode_cursor(newsroom_article(n)) for n in range(count)]
        targets = {
            "index, newest page": lambda: "/",
            "index, a random older page": lambda: f"/?before={rng.choice(cursors)}",
            "an article's page (12 paragraphs)": lambda: f"/articles/{newsroom_article(count // 2).slug}",
        }
        started = time.perf_counter()
        with TestClient(create_app(settings)) as client:
            print(f"an instance starts with {count} articles in {time.perf_counter() - started:.1f} s")
            print_page_table(client, "page", targets, runs)


BIG_THREAD = 20_000


async def fill_big_thread(data_dir: Path, count: int) -> list[str]:
    """A breaking-news thread: a third top-level, the rest replies, mostly to recent comments (so
    chains run deep). Returns the ids, oldest first."""
    backend = LocalBackend(data_dir / "backchannel.sqlite3")
    await backend.start()
    await backend.ensure_thread(SLUG, [])
    ids: list[str] = []
    rng = random.Random(3)
    for n in range(count):
        parent = None
        if ids and n % 3:
            parent = ids[-rng.randint(1, min(len(ids), 40))]
        comment = Comment(
            id=new_comment_id(SLUG),
            slug=SLUG,
            parent=parent,
            name=f"Reader {n}",
            about="Teacher, Leeds",
            body=BODY,
            html=render_body(BODY),
            created_at=utc_now_iso(),
        )
        stored, _ = await backend.post(comment, None)
        ids.append(stored.id)
    await backend.close()
    return ids


def chromium_shows(url: str, runs: int = 5) -> float:
    """Median ms from navigation to the first comments painted and the page's script settled."""
    from playwright.sync_api import sync_playwright

    from tests.servers import CHROMIUM_ARGS, chromium_path

    samples = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for _ in range(runs):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            start = time.perf_counter()
            page.goto(url, wait_until="load")
            page.locator("#thread li.comment").first.wait_for(state="visible")
            samples.append(time.perf_counter() - start)
            page.close()
        browser.close()
    return statistics.median(samples) * 1000


def time_big_thread(count: int = BIG_THREAD, runs: int = 40) -> None:
    from tests.servers import ServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        ids = asyncio.run(fill_big_thread(data_dir, count))
        print(f"\n{count} comments written in {time.perf_counter() - started:.1f} s")
        settings = Settings(data_dir=data_dir, content_dir=ROOT / "content", secret_key="bench")
        api = f"/api/articles/{SLUG}/comments"
        with TestClient(create_app(settings)) as client:
            late = client.get(api, params={"sort": "oldest", "limit": 200}).json()
            for _ in range(20):  # a top-level comment some twenty pages of 200 in: "page 40" of 100
                late = client.get(api, params={"sort": "oldest", "limit": 200, "after": late["next"]}).json()
            deep = ids[-1]  # the newest reply, at the end of a long chain
            rng = random.Random(4)
            targets = {
                "article page (first screenful)": lambda: f"/articles/{SLUG}",
                "article page, oldest first": lambda: f"/articles/{SLUG}?sort=oldest",
                "API page (50 top-level)": lambda: f"{api}?sort=newest",
                "API page of replies": lambda: f"{api}?parent={rng.choice(ids[: count // 2])}",
                "permalink, deep in the thread": lambda: f"/articles/{SLUG}/comments/{deep}",
                "permalink, a late page": lambda: f"/articles/{SLUG}/comments/{late['comments'][-1]['id']}",
            }
            print_page_table(client, "20,000-comment thread", targets, runs)
        server = ServerProcess(data_dir, content_dir=ROOT / "content").start()
        try:
            print(
                f"Chromium shows the article page in {chromium_shows(f'{server.url}/articles/{SLUG}'):.0f} ms (median)"
            )
        finally:
            server.stop()


def main() -> None:
    if "--big-thread" in sys.argv:  # issue 14's figures alone
        time_big_thread()
        return
    print(f"{'comments':>9} {'median ms':>10} {'ms per 100':>11}")
    under = 0
    for count in (50, 100, 200, 400, 800, 1600):
        ms = time_page(count)
        print(f"{count:>9} {ms:>10.1f} {ms / count * 100:>11.2f}")
        if ms < 100:
            under = count
    print(f"largest thread measured that renders in under 100 ms: {under} comments")
    time_articles()
    time_big_thread()


if __name__ == "__main__":
    main()
