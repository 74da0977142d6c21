"""`make conformance`: Autobahn|Testsuite's fuzzing client against the echo app, and a summary.

Starts tests/conformance/echo_app.py under uvicorn (the product's WebSocket options, or another
implementation with --ws), runs `wstest -m fuzzingclient` (Python 2.7, its own virtualenv)
against it, and prints, per case group, how many cases passed, passed non-strictly, were
informational, unimplemented or failed, then every case that did not pass, with what Autobahn
expected and what it got. The 9.* cases (limits and performance: messages up to 16 MB, minutes
of runtime) run only with --full.

    python tests/conformance/run.py --wstest .venv/autobahn27/bin/wstest [--ws wsproto] [--full] [--strict]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the tests' helpers import from the checkout

from tests.servers import free_port  # noqa: E402

GROUPS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 handling",
    "7": "Close handling",
    "9": "Limits/performance",
    "10": "Miscellaneous",
    "12": "Compression (payloads)",
    "13": "Compression (parameters)",
}
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# "FAILED 1009": the server closed with 1009, message too big: the product's ws_max_size (64 KiB)
# refusing a message Autobahn expected echoed; counted apart from every other failure.
TOO_BIG = "FAILED 1009"
COLUMNS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "WRONG CODE", "UNCLEAN", TOO_BIG, "FAILED"]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the echo app exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # nothing listening yet: nothing to wait on but the port
    raise SystemExit(f"the echo app did not listen on {port} within {timeout:.0f} s")


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def summarise(outdir: Path, agent: str) -> tuple[dict[str, Counter], list[tuple[str, str, dict]]]:
    index = json.loads((outdir / "index.json").read_text())[agent]
    groups: dict[str, Counter] = defaultdict(Counter)
    not_passed = []
    for case_id in sorted(index, key=case_key):
        result = index[case_id]
        worst = result["behavior"]
        if worst in PASSING and result.get("behaviorClose") not in PASSING | {None}:
            worst = result["behaviorClose"]
        if worst == "FAILED" and result.get("remoteCloseCode") == 1009:
            worst = TOO_BIG
        groups[case_id.split(".")[0]][worst] += 1
        if worst not in PASSING:
            not_passed.append((case_id, worst, result))
    return groups, not_passed


def main() -> int:
    parser = argparse.ArgumentParser(description="Autobahn fuzzingclient against the echo app")
    parser.add_argument("--wstest", required=True, help="wstest of the Python 2.7 virtualenv")
    parser.add_argument("--ws", default="", help="uvicorn WebSocket implementation (default: the product's)")
    parser.add_argument("--full", action="store_true", help="also run the 9.* limits/performance cases")
    parser.add_argument("--cases", default="*", help="comma-separated case patterns, e.g. '1.*,7.*' (default: all)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any case did not pass")
    parser.add_argument("--outdir", default=str(ROOT / "data" / "conformance"))
    args = parser.parse_args()

    port = free_port()
    agent = f"uvicorn-{args.ws or 'product'}"
    outdir = Path(args.outdir) / agent
    outdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tests.conformance.echo_app", "--port", str(port)]
    if args.ws:
        command += ["--ws", args.ws]
    app_log = outdir / "echo-app.log"
    with open(app_log, "w") as log:
        app = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, app)
        print(app_log.read_text().splitlines()[0], flush=True)  # the uvicorn options it runs with
        spec = {
            "outdir": str(outdir),
            "servers": [{"agent": agent, "url": f"ws://127.0.0.1:{port}"}],
            "cases": [c.strip() for c in args.cases.split(",") if c.strip()],
            "exclude-cases": [] if args.full else ["9.*"],
            "exclude-agent-cases": {},
        }
        spec_path = outdir / "fuzzingclient.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        started = time.monotonic()
        with open(outdir / "wstest.log", "w") as log:
            subprocess.run(
                [str(Path(args.wstest).resolve()), "-m", "fuzzingclient", "-s", str(spec_path)],
                cwd=outdir,
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        elapsed = time.monotonic() - started
    finally:
        app.terminate()
        app.wait(10)

    groups, not_passed = summarise(outdir, agent)
    total = Counter()
    cases = sum(sum(counts.values()) for counts in groups.values())
    print(
        f"\nAutobahn|Testsuite fuzzingclient -> {agent}: {cases} cases in {elapsed:.0f} s"
        f"{'' if args.full else ', 9.* excluded'}"
    )
    if any(counts[TOO_BIG] for counts in groups.values()):
        print(f"({TOO_BIG}: closed by the server with 1009, the message being too big for ws_max_size)")
    print(f"{'group':<30}" + "".join(f"{c:>14}" for c in COLUMNS))
    for group in sorted(groups, key=int):
        total.update(groups[group])
        print(f"{group + ' ' + GROUPS.get(group, ''):<30}" + "".join(f"{groups[group][c]:>14}" for c in COLUMNS))
    print(f"{'all':<30}" + "".join(f"{total[c]:>14}" for c in COLUMNS))
    for other in sorted(set(total) - set(COLUMNS)):
        print(f"  also {total[other]} case(s) {other}")
    too_big = [case_id for case_id, worst, _ in not_passed if worst == TOO_BIG]
    if too_big:
        print(f"\n{TOO_BIG} ({len(too_big)}): " + ", ".join(too_big))
    for case_id, worst, result in not_passed:
        if worst == TOO_BIG:
            continue
        report = json.loads((outdir / result["reportfile"]).read_text()) if result.get("reportfile") else {}
        print(
            f"\n{case_id}: {result['behavior']} / close {result.get('behaviorClose')}, "
            f"remote close code {result.get('remoteCloseCode')}"
        )
        for key in ("description", "expectation", "result", "resultClose"):
            if report.get(key):
                print(f"  {key}: {' '.join(str(report[key]).split())}")
    errors = sum(1 for line in app_log.read_text().splitlines() if line.startswith("ERROR"))
    print(f"\nreports: {outdir / 'index.html'}; the echo app logged {errors} ERROR line(s) in {app_log}")
    return 1 if args.strict and not_passed else 0


if __name__ == "__main__":
    sys.exit(main())
