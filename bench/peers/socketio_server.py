"""Peer (b): python-socketio's AsyncServer with AsyncRedisManager, under uvicorn.

    bench/.venv-peers/bin/python bench/peers/socketio_server.py --port P [--redis URL]

The common Python choice, used the way its docs show: readers join a room per article;
a post gets a seq (Redis INCR) and is emitted to the room; the Redis manager carries it to the
other instances. uvicorn runs with the same options as Backchannel's (uvloop, httptools,
websockets-sansio, 64 KiB frames); Engine.IO over WebSocket only (no long-polling).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from urllib.parse import parse_qs

import socketio
import uvicorn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from frames import comment_frame, raise_nofile, welcome_frame  # noqa: E402


def create_app(redis_url: str | None):
    manager = socketio.AsyncRedisManager(redis_url, channel="bench-socketio") if redis_url else None
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, transports=["websocket"],
                               max_http_buffer_size=65536)
    redis = None
    if redis_url:
        import redis.asyncio as aioredis
        redis = aioredis.from_url(redis_url)
    counter = itertools.count(1)
    slugs: dict[str, str] = {}

    @sio.event
    async def connect(sid, environ, auth=None):
        slug = parse_qs(environ.get("QUERY_STRING", "")).get("slug", ["default"])[0]
        slugs[sid] = slug
        await sio.enter_room(sid, slug)
        seq = int(await redis.get(f"bench:sio:seq:{slug}") or 0) if redis else 0
        await sio.emit("welcome", welcome_frame(seq, 0), to=sid)

    @sio.event
    async def disconnect(sid, *args):
        slugs.pop(sid, None)

    @sio.on("post")
    async def post(sid, data):
        if not isinstance(data, dict):
            return
        slug = slugs.get(sid, "default")
        seq = await redis.incr(f"bench:sio:seq:{slug}") if redis else next(counter)
        await sio.emit("comment", comment_frame(seq, data), room=slug)

    return socketio.ASGIApp(sio)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis")
    args = parser.parse_args()
    raise_nofile()
    uvicorn.run(create_app(args.redis), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                ws="websockets-sansio", ws_max_size=65536, backlog=4096, log_level="warning",
                timeout_graceful_shutdown=2)
