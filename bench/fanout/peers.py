"""The servers under test: Backchannel and its peers, how each starts, and what each needs
installed (pinned, outside the product's dependencies)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.servers import DEMO_SLUG, ROOT, free_port

from .processes import BENCH, BenchError, Proc, Procs, wait_port

PEERS_DIR = BENCH / "peers"
NODE_DIR = PEERS_DIR / "node"
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PY = PEERS_VENV / "bin" / "python"


@dataclass
class Peer:
    name: str
    label: str  # how the ratio line names it
    kind: str  # "ws" (Backchannel's JSON frames) or "sio" (Engine.IO v4 over WebSocket)
    path: str
    ordered: bool = False  # promises every reader each seq once, in order: a gap or a reordering fails a step

    def start(self, procs: Procs, instances: int, redis_url: str | None, work: Path) -> list[tuple[Proc, int]]:
        """Start every instance, then wait for each to answer (they boot side by side)."""
        started = []
        for i in range(instances):
            port = free_port()
            log = work / f"{self.name}-{i}.log"
            if self.name == "backchannel":
                env = {
                    "PORT": str(port),
                    "HOST": "127.0.0.1",
                    "DATA_DIR": str(work / f"data-{i}"),
                    "CONTENT_DIR": str(ROOT / "content"),
                    "SECRET_KEY": "bench-secret-key",
                    "POST_RATE_PER_READER": "100000/second",
                    "POST_RATE_PER_IP": "100000/second",
                    # every reader of the bench comes from 127.0.0.1
                    "MAX_CONNECTIONS_PER_IP": "1000000",
                    "REDIS_URL": redis_url or "",
                }
                cmd = [sys.executable, "-m", "server", "serve", "--workers", "1"]  # the bench runs its instances
            elif self.name == "raw":
                cmd = [sys.executable, str(PEERS_DIR / "raw_server.py"), "--port", str(port), "--instance", str(i)]
                env = {}
            elif self.name == "python-socketio":
                cmd = [str(PEERS_PY), str(PEERS_DIR / "socketio_server.py"), "--port", str(port)]
                env = {}
            elif self.name == "node-socket.io":
                cmd = ["node", str(NODE_DIR / "server.js"), "--port", str(port)]
                env = {}
            else:
                raise BenchError(f"unknown peer {self.name}")
            if redis_url and self.name != "backchannel":
                cmd += ["--redis", redis_url]
            started.append((procs.start(f"{self.name}-{i}", cmd, log, env=env), port))
        for proc, port in started:
            wait_port(port, proc, 40, "/healthz" if self.name == "backchannel" else None)
        return started


PEERS = {
    "backchannel": Peer("backchannel", "Backchannel", "ws", f"/articles/{DEMO_SLUG}/live", ordered=True),
    "raw": Peer("raw", "raw websockets.broadcast", "ws", f"/articles/{DEMO_SLUG}/live"),
    "python-socketio": Peer(
        "python-socketio", "python-socketio", "sio", f"/socket.io/?EIO=4&transport=websocket&slug={DEMO_SLUG}"
    ),
    "node-socket.io": Peer(
        "node-socket.io", "node socket.io", "sio", f"/socket.io/?EIO=4&transport=websocket&slug={DEMO_SLUG}"
    ),
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_peers(names: list[str], log_dir: Path) -> dict[str, str]:
    """Install what the peers need, pinned, outside the product's dependencies. Returns
    {peer: why it cannot run} for the peers that cannot."""
    unavailable: dict[str, str] = {}
    log_dir.mkdir(parents=True, exist_ok=True)
    if "python-socketio" in names or "plot" in names or "profile" in names:
        requirements = PEERS_DIR / "requirements.txt"
        stamp = PEERS_VENV / ".bench-installed"
        if not (stamp.exists() and stamp.read_text() == _digest(requirements)):
            print(f"installing the Python peers into {PEERS_VENV.relative_to(ROOT)} (once) ...", flush=True)
            started = time.monotonic()
            try:
                if not PEERS_PY.exists():
                    subprocess.run(
                        [sys.executable, "-m", "venv", str(PEERS_VENV)],
                        check=True,
                        stdout=subprocess.DEVNULL,
                        timeout=300,
                    )
                with open(log_dir / "pip.log", "wb") as log:
                    subprocess.run(
                        [
                            str(PEERS_PY),
                            "-m",
                            "pip",
                            "install",
                            "--quiet",
                            "--disable-pip-version-check",
                            "-r",
                            str(requirements),
                        ],
                        check=True,
                        stdout=log,
                        stderr=log,
                        timeout=900,
                    )
                stamp.write_text(_digest(requirements))
                print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
            except (subprocess.SubprocessError, OSError) as exc:
                unavailable["python-socketio"] = f"pip install failed ({exc}); see {log_dir / 'pip.log'}"
    if "node-socket.io" in names:
        if not (shutil.which("node") and shutil.which("npm")):
            unavailable["node-socket.io"] = "node/npm not found"
        else:
            lock = NODE_DIR / "package-lock.json"
            stamp = NODE_DIR / "node_modules" / ".bench-installed"
            if not (stamp.exists() and stamp.read_text() == _digest(lock)):
                print("installing the Node peer (npm ci, once) ...", flush=True)
                started = time.monotonic()
                try:
                    with open(log_dir / "npm.log", "wb") as log:
                        subprocess.run(
                            ["npm", "ci", "--no-audit", "--no-fund"],
                            cwd=NODE_DIR,
                            check=True,
                            stdout=log,
                            stderr=log,
                            timeout=600,
                        )
                    stamp.write_text(_digest(lock))
                    print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
                except (subprocess.SubprocessError, OSError) as exc:
                    unavailable["node-socket.io"] = f"npm ci failed ({exc}); see {log_dir / 'npm.log'}"
    return unavailable
