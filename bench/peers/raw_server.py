"""Peer (a), the raw limit: a bare `websockets` server that fans out with broadcast().

    python bench/peers/raw_server.py --port P [--redis redis://127.0.0.1:R/0 --instance ID]

No framework, no per-reader queue, no storage: each post gets a seq (Redis INCR, or a local
counter when alone), becomes one JSON string, and websockets.broadcast() writes it to every
local socket of the thread. With --redis, the frame is also published once on a Redis
channel and every other instance broadcasts it to its own sockets: the same two-instance
topology as Backchannel's. Runs on the product's own interpreter (websockets, redis, uvloop
and orjson are product dependencies), so it measures the floor of the same library.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import sys

import orjson
import uvloop
from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from frames import comment_frame, raise_nofile, welcome_frame  # noqa: E402

CHANNEL = "bench:raw:events"


async def main(port: int, redis_url: str | None, instance: str) -> None:
    threads: dict[str, set] = {}
    counter = itertools.count(1)
    redis = None
    if redis_url:
        import redis.asyncio as aioredis
        redis = aioredis.from_url(redis_url)

    async def handler(websocket) -> None:
        parts = websocket.request.path.split("?")[0].split("/")
        slug = parts[2] if len(parts) > 2 and parts[1] == "articles" else "default"
        readers = threads.setdefault(slug, set())
        readers.add(websocket)
        try:
            seq = int(await redis.get(f"bench:raw:seq:{slug}") or 0) if redis else 0
            await websocket.send(orjson.dumps(welcome_frame(seq, len(readers))).decode())
            async for message in websocket:
                try:
                    post = orjson.loads(message)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(post, dict) or post.get("type") != "post":
                    continue
                seq = await redis.incr(f"bench:raw:seq:{slug}") if redis else next(counter)
                frame = orjson.dumps(comment_frame(seq, post)).decode()  # serialised once
                broadcast(readers, frame)
                if redis:
                    await redis.publish(CHANNEL, f"{slug}\n{instance}\n{frame}")
        except ConnectionClosed:
            pass  # the reader went away (the bench's readers just drop their sockets at the end)
        finally:
            readers.discard(websocket)

    async def relay() -> None:
        pubsub = redis.pubsub()
        await pubsub.subscribe(CHANNEL)
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            slug, origin, frame = message["data"].decode().split("\n", 2)
            if origin != instance and slug in threads:
                broadcast(threads[slug], frame)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    relay_task = asyncio.create_task(relay()) if redis else None
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=65536, ping_interval=20,
                     ping_timeout=20, backlog=4096):
        await stop
    if relay_task:
        relay_task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis")
    parser.add_argument("--instance", default=str(os.getpid()))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise_nofile()
    uvloop.run(main(args.port, args.redis, args.instance))
