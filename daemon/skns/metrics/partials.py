"""Per-worker window partials in a shared mapping.

The supervisor maps one block per UDP worker before forking; the worker with
that index is the block's only writer, also across restarts (a restarted
worker picks up the partial its predecessor published). The supervisor reads.

A block holds:

* the worker's watermark: every datagram it will still publish is stamped at
  or after this time, so a window ending at or before it is final for this worker;
* cumulative counters (accepted, rejected by reason);
* the pid of the worker writing it (a supervisor starting over blocks kept from
  a previous run waits for that run's workers to be gone before starting its own);
* a ring of window slots. A slot has a sequence counter and two copies of the
  record; the writer fills the copy the counter does not point at, then bumps
  the counter. A worker killed mid-write leaves the last published copy intact:
  it loses at most the batch it had not yet published.

The watermark, the counters and each slot's sequence counter are single 8-byte
words, written and read as one aligned store or load through memoryviews cast to
64-bit words (``struct.pack_into`` zeroes a field before writing it byte by byte,
so a reader could see a watermark of 0 or a counter of 0 mid-write, and a slot
sequence of 0 would read as "nothing published": a lost partial).
"""

from __future__ import annotations

import mmap
import struct

from .window import Aggregate

REASONS = ("not_json", "not_object", "missing_key", "not_integer", "out_of_range", "truncated")

# Header words: the watermark (a double), then the counters (accepted, then by reason),
# then at word 8 the pid of the worker writing the block.
_COUNTERS = 1 + len(REASONS)
_OWNER = 8
_HEADER_SIZE = 128
# window index, count, A1 sum as two 64-bit halves (it may outgrow int64), A2 max, A3 min
_RECORD = struct.Struct("<qQQqqq")
_SEQ_SIZE = 8  # one word
RING = 16
_SLOT_SIZE = _SEQ_SIZE + 2 * _RECORD.size
BLOCK_SIZE = _HEADER_SIZE + RING * _SLOT_SIZE
_MASK64 = 2**64 - 1


class Block:
    """One worker's block; the same object is used by the writer and the reader."""

    __slots__ = ("_buf", "_f64", "_off", "_u64")

    def __init__(self, buf: mmap.mmap, u64: memoryview, f64: memoryview, offset: int) -> None:
        self._buf = buf
        self._off = offset
        self._u64 = u64
        self._f64 = f64

    def _slot(self, w: int) -> int:
        return self._off + _HEADER_SIZE + (w % RING) * _SLOT_SIZE

    # -- writer side ------------------------------------------------------

    def set_watermark(self, t: float) -> None:
        self._f64[self._off // 8] = t

    def set_owner(self, pid: int) -> None:
        self._u64[self._off // 8 + _OWNER] = pid

    def set_counters(self, accepted: int, rejected: list[int]) -> None:
        u64, first = self._u64, self._off // 8 + 1
        u64[first] = accepted
        for i, n in enumerate(rejected, first + 1):
            u64[i] = n

    def publish(self, w: int, count: int, a1_sum: int, a2_max: int, a3_min: int) -> None:
        off = self._slot(w)
        seq = self._u64[off // 8] + 1
        _RECORD.pack_into(
            self._buf,
            off + _SEQ_SIZE + (seq & 1) * _RECORD.size,
            w,
            count,
            a1_sum & _MASK64,
            a1_sum >> 64,
            a2_max,
            a3_min,
        )
        self._u64[off // 8] = seq

    # -- reader side (and a restarted writer) -----------------------------

    def watermark(self) -> float:
        return self._f64[self._off // 8]

    def owner(self) -> int:
        """The pid of the worker that last wrote the block (0: none yet)."""
        return self._u64[self._off // 8 + _OWNER]

    def counters(self) -> tuple[int, list[int]]:
        first = self._off // 8 + 1
        accepted, *rejected = self._u64[first : first + _COUNTERS].tolist()
        return accepted, rejected

    def read(self, w: int) -> Aggregate | None:
        """Window ``w``'s partial; zeros when nothing was published for it, None
        when its ring slot was already reused for a later window (data lost)."""
        off = self._slot(w)
        seq = self._u64[off // 8]
        while True:
            if seq == 0:
                return Aggregate()
            index, count, lo, hi, a2_max, a3_min = _RECORD.unpack_from(
                self._buf, off + _SEQ_SIZE + (seq & 1) * _RECORD.size
            )
            # The writer published twice while we copied (it rewrote this copy): again.
            seq, before = self._u64[off // 8], seq
            if seq == before:
                break
        if index == w:
            return Aggregate(count, (hi << 64) | lo, a2_max, a3_min)
        return Aggregate() if index < w else None


class Partials:
    """``workers`` blocks in one anonymous shared mapping; create it before forking."""

    def __init__(self, workers: int, buf: mmap.mmap | None = None, offset: int = 0) -> None:
        if buf is None:
            buf = mmap.mmap(-1, max(workers, 1) * BLOCK_SIZE)
        self._buf = buf
        self._u64 = memoryview(self._buf).cast("Q")
        self._f64 = memoryview(self._buf).cast("d")
        self.blocks = [
            Block(self._buf, self._u64, self._f64, offset + i * BLOCK_SIZE) for i in range(workers)
        ]

    def close(self) -> None:
        """Release the views; the mapping is closed too (also one passed as ``buf``)."""
        self._u64.release()
        self._f64.release()
        self._buf.close()
