"""python -m bench.fanout: the command line (make bench)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.servers import ROOT

from . import __doc__ as ABOUT
from .peers import PEERS, prepare_peers
from .processes import BENCH, BenchError, raise_nofile
from .profile import profile
from .report import make_plot, print_report, write_markdown
from .run import FULL_READERS, LADDER, QUICK_LADDER, QUICK_READERS, Config, run_bench

WORK = BENCH / ".work"
RESULTS = BENCH / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=ABOUT.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="N over 1k, 5k, 10k, 20k; write bench/results/<date>.md")
    parser.add_argument(
        "--peers",
        default="backchannel,raw,python-socketio,node-socket.io",
        help="comma-separated, from: " + ", ".join(PEERS),
    )
    parser.add_argument("--readers", help="comma-separated N (default: 2000 quick, 1000,5000,10000,20000 full)")
    parser.add_argument(
        "--instances",
        choices=["auto", "1", "2"],
        default="auto",
        help="auto: 2 sharing Redis once server/backends/redis.py exists, else 1",
    )
    parser.add_argument("--step", type=float, help="seconds per ladder step (2.5 quick, 8 full)")
    parser.add_argument("--budget", type=float, help="seconds for the whole quick run (default 170)")
    parser.add_argument(
        "--sweep",
        type=float,
        default=0.2,
        help="seconds between the bulk readers' read sweeps (0: a uvloop callback per read)",
    )
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
    readers = (
        [int(x) for x in args.readers.split(",")]
        if args.readers
        else (list(FULL_READERS) if args.full else [QUICK_READERS])
    )
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
    config = Config(
        peers=peers,
        readers=readers,
        instances=args.instances,
        step_seconds=args.step or (8.0 if args.full else 2.5),
        settle_seconds=3.0 if args.full else 2.0,
        budget_seconds=None if args.full else (args.budget or 170.0),
        sweep_seconds=args.sweep,
        ladder=LADDER if args.full else QUICK_LADDER,
        refine=not args.full,
        label="full" if args.full else "quick",
    )
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
