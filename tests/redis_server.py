"""Real redis-server processes for the tests, on free ports, that the tests may kill and restart."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from .servers import free_port


class RedisServer:
    def __init__(self, data_dir: Path, port: int | None = None, appendfsync: str = "always") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("the Redis tests need redis-server (apt-get install redis-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # AOF as README asks of production; "always" (the tests' default) makes a restart lose nothing.
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync,
                "--logfile", str(self.data_dir / "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on {self.port}")
                time.sleep(0.05)  # the port is not listening yet: nothing to wait on
            finally:
                client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)
