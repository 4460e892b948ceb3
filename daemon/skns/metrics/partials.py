"""Per-worker window partials in an anonymous shared mapping.

The supervisor maps one block per UDP worker before forking; the worker with
that index is the block's only writer, also across restarts (a restarted
worker picks up the partial its predecessor published). The supervisor reads.

A block holds:

* the worker's watermark: every datagram it will still publish is stamped at
  or after this time, so a window ending at or before it is final for this worker;
* cumulative counters (accepted, rejected by reason);
* a ring of window slots. A slot has a sequence counter and two copies of the
  record; the writer fills the copy the counter does not point at, then bumps
  the counter. A worker killed mid-write leaves the last published copy intact:
  it loses at most the batch it had not yet published.
"""

from __future__ import annotations

import mmap
import struct

from .window import Aggregate

REASONS = ("not_json", "not_object", "missing_key", "not_integer", "out_of_range", "truncated")

_WATERMARK = struct.Struct("<d")
_COUNTERS = struct.Struct("<" + "Q" * (1 + len(REASONS)))
_HEADER_SIZE = 64
# window index, count, A1 sum as two 64-bit halves (it may outgrow int64), A2 max, A3 min
_RECORD = struct.Struct("<qQQqqq")
_SEQ = struct.Struct("<Q")
RING = 16
_SLOT_SIZE = _SEQ.size + 2 * _RECORD.size
BLOCK_SIZE = _HEADER_SIZE + RING * _SLOT_SIZE
_MASK64 = 2**64 - 1


class Block:
    """One worker's block; the same object is used by the writer and the reader."""

    __slots__ = ("_buf", "_off")

    def __init__(self, buf: mmap.mmap, offset: int) -> None:
        self._buf = buf
        self._off = offset

    def _slot(self, w: int) -> int:
        return self._off + _HEADER_SIZE + (w % RING) * _SLOT_SIZE

    # -- writer side ------------------------------------------------------

    def set_watermark(self, t: float) -> None:
        _WATERMARK.pack_into(self._buf, self._off, t)

    def set_counters(self, accepted: int, rejected: list[int]) -> None:
        _COUNTERS.pack_into(self._buf, self._off + 8, accepted, *rejected)

    def publish(self, w: int, count: int, a1_sum: int, a2_max: int, a3_min: int) -> None:
        off = self._slot(w)
        (seq,) = _SEQ.unpack_from(self._buf, off)
        seq += 1
        _RECORD.pack_into(
            self._buf,
            off + _SEQ.size + (seq & 1) * _RECORD.size,
            w,
            count,
            a1_sum & _MASK64,
            a1_sum >> 64,
            a2_max,
            a3_min,
        )
        _SEQ.pack_into(self._buf, off, seq)

    # -- reader side (and a restarted writer) -----------------------------

    def watermark(self) -> float:
        return _WATERMARK.unpack_from(self._buf, self._off)[0]

    def counters(self) -> tuple[int, list[int]]:
        accepted, *rejected = _COUNTERS.unpack_from(self._buf, self._off + 8)
        return accepted, rejected

    def read(self, w: int) -> Aggregate | None:
        """Window ``w``'s partial; zeros when nothing was published for it, None
        when its ring slot was already reused for a later window (data lost)."""
        off = self._slot(w)
        (seq,) = _SEQ.unpack_from(self._buf, off)
        if seq == 0:
            return Aggregate()
        index, count, lo, hi, a2_max, a3_min = _RECORD.unpack_from(
            self._buf, off + _SEQ.size + (seq & 1) * _RECORD.size
        )
        if index == w:
            return Aggregate(count, (hi << 64) | lo, a2_max, a3_min)
        return Aggregate() if index < w else None


class Partials:
    """``workers`` blocks in one anonymous shared mapping; create it before forking."""

    def __init__(self, workers: int) -> None:
        self._buf = mmap.mmap(-1, max(workers, 1) * BLOCK_SIZE)
        self.blocks = [Block(self._buf, i * BLOCK_SIZE) for i in range(workers)]

    def close(self) -> None:
        self._buf.close()
