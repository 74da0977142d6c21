"""The processes the bench starts, and what /proc says about them.

Everything the bench starts runs in its own process group, dies with the bench
(PR_SET_PDEATHSIG) and is stopped in a finally block, Ctrl-C included.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.redis_server import RedisServer
from tests.servers import ROOT

BENCH = ROOT / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


_libc = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it if the bench dies, however it dies."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Proc:
    """One process the bench started, in its own process group; stop() ends that group only."""

    def __init__(
        self, name: str, cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path = ROOT, pipes: bool = False
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - the process writes to it until stop() closes it
        self.popen = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log,
            stderr=self._log,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.pid = self.popen.pid
        self._buffer = b""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # JSON-lines control of the load generator workers
    def call(self, cmd: dict, timeout: float = 30.0) -> dict:
        self.send(cmd)
        return self.recv(timeout, cmd.get("op"))

    def send(self, cmd: dict) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited ({self.popen.returncode}):\n{self.log_tail()}")
        self.popen.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.popen.stdin.flush()

    def recv(self, timeout: float, op: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name} did not answer {op!r} within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise BenchError(f"{self.name} exited:\n{self.log_tail()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply = json.loads(line)
        if "error" in reply:
            raise BenchError(f"{self.name}: {reply['error']}")
        return reply

    def stop(self, grace: float = 3.0) -> None:
        if self.popen.stdin:
            try:
                self.popen.stdin.close()  # EOF: a worker ends by itself
            except OSError:
                pass
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (children); end whatever is left of it.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(2.0)
        except subprocess.TimeoutExpired:
            pass
        if self.popen.stdout:
            self.popen.stdout.close()
        self._log.close()


class Procs:
    def __init__(self) -> None:
        self.running: list[Proc] = []
        self.started: list[int] = []  # every pid ever started, for the smoke test's "nothing left" check

    def start(self, *args, **kwargs) -> Proc:
        proc = Proc(*args, **kwargs)
        self.running.append(proc)
        self.started.append(proc.pid)
        return proc

    def stop(self, procs: list[Proc] | None = None) -> None:
        for proc in reversed(list(procs if procs is not None else self.running)):
            proc.stop()
            if proc in self.running:
                self.running.remove(proc)


class signals_held:
    """A second Ctrl-C (or SIGTERM) must not cut the clean-up short."""

    def __enter__(self):
        self.saved = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.saved[sig] = signal.signal(sig, signal.SIG_IGN)
            except ValueError:  # not the main thread: nothing to hold
                pass

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def wait_port(port: int, proc: Proc, timeout: float = 30.0, http_path: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        try:
            if http_path:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{http_path}", timeout=1.0) as answer:
                    if answer.status == 200:
                        return
            else:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return
        except OSError:
            time.sleep(0.05)  # not listening yet
    raise BenchError(f"{proc.name} did not answer on port {port} within {timeout:.0f} s:\n{proc.log_tail()}")


def start_redis(procs: Procs, work: Path) -> tuple[Proc, RedisServer]:
    """The tests' redis-server, started as one of the bench's processes; nothing is restarted
    here, so nothing is written to disk."""
    started: list[Proc] = []

    def spawn(args: list[str]) -> subprocess.Popen:
        started.append(procs.start("redis-server", args, work / "redis-server.out", cwd=work))
        return started[0].popen

    redis = RedisServer(work / "redis", appendfsync=None, max_clients=1000, spawn=spawn)
    try:
        redis.start()
    except RuntimeError as exc:
        raise BenchError(f"{exc}:\n{started[0].log_tail() if started else ''}") from None
    return started[0], redis


# --- /proc readings ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat), to tell our load from others'."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def established(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local port is `port` (the server side)."""
    wanted = f"{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split(None, 4)
                    if parts[3] == "01" and parts[1].rsplit(":", 1)[1] == wanted:
                        count += 1
        except OSError:
            pass
    return count
