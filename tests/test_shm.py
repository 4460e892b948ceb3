import os
import time

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


def test_reopen_requests_reach_the_child_and_a_new_child_starts_from_none():
    table = SlotTable(2)
    slot = table.slots[1]
    slot.reset()
    pid = os.fork()
    if pid == 0:  # the child sees the supervisor's requests; its own writes keep them
        slot.publish(b"{}")
        deadline = time.monotonic() + 10
        while not slot.reopens() and time.monotonic() < deadline:
            time.sleep(0.001)
        os._exit(slot.reopens())
    slot.ask_reopen()
    slot.ask_reopen()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) in (1, 2)
    assert (slot.reopens(), table.slots[0].reopens()) == (2, 0)
    slot.reset()
    assert slot.reopens() == 0


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


def test_reads_are_never_torn_while_a_child_beats_and_publishes_fast():
    """The supervisor reads while a child writes as fast as it can: every heartbeat read
    is a real, non-decreasing beat (never 0, the value a torn read of a fresh write can
    show) and every blob read is one the child published whole."""
    table = SlotTable(1)
    slot = table.slots[0]
    slot.reset()
    blobs = [b"a" * 100, b"b" * 3000, b"{}"]
    slot.beat()
    slot.publish(blobs[0])
    pid = os.fork()
    if pid == 0:
        deadline = time.monotonic() + 3.0
        i = 0
        while time.monotonic() < deadline:
            slot.beat()
            slot.mark_ready()
            if i % 8 == 0:
                slot.publish(blobs[i % 3])
            i += 1
        os._exit(0)
    beats = torn_beats = torn_blobs = ready_lost = 0
    last = 0
    was_ready = False
    deadline = time.monotonic() + 2.5
    try:
        while time.monotonic() < deadline:
            beat = slot.heartbeat_ns()
            beats += 1
            if beat < last or beat == 0:
                torn_beats += 1
            last = max(last, beat)
            blob = slot.read()
            if blob is not None and blob not in blobs:
                torn_blobs += 1
            ready = slot.is_ready()
            ready_lost += was_ready and not ready
            was_ready = was_ready or ready
    finally:
        os.waitpid(pid, 0)
    assert beats > 10_000 and was_ready
    assert (torn_beats, torn_blobs, ready_lost) == (0, 0, 0)
