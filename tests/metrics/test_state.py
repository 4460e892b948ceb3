"""The metrics state memfd: saved and found again, also by another mapping of the fd."""

from __future__ import annotations

import os

import pytest

from skns.metrics.state import StateMemory, StateTooLarge


def test_state_and_blocks_survive_in_the_fd():
    memory = StateMemory.create(3)
    assert memory.load() is None
    memory.partials.blocks[2].publish(7, 5, 2**70, 9, -9)
    memory.partials.blocks[2].set_owner(1234)
    memory.save({"next": 7, "open": {"6": [0, [1, 2**65, 3, 4]]}})
    memory.save({"next": 8, "open": {"6": [1, [2, 2**66, 3, 4]]}})
    again = StateMemory.attach(os.dup(memory.fd))
    assert again.workers == 3
    assert again.load() == {"next": 8, "open": {"6": [1, [2, 2**66, 3, 4]]}}
    agg = again.partials.blocks[2].read(7)
    assert (agg.count, agg.a1_sum, agg.a2_max, agg.a3_min) == (5, 2**70, 9, -9)
    assert again.partials.blocks[2].owner() == 1234
    again.close()
    memory.close()


def test_a_save_cut_short_leaves_the_previous_copy():
    memory = StateMemory.create(1, capacity=256)
    memory.save({"n": 1})
    # A writer killed mid-save: the copy the counter does not point at is garbage.
    off = memory._copy(2)
    memory._buf[off : off + 20] = b"\xff" * 20
    assert memory.load() == {"n": 1}
    memory.close()


def test_too_large_a_state_is_refused_and_the_last_kept():
    memory = StateMemory.create(1, capacity=64)
    memory.save({"n": 1})
    with pytest.raises(StateTooLarge):
        memory.save({"n": "x" * 100})
    assert memory.load() == {"n": 1}
    memory.close()


def test_attach_refuses_what_is_not_a_metrics_state():
    fd = os.memfd_create("other")
    os.write(fd, b"x" * 4096)
    with pytest.raises(ValueError, match="not a metrics state"):
        StateMemory.attach(fd)
    os.ftruncate(fd, 10)
    with pytest.raises(ValueError, match="too small"):
        StateMemory.attach(fd)
    os.close(fd)
    memory = StateMemory.create(2)
    os.ftruncate(memory.fd, 100_000)
    with pytest.raises(ValueError, match="expected"):
        StateMemory.attach(memory.fd)
