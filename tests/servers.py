"""Real servers for the tests: `python -m server serve` processes on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
DEMO_SLUG = "moscow-warns-western-troops-in-ukraine-would-be-legitimate-targets"
# A short French story with no seed comments (tests/conftest.py's local_story): its thread starts
# empty, and nothing English is on its page but what the UI itself would say.
LOCAL_STORY_SLUG = "le-conseil-municipal-adopte-le-budget"
LOCAL_STORY = """Le conseil municipal adopte le budget

By Claire Martin | Rédaction locale

LYON, 30 nov. – Le conseil municipal a adopté lundi soir le budget de l'année prochaine.

Le vote a été acquis à une large majorité, après trois heures de débat.
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    """`python -m server ARGS` as an operator runs it beside the servers (env: their settings);
    it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "server", *args],
        input=stdin,
        text=True,
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "test-secret-key", **env},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


class ServerProcess:
    """One uvicorn instance of the product, started exactly as `make run` starts it."""

    def __init__(self, data_dir: Path, content_dir: Path | None = None, workers: int = 1, **env: str) -> None:
        """workers: --workers (one process by default, so that a test's instance is one
        process it can kill, as the tests of instances mean)."""
        self.data_dir = data_dir
        self.content_dir = content_dir or ROOT / "content"
        self.workers = workers
        self.env = env
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DATA_DIR": str(self.data_dir),
            "CONTENT_DIR": str(self.content_dir),
            "SECRET_KEY": "test-secret-key",
            "PASSWORD_HASH_PROFILE": "CHEAPEST",
            **self.env,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the server writes to its own copy of the handle
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--workers", str(self.workers)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)  # polling a port that is not listening yet: nothing to wait on
        raise TimeoutError(f"server did not answer on {self.url}:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def command(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        """A `python -m server` command on this server's store (its data dir and settings)."""
        return server_command(*args, env={"DATA_DIR": str(self.data_dir), **self.env}, stdin=stdin)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("the browser tests need Debian's chromium (apt-get install chromium; .ci/run does it)")
    return path


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
