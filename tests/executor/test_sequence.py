from pathlib import Path

from skns.executor import sequence
from skns.executor.sequence import Sequence


def test_seqs_increase_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "router.seq"
    seq = Sequence(path)
    first = seq.take(3)
    assert first == 1
    assert seq.take(1) == 4
    # A crash loses the in-memory counter: the next router starts above the lease.
    again = Sequence(path)
    assert again.take(1) > 4


def test_lease_renewed_when_used_up(tmp_path: Path) -> None:
    path = tmp_path / "router.seq"
    seq = Sequence(path)
    last = seq.take(sequence.BLOCK + 5) + sequence.BLOCK + 4
    assert int(path.read_text()) > last
    assert Sequence(path).take(1) > last


def test_skip_past(tmp_path: Path) -> None:
    seq = Sequence(tmp_path / "router.seq")
    seq.skip_past(100)
    assert seq.take(1) == 101
    seq.skip_past(5)  # already past it
    assert seq.take(1) == 102
