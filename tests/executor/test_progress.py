"""A partition's progress: the low watermark and the finished sequences above it."""

from __future__ import annotations

import pytest

from skns.errors import ProtocolError
from skns.executor.progress import Progress


def test_watermark_follows_the_lowest_unfinished_delivered_sequence() -> None:
    p = Progress()
    for seq in (3, 5, 9, 12):  # sparse: the stream holds other partitions too
        assert p.delivered(seq)
    assert p.pending == 4 and p.watermark == 0
    p.finished(9)
    p.finished(5)
    assert p.watermark == 0  # 3 still runs
    assert p.snapshot() == (0, [5, 9])
    p.finished(3)
    assert p.watermark == 9 and p.pending == 1
    assert p.snapshot() == (9, [])
    p.finished(12)
    assert p.watermark == 12 and p.pending == 0


def test_changed_until_snapshot() -> None:
    p = Progress()
    assert not p.changed
    p.delivered(1)
    p.finished(1)
    assert p.changed
    p.snapshot()
    assert not p.changed


def test_a_new_owner_skips_what_the_commit_says_finished() -> None:
    old = Progress()
    for seq in (2, 4, 6, 8):
        old.delivered(seq)
    old.finished(2)
    old.finished(6)
    new = Progress.decode(old.encode())
    assert (new.watermark, new.last) == (2, 2)
    # Delivery resumes at watermark + 1: 4 runs again, 6 is skipped, 8 runs.
    assert new.delivered(4)
    assert not new.delivered(6)
    assert new.delivered(8)
    assert new.snapshot() == (2, [6])  # 6 kept until the watermark passes it
    new.finished(4)
    assert new.watermark == 6
    new.finished(8)
    assert new.snapshot() == (8, [])


def test_commit_keeps_finished_sequences_not_delivered_again_yet() -> None:
    p = Progress(10, [12, 15, 9])  # 9 is at or below the watermark: dropped
    assert p.snapshot() == (10, [12, 15])
    assert p.delivered(11)
    assert p.snapshot() == (10, [12, 15])


def test_redelivery_is_ignored() -> None:
    p = Progress()
    assert p.delivered(4)
    assert not p.delivered(4)
    assert not p.delivered(3)


@pytest.mark.parametrize(
    "data", [b"", b"[]", b'{"w": -1, "f": []}', b'{"w": 1, "f": [1.5]}', b'{"w": "1", "f": []}']
)
def test_a_damaged_commit_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        Progress.decode(data)
