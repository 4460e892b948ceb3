"""The benchmark runs end to end (briefly) and prints its table.

The figures are not checked, only the table's shape, so the runs are as short as the
bench allows: two rounds (the alternation between the servers still runs) of 0.1 s each.
"""

from __future__ import annotations

import pytest

from skns.tasks import bench


def test_a_short_run_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    status = bench.main(
        [
            "--clients",
            "4",
            "--duration",
            "0.2",
            "--rounds",
            "2",
            "--warmup",
            "0.1",
            "--samples",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "| throughput, tasks/s |" in out
    assert "| timeout overshoot max, ms |" in out
    assert "baseline (ProcessPoolExecutor + wait_for)" in out
    assert "wrong answers from skns: 0" in out


def test_without_the_journal(capsys: pytest.CaptureFixture[str]) -> None:
    """What the journal costs: the same server without it (compare with a normal run).
    Without the baseline too: the run above covers it, and its job left running past the
    limit was most of this test's time."""
    argv = ["--clients", "4", "--duration", "0.2", "--rounds", "1", "--warmup", "0.1"]
    status = bench.main([*argv, "--samples", "1", "--no-journal", "--no-baseline"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "skns WITHOUT its crash journal" in out
    assert "| throughput, tasks/s |" in out and "| not run |" in out
    assert "wrong answers from skns: 0" in out
