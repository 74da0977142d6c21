"""One run of the bench: for each N and each peer, start the servers and the load generator,
connect the readers, then climb the ladder of posts per second until a step fails."""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.redis_server import RedisServer
from tests.servers import ROOT

from .peers import PEERS, Peer
from .processes import (
    BenchError,
    Proc,
    Procs,
    cpu_seconds,
    established,
    machine_busy_seconds,
    raise_nofile,
    rss_kib,
    signals_held,
    start_redis,
)
from .report import format_step, machine_info

P99_LIMIT_MS = 250.0
QUICK_READERS = 2000
FULL_READERS = (1000, 5000, 10000, 20000)
# Target deliveries per second, climbed until a step fails; posts/s = target / readers, never under
# MIN_POSTS_PER_S (the 0 is that floor: one post a second); a step lasts for MIN_POSTS posts at least.
# Full mode climbs by √2; quick mode by 2, then tries the geometric middle of its last pass and first failure.
LADDER = (
    0,
    5_000,
    7_000,
    10_000,
    14_000,
    20_000,
    28_000,
    40_000,
    56_000,
    80_000,
    112_000,
    160_000,
    224_000,
    320_000,
    448_000,
    640_000,
)
QUICK_LADDER = (0, 5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000)
MIN_POSTS_PER_S = 1.0
MIN_POSTS = 6
RESERVE_SECONDS = 25.0  # quick mode: what a slow connect of one peer must leave each peer after it


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


@dataclass
class Config:
    peers: list[str]
    readers: list[int]
    instances: str = "auto"  # "auto", "1" or "2"
    sampled_per_instance: int = 50
    ladder: tuple[int, ...] = LADDER
    step_seconds: float = 2.5
    settle_seconds: float = 2.0
    warmup_seconds: float = 1.0  # posts before the idle-memory baseline, so first-post costs are paid
    budget_seconds: float | None = None  # whole run (quick mode): steps stop when it runs out
    sweep_seconds: float = 0.2  # bulk readers read their sockets in sweeps this far apart (0: uvloop callbacks)
    refine: bool = False  # one extra step between the last pass and the first failure
    retry: bool = True  # run a failed step once more before believing it
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
        self.redis: RedisServer | None = None
        self.redis_proc: Proc | None = None
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
        if self.redis_proc is None or not self.redis_proc.alive():
            self.redis_proc, self.redis = start_redis(self.procs, self.work)
        return self.redis.url

    # --- the whole run ---

    def run(self) -> dict:
        raise_nofile()
        self.instances = self.choose_instances()
        results: dict = {
            "config": {
                "mode": self.config.label,
                "readers": self.config.readers,
                "step_seconds": self.config.step_seconds,
                "sampled_per_instance": self.config.sampled_per_instance,
                "ladder": list(self.config.ladder),
                "p99_limit_ms": P99_LIMIT_MS,
            },
            "machine": machine_info(),
            "runs": [],
        }
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
            if (
                outcome.get("error")
                and peer.name == "backchannel"
                and self.instances == 2
                and self.config.instances == "auto"
                and outcome.get("phase") == "start"
            ):
                self.say(
                    "!! Backchannel did not start on the Redis backend; falling back to one instance "
                    "(embedded backend) for every peer"
                )
                self.instances = 1
                outcome = self.run_peer(peer, n, budget, connect_budget)
            results["runs"].append(outcome)
        results["instances"] = self.instances
        results["seconds"] = round(time.monotonic() - self.started, 1)
        return results

    def run_peer(self, peer: Peer, n: int, budget: float | None, connect_budget: float | None = None) -> dict:
        deadline = time.monotonic() + budget if budget else None
        connect_deadline = time.monotonic() + connect_budget if connect_budget else None
        out: dict = {
            "peer": peer.name,
            "label": peer.label,
            "readers": n,
            "instances": self.instances,
            "steps": [],
            "error": None,
        }
        run = Run(peer, n, self.instances, None)
        self.say(
            f"\n== {peer.label}: {n:,} readers over {self.instances} instance(s)"
            + (" sharing Redis" if self.instances > 1 else "")
        )
        out["phase"] = "start"
        try:
            run.redis_url = self.redis_url()
            if self.redis:
                with self.redis.client() as redis:
                    redis.flushall()
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
        return self.procs.start(
            f"loadgen-{role}-{i}",
            [sys.executable, "-m", "bench.loadgen", role],
            self.work / f"loadgen-{run.peer.name}-{role}-{i}.log",
            pipes=True,
        )

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
            worker.send(
                {"op": "connect", "targets": [target(i, count)], "timeout": timeout, "sweep": cfg.sweep_seconds}
            )
        connected, errors = 0, {}
        for worker in run.bulk:
            reply = worker.recv(timeout + 60, "connect")
            connected += reply["connected"]
            for key, k in reply["errors"].items():
                errors[key] = errors.get(key, 0) + k
        connect_seconds = time.monotonic() - started
        if connected != bulk_total:
            raise BenchError(
                f"bulk readers: {connected}/{bulk_total} connected in {connect_seconds:.0f} s; "
                f"errors: {errors or 'none (out of time)'}"
            )
        time.sleep(cfg.settle_seconds)
        after = sum(rss_kib(proc.pid) for proc, _ in run.servers)
        held = sum(established(port) for port in ports)
        out.update(
            {
                "sampled": per_instance * instances,
                "bulk": bulk_total,
                "connect_seconds": round(connect_seconds, 1),
                "rss_base_kib": base,
                "rss_idle_kib": after,
                "idle_kib_per_reader": round((after - base) / bulk_total, 2) if bulk_total else None,
                "connections_held": held,
            }
        )
        self.say(
            f"   connected {run.readers:,} readers in {connect_seconds:.1f} s; idle RSS "
            f"{base / 1024:.0f} -> {after / 1024:.0f} MiB ({out['idle_kib_per_reader']} KiB/reader); "
            f"{held:,} connections held"
        )

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
                step["retry_of"] = {
                    k: first[k] for k in ("deliveries_per_s", "p99", "lost", "problems", "other_cpu_pct")
                }
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
        for worker in [*readers, run.poster]:
            worker.call({"op": "mark"})
        open_before = sum(worker.call({"op": "count"})["open"] for worker in readers)
        servers = [proc.pid for proc, _ in run.servers]
        gen = [proc.pid for proc in run.generator]
        cpu0 = [cpu_seconds(pid) for pid in servers]
        gen0 = [cpu_seconds(pid) for pid in gen]
        redis0 = cpu_seconds(self.redis_proc.pid) if self.redis_proc else 0.0
        busy0 = machine_busy_seconds()
        wall0 = time.monotonic()
        post = run.poster.call({"op": "post", "rate": rate, "duration": duration, "kind": run.peer.kind}, duration + 60)
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
        reports = [
            worker.call({"op": "report", "n0": post["n0"], "n1": post["n1"], "failed": failed}, 60)
            for worker in run.sampled
        ]
        wall = time.monotonic() - wall0
        cpu = sum(cpu_seconds(pid) for pid in servers) - sum(cpu0)
        gen_cpu = [cpu_seconds(pid) - before for pid, before in zip(gen, gen0, strict=True)]
        redis_cpu = (cpu_seconds(self.redis_proc.pid) - redis0) if self.redis_proc else 0.0
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
            "posts_per_s": round(rate, 2),
            "sent": sent,
            "offered_per_s": round(rate * open_before),
            "delivered": delivered,
            "expected": expected,
            "lost": lost,
            "missing_sampled": missing,
            "duplicates": duplicates,
            "seq_gaps": seq_gaps,
            "deliveries_per_s": round(delivered / span) if span > 0 else 0,
            "latency_same": lat_same,
            "latency_cross": lat_cross,
            "p99": p99,
            "server_cpu_us_per_delivery": round(cpu * 1e6 / delivered, 2) if delivered else None,
            "server_cpu_pct": round(100 * cpu / wall, 1),
            "redis_cpu_pct": round(100 * redis_cpu / wall, 1),
            "generator_cpu_pct": round(100 * sum(gen_cpu) / wall, 1),
            "other_cpu_pct": round(100 * others / wall, 1),
            "generator_busiest_pct": round(100 * busiest, 1),
            "generator_cpu_us_per_delivery": {
                role: round(
                    sum(c for proc, c in zip(run.generator, gen_cpu, strict=True) if f"-{role}-" in proc.name)
                    * 1e6
                    / max(1, delivered),
                    2,
                )
                for role in ("bulk", "sampled", "poster")
            },
            "generator_saturated": busiest > 0.9,
            "poster_lag_ms": post["lag_max_ms"],
            "short_readers": sum(c.get("short_readers", 0) for c in counts),
            "connections_open": open_after,
            "close_codes": close_codes,
            "ok": not problems,
            "problems": problems,
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


def summarise(out: dict) -> None:
    passed = [s for s in out["steps"] if s["ok"]]
    best = max(passed, key=lambda s: s["deliveries_per_s"]) if passed else None
    out["best"] = best
    out["sustained_per_s"] = best["deliveries_per_s"] if best else 0


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
