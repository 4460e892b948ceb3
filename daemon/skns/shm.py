"""Per-child slots in an anonymous shared mapping.

The supervisor maps the table before it forks, so every child inherits it:
nothing to name, nothing to unlink, nothing left in /dev/shm. Each child owns
one slot and is its only writer; the supervisor only reads.

A slot holds a heartbeat (CLOCK_MONOTONIC nanoseconds, comparable across
processes) and a stats blob (JSON bytes) guarded by a sequence counter: the
writer makes the counter odd, writes, makes it even; a reader that sees an odd
counter, or a different counter after copying, copies again.
"""

from __future__ import annotations

import mmap
import struct
import time

# seq, heartbeat_ns, ready, blob_len
_HEADER = struct.Struct("<QQqQ")
SLOT_SIZE = 16384
BLOB_MAX = SLOT_SIZE - _HEADER.size


class Slot:
    """One child's slot: written by the child, read by the supervisor."""

    __slots__ = ("_buf", "_off")

    def __init__(self, buf: mmap.mmap, offset: int) -> None:
        self._buf = buf
        self._off = offset

    def reset(self) -> None:
        """A fresh slot for a new child, made by the supervisor before the fork.

        Heartbeat and ready flag start at 0: the child is alive once it beats, and up
        (serving) once it says so with ``mark_ready``."""
        _HEADER.pack_into(self._buf, self._off, 0, 0, 0, 0)

    def beat(self) -> None:
        struct.pack_into("<Q", self._buf, self._off + 8, time.monotonic_ns())

    def mark_ready(self) -> None:
        struct.pack_into("<q", self._buf, self._off + 16, 1)

    def is_ready(self) -> bool:
        return struct.unpack_from("<q", self._buf, self._off + 16)[0] == 1

    def heartbeat_ns(self) -> int:
        return struct.unpack_from("<Q", self._buf, self._off + 8)[0]

    def publish(self, blob: bytes) -> None:
        if len(blob) > BLOB_MAX:
            raise ValueError(f"stats blob of {len(blob)} bytes exceeds {BLOB_MAX}")
        off = self._off
        seq = struct.unpack_from("<Q", self._buf, off)[0]
        struct.pack_into("<Q", self._buf, off, seq + 1)
        self._buf[off + _HEADER.size : off + _HEADER.size + len(blob)] = blob
        struct.pack_into("<Q", self._buf, off + 24, len(blob))
        struct.pack_into("<Q", self._buf, off, seq + 2)

    def read(self, attempts: int = 100) -> bytes | None:
        """The last complete blob, or None if the writer is stuck mid-write (it died there)."""
        off = self._off
        for _ in range(attempts):
            seq, _beat, _pid, length = _HEADER.unpack_from(self._buf, off)
            if seq & 1:
                time.sleep(0)
                continue
            blob = bytes(self._buf[off + _HEADER.size : off + _HEADER.size + min(length, BLOB_MAX)])
            if struct.unpack_from("<Q", self._buf, off)[0] == seq:
                return blob
        return None


class SlotTable:
    """``count`` slots in one anonymous shared mapping; create it before forking."""

    def __init__(self, count: int) -> None:
        self._buf = mmap.mmap(-1, max(count, 1) * SLOT_SIZE)
        self.slots = [Slot(self._buf, i * SLOT_SIZE) for i in range(count)]

    def close(self) -> None:
        self._buf.close()
