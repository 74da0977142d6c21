"""The stores side by side, in one run: SQLite (one instance), Redis-only and PostgreSQL+Redis
(two instances each, sharing the store).

For each store: posts per second sustained on one thread and across 1,000 threads, and
post-to-delivery p50/p99 under that load; then, on the shared stores, what Redis holds with
the 1,000 threads active (INFO memory). Posters post in a closed loop (the next post when the
ack of the last one arrived), alternating instances; each body carries time.monotonic_ns()
(one machine, one clock) and a reader on the other instance (the same one for SQLite) stamps
the delivery. The bench client shares the machine's cores with the servers: compare the rows
with each other, not with another machine.
PostgreSQL runs without fsync (as in the tests) and Redis with appendfsync everysec: the rows
are the cost of the protocol, not of the disk.
Run: make bench-store   (not part of make test; about two minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from server.content import slugify  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.servers import ServerProcess  # noqa: E402

THREADS = 1000
ONE_THREAD_POSTERS = 20
UNLIMITED = {
    "POST_RATE_PER_READER": "1000000/second",
    "POST_RATE_PER_IP": "1000000/second",
    "MAX_CONNECTIONS_PER_IP": "100000",
    "SEND_BUFFER_BYTES": str(16 * 1024 * 1024),
}


def write_articles(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    slugs = []
    for n in range(count):
        title = f"Bench thread {n:04d}"
        (folder / f"bench-{n:04d}.txt").write_text(f"{title}\n\nBy Bench | Desk\n\nA thread for the store bench.\n")
        slugs.append(slugify(title))
    return slugs


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def open_socket(server: ServerProcess, slug: str) -> ClientConnection:
    """A reader's socket after its welcome; closed with 1013 (the store was busy), it comes
    back as the page does."""
    while True:
        ws = await connect(
            f"{server.ws_url}/articles/{slug}/live", ping_interval=None, max_queue=None, open_timeout=60, proxy=None
        )
        try:
            welcome = json.loads(await ws.recv())
        except ConnectionClosed:
            await asyncio.sleep(0.5)
            continue
        assert welcome["type"] == "welcome", welcome
        return ws


async def read_latencies(ws: ClientConnection, latencies: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            raw = await asyncio.wait_for(ws.recv(), 0.5)
        except TimeoutError:
            continue
        now = time.monotonic_ns()
        if '"comment"' not in raw[:40]:
            continue
        body = json.loads(raw)["comment"]["body"]
        if body.startswith("t="):
            latencies.append((now - int(body[2:].split(" ", 1)[0])) / 1e6)


async def post_loop(ws: ClientConnection, stop: asyncio.Event, acked: list[int], name: str) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        await ws.send(
            json.dumps(
                {"type": "post", "ref": f"{name}-{n}", "name": "Bench", "body": f"t={time.monotonic_ns()} {name} {n}"}
            )
        )
        while True:  # its own comment arrives too: read until the ack (or an error)
            frame = json.loads(await ws.recv())
            if frame["type"] == "ack":
                acked[0] += 1
                break
            if frame["type"] == "error":
                await asyncio.sleep(float(frame.get("retry_after") or 0.1))
                break


async def workload(servers: list[ServerProcess], slugs: list[str], posters_per_slug: int, seconds: float) -> dict:
    """Closed-loop posters on these threads (alternating instances), a reader of each thread on
    the next instance: posts/s acknowledged, and delivery latency at those readers."""
    sem = asyncio.Semaphore(200)  # connect in waves: a handshake storm is not what is measured

    async def opened(server: ServerProcess, slug: str) -> ClientConnection:
        async with sem:
            return await open_socket(server, slug)

    posters = await asyncio.gather(
        *(
            opened(servers[(i + k) % len(servers)], slug)
            for i, slug in enumerate(slugs)
            for k in range(posters_per_slug)
        )
    )
    readers = await asyncio.gather(*(opened(servers[(i + 1) % len(servers)], slug) for i, slug in enumerate(slugs)))
    stop, acked, latencies = asyncio.Event(), [0], []
    reading = [asyncio.create_task(read_latencies(ws, latencies, stop)) for ws in readers]
    posting = [asyncio.create_task(post_loop(ws, stop, acked, f"p{i}")) for i, ws in enumerate(posters)]
    await asyncio.sleep(1.0)  # warm-up: connections settled, first posts through
    start_acked, start_latencies, started = acked[0], len(latencies), time.monotonic()
    await asyncio.sleep(seconds)
    rate = (acked[0] - start_acked) / (time.monotonic() - started)
    measured = latencies[start_latencies:]
    stop.set()
    await asyncio.gather(*posting, return_exceptions=True)
    await asyncio.gather(*reading, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in [*posters, *readers]), return_exceptions=True)
    return {"posts/s": rate, "p50": pct(measured, 0.5), "p99": pct(measured, 0.99), "n": len(measured)}


async def redis_memory_with_active_threads(servers: list[ServerProcess], slugs: list[str], url: str) -> int:
    """Redis's used_memory while a reader holds every thread active (after the workloads)."""
    sem = asyncio.Semaphore(200)

    async def opened(server: ServerProcess, slug: str) -> ClientConnection:
        async with sem:
            return await open_socket(server, slug)

    readers = await asyncio.gather(*(opened(servers[i % len(servers)], slug) for i, slug in enumerate(slugs)))
    await asyncio.sleep(1.0)  # presence reports settle
    used = redis.Redis.from_url(url).info("memory")["used_memory"]
    await asyncio.gather(*(ws.close() for ws in readers), return_exceptions=True)
    return int(used)


def start_instances(count: int, root: Path, content: Path, **env: str) -> list[ServerProcess]:
    return [ServerProcess(root / f"instance{n}", content, **UNLIMITED, **env).start(timeout=60) for n in range(count)]


async def bench_store(
    name: str, servers: list[ServerProcess], slugs: list[str], seconds: float, redis_url: str | None
) -> dict:
    print(f"{name}: one thread …", flush=True)
    one = await workload(servers, slugs[:1], ONE_THREAD_POSTERS, seconds)
    print(f"{name}: {len(slugs)} threads …", flush=True)
    many = await workload(servers, slugs, 1, seconds)
    memory = await redis_memory_with_active_threads(servers, slugs, redis_url) if redis_url else None
    row = {"store": name, "instances": len(servers), "one": one, "many": many, "redis_memory": memory}
    print(table([row], len(slugs)).splitlines()[-1], flush=True)
    return row


def table(rows: list[dict], threads: int) -> str:
    lines = [
        f"| store | instances | 1 thread posts/s | p50 / p99 ms | {threads} threads posts/s | p50 / p99 ms "
        f"| Redis used_memory, {threads} threads active |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        one, many = row["one"], row["many"]
        memory = f"{row['redis_memory'] / 2**20:.1f} MiB" if row["redis_memory"] else "–"
        lines.append(
            f"| {row['store']} | {row['instances']} | {one['posts/s']:.0f} | {one['p50']:.1f} / "
            f"{one['p99']:.1f} | {many['posts/s']:.0f} | {many['p50']:.1f} / {many['p99']:.1f} | {memory} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per workload")
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        root = Path(tmp)
        slugs = write_articles(root / "content", args.threads)
        servers = start_instances(1, root / "sqlite", root / "content")
        try:
            rows.append(await bench_store("SQLite", servers, slugs, args.seconds, None))
        finally:
            for server in servers:
                server.stop()

        redis_server = RedisServer(root / "redis", appendfsync="everysec").start()
        try:
            servers = start_instances(2, root / "redis-only", root / "content", REDIS_URL=redis_server.url)
            try:
                rows.append(await bench_store("Redis-only", servers, slugs, args.seconds, redis_server.url))
            finally:
                for server in servers:
                    server.stop()
            redis_server.client().flushall()

            postgres = PostgresServer().init()
            try:
                database = postgres.create_database()
                servers = start_instances(
                    2, root / "pg", root / "content", DATABASE_URL=database, REDIS_URL=redis_server.url
                )
                try:
                    rows.append(await bench_store("PostgreSQL + Redis", servers, slugs, args.seconds, redis_server.url))
                finally:
                    for server in servers:
                        server.stop()
            finally:
                postgres.remove()
        finally:
            redis_server.stop()
    print()
    print(
        f"Closed-loop posters ({ONE_THREAD_POSTERS} on one thread; one per thread on {args.threads}), "
        f"{args.seconds:.0f} s each; latency: post sent to comment received on the other instance."
    )
    print(table(rows, args.threads))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
