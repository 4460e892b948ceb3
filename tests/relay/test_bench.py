"""The benchmark's plumbing, on a small run: both designs relay in order, the table reads."""

from __future__ import annotations

from skns.relay import bench


def test_a_small_run_of_each_design_and_the_table() -> None:
    results = {}
    for design in bench.DESIGNS:
        run = bench.run_once(design, "shuffled", 3_000, seed=1)
        assert run["sim"]["complete"] and run["relay"]["ok"], run
        assert run["relay"]["hold"]["count"] == 3_000
        results["shuffled", design] = bench.summarize([run])
    text = bench.table(results, 3_000)
    assert "relay/baseline throughput x" in text
    assert text.count("shuffled ") >= 2
