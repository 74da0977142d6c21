"""Backchannel's fan-out measured against its peers, in one run, with one load generator.

    python -m bench.fanout            # quick mode (make bench): N=2,000 readers, ~3 minutes at most
    python -m bench.fanout --full     # make bench FULL=1: N in 1k, 5k, 10k, 20k; bench/results/<date>.md + PNG
    python -m bench.fanout --profile  # py-spy on one Backchannel instance under load: top frames

Topology, the same for every peer: N readers split over two instances sharing one
redis-server that the bench starts itself (or one instance, no Redis, while Backchannel's
Redis backend does not exist yet; `--instances 1|2` forces it). About 50 sampled readers per
instance decode every frame; the rest are bulk readers that only count frames; one poster
posts M comments per second alternating between instances, each stamped with
time.monotonic_ns() in its body. For each N, M climbs a ladder of target deliveries/s
(M = target / N) until a step loses a delivery, loses a connection or has a p99 over 250 ms.

Per peer it reports: deliveries/s sustained (the best passing step), p50/p99/max latency
same-instance and cross-instance, server CPU µs per delivery, idle RSS growth per reader
(/proc VmRSS, over all instances), connections the instances hold (/proc/net/tcp), and the
load generator's own CPU so a saturated generator shows.

Everything the bench starts runs in its own process group, dies with the bench
(PR_SET_PDEATHSIG) and is stopped in a finally block, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import hashlib
import json
import math
import os
import platform
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_DIR = BENCH / "peers"
NODE_DIR = PEERS_DIR / "node"
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PY = PEERS_VENV / "bin" / "python"
WORK = BENCH / ".work"
RESULTS = BENCH / "results"
SLUG = "moscow-warns-western-troops-in-ukraine-would-be-legitimate-targets"

P99_LIMIT_MS = 250.0
QUICK_READERS = 2000
FULL_READERS = (1000, 5000, 10000, 20000)
# Target deliveries per second, climbed until a step fails; posts/s = target / readers, never under
# MIN_POSTS_PER_S (the 0 is that floor: one post a second); a step lasts for MIN_POSTS posts at least.
# Full mode climbs by √2; quick mode by 2, then tries the geometric middle of its last pass and first failure.
LADDER = (0, 5_000, 7_000, 10_000, 14_000, 20_000, 28_000, 40_000, 56_000, 80_000, 112_000, 160_000, 224_000,
          320_000, 448_000, 640_000)
QUICK_LADDER = (0, 5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000)
MIN_POSTS_PER_S = 1.0
MIN_POSTS = 6
RESERVE_SECONDS = 25.0  # quick mode: what a slow connect of one peer must leave each peer after it
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


# --- processes ---------------------------------------------------------------------------

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One process the bench started, in its own process group; stop() ends that group only."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict | None = None,
                 cwd: Path = ROOT, pipes: bool = False) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            cmd, cwd=cwd, env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log, stderr=self._log,
            start_new_session=True, preexec_fn=_die_with_parent)
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


# --- /proc readings ------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
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


# --- Redis -------------------------------------------------------------------------------

def redis_command(port: int, *args: str) -> bytes:
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
        s.sendall(payload)
        return s.recv(65536)


def start_redis(procs: Procs, work: Path) -> tuple[Proc, int]:
    port = free_port()
    proc = procs.start("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no", "--maxclients", "1000"],
                       work / "redis.log", cwd=work)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"redis-server exited:\n{proc.log_tail()}")
        try:
            if redis_command(port, "PING").startswith(b"+PONG"):
                return proc, port
        except OSError:
            time.sleep(0.05)
    raise BenchError("redis-server did not answer PING")


# --- peers ---------------------------------------------------------------------------------

@dataclass
class Peer:
    name: str
    label: str      # how the ratio line names it
    kind: str       # "ws" (Backchannel's JSON frames) or "sio" (Engine.IO v4 over WebSocket)
    path: str
    ordered: bool = False  # promises every reader each seq once, in order: a gap or a reordering fails a step

    def start(self, procs: Procs, instances: int, redis_url: str | None, work: Path) -> list[tuple[Proc, int]]:
        """Start every instance, then wait for each to answer (they boot side by side)."""
        started = []
        for i in range(instances):
            port = free_port()
            log = work / f"{self.name}-{i}.log"
            if self.name == "backchannel":
                env = {"PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(work / f"data-{i}"),
                       "CONTENT_DIR": str(ROOT / "content"), "SECRET_KEY": "bench-secret-key",
                       "POST_RATE_PER_READER": "100000/second", "POST_RATE_PER_IP": "100000/second",
                       # every reader of the bench comes from 127.0.0.1
                       "MAX_CONNECTIONS_PER_IP": "1000000",
                       "REDIS_URL": redis_url or ""}
                cmd = [sys.executable, "-m", "server", "serve"]
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
    "backchannel": Peer("backchannel", "Backchannel", "ws", f"/articles/{SLUG}/live", ordered=True),
    "raw": Peer("raw", "raw websockets.broadcast", "ws", f"/articles/{SLUG}/live"),
    "python-socketio": Peer("python-socketio", "python-socketio", "sio",
                            f"/socket.io/?EIO=4&transport=websocket&slug={SLUG}"),
    "node-socket.io": Peer("node-socket.io", "node socket.io", "sio",
                           f"/socket.io/?EIO=4&transport=websocket&slug={SLUG}"),
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
                    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True,
                                   stdout=subprocess.DEVNULL, timeout=300)
                with open(log_dir / "pip.log", "wb") as log:
                    subprocess.run([str(PEERS_PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                    "-r", str(requirements)], check=True, stdout=log, stderr=log, timeout=900)
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
                        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                                       stdout=log, stderr=log, timeout=600)
                    stamp.write_text(_digest(lock))
                    print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
                except (subprocess.SubprocessError, OSError) as exc:
                    unavailable["node-socket.io"] = f"npm ci failed ({exc}); see {log_dir / 'npm.log'}"
    return unavailable


# --- statistics ----------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values_us: list[int]) -> dict:
    ms = [v / 1000 for v in values_us]
    return {"n": len(ms), "p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms) if ms else None}


# --- one peer at one N ---------------------------------------------------------------------

@dataclass
class Config:
    peers: list[str]
    readers: list[int]
    instances: str = "auto"          # "auto", "1" or "2"
    sampled_per_instance: int = 50
    ladder: tuple[int, ...] = LADDER
    step_seconds: float = 2.5
    settle_seconds: float = 2.0
    warmup_seconds: float = 1.0      # posts before the idle-memory baseline, so first-post costs are paid
    budget_seconds: float | None = None  # whole run (quick mode): steps stop when it runs out
    sweep_seconds: float = 0.2       # bulk readers read their sockets in sweeps this far apart (0: uvloop callbacks)
    refine: bool = False             # one extra step between the last pass and the first failure
    retry: bool = True               # run a failed step once more before believing it
    label: str = "quick"
    quiet: bool = False


@dataclass
class Run:
    peer: Peer
    readers: int
    instances: int
    redis_url: str | None
    servers: list[tuple[Proc, int]] = field(default_factory=list)
    bulk: list[Proc] = field(default_factory=list)
    sampled: list[Proc] = field(default_factory=list)
    poster: Proc | None = None
    backlog: bool = False  # the last step ended before every delivery was in

    @property
    def readers_workers(self) -> list[Proc]:
        return self.bulk + self.sampled

    @property
    def generator(self) -> list[Proc]:
        return self.bulk + self.sampled + ([self.poster] if self.poster else [])


class Bench:
    def __init__(self, config: Config, work: Path) -> None:
        self.config = config
        self.work = work
        self.procs = Procs()
        self.redis: Proc | None = None
        self.redis_port: int | None = None
        self.started = time.monotonic()
        self.instances = 1

    def say(self, text: str) -> None:
        if not self.config.quiet:
            print(text, flush=True)

    # --- topology ---

    def choose_instances(self) -> int:
        wanted = self.config.instances
        redis_backend = (ROOT / "server" / "backends" / "redis.py").exists()
        if wanted == "auto":
            return 2 if redis_backend and shutil.which("redis-server") else 1
        if wanted == "2" and not shutil.which("redis-server"):
            raise BenchError("two instances need redis-server on PATH")
        return int(wanted)

    def redis_url(self) -> str | None:
        if self.instances < 2:
            return None
        if self.redis is None or not self.redis.alive():
            self.redis, self.redis_port = start_redis(self.procs, self.work)
        return f"redis://127.0.0.1:{self.redis_port}/0"

    # --- the whole run ---

    def run(self) -> dict:
        raise_nofile()
        self.instances = self.choose_instances()
        results: dict = {"config": {"mode": self.config.label, "readers": self.config.readers,
                                    "step_seconds": self.config.step_seconds,
                                    "sampled_per_instance": self.config.sampled_per_instance,
                                    "ladder": list(self.config.ladder)},
                         "machine": machine_info(), "runs": []}
        peers = [PEERS[name] for name in self.config.peers]
        queue = [(n, peer) for n in self.config.readers for peer in peers]
        for index, (n, peer) in enumerate(queue):
            budget = connect_budget = None
            if self.config.budget_seconds is not None:
                # Backchannel, the subject, gets a double share of what is left; a slow connect may
                # eat into the peers' shares down to RESERVE seconds each.
                left = self.config.budget_seconds - (time.monotonic() - self.started)
                weights = [2 if p.name == "backchannel" else 1 for _, p in queue[index:]]
                budget = max(10.0, left * weights[0] / sum(weights))
                connect_budget = max(20.0, left - RESERVE_SECONDS * (len(weights) - 1))
            outcome = self.run_peer(peer, n, budget, connect_budget)
            if (outcome.get("error") and peer.name == "backchannel" and self.instances == 2
                    and self.config.instances == "auto" and outcome.get("phase") == "start"):
                self.say("!! Backchannel did not start on the Redis backend; falling back to one instance "
                         "(embedded backend) for every peer")
                self.instances = 1
                outcome = self.run_peer(peer, n, budget, connect_budget)
            results["runs"].append(outcome)
        results["instances"] = self.instances
        results["seconds"] = round(time.monotonic() - self.started, 1)
        return results

    def run_peer(self, peer: Peer, n: int, budget: float | None, connect_budget: float | None = None) -> dict:
        deadline = time.monotonic() + budget if budget else None
        connect_deadline = time.monotonic() + connect_budget if connect_budget else None
        out: dict = {"peer": peer.name, "label": peer.label, "readers": n, "instances": self.instances,
                     "steps": [], "error": None}
        run = Run(peer, n, self.instances, None)
        self.say(f"\n== {peer.label}: {n:,} readers over {self.instances} instance(s)"
                 + (" sharing Redis" if self.instances > 1 else ""))
        out["phase"] = "start"
        try:
            run.redis_url = self.redis_url()
            if self.redis_port:
                redis_command(self.redis_port, "FLUSHALL")
            run.servers = peer.start(self.procs, self.instances, run.redis_url, self.work)
            out["phase"] = "connect"
            self.connect(run, out, connect_deadline)
            out["phase"] = "ladder"
            self.ladder(run, out, deadline)
            out["phase"] = "done"
        except BenchError as exc:
            out["error"] = str(exc)
            self.say(f"!! {peer.label}: {exc}")
        finally:
            self.procs.stop(run.generator)
            self.procs.stop([proc for proc, _ in run.servers])
        summarise(out)
        return out

    def start_worker(self, run: Run, role: str, i: int) -> Proc:
        return self.procs.start(f"loadgen-{role}-{i}", [sys.executable, "-m", "bench.loadgen", role],
                                self.work / f"loadgen-{run.peer.name}-{role}-{i}.log", pipes=True)

    def connect(self, run: Run, out: dict, deadline: float | None = None) -> None:
        peer, cfg = run.peer, self.config
        instances = self.instances
        ports = [port for _, port in run.servers]
        per_instance = min(cfg.sampled_per_instance, max(1, run.readers // (4 * instances)))
        bulk_total = run.readers - per_instance * instances
        run.poster = self.start_worker(run, "poster", 0)
        run.sampled = [self.start_worker(run, "sampled", i) for i in range(instances)]
        run.bulk = [self.start_worker(run, "bulk", i) for i in range(instances)]

        def target(i: int, count: int) -> dict:
            return {"port": ports[i], "path": peer.path, "kind": peer.kind, "instance": i, "count": count}

        reply = run.poster.call({"op": "connect", "targets": [target(i, 1) for i in range(instances)]}, 60)
        if reply["connected"] != instances:
            raise BenchError(f"the poster could not connect: {reply['errors']}")
        for i, worker in enumerate(run.sampled):
            reply = worker.call({"op": "connect", "targets": [target(i, per_instance)]}, 120)
            if reply["connected"] != per_instance:
                raise BenchError(f"sampled readers: {reply['connected']}/{per_instance} connected: {reply['errors']}")
        # Warm up the post path, then let it drain, before the idle baseline.
        self.step(run, rate=10.0 * instances, duration=cfg.warmup_seconds, record=False)
        time.sleep(min(1.0, cfg.settle_seconds))
        base = sum(rss_kib(proc.pid) for proc, _ in run.servers)
        started = time.monotonic()
        # Bounded: 4 minutes, or what is left of this peer's share of a quick run's budget.
        timeout = 240.0 if deadline is None else max(20.0, min(240.0, deadline - time.monotonic() - 8))
        for i, worker in enumerate(run.bulk):  # every bulk worker connects at once
            count = bulk_total // instances + (1 if i < bulk_total % instances else 0)
            worker.send({"op": "connect", "targets": [target(i, count)], "timeout": timeout,
                         "sweep": cfg.sweep_seconds})
        connected, errors = 0, {}
        for worker in run.bulk:
            reply = worker.recv(timeout + 60, "connect")
            connected += reply["connected"]
            for key, k in reply["errors"].items():
                errors[key] = errors.get(key, 0) + k
        connect_seconds = time.monotonic() - started
        if connected != bulk_total:
            raise BenchError(f"bulk readers: {connected}/{bulk_total} connected in {connect_seconds:.0f} s; "
                             f"errors: {errors or 'none (out of time)'}")
        time.sleep(cfg.settle_seconds)
        after = sum(rss_kib(proc.pid) for proc, _ in run.servers)
        held = sum(established(port) for port in ports)
        out.update({"sampled": per_instance * instances, "bulk": bulk_total,
                    "connect_seconds": round(connect_seconds, 1),
                    "rss_base_kib": base, "rss_idle_kib": after,
                    "idle_kib_per_reader": round((after - base) / bulk_total, 2) if bulk_total else None,
                    "connections_held": held})
        self.say(f"   connected {run.readers:,} readers in {connect_seconds:.1f} s; idle RSS "
                 f"{base / 1024:.0f} -> {after / 1024:.0f} MiB ({out['idle_kib_per_reader']} KiB/reader); "
                 f"{held:,} connections held")

    def ladder(self, run: Run, out: dict, deadline: float | None) -> None:
        cfg = self.config

        def room_for(duration: float) -> bool:
            return not deadline or time.monotonic() + duration + 3 <= deadline

        def measure(target: int, rate: float, duration: float) -> dict:
            step = self.step(run, rate=rate, duration=duration)
            step["target"] = target
            self.say(format_step(step))
            if not step["ok"] and cfg.retry and room_for(duration):
                # This machine is shared: a step fails only if it fails twice in a row.
                first = step
                step = self.step(run, rate=rate, duration=duration)
                step["target"] = target
                step["retry_of"] = {k: first[k] for k in ("deliveries_per_s", "p99", "lost", "problems",
                                                          "other_cpu_pct")}
                self.say(format_step(step) + "  (retry)")
            out["steps"].append(step)
            return step

        last_pass = None
        for index, (target, rate) in enumerate(ladder_for(run.readers, cfg.ladder)):
            duration = max(cfg.step_seconds, MIN_POSTS / rate)
            # The first step always runs: every peer then has a p99 at a load all of them ran.
            if index and not room_for(duration):
                out["stopped"] = "time budget"
                self.say("   (time budget reached: ladder stopped)")
                break
            step = measure(target, rate, duration)
            if not step["ok"]:
                if cfg.refine and last_pass is not None:
                    middle_rate = math.sqrt(last_pass[1] * rate)
                    middle_duration = max(cfg.step_seconds, MIN_POSTS / middle_rate)
                    if room_for(middle_duration):
                        measure(round(middle_rate * run.readers), middle_rate, middle_duration)
                break
            last_pass = (target, rate)
            if step["generator_saturated"]:
                out["stopped"] = "load generator saturated"
                self.say("   the load generator is saturated: stopping the ladder here")
                break

    def quiesce(self, run: Run, limit: float = 10.0) -> None:
        """After a failed step: wait until its backlog has drained (counts stop moving), so that late
        frames do not land in the next step."""
        deadline = time.monotonic() + limit
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = sum(worker.call({"op": "count"})["delivered"] for worker in run.readers_workers)
            if total != last:
                last, still_since = total, time.monotonic()
            elif time.monotonic() - still_since > 2 * self.config.sweep_seconds + 0.3:
                return
            time.sleep(0.1)

    def step(self, run: Run, rate: float, duration: float, record: bool = True) -> dict:
        readers = run.readers_workers
        if run.backlog:
            self.quiesce(run)
        for worker in readers + [run.poster]:
            worker.call({"op": "mark"})
        open_before = sum(worker.call({"op": "count"})["open"] for worker in readers)
        servers = [proc.pid for proc, _ in run.servers]
        gen = [proc.pid for proc in run.generator]
        cpu0 = [cpu_seconds(pid) for pid in servers]
        gen0 = [cpu_seconds(pid) for pid in gen]
        redis0 = cpu_seconds(self.redis.pid) if self.redis else 0.0
        busy0 = machine_busy_seconds()
        wall0 = time.monotonic()
        post = run.poster.call({"op": "post", "rate": rate, "duration": duration, "kind": run.peer.kind},
                               duration + 60)
        sent = post["sent"]
        # Drain: until every reader has every post, or nothing moves for a second, or the cap.
        expected = sent * open_before
        cap = time.monotonic() + max(3.0, 2 * duration)
        last_total, last_change = -1, time.monotonic()
        while True:
            total = sum(worker.call({"op": "count"})["delivered"] for worker in readers)
            now = time.monotonic()
            if total >= expected or now > cap:
                break
            if total != last_total:
                last_total, last_change = total, now
            elif now - last_change > 1.0:
                break
            time.sleep(0.05)
        stats = run.poster.call({"op": "poststats"})
        failed = stats["failed"]
        per_reader = sent - len(failed)
        counts = [worker.call({"op": "count", "expected": per_reader}) for worker in run.bulk]
        reports = [worker.call({"op": "report", "n0": post["n0"], "n1": post["n1"], "failed": failed}, 60)
                   for worker in run.sampled]
        wall = time.monotonic() - wall0
        cpu = sum(cpu_seconds(pid) for pid in servers) - sum(cpu0)
        gen_cpu = [cpu_seconds(pid) - before for pid, before in zip(gen, gen0)]
        redis_cpu = (cpu_seconds(self.redis.pid) - redis0) if self.redis else 0.0
        others = max(0.0, machine_busy_seconds() - busy0 - cpu - sum(gen_cpu) - redis_cpu)
        run.backlog = bool(expected > 0 and total < expected)
        if not record:
            return {}
        delivered = sum(c["delivered"] for c in counts) + sum(r["delivered"] for r in reports)
        expected = per_reader * open_before
        # The sampled readers read at once (bulk readers read in sweeps): their last frame ends the span.
        last_ns = max(r["last_ns"] for r in reports)
        span = (last_ns - post["first_ns"]) / 1e9 if last_ns > post["first_ns"] else duration
        same = [v for r in reports for v in r["same"]]
        cross = [v for r in reports for v in r["cross"]]
        open_after = sum(c["open"] for c in counts) + sum(r["open"] for r in reports)
        missing = sum(r["missing"] for r in reports)
        lat_same, lat_cross = latency_summary(same), latency_summary(cross)
        p99 = max(x for x in (lat_same["p99"], lat_cross["p99"], 0.0) if x is not None)
        close_codes: dict[str, int] = {}
        for c in counts + reports:
            for code, k in c["close_codes"].items():
                close_codes[code] = close_codes.get(code, 0) + k
        lost = max(0, expected - delivered)
        problems = []
        if lost or missing:
            problems.append(f"lost {lost:,}")
        if open_after < open_before:
            problems.append(f"{open_before - open_after} connections closed {close_codes or ''}")
        seq_gaps = sum(r["seq_gaps"] for r in reports)
        duplicates = sum(r["duplicates"] for r in reports)
        if duplicates:
            problems.append(f"{duplicates} duplicate deliveries")
        if seq_gaps and run.peer.ordered:
            problems.append(f"{seq_gaps} seq gaps or reorderings")
        if failed or stats["errors"]:
            problems.append(f"post errors {stats['errors']}")
        if p99 > P99_LIMIT_MS:
            problems.append(f"p99 {p99:.0f} ms > {P99_LIMIT_MS:.0f}")
        if not same and not cross:
            problems.append("no sampled delivery")
        # A generator process near a full core cannot be trusted to read on time.
        busiest = max(gen_cpu) / wall if wall else 0
        return {
            "posts_per_s": round(rate, 2), "sent": sent, "offered_per_s": round(rate * open_before),
            "delivered": delivered, "expected": expected, "lost": lost, "missing_sampled": missing,
            "duplicates": duplicates, "seq_gaps": seq_gaps,
            "deliveries_per_s": round(delivered / span) if span > 0 else 0,
            "latency_same": lat_same, "latency_cross": lat_cross, "p99": p99,
            "server_cpu_us_per_delivery": round(cpu * 1e6 / delivered, 2) if delivered else None,
            "server_cpu_pct": round(100 * cpu / wall, 1), "redis_cpu_pct": round(100 * redis_cpu / wall, 1),
            "generator_cpu_pct": round(100 * sum(gen_cpu) / wall, 1),
            "other_cpu_pct": round(100 * others / wall, 1),
            "generator_busiest_pct": round(100 * busiest, 1),
            "generator_cpu_us_per_delivery": {
                role: round(sum(c for proc, c in zip(run.generator, gen_cpu) if f"-{role}-" in proc.name) * 1e6
                            / max(1, delivered), 2) for role in ("bulk", "sampled", "poster")},
            "generator_saturated": busiest > 0.9,
            "poster_lag_ms": post["lag_max_ms"], "short_readers": sum(c.get("short_readers", 0) for c in counts),
            "connections_open": open_after, "close_codes": close_codes,
            "ok": not problems, "problems": problems,
        }


def ladder_for(readers: int, ladder: tuple[int, ...]) -> list[tuple[int, float]]:
    """(target deliveries/s, posts/s) for N readers: the same list for every peer at that N."""
    steps: list[tuple[int, float]] = []
    for target in ladder:
        rate = max(MIN_POSTS_PER_S, target / readers)
        if steps and rate <= steps[-1][1]:
            continue
        steps.append((round(rate * readers), rate))
    return steps


# --- summaries and output ------------------------------------------------------------------

def summarise(out: dict) -> None:
    passed = [s for s in out["steps"] if s["ok"]]
    best = max(passed, key=lambda s: s["deliveries_per_s"]) if passed else None
    out["best"] = best
    out["sustained_per_s"] = best["deliveries_per_s"] if best else 0


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def format_step(step: dict) -> str:
    same, cross = step["latency_same"], step["latency_cross"]
    verdict = "ok" if step["ok"] else "FAIL: " + "; ".join(step["problems"])
    return (f"   {step['posts_per_s']:>7.1f} posts/s -> {step['deliveries_per_s']:>8,} deliveries/s  "
            f"p50 {fmt_ms(same['p50'])}/{fmt_ms(cross['p50'])}  p99 {fmt_ms(same['p99'])}/{fmt_ms(cross['p99'])} ms  "
            f"max {fmt_ms(max([x for x in (same['max'], cross['max']) if x is not None], default=None))} ms  "
            f"server {step['server_cpu_us_per_delivery']} µs/deliv ({step['server_cpu_pct']}% CPU)  "
            f"loadgen {step['generator_cpu_pct']}%  others {step.get('other_cpu_pct', 0)}%  {verdict}")


def common_p99(a: dict, b: dict) -> tuple[float | None, float | None, int | None]:
    """p99 of a and b at the highest ladder target both passed (else the first both ran)."""
    steps_a = {s["target"]: s for s in a["steps"]}
    steps_b = {s["target"]: s for s in b["steps"]}
    both = sorted(set(steps_a) & set(steps_b))
    passed = [t for t in both if steps_a[t]["ok"] and steps_b[t]["ok"]]
    target = passed[-1] if passed else (both[0] if both else None)
    if target is None:
        return None, None, None
    return steps_a[target]["p99"], steps_b[target]["p99"], target


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "×—"
    return f"×{a / b:.2f}"


def table(runs: list[dict]) -> str:
    head = (f"{'peer':<26} {'deliveries/s':>12} {'posts/s':>8} {'p50 same/cross ms':>18} "
            f"{'p99 same/cross ms':>18} {'max ms':>7} {'CPU µs/deliv':>12} {'KiB/reader':>10} "
            f"{'conns held':>10} {'connect s':>9} {'loadgen CPU':>11} {'other CPU':>9}")
    lines = [head, "-" * len(head)]
    for run in runs:
        best = run.get("best")
        if run.get("error") and not run["steps"]:
            lines.append(f"{run['label']:<26} error: {run['error'].splitlines()[0][:100]}")
            continue
        mem = run.get("idle_kib_per_reader")
        if best is None:
            first = run["steps"][0] if run["steps"] else None
            lines.append(f"{run['label']:<26} {'0':>12} {'':>8} no step passed"
                         + (f" (first: {'; '.join(first['problems'])})" if first else "")
                         + f"   {mem} KiB/reader")
            continue
        same, cross = best["latency_same"], best["latency_cross"]
        top = max([x for x in (same["max"], cross["max"]) if x is not None], default=None)
        lines.append(
            f"{run['label']:<26} {best['deliveries_per_s']:>12,} {best['posts_per_s']:>8.1f} "
            f"{fmt_ms(same['p50']) + ' / ' + fmt_ms(cross['p50']):>18} "
            f"{fmt_ms(same['p99']) + ' / ' + fmt_ms(cross['p99']):>18} {fmt_ms(top):>7} "
            f"{best['server_cpu_us_per_delivery']:>12} {mem if mem is not None else '—':>10} "
            f"{run.get('connections_held', 0):>10,} {run.get('connect_seconds', 0):>9} "
            f"{str(best['generator_cpu_pct']) + '%':>11} "
            f"{str(best.get('other_cpu_pct', 0)) + '%':>9}")
    return "\n".join(lines)


def ratio_lines(runs: list[dict]) -> list[str]:
    ours = next((r for r in runs if r["peer"] == "backchannel"), None)
    if ours is None:
        return []
    lines = []
    for run in runs:
        if run is ours:
            continue
        if run.get("error") and not run["steps"]:
            lines.append(f"vs {run['label']}: not measured ({run['error'].splitlines()[0][:80]})")
            continue
        p99_ours, p99_theirs, at = common_p99(ours, run)
        cpu_ours = cpu_theirs = None
        if at:
            cpu_ours = next(s["server_cpu_us_per_delivery"] for s in ours["steps"] if s["target"] == at)
            cpu_theirs = next(s["server_cpu_us_per_delivery"] for s in run["steps"] if s["target"] == at)
        lines.append(
            f"vs {run['label']}: deliveries/s {ratio(ours['sustained_per_s'], run['sustained_per_s'])}, "
            f"p99 {ratio(p99_ours, p99_theirs)}, "
            f"memory/reader {ratio(ours.get('idle_kib_per_reader'), run.get('idle_kib_per_reader'))}"
            + (f"   (p99 {fmt_ms(p99_ours)} vs {fmt_ms(p99_theirs)} ms at {at:,} deliveries/s offered; "
               f"server CPU per delivery {ratio(cpu_ours, cpu_theirs)} there)" if at else ""))
    return lines


def machine_info() -> dict:
    info = {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
            "loadavg": os.getloadavg()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for module in ("websockets", "uvicorn", "starlette", "uvloop", "redis"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - informational only
            pass
    for name in ("socket.io", "@socket.io/redis-adapter", "redis"):
        package = NODE_DIR / "node_modules" / name / "package.json"
        if package.exists():
            versions[f"npm {name}"] = json.loads(package.read_text()).get("version")
    if PEERS_PY.exists():
        try:
            versions["python-socketio"] = subprocess.run(
                [str(PEERS_PY), "-c", "import importlib.metadata as m; print(m.version('python-socketio'))"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except (subprocess.SubprocessError, OSError):
            pass
    for tool, flag in (("node", "--version"), ("redis-server", "--version")):
        if shutil.which(tool):
            try:
                versions[tool] = subprocess.run([tool, flag], capture_output=True, text=True,
                                                timeout=10).stdout.strip()[:60]
            except (subprocess.SubprocessError, OSError):
                pass
    info["versions"] = versions
    return info


def topology_line(results: dict) -> str:
    instances = results.get("instances", 1)
    if instances > 1:
        return (f"{instances} instances per peer sharing one redis-server; posts alternate instances; "
                "same = reader on the instance that took the post, cross = the other")
    return ("1 instance per peer, no Redis (Backchannel's Redis backend is not there yet): "
            "every latency is same-instance")


def print_report(results: dict) -> None:
    by_n: dict[int, list[dict]] = {}
    for run in results["runs"]:
        by_n.setdefault(run["readers"], []).append(run)
    print()
    print(f"Fan-out bench ({results['config']['mode']}): {topology_line(results)}")
    print(f"steps of {results['config']['step_seconds']} s; a step passes with nothing lost, no connection "
          f"closed and p99 <= {P99_LIMIT_MS:.0f} ms (a failed step is run twice); columns describe each peer's "
          "best passing step; CPU % are of one core; 'other CPU' is what the rest of the machine used meanwhile")
    for n, runs in by_n.items():
        sampled = next((r.get("sampled") for r in runs if r.get("sampled")), "?")
        print(f"\nN = {n:,} readers ({sampled} sampled)")
        print(table(runs))
        for line in ratio_lines(runs):
            print(line)
    print(f"\n(total {results['seconds']} s)")


def write_markdown(results: dict, path: Path, plot: Path | None) -> None:
    m = results["machine"]
    lines = [f"# Fan-out bench, {dt.date.today().isoformat()} ({results['config']['mode']})", "",
             f"Machine: {m.get('cores')} cores ({m.get('cpu', '?')}), Linux {m.get('kernel')}, "
             f"load average at start {', '.join(f'{x:.2f}' for x in m.get('loadavg', ()))}. "
             "Servers, Redis and the load generator share the machine.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()), "",
             f"Topology: {topology_line(results)}.", "",
             f"Method: about {results['config']['sampled_per_instance']} sampled readers per instance decode every "
             "frame and time it against the `time.monotonic_ns()` stamp the poster put in the comment body; the "
             "other readers only count frames. Posts per second climb a ladder of target deliveries/s "
             f"({', '.join(f'{t:,}' for t in results['config']['ladder'])}; posts/s = target / N), "
             f"{results['config']['step_seconds']} s per step, until a step loses a delivery or a connection or its "
             f"p99 exceeds {P99_LIMIT_MS:.0f} ms. *Deliveries/s* is the best passing step's delivered frames over the "
             "time from the first post to the last delivery. *CPU µs/deliv* is the server processes' utime+stime "
             "over that step divided by its deliveries; *KiB/reader* is the servers' idle RSS growth over the bulk "
             "readers they took; *conns held* counts ESTABLISHED sockets on the server ports; *connect s* is how long the bulk readers "
             "took to connect (at most 64 handshakes in flight per generator process); *loadgen CPU* is the "
             "generator's own CPU and *other CPU* what the rest of the machine used during the step (% of one core).", ""]
    by_n: dict[int, list[dict]] = {}
    for run in results["runs"]:
        by_n.setdefault(run["readers"], []).append(run)
    for n, runs in by_n.items():
        lines += [f"## N = {n:,} readers", "", "```", table(runs), "```", ""]
        lines += [f"- {line}" for line in ratio_lines(runs)] + [""]
        for run in runs:
            lines.append(f"<details><summary>{run['label']}: every step</summary>\n\n```")
            lines += [format_step(s).strip() for s in run["steps"]] or [run.get("error") or "no step"]
            lines += ["```", "</details>", ""]
    if plot and plot.exists():
        lines += ["## Latency against load", "", f"![p99 and p50 latency against deliveries/s]({plot.name})", ""]
    path.write_text("\n".join(lines))


def make_plot(json_path: Path, png: Path) -> bool:
    if not PEERS_PY.exists():
        return False
    done = subprocess.run([str(PEERS_PY), str(BENCH / "plot.py"), str(json_path), str(png)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        print(f"plot failed: {done.stderr[-500:]}")
    return done.returncode == 0


# --- profile -------------------------------------------------------------------------------

def profile(readers: int, target: int, seconds: float, work: Path, instances: str = "auto",
            native: bool = False) -> None:
    """Run Backchannel alone at `target` deliveries/s and sample instance 0 with py-spy."""
    py_spy = PEERS_VENV / "bin" / "py-spy"
    if prepare_peers(["profile"], work) or not py_spy.exists():
        raise BenchError("py-spy is not installed in bench/.venv-peers")
    config = Config(peers=["backchannel"], readers=[readers], ladder=(), label="profile", instances=instances)
    bench = Bench(config, work)
    raise_nofile()
    bench.instances = bench.choose_instances()
    run = Run(PEERS["backchannel"], readers, bench.instances, None)
    out: dict = {"steps": []}
    raw = work / "py-spy.txt"
    try:
        run.redis_url = bench.redis_url()
        run.servers = PEERS["backchannel"].start(bench.procs, bench.instances, run.redis_url, work)
        bench.connect(run, out)
        pid = run.servers[0][0].pid
        spy = bench.procs.start("py-spy", [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                           "--rate", "250", "--format", "raw", "--output", str(raw)]
                                + (["--native"] if native else ["--nonblocking"]),
                                work / "py-spy.log")
        step = bench.step(run, rate=target / readers, duration=seconds + 1)
        step["target"] = target
        print(format_step(step))
        spy.popen.wait(30)
    finally:
        with signals_held():
            bench.procs.stop()
    if not raw.exists():
        raise BenchError(f"py-spy wrote nothing; its log:\n{(work / 'py-spy.log').read_text(errors='replace')}")
    print(summarise_profile(raw))


def _function(frame: str) -> str:
    """'send (uvicorn/x.py:506)' -> 'send (uvicorn/x.py)': one entry per function, not per line."""
    name, sep, where = frame.rpartition(" (")
    if not sep:
        return frame
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})"


def summarise_profile(raw: Path, top: int = 20, thread_marker: str = "Runner.run") -> str:
    """Collapsed stacks ('a;b;c N') -> the top frames by own time and by inclusive time, over the
    event loop's thread (stacks through `thread_marker`) when there is one: other threads (the
    SQLite writer, executors) mostly wait, and py-spy --native counts their waits."""
    lines = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            lines.append((stack, int(count)))
    if any(thread_marker in stack for stack, _ in lines):
        lines = [(stack, n) for stack, n in lines if thread_marker in stack]
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for stack, samples in lines:
        total += samples
        frames = [_function(frame) for frame in stack.split(";")]
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + samples
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
    if not total:
        return "py-spy: no samples"
    out = [f"py-spy: {total} samples of instance 0's event loop thread", "", "own time (leaf frames):"]
    out += [f"  {100 * v / total:5.1f}%  {k}" for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    out += ["", "inclusive time:"]
    out += [f"  {100 * v / total:5.1f}%  {k}" for k, v in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(out)


# --- entry point ---------------------------------------------------------------------------

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


def run_bench(config: Config, work: Path | None = None) -> dict:
    """Run the bench; every process it started is stopped when this returns or raises."""
    work = work or Path(tempfile.mkdtemp(prefix="bench-"))
    bench = Bench(config, work)
    try:
        results = bench.run()
    finally:
        with signals_held():
            bench.procs.stop()
    results["pids"] = bench.procs.started
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="N over 1k, 5k, 10k, 20k; write bench/results/<date>.md")
    parser.add_argument("--peers", default="backchannel,raw,python-socketio,node-socket.io",
                        help="comma-separated, from: " + ", ".join(PEERS))
    parser.add_argument("--readers", help="comma-separated N (default: 2000 quick, 1000,5000,10000,20000 full)")
    parser.add_argument("--instances", choices=["auto", "1", "2"], default="auto",
                        help="auto: 2 sharing Redis once server/backends/redis.py exists, else 1")
    parser.add_argument("--step", type=float, help="seconds per ladder step (2.5 quick, 8 full)")
    parser.add_argument("--budget", type=float, help="seconds for the whole quick run (default 170)")
    parser.add_argument("--sweep", type=float, default=0.2,
                        help="seconds between the bulk readers' read sweeps (0: a uvloop callback per read)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--profile", action="store_true", help="py-spy one Backchannel instance under load")
    parser.add_argument("--profile-rate", type=int, default=20_000, help="deliveries/s while profiling")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too (profile only)")
    args = parser.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    for old in sorted(p for p in WORK.iterdir() if p.is_dir())[:-5]:  # keep the last runs' logs only
        shutil.rmtree(old, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=dt.datetime.now().strftime("%Y%m%d-%H%M%S-"), dir=WORK))

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the shell started us ignoring it
    hard = raise_nofile()
    if args.profile:
        readers = int(args.readers or QUICK_READERS)
        try:
            profile(readers, args.profile_rate, args.step or 10.0, work, args.instances, args.native)
        except BenchError as exc:
            print(f"profile failed: {exc}")
            return 1
        return 0

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(unknown)}")
    readers = [int(x) for x in args.readers.split(",")] if args.readers else (
        list(FULL_READERS) if args.full else [QUICK_READERS])
    if max(readers) + 200 > hard:
        print(f"warning: RLIMIT_NOFILE hard limit {hard} is low for {max(readers):,} readers")
    setup_started = time.monotonic()
    unavailable = prepare_peers(peers + (["plot"] if args.full else []), work)
    for name, why in unavailable.items():
        if name in peers:
            print(f"skipping {name}: {why}")
            peers.remove(name)
    if time.monotonic() - setup_started > 5:
        print(f"(setup took {time.monotonic() - setup_started:.0f} s, not counted in the run)")
    config = Config(peers=peers, readers=readers, instances=args.instances,
                    step_seconds=args.step or (8.0 if args.full else 2.5),
                    settle_seconds=3.0 if args.full else 2.0,
                    budget_seconds=None if args.full else (args.budget or 170.0), sweep_seconds=args.sweep,
                    ladder=LADDER if args.full else QUICK_LADDER, refine=not args.full,
                    label="full" if args.full else "quick")
    try:
        results = run_bench(config, work)
    except KeyboardInterrupt:
        print("\ninterrupted: every process the bench started has been stopped")
        return 130
    results["unavailable"] = unavailable
    print_report(results)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.full:
        RESULTS.mkdir(exist_ok=True)
        stem = dt.date.today().isoformat()
        if (RESULTS / f"{stem}.md").exists():
            stem += dt.datetime.now().strftime("-%H%M")
        json_path, png, md = RESULTS / f"{stem}.json", RESULTS / f"{stem}.png", RESULTS / f"{stem}.md"
        json_path.write_text(json.dumps(results, indent=1))
        plotted = make_plot(json_path, png)
        write_markdown(results, md, png if plotted else None)
        print(f"wrote {md.relative_to(ROOT)}" + (f" and {png.relative_to(ROOT)}" if plotted else ""))
    failed = [r for r in results["runs"] if r.get("error")]
    return 1 if failed and len(failed) == len(results["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
