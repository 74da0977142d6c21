"""How many comments can the article page render, server side, in under 100 ms?

Fills a thread on the embedded backend with N comments (a third of them replies), then times
GET /articles/{slug} in-process: snapshot from SQLite + tree + Jinja2 render, no network.
Run: make bench-page
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.app import create_app  # noqa: E402
from server.backends.local import LocalBackend  # noqa: E402
from server.comments import Comment, utc_now_iso  # noqa: E402
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


def main() -> None:
    print(f"{'comments':>9} {'median ms':>10} {'ms per 100':>11}")
    under = 0
    for count in (50, 100, 200, 400, 800, 1600):
        ms = time_page(count)
        print(f"{count:>9} {ms:>10.1f} {ms / count * 100:>11.2f}")
        if ms < 100:
            under = count
    print(f"largest thread measured that renders in under 100 ms: {under} comments")


if __name__ == "__main__":
    main()
