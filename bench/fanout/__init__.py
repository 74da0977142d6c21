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

The package: processes.py (what the bench starts and what /proc says of it), peers.py (the servers
under test), run.py (connect, then climb the ladder), report.py (the table, the ratio lines,
bench/results/), profile.py (PROFILE=1), __main__.py (the command line). The load generator is
bench/loadgen.py; the WebSocket frames, free ports and redis-server come from the tests' own
helpers (tests/wsframes.py, tests/servers.py, tests/redis_server.py).
"""

from .peers import PEERS, Peer
from .profile import summarise_profile
from .report import print_report, ratio_lines, table
from .run import Config, ladder_for, run_bench

__all__ = [
    "PEERS",
    "Config",
    "Peer",
    "ladder_for",
    "print_report",
    "ratio_lines",
    "run_bench",
    "summarise_profile",
    "table",
]
