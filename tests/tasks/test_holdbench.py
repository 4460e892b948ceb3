"""The hold benchmark runs end to end (briefly) and prints its three runs."""

from __future__ import annotations

import pytest

from skns.tasks import holdbench


def test_a_short_run_admits_the_limit_and_prints_three_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(holdbench, "SETTLE", 0.2)
    assert holdbench.main(["--number", "30000", "--connections", "6", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "server RSS" in line]
    assert len(lines) == 3, out
    assert "admitted    6" in lines[0] and "admitted    6" in lines[1]
    assert "admitted    2" in lines[2], out
