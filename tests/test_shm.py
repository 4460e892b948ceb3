import os

import pytest

from skns.shm import BLOB_MAX, SlotTable


def test_a_fresh_slot_is_neither_alive_nor_ready():
    slot = SlotTable(2).slots[1]
    slot.reset()
    assert slot.heartbeat_ns() == 0
    assert not slot.is_ready()
    assert slot.read() == b""


def test_beat_ready_and_publish_are_seen_across_a_fork():
    table = SlotTable(3)
    slot = table.slots[2]
    slot.reset()
    pid = os.fork()
    if pid == 0:
        slot.beat()
        slot.mark_ready()
        slot.publish(b'{"n": 1}')
        slot.publish(b'{"n": 22}')
        os._exit(0)
    os.waitpid(pid, 0)
    assert slot.heartbeat_ns() > 0
    assert slot.is_ready()
    assert slot.read() == b'{"n": 22}'
    assert table.slots[1].read() == b""  # neighbours untouched


def test_reset_clears_the_previous_child():
    slot = SlotTable(1).slots[0]
    slot.beat()
    slot.mark_ready()
    slot.reset()
    assert (slot.heartbeat_ns(), slot.is_ready()) == (0, False)


def test_a_writer_that_died_mid_write_reads_as_none():
    table = SlotTable(1)
    slot = table.slots[0]
    table._buf[0:8] = (1).to_bytes(8, "little")  # an odd sequence: a write never finished
    assert slot.read(attempts=3) is None


def test_blob_size_is_bounded():
    slot = SlotTable(1).slots[0]
    slot.publish(b"x" * BLOB_MAX)
    with pytest.raises(ValueError):
        slot.publish(b"x" * (BLOB_MAX + 1))
