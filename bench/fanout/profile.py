"""`make bench PROFILE=1`: Backchannel alone under load, one instance sampled with py-spy, and
the frames that took its event loop's time."""

from __future__ import annotations

from pathlib import Path

from .peers import PEERS, PEERS_VENV, prepare_peers
from .processes import BenchError, raise_nofile, signals_held
from .report import format_step
from .run import Bench, Config, Run


def profile(
    readers: int, target: int, seconds: float, work: Path, instances: str = "auto", native: bool = False
) -> None:
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
        spy = bench.procs.start(
            "py-spy",
            [
                str(py_spy),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(raw),
            ]
            + (["--native"] if native else ["--nonblocking"]),
            work / "py-spy.log",
        )
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
