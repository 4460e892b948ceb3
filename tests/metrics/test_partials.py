import os
import time

from skns.metrics.partials import REASONS, RING, Partials
from skns.metrics.window import Aggregate


def test_publish_then_read_round_trips_including_huge_sums():
    block = Partials(2).blocks[1]
    block.publish(7, 3, 2**100 + 5, 9, -9)
    assert block.read(7) == Aggregate(3, 2**100 + 5, 9, -9)
    block.publish(7, 4, -(2**90), 10, -10)  # the second copy
    assert block.read(7) == Aggregate(4, -(2**90), 10, -10)
    block.publish(7, 5, 1, 1, 1)  # back to the first copy
    assert block.read(7) == Aggregate(5, 1, 1, 1)


def test_unpublished_window_reads_as_zeros_and_a_reused_slot_as_lost():
    block = Partials(1).blocks[0]
    assert block.read(3) == Aggregate()
    block.publish(3 + RING, 1, 1, 1, 1)
    assert block.read(3) is None  # its slot now holds a later window
    assert block.read(3 + 2 * RING) == Aggregate()  # an older window in the slot: nothing for us


def test_blocks_do_not_overlap():
    p = Partials(3)
    for i, block in enumerate(p.blocks):
        block.publish(1, i + 1, i, i, i)
        block.set_counters(i * 10, [i] * 6)
        block.set_watermark(100.0 + i)
    for i, block in enumerate(p.blocks):
        assert block.read(1) == Aggregate(i + 1, i, i, i)
        assert block.counters() == (i * 10, [i] * 6)
        assert block.watermark() == 100.0 + i


def test_shared_with_a_forked_child():
    import os

    p = Partials(1)
    pid = os.fork()
    if pid == 0:
        p.blocks[0].publish(2, 42, 42, 42, 42)
        os._exit(0)
    os.waitpid(pid, 0)
    assert p.blocks[0].read(2) == Aggregate(42, 42, 42, 42)


def test_the_supervisor_never_reads_a_torn_watermark_counter_or_sequence():
    """A worker updates its block as fast as it can while the supervisor reads it: the
    watermark and counters never go back (a torn write read as 0 would), and a window the
    worker has published never reads as unpublished (zeros)."""
    partials = Partials(1)
    block = partials.blocks[0]
    block.set_watermark(1.0)
    block.set_counters(1, [1] * len(REASONS))
    block.publish(5, 1, 1, 1, 1)
    pid = os.fork()
    if pid == 0:
        deadline = time.monotonic() + 3.0
        n = 1
        while time.monotonic() < deadline:
            n += 1
            block.set_watermark(float(n))
            block.set_counters(n, [n] * len(REASONS))
            block.publish(5, n, n, n, n)
        os._exit(0)
    reads = went_back = lost = 0
    watermark, accepted = 1.0, 1
    deadline = time.monotonic() + 2.5
    try:
        while time.monotonic() < deadline:
            reads += 1
            w = block.watermark()
            a, rejected = block.counters()
            went_back += w < watermark or a < accepted or min(rejected) < 1
            watermark, accepted = max(w, watermark), max(a, accepted)
            lost += block.read(5).count == 0
    finally:
        os.waitpid(pid, 0)
    assert reads > 10_000 and accepted > 1000
    assert (went_back, lost) == (0, 0)
