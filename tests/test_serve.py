"""`python -m server serve`: what it says at start about its settings and its Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .redis_server import RedisServer
from .servers import free_port


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
