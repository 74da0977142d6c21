"""A 10,000-comment thread against a real server: its pages must not stall the instance."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from pathlib import Path

import httpx2 as httpx

from server.backends import create_backend
from server.comments import Comment, utc_now_iso
from server.settings import Settings
from server.text import render_body
from server.threads import new_comment_id

from .servers import DEMO_SLUG

BIG_THREAD = 10_000
CONCURRENT_LOADS = 8
LOADS_EACH = 25  # a page is a screenful now (server/paging.py): quick, so each client loads it many times
PAGE_BYTES = 300_000  # issue 14: a 20,000-comment thread's page in at most 300 KB
# Rendered on the event loop, eight loads of this page stalled /healthz for 8 s (shared/FACTS.md).
# Now the typical answer (the median) must stay under the 200 ms the issue names, and no single
# answer may stall: 2 s is generous on purpose, since one answer took 267-396 ms while this shared
# 2-core machine ran several other suites (medians stayed 15-19 ms). The figures are printed.
HEALTHZ_MEDIAN_BOUND = 0.2
HEALTHZ_BOUND = 2.0


async def _write_thread(data_dir: Path, count: int) -> None:
    """Straight into the store the server will open: 10,000 HTTP posts would take minutes."""
    backend = create_backend(Settings(data_dir=data_dir, content_dir=data_dir))
    await backend.start()
    try:
        await backend.ensure_thread(DEMO_SLUG, [])
        ids: list[str] = []
        for n in range(count):
            body = f"Comment {n}: " + "a reader's considered view of the matter, at some length. " * 10
            comment = Comment(
                id=new_comment_id(DEMO_SLUG),
                slug=DEMO_SLUG,
                parent=ids[n - 3] if n % 4 == 3 else None,
                name=f"Reader {n}",
                about="Somewhere",
                body=body,
                html=render_body(body),
                created_at=utc_now_iso(),
                reader_id=f"r{n}",
            )
            stored, _ = await backend.post(comment, None)
            ids.append(stored.id)
    finally:
        await backend.close()


def test_healthz_answers_fast_while_big_pages_are_served(start_server, tmp_path: Path) -> None:
    data_dir = tmp_path / "big"
    started = time.perf_counter()
    asyncio.run(_write_thread(data_dir, BIG_THREAD))
    print(f"\nwrote {BIG_THREAD} comments in {time.perf_counter() - started:.1f} s")
    server = start_server(data_dir=data_dir)
    # Page loads from other processes, so that this process only measures /healthz.
    loads = [
        subprocess.Popen(
            [
                "curl",
                "-s",
                "-w",
                "%{http_code} %{size_download} %{time_total}\\n",
                *[arg for _ in range(LOADS_EACH) for arg in ("-o", "/dev/null", f"{server.url}/articles/{DEMO_SLUG}")],
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(CONCURRENT_LOADS)
    ]
    latencies = []
    with httpx.Client(timeout=30) as client:
        while any(load.poll() is None for load in loads):
            asked = time.perf_counter()
            assert client.get(f"{server.url}/healthz").status_code == 200
            latencies.append(time.perf_counter() - asked)
            time.sleep(0.05)  # a steady probe, as a load balancer's would be
    results = [line.split() for load in loads for line in load.communicate()[0].splitlines()]
    print(f"page loads (status, bytes, seconds), the first few: {results[:5]}")
    print(
        f"/healthz during them: {len(latencies)} probes, median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    assert len(results) == CONCURRENT_LOADS * LOADS_EACH
    assert all(status == "200" and int(size) < PAGE_BYTES for status, size, _seconds in results)
    assert len(latencies) >= 10, "the page loads ended before /healthz was probed meanwhile"
    assert statistics.median(latencies) < HEALTHZ_MEDIAN_BOUND
    assert max(latencies) < HEALTHZ_BOUND
