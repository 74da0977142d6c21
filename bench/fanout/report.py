"""What the bench prints and writes: one line per step, a table per N, the ratio lines against
Backchannel, bench/results/<date>.md with its plot, and the machine it all ran on."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

from .peers import NODE_DIR, PEERS_PY
from .processes import BENCH


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def format_step(step: dict) -> str:
    same, cross = step["latency_same"], step["latency_cross"]
    verdict = "ok" if step["ok"] else "FAIL: " + "; ".join(step["problems"])
    return (
        f"   {step['posts_per_s']:>7.1f} posts/s -> {step['deliveries_per_s']:>8,} deliveries/s  "
        f"p50 {fmt_ms(same['p50'])}/{fmt_ms(cross['p50'])}  p99 {fmt_ms(same['p99'])}/{fmt_ms(cross['p99'])} ms  "
        f"max {fmt_ms(max([x for x in (same['max'], cross['max']) if x is not None], default=None))} ms  "
        f"server {step['server_cpu_us_per_delivery']} µs/deliv ({step['server_cpu_pct']}% CPU)  "
        f"loadgen {step['generator_cpu_pct']}%  others {step.get('other_cpu_pct', 0)}%  {verdict}"
    )


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
    head = (
        f"{'peer':<26} {'deliveries/s':>12} {'posts/s':>8} {'p50 same/cross ms':>18} "
        f"{'p99 same/cross ms':>18} {'max ms':>7} {'CPU µs/deliv':>12} {'KiB/reader':>10} "
        f"{'conns held':>10} {'connect s':>9} {'loadgen CPU':>11} {'other CPU':>9}"
    )
    lines = [head, "-" * len(head)]
    for run in runs:
        best = run.get("best")
        if run.get("error") and not run["steps"]:
            lines.append(f"{run['label']:<26} error: {run['error'].splitlines()[0][:100]}")
            continue
        mem = run.get("idle_kib_per_reader")
        if best is None:
            first = run["steps"][0] if run["steps"] else None
            lines.append(
                f"{run['label']:<26} {'0':>12} {'':>8} no step passed"
                + (f" (first: {'; '.join(first['problems'])})" if first else "")
                + f"   {mem} KiB/reader"
            )
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
            f"{str(best.get('other_cpu_pct', 0)) + '%':>9}"
        )
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
            + (
                f"   (p99 {fmt_ms(p99_ours)} vs {fmt_ms(p99_theirs)} ms at {at:,} deliveries/s offered; "
                f"server CPU per delivery {ratio(cpu_ours, cpu_theirs)} there)"
                if at
                else ""
            )
        )
    return lines


def machine_info() -> dict:
    info = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
    }
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
        except Exception:
            pass
    for name in ("socket.io", "@socket.io/redis-adapter", "redis"):
        package = NODE_DIR / "node_modules" / name / "package.json"
        if package.exists():
            versions[f"npm {name}"] = json.loads(package.read_text()).get("version")
    if PEERS_PY.exists():
        try:
            versions["python-socketio"] = subprocess.run(
                [str(PEERS_PY), "-c", "import importlib.metadata as m; print(m.version('python-socketio'))"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except (subprocess.SubprocessError, OSError):
            pass
    for tool, flag in (("node", "--version"), ("redis-server", "--version")):
        if shutil.which(tool):
            try:
                versions[tool] = subprocess.run(
                    [tool, flag], capture_output=True, text=True, timeout=10
                ).stdout.strip()[:60]
            except (subprocess.SubprocessError, OSError):
                pass
    info["versions"] = versions
    return info


def topology_line(results: dict) -> str:
    instances = results.get("instances", 1)
    if instances > 1:
        return (
            f"{instances} instances per peer sharing one redis-server; posts alternate instances; "
            "same = reader on the instance that took the post, cross = the other"
        )
    return (
        "1 instance per peer, no Redis (Backchannel's Redis backend is not there yet): every latency is same-instance"
    )


def print_report(results: dict) -> None:
    by_n: dict[int, list[dict]] = {}
    for run in results["runs"]:
        by_n.setdefault(run["readers"], []).append(run)
    config = results["config"]
    print()
    print(f"Fan-out bench ({config['mode']}): {topology_line(results)}")
    print(
        f"steps of {config['step_seconds']} s; a step passes with nothing lost, no connection "
        f"closed and p99 <= {config['p99_limit_ms']:.0f} ms (a failed step is run twice); columns describe each "
        "peer's best passing step; CPU % are of one core; 'other CPU' is what the rest of the machine used meanwhile"
    )
    for n, runs in by_n.items():
        sampled = next((r.get("sampled") for r in runs if r.get("sampled")), "?")
        print(f"\nN = {n:,} readers ({sampled} sampled)")
        print(table(runs))
        for line in ratio_lines(runs):
            print(line)
    print(f"\n(total {results['seconds']} s)")


def write_markdown(results: dict, path: Path, plot: Path | None) -> None:
    m = results["machine"]
    lines = [
        f"# Fan-out bench, {dt.date.today().isoformat()} ({results['config']['mode']})",
        "",
        f"Machine: {m.get('cores')} cores ({m.get('cpu', '?')}), Linux {m.get('kernel')}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in m.get('loadavg', ()))}. "
        "Servers, Redis and the load generator share the machine.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
        "",
        f"Topology: {topology_line(results)}.",
        "",
        f"Method: about {results['config']['sampled_per_instance']} sampled readers per instance decode every "
        "frame and time it against the `time.monotonic_ns()` stamp the poster put in the comment body; the "
        "other readers only count frames. Posts per second climb a ladder of target deliveries/s "
        f"({', '.join(f'{t:,}' for t in results['config']['ladder'])}; posts/s = target / N), "
        f"{results['config']['step_seconds']} s per step, until a step loses a delivery or a connection or its "
        f"p99 exceeds {results['config']['p99_limit_ms']:.0f} ms. *Deliveries/s* is the best passing step's "
        "delivered frames over the time from the first post to the last delivery. *CPU µs/deliv* is the server "
        "processes' utime+stime over that step divided by its deliveries; *KiB/reader* is the servers' idle RSS "
        "growth over the bulk readers they took; *conns held* counts ESTABLISHED sockets on the server ports; "
        "*connect s* is how long the bulk readers took to connect (at most 64 handshakes in flight per "
        "generator process); *loadgen CPU* is the "
        "generator's own CPU and *other CPU* what the rest of the machine used during the step (% of one core).",
        "",
    ]
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
    done = subprocess.run(
        [str(PEERS_PY), str(BENCH / "plot.py"), str(json_path), str(png)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        print(f"plot failed: {done.stderr[-500:]}")
    return done.returncode == 0
