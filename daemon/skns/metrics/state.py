"""The metrics state in a memfd: what a kill -9 of the supervisor must not lose.

One memory file holds everything the metrics figures depend on between two
output lines: the workers' partials of the open windows (the blocks of
:mod:`.partials`, written by the workers as they go) and the closer's state
(the next window to close, the longer intervals' running totals, partials
carried over from a previous run, and the lines of the last close, in case the
process died between saving and writing them), which the supervisor saves at
every change. The file lives as long as some process or systemd's fd store
holds it, so a supervisor started after a crash finds it as it was.

Layout::

    header         magic, layout version, workers, capacity of one state copy
    closer state   a sequence counter and two copies (length, JSON): the writer
                   fills the copy the counter does not point at, then bumps the
                   counter, so a writer killed mid-save leaves the last copy intact
    blocks         one partials block per worker
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

from .. import jsonexact
from .partials import BLOCK_SIZE, Partials

MAGIC = b"SKNSMTRC"
LAYOUT = 1
# The fd's name in systemd's store and in LISTEN_FDNAMES.
FDNAME = "metrics-state"
_HEADER = struct.Struct("<8sIII")  # magic, layout, workers, capacity
_HEADER_SIZE = 64
_SEQ = struct.Struct("<Q")
_LEN = struct.Struct("<I")
# One copy of the closer's state: a few intervals' totals and a few windows' partials.
CAPACITY = 64 * 1024


class StateTooLarge(ValueError):
    """The closer's state does not fit its copy in the memfd."""


def _blocks_offset(capacity: int) -> int:
    end = _HEADER_SIZE + _SEQ.size + 2 * (_LEN.size + capacity)
    return -(-end // 64) * 64


def _size(workers: int, capacity: int) -> int:
    return _blocks_offset(capacity) + max(workers, 1) * BLOCK_SIZE


class StateMemory:
    """The mapped memfd; ``partials`` are its blocks, shared with the forked workers."""

    def __init__(self, fd: int, workers: int, capacity: int) -> None:
        self.fd = fd
        self.workers = workers
        self.capacity = capacity
        self._buf = mmap.mmap(fd, _size(workers, capacity))
        self.partials = Partials(workers, self._buf, _blocks_offset(capacity))

    @classmethod
    def create(cls, workers: int, capacity: int = CAPACITY) -> StateMemory:
        fd = os.memfd_create("skns-metrics-state", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, _size(workers, capacity))
            memory = cls(fd, workers, capacity)
        except OSError:
            os.close(fd)
            raise
        _HEADER.pack_into(memory._buf, 0, MAGIC, LAYOUT, workers, capacity)
        return memory

    @classmethod
    def attach(cls, fd: int) -> StateMemory:
        """Map a memfd made by :meth:`create` (in this run or an earlier one); ValueError
        when it is not one (the caller still owns ``fd`` then)."""
        size = os.fstat(fd).st_size
        if size < _HEADER_SIZE:
            raise ValueError(f"{size} bytes: too small for the header")
        with mmap.mmap(fd, _HEADER_SIZE) as head:
            magic, layout, workers, capacity = _HEADER.unpack_from(head, 0)
        if magic != MAGIC or layout != LAYOUT:
            raise ValueError(f"not a metrics state of layout {LAYOUT}")
        if size != _size(workers, capacity):
            raise ValueError(f"{size} bytes, expected {_size(workers, capacity)}")
        return cls(fd, workers, capacity)

    def save(self, state: dict[str, Any]) -> None:
        data = jsonexact.dumps(state)
        if len(data) > self.capacity:
            raise StateTooLarge(f"metrics state of {len(data)} bytes > {self.capacity}")
        (seq,) = _SEQ.unpack_from(self._buf, _HEADER_SIZE)
        seq += 1
        off = self._copy(seq)
        _LEN.pack_into(self._buf, off, len(data))
        self._buf[off + _LEN.size : off + _LEN.size + len(data)] = data
        _SEQ.pack_into(self._buf, _HEADER_SIZE, seq)

    def load(self) -> dict[str, Any] | None:
        """The last saved state; None when nothing was saved yet."""
        (seq,) = _SEQ.unpack_from(self._buf, _HEADER_SIZE)
        if seq == 0:
            return None
        off = self._copy(seq)
        (n,) = _LEN.unpack_from(self._buf, off)
        state = jsonexact.loads(self._buf[off + _LEN.size : off + _LEN.size + n])
        if not isinstance(state, dict):
            raise ValueError("the saved metrics state is not an object")
        return state

    def _copy(self, seq: int) -> int:
        return _HEADER_SIZE + _SEQ.size + (seq & 1) * (_LEN.size + self.capacity)

    def close(self) -> None:
        """Unmap and close the fd (the store's copy, if any, keeps the memory)."""
        self.partials.close()
        os.close(self.fd)
