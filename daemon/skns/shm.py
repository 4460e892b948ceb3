"""Per-child slots in an anonymous shared mapping.

The supervisor maps the table before it forks, so every child inherits it:
nothing to name, nothing to unlink, nothing left in /dev/shm. Each child owns
one slot and is its only writer; the supervisor only reads, but for one word
that only it writes: how many times it asked its children to reopen their output
files (``skns-ctl reopen``, SIGHUP after logrotate).

A slot starts with five 8-byte words: a sequence counter, the heartbeat
(CLOCK_MONOTONIC nanoseconds, comparable across processes), the ready flag, the
stats blob's length and the reopen count, followed by the blob (JSON bytes).

Every word is written and read as one aligned 8-byte store or load, through a
memoryview cast to unsigned 64-bit words (one memcpy of 8 bytes: a single
instruction). ``struct.pack_into`` must not be used here: it zeroes the field
before it writes the bytes one by one, so a reader could see a heartbeat of 0
and kill a healthy child. The blob, several words long, is guarded by the
sequence counter: the writer makes the counter odd, writes, makes it even; a
reader that sees an odd counter, or a different counter after copying, copies
again.
"""

from __future__ import annotations

import mmap
import time

_SEQ, _BEAT, _READY, _LEN, _REOPEN = range(5)
_HEADER_WORDS = 5
_HEADER_SIZE = 8 * _HEADER_WORDS
SLOT_SIZE = 16384
BLOB_MAX = SLOT_SIZE - _HEADER_SIZE


class Slot:
    """One child's slot: written by the child, read by the supervisor."""

    __slots__ = ("_buf", "_off", "_w", "_words")

    def __init__(self, buf: mmap.mmap, words: memoryview, offset: int) -> None:
        self._buf = buf
        self._words = words
        self._off = offset
        self._w = offset // 8  # index of the slot's first word

    def reset(self) -> None:
        """A fresh slot for a new child, made by the supervisor before the fork.

        Heartbeat and ready flag start at 0: the child is alive once it beats, and up
        (serving) once it says so with ``mark_ready``."""
        for i in range(_HEADER_WORDS):
            self._words[self._w + i] = 0

    def beat(self) -> None:
        self._words[self._w + _BEAT] = time.monotonic_ns()

    def mark_ready(self) -> None:
        self._words[self._w + _READY] = 1

    def is_ready(self) -> bool:
        return self._words[self._w + _READY] == 1

    def heartbeat_ns(self) -> int:
        return self._words[self._w + _BEAT]

    def ask_reopen(self) -> None:
        """(supervisor) Ask the child to reopen its output files by path."""
        self._words[self._w + _REOPEN] += 1

    def reopens(self) -> int:
        """(child) How many times it was asked to since its start: it follows one it
        has not seen at its next write."""
        return self._words[self._w + _REOPEN]

    def publish(self, blob: bytes) -> None:
        if len(blob) > BLOB_MAX:
            raise ValueError(f"stats blob of {len(blob)} bytes exceeds {BLOB_MAX}")
        words, w = self._words, self._w
        start = self._off + _HEADER_SIZE
        seq = words[w + _SEQ]
        words[w + _SEQ] = seq + 1
        self._buf[start : start + len(blob)] = blob
        words[w + _LEN] = len(blob)
        words[w + _SEQ] = seq + 2

    def read(self, attempts: int = 100) -> bytes | None:
        """The last complete blob, or None if the writer is stuck mid-write (it died there)."""
        words, w = self._words, self._w
        start = self._off + _HEADER_SIZE
        for _ in range(attempts):
            seq = words[w + _SEQ]
            if seq & 1:
                time.sleep(0)
                continue
            length = min(words[w + _LEN], BLOB_MAX)
            blob = bytes(self._buf[start : start + length])
            if words[w + _SEQ] == seq:
                return blob
        return None


class SlotTable:
    """``count`` slots in one anonymous shared mapping; create it before forking."""

    def __init__(self, count: int) -> None:
        self._buf = mmap.mmap(-1, max(count, 1) * SLOT_SIZE)
        self._words = memoryview(self._buf).cast("Q")
        self.slots = [Slot(self._buf, self._words, i * SLOT_SIZE) for i in range(count)]

    def close(self) -> None:
        self._words.release()
        self._buf.close()
