"""`python -m server serve`: what it says at start about its settings and its Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .faults.cluster import Poster, Reader
from .redis_server import RedisServer
from .servers import DEMO_SLUG, free_port


@pytest.mark.parametrize("secret", [None, ""], ids=["unset", "empty"])
def test_a_missing_secret_key_with_redis_is_one_clear_line_and_no_start(tmp_path: Path, secret: str | None):
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PORT=str(free_port()), DATA_DIR=str(tmp_path))
    if secret is not None:
        env["SECRET_KEY"] = secret
    run = subprocess.run(
        [sys.executable, "-m", "server", "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    print(run.stderr)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        "python -m server serve: SECRET_KEY is missing: it is required when REDIS_URL is set "
        "(every instance must sign cookies with the same key)"
    ]


def test_a_redis_that_would_lose_comments_is_warned_about_at_start(tmp_path: Path, start_server):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        safe = start_server(REDIS_URL=redis.url)
        assert "WARNING" not in safe.log()
        redis.client().config_set("appendonly", "no")
        redis.client().config_set("maxmemory-policy", "allkeys-lru")
        unsafe = start_server(REDIS_URL=redis.url)
        warnings = [line for line in unsafe.log().splitlines() if line.startswith("WARNING")]
        print("\n".join(warnings))
        assert len(warnings) == 2
        assert "appendonly no" in warnings[0] and "maxmemory-policy allkeys-lru" in warnings[1]
    finally:
        redis.stop()


def test_more_workers_than_one_without_redis_is_one_clear_line_and_no_start(tmp_path: Path):
    env = {**os.environ, "PORT": str(free_port()), "DATA_DIR": str(tmp_path), "SECRET_KEY": "k"}
    env.pop("REDIS_URL", None)
    run = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--workers", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        "python -m server serve: --workers over 1 needs REDIS_URL: workers are separate instances, "
        "and only Redis joins them"
    ]


@pytest.mark.timeout(120)
async def test_two_workers_on_one_port_both_deliver_every_post_and_restart_gracefully(
    start_server, redis_server: RedisServer
):
    redis_server.client().flushall()
    server = start_server(
        REDIS_URL=redis_server.url, workers=2, POST_RATE_PER_READER="1000/second", POST_RATE_PER_IP="1000/second"
    )
    channel = "{bc:" + DEMO_SLUG + "}:events"
    deadline = time.monotonic() + 30
    while server.log().count("Application startup complete") < 2:  # /healthz answered for the first
        assert time.monotonic() < deadline, server.log()
        await asyncio.sleep(0.1)  # a log line has no event to wait on
    readers: list[Reader] = []
    tasks: list[asyncio.Task] = []
    poster = Poster([server])
    try:
        # The kernel gives each connection to one worker, and a worker subscribes to the thread
        # with its first reader: readers join until both workers have some.
        for _ in range(30):
            readers.append(Reader([server], 0))
            tasks.append(asyncio.create_task(readers[-1].run()))
            await asyncio.wait_for(readers[-1].connected.wait(), 10)
            if redis_server.client().pubsub_numsub(channel)[0][1] == 2:
                break
        else:
            pytest.fail("30 readers all landed on one worker")
        print(f"{len(readers)} readers, over both workers")
        last = [await poster.post(f"to every worker {n}") for n in range(5)][-1]
        await asyncio.gather(*(reader.wait_for(last["seq"], reader.epoch or "", 10) for reader in readers))

        # SIGHUP: uvicorn replaces the workers one at a time; each closes its sockets with 1012,
        # and its readers come back (to either worker) with their `since`.
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while not all(1012 in reader.close_codes for reader in readers):
            assert time.monotonic() < deadline, [reader.close_codes for reader in readers]
            await asyncio.sleep(0.1)  # a close has no event to wait on here
        last = [await poster.post(f"after the restart {n}") for n in range(5)][-1]
        await asyncio.gather(*(reader.wait_for(last["seq"], reader.epoch or "", 20) for reader in readers))
        for reader in readers:
            assert reader.violations == []
            assert reader.seqs == list(range(reader.seqs[0], last["seq"] + 1))  # every event, once
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await poster.close()
