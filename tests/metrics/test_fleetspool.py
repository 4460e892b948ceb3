"""The fleet spool's bound (the service-level case is in tests/cluster/test_fleet.py)."""

from __future__ import annotations

from pathlib import Path

from skns.metrics import fleetspool


def test_prune_keeps_the_newest_windows_and_counts_the_rest(tmp_path: Path) -> None:
    for w in range(90, 101):
        fleetspool.put(tmp_path, w, "{}")
    (tmp_path / "stray.json").write_text("{}")  # not ours: the publisher reports it
    assert fleetspool.prune(tmp_path, 100, 5) == 6
    assert [p.name for p in fleetspool.pending(tmp_path)] == [
        *(f"{w:020d}.json" for w in range(96, 101)),
        "stray.json",
    ]
    assert fleetspool.prune(tmp_path, 100, 5) == 0


def test_prune_of_a_missing_spool_removes_nothing(tmp_path: Path) -> None:
    assert fleetspool.prune(tmp_path / "none", 100, 5) == 0
