"""The benchmark runs end to end (briefly) and prints its table."""

from __future__ import annotations

import pytest

from skns.tasks import bench


def test_a_short_run_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    status = bench.main(
        ["--clients", "4", "--duration", "0.5", "--warmup", "0.1", "--samples", "1"]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "| throughput, tasks/s |" in out
    assert "| timeout overshoot max, ms |" in out
    assert "baseline (ProcessPoolExecutor + wait_for)" in out
    assert "wrong answers from skns: 0" in out


def test_without_the_journal(capsys: pytest.CaptureFixture[str]) -> None:
    """What the journal costs: the same server without it (compare with a normal run)."""
    status = bench.main(
        ["--clients", "4", "--duration", "0.5", "--warmup", "0.1", "--samples", "1", "--no-journal"]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "skns WITHOUT its crash journal" in out
    assert "wrong answers from skns: 0" in out
