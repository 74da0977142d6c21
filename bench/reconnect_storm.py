"""A reconnect storm: after a deploy, 10,000 readers come back at once with their `since`.

Two instances on PostgreSQL + Redis; READERS readers spread over THREADS threads, each a few
events behind. Both instances are restarted (the deploy: nothing in memory), then every reader
reconnects with its since and epoch at once. Measured: the time from the first reconnect to
the last reader holding every event it missed, and what that cost the database — the store
reads the instances counted (/metrics: backchannel_store_reads) and the transactions
PostgreSQL counted (pg_stat_database.xact_commit, all queries of everything, the reconcile
loop included). Without the Hub's tail each reader would cost a head and a log read: 2 per reader.
Run: make bench-storm   (not part of make test)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx2 as httpx  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from bench.store import UNLIMITED, open_socket, write_articles  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.servers import ServerProcess  # noqa: E402

STORE_READ = re.compile(r'^backchannel_store_reads_total\{query="(\w+)"\} ([0-9.e+]+)$', re.M)
HANDSHAKES_AT_ONCE = 500  # the client's own limit, so that it is not what is measured


def store_reads(servers: list[ServerProcess]) -> dict[str, int]:
    total: dict[str, int] = {}
    for server in servers:
        for query, value in STORE_READ.findall(httpx.get(server.url + "/metrics", trust_env=False, timeout=30).text):
            total[query] = total.get(query, 0) + int(float(value))
    return total


async def transactions(database: str) -> int:
    connection = await asyncpg.connect(database)
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        return int(
            await connection.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            )
        )
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--behind", type=int, default=5, help="readers are 1..behind events behind")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp:
        root = Path(tmp)
        slugs = write_articles(root / "content", args.threads)
        redis_server = RedisServer(root / "redis", appendfsync="everysec").start()
        postgres = PostgresServer().init()
        servers: list[ServerProcess] = []
        try:
            database = postgres.create_database()
            servers = [
                ServerProcess(
                    root / f"instance{n}",
                    root / "content",
                    **UNLIMITED,
                    DATABASE_URL=database,
                    REDIS_URL=redis_server.url,
                ).start(timeout=60)
                for n in range(2)
            ]
            heads: dict[str, tuple[int, str]] = {}
            for slug in slugs:  # the history readers will have missed
                ws = await open_socket(servers[0], slug)
                for n in range(args.behind):
                    await ws.send(json.dumps({"type": "post", "ref": f"{slug}-{n}", "name": "Bench", "body": f"{n}"}))
                    while json.loads(await ws.recv())["type"] != "ack":
                        pass
                await ws.close()
            for slug in slugs:
                async with connect(f"{servers[0].ws_url}/articles/{slug}/live", proxy=None) as ws:
                    welcome = json.loads(await ws.recv())
                    heads[slug] = (welcome["seq"], welcome["epoch"])

            print(f"the deploy: restarting both instances, then {args.readers} readers reconnect", flush=True)
            for server in servers:
                server.restart()
            transactions_before = await transactions(database)
            reads_before = store_reads(servers)
            sem = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
            sockets = []

            retries = [0]

            async def come_back(i: int) -> float:
                """Reconnect with since until every missed event is in; a close (1013: the
                store was busy) is answered as the page does: again, with the last seq seen."""
                slug = slugs[i % len(slugs)]
                head, epoch = heads[slug]
                since = head - 1 - i % args.behind
                server = servers[i // len(slugs) % 2]
                while True:
                    try:
                        async with sem:
                            ws = await connect(
                                f"{server.ws_url}/articles/{slug}/live?since={since}&epoch={epoch}",
                                ping_interval=None,
                                max_queue=None,
                                open_timeout=120,
                                proxy=None,
                            )
                        sockets.append(ws)
                        while True:
                            frame = json.loads(await ws.recv())
                            if frame["type"] == "reset":
                                raise AssertionError(f"reader {i} was reset: {frame}")
                            if frame["type"] == "comment":
                                since = frame["seq"]
                                if since == head:
                                    return time.monotonic()
                    except (ConnectionClosed, OSError, TimeoutError):
                        retries[0] += 1
                        await asyncio.sleep(0.5)

            started = time.monotonic()
            finished = await asyncio.gather(*(come_back(i) for i in range(args.readers)))
            elapsed = max(finished) - started
            await asyncio.sleep(1.5)  # PostgreSQL publishes a backend's statistics within a second of idling
            reads_after = store_reads(servers)
            reads = {q: reads_after.get(q, 0) - reads_before.get(q, 0) for q in ("head", "heads", "events_since")}
            xacts = await transactions(database) - transactions_before - 1  # less our own first look
            print()
            print(
                "| readers | threads | instances | all caught up after | closed and came back | store reads "
                "(head + heads + events_since) | PostgreSQL transactions | without the tail |"
            )
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            print(
                f"| {args.readers} | {args.threads} | 2 | {elapsed:.1f} s | {retries[0]} "
                f"| {reads['head']} + {reads['heads']} + {reads['events_since']} | {xacts} | {2 * args.readers} reads |"
            )
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        finally:
            for server in servers:
                server.stop()
            postgres.remove()
            redis_server.stop()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
