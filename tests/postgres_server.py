"""A real PostgreSQL cluster for the tests, on a free port, that the tests may stop and restart.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user (Debian's
package creates it) and its commands run through runuser. The binaries come from
`pg_config --bindir`, else Debian's /usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .servers import free_port


def _bindir() -> Path:
    candidates = []
    if shutil.which("pg_config"):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError("the PostgreSQL tests need initdb and pg_ctl (apt-get install postgresql)")


class PostgresServer:
    def __init__(self) -> None:
        self.bindir = _bindir()
        # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="bc-postgres-"))
        self.data_dir, self.socket_dir = self.root / "data", self.root / "sockets"
        self.port = free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            self._as_owner = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self._databases = itertools.count()

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_owner, *args], check=True, capture_output=True, cwd=self.root)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> PostgresServer:
        self.socket_dir.mkdir()
        if self._as_owner:
            shutil.chown(self.socket_dir, "postgres")
        # No fsync: a test cluster need not survive a power cut, and fsync is most of a commit's cost.
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "--no-instructions",
        )
        return self.start()

    def start(self) -> PostgresServer:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def restart(self) -> PostgresServer:
        self.stop()
        return self.start()

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"test_{next(self._databases)}"
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Each database takes ~8 MB of disk: a session's worth would make removing the cluster slow."""
        self._run(
            str(self.bindir / "dropdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "--force",
            url.rsplit("/", 1)[1],
        )

    def remove(self) -> None:
        try:
            with contextlib.suppress(subprocess.CalledProcessError):  # a test may have left it stopped
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
