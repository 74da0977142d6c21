"""A reconnect storm costs the store one log read per thread, not one per reader.

After a deploy every reader comes back at once with its `since`. The Hub keeps each active
thread's tail in memory; a catch-up inside it makes no store query, and the catch-ups that
need older events share one read. Counted on /metrics (backchannel_store_reads), not timed.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx2 as httpx
import pytest

from .servers import ServerProcess
from .test_live import FAST, collect, live_url, next_frame, post, reader, ws_connect

pytestmark = pytest.mark.timeout(120)

READERS = 500
STORE_READ = re.compile(r'^backchannel_store_reads_total\{query="(\w+)"\} ([0-9.e+]+)$', re.M)


def store_reads(server: ServerProcess) -> dict[str, int]:
    text = httpx.get(server.url + "/metrics", trust_env=False, timeout=10).text
    return {query: int(float(value)) for query, value in STORE_READ.findall(text)}


async def catch_up(server: ServerProcess, since: int, epoch: str, until: int) -> list[int]:
    """Connect with since and return the seqs replayed, up to `until`."""
    async with ws_connect(live_url(server, since=since, epoch=epoch), open_timeout=60) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert welcome["type"] == "welcome", welcome
        frames = await collect(ws, lambda fs: bool(fs) and fs[-1]["seq"] == until, timeout=60)
        return [frame["seq"] for frame in frames]


async def test_500_readers_reconnecting_after_a_restart_cost_a_handful_of_store_reads(
    start_server, database_url
) -> None:
    server = start_server(DATABASE_URL=database_url, **FAST)
    async with reader(server) as (poster, welcome):
        epoch, since = welcome["epoch"], welcome["seq"]
        for i in range(5):
            await post(poster, f"before the deploy {i}", name="Poster")
        await collect(poster, lambda fs: len(fs) == 10)
    head = since + 5
    server.restart()  # the deploy: a fresh instance, nothing in memory, every reader comes back
    before = store_reads(server)

    # Half come back with a since the new instance has not seen (the tail is read from the
    # store once for all of them); half once it has: served from memory.
    async with reader(server):  # stays: the thread stays active on the instance throughout
        first = await asyncio.gather(*(catch_up(server, since + i % 3, epoch, head) for i in range(READERS // 2)))
        second = await asyncio.gather(*(catch_up(server, since + i % 5, epoch, head) for i in range(READERS // 2)))
    for i, seqs in enumerate(first):
        assert seqs == list(range(since + i % 3 + 1, head + 1))
    for i, seqs in enumerate(second):
        assert seqs == list(range(since + i % 5 + 1, head + 1))

    after = store_reads(server)
    reads = {query: after[query] - before.get(query, 0) for query in ("head", "events_since")}
    print(f"{READERS} catch-ups after a restart cost the store {reads}")
    # The first reader's head and the thread's subscription, then one tail fill (a head and a
    # log read) for all. Without the tail: a head and a log read per reader.
    assert reads["events_since"] <= 2, reads
    assert reads["head"] <= 6, reads


async def test_a_since_older_than_the_tail_still_goes_to_the_store(start_server, database_url) -> None:
    """The tail holds HISTORY_SIZE events: an older since is answered by the store (reset)."""
    server = start_server(DATABASE_URL=database_url, HISTORY_SIZE="3", **FAST)
    async with reader(server) as (poster, welcome):
        epoch, since = welcome["epoch"], welcome["seq"]
        for i in range(5):
            await post(poster, f"filler {i}", name="Poster")
        await collect(poster, lambda fs: len(fs) == 10)
        async with reader(server, since=since + 2, epoch=epoch) as (ws, _):
            assert [(await next_frame(ws, "comment"))["seq"] for _ in range(3)] == [since + 3, since + 4, since + 5]
        async with reader(server, since=since + 1, epoch=epoch) as (ws, w):
            assert (await next_frame(ws, "reset"))["seq"] == w["seq"] == since + 5


async def test_welcome_from_the_tail_names_the_head(start_server) -> None:
    """A since at the head: welcome carries it, nothing is replayed, the next event is live."""
    server = start_server(**FAST)
    async with reader(server) as (poster, welcome):
        await post(poster, "one", name="Poster")
        await collect(poster, lambda fs: len(fs) == 2)
        async with reader(server, since=welcome["seq"] + 1, epoch=welcome["epoch"]) as (ws, w):
            assert w["seq"] == welcome["seq"] + 1
            await post(poster, "two", name="Poster")
            assert (await next_frame(ws, "comment"))["seq"] == welcome["seq"] + 2
