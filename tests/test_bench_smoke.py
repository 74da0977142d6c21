"""Smoke test of the fan-out bench harness (bench/fanout/), at a handful of readers.

Not a timed test: it checks that the harness starts Backchannel and the raw peer, connects
bulk and sampled readers, posts, counts every delivery, measures latency, CPU, memory and
connections, prints its table and ratio line, and leaves no process behind. The socket.io
peers need node and the peers' virtualenv, which the bench installs itself; they are not
exercised here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fanout import Config, ladder_for, print_report, ratio_lines, run_bench, summarise_profile, table


@pytest.mark.slow  # starts two peers' servers, redis-server and the load generator's workers
def test_harness_counts_every_delivery_and_cleans_up(tmp_path: Path, capsys) -> None:
    config = Config(
        peers=["backchannel", "raw"],
        readers=[8],
        ladder=(200,),
        step_seconds=1.0,
        settle_seconds=0.3,
        warmup_seconds=0.3,
        retry=False,
        quiet=True,
    )
    results = run_bench(config, tmp_path)
    instances = results["instances"]
    assert instances in (1, 2)

    for run in results["runs"]:
        assert run["error"] is None, run["error"]
        assert run["bulk"] + run["sampled"] == 8
        assert run["connections_held"] == 8 + instances  # the readers and the poster's sockets
        assert run["idle_kib_per_reader"] is not None
        [step] = run["steps"]
        assert step["sent"] >= 8
        assert step["expected"] == step["sent"] * 8
        assert step["delivered"] == step["expected"], step["problems"]
        assert step["lost"] == 0 and step["missing_sampled"] == 0 and step["duplicates"] == 0
        if run["peer"] == "backchannel":  # the raw peer does not promise order across instances
            assert step["seq_gaps"] == 0
        assert step["connections_open"] == 8
        latencies = step["latency_same"]["n"] + step["latency_cross"]["n"]
        assert latencies == step["sent"] * run["sampled"]
        if instances == 2:
            assert step["latency_cross"]["n"] > 0
        assert step["latency_same"]["p50"] is not None and step["latency_same"]["p50"] >= 0
        assert step["server_cpu_us_per_delivery"] is not None and step["deliveries_per_s"] > 0

    for pid in results["pids"]:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived the bench"

    lines = ratio_lines(results["runs"])
    assert lines and lines[0].startswith("vs raw websockets.broadcast: deliveries/s ×")
    assert ", p99 ×" in lines[0] and ", memory/reader ×" in lines[0]
    assert "Backchannel" in table(results["runs"])
    print_report(results)
    assert "N = 8 readers" in capsys.readouterr().out


def test_ladder_is_the_same_for_every_peer_and_never_under_one_post_a_second() -> None:
    steps = ladder_for(20_000, (5_000, 10_000, 20_000, 40_000))
    assert [rate for _, rate in steps] == [1.0, 2.0]
    assert [target for target, _ in ladder_for(1000, (5_000, 7_000))] == [5_000, 7_000]


def test_profile_summary_reads_collapsed_stacks(tmp_path: Path) -> None:
    raw = tmp_path / "stacks.txt"
    raw.write_text(
        "main (m.py:1);loop (l.py:5);send (s.py:7) 20\nmain (m.py:1);loop (l.py:5);send (s.py:9) 10\n"
        "main (m.py:1);loop (l.py:5);encode (e.py:3) 10\nmain (m.py:1);idle 60\n"
    )
    summary = summarise_profile(raw)
    assert "100 samples" in summary
    assert "60.0%  idle" in summary
    assert "30.0%  send (s.py)" in summary  # one entry per function, whatever the line
    assert "40.0%  loop (l.py)" in summary
