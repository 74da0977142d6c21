"""Real redis-server processes for the tests (and the fan-out bench), on free ports, that the
tests may kill and restart."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from .servers import free_port


class RedisServer:
    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendfsync: str | None = "always",
        max_clients: int | None = None,
        spawn: Callable[[list[str]], subprocess.Popen] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """appendfsync=None: no append-only file at all, for a run that never restarts Redis.
        spawn(args) -> the process, for a caller that starts its processes its own way (the bench).
        extra_args: more redis-server options (a cluster node's)."""
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.max_clients = max_clients
        self.spawn = spawn
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("the Redis tests need redis-server (apt-get install redis-server)")
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        # AOF as README asks of production; "always" (the tests' default) makes a restart lose nothing.
        if self.appendfsync:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            args += ["--appendonly", "no"]
        if self.max_clients:
            args += ["--maxclients", str(self.max_clients)]
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = self.command()
        if self.spawn is None:
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            self.process = self.spawn(args)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
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
