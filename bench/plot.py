"""Latency against load, one panel per N: `bench/.venv-peers/bin/python bench/plot.py RESULTS.json OUT.png`.

Runs on the peers' virtualenv (matplotlib lives there, not in the product's dependencies).
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

P99_LIMIT_MS = 250.0
COLOURS = {"backchannel": "tab:red", "raw": "tab:gray", "python-socketio": "tab:blue", "node-socket.io": "tab:green"}


def main(source: str, target: str) -> None:
    with open(source) as f:
        results = json.load(f)
    by_n: dict[int, list[dict]] = {}
    for run in results["runs"]:
        by_n.setdefault(run["readers"], []).append(run)
    panels = len(by_n)
    cols = 2 if panels > 1 else 1
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.6 * rows), squeeze=False)
    for ax, (n, runs) in zip(axes.flat, sorted(by_n.items()), strict=False):
        for run in runs:
            steps = [s for s in run["steps"] if s.get("deliveries_per_s")]
            if not steps:
                continue
            x = [s["deliveries_per_s"] for s in steps]
            colour = COLOURS.get(run["peer"])
            ax.plot(x, [max(s["p99"], 0.1) for s in steps], "o-", color=colour, label=f"{run['label']} p99")
            p50 = [s["latency_same"]["p50"] or s["latency_cross"]["p50"] or 0.1 for s in steps]
            ax.plot(x, [max(v, 0.1) for v in p50], "x--", color=colour, alpha=0.6, label=f"{run['label']} p50")
            failed = [s for s in steps if not s["ok"]]
            if failed:
                ax.plot(
                    [s["deliveries_per_s"] for s in failed],
                    [max(s["p99"], 0.1) for s in failed],
                    "x",
                    color="black",
                    markersize=9,
                )
        ax.axhline(P99_LIMIT_MS, color="black", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_title(f"N = {n:,} readers over {results.get('instances', 1)} instance(s)")
        ax.set_xlabel("deliveries/s (measured)")
        ax.set_ylabel("latency, ms (p99 solid, p50 dashed; x = failed step)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
