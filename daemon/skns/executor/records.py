"""The journal's record format, and replaying records into the unfinished events.

A journal segment is a sequence of records, each a 9-byte header (kind: 1 byte,
body length: u32 LE, CRC-32 of the body: u32 LE) and the body:

- ``A`` accepted: an orjson array of events ``[seq, account_id, event_id, payload]``
  (exactly the bytes the router sent, so accepting costs no re-encoding);
- ``D`` done and ``F`` failed: the seqs, packed u64 LE;
- ``H`` high-water: one u64, the highest seq ever accepted (written at the head
  of every compacted segment, so deduplication survives compaction).

Appends are not atomic: a crash can leave a torn record at the end. Scanning
stops at the first record that is short or fails its CRC; what follows was
never acknowledged (acks wait for the fsync that covers the record).
"""

from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from .. import jsonexact

HEADER = struct.Struct("<BII")
ACCEPTED = ord("A")
DONE = ord("D")
FAILED = ord("F")
HIGH = ord("H")
KINDS = frozenset((ACCEPTED, DONE, FAILED, HIGH))

Wire = list[Any]  # [seq, account_id, event_id, payload]


def record(kind: int, body: bytes) -> bytes:
    return HEADER.pack(kind, len(body), zlib.crc32(body)) + body


def seqs_record(kind: int, seqs: Iterable[int]) -> bytes:
    return record(kind, array("Q", seqs).tobytes())


def high_record(seq: int) -> bytes:
    return record(HIGH, struct.pack("<Q", seq))


def scan(data: bytes | memoryview) -> tuple[list[tuple[int, bytes]], int]:
    """The intact records of a segment and the offset where they end."""
    view = memoryview(data)
    records: list[tuple[int, bytes]] = []
    offset = 0
    size = len(view)
    while offset + HEADER.size <= size:
        kind, length, crc = HEADER.unpack_from(view, offset)
        start = offset + HEADER.size
        end = start + length
        if kind not in KINDS or end > size:
            break
        body = bytes(view[start:end])
        if zlib.crc32(body) != crc:
            break
        records.append((kind, body))
        offset = end
    return records, offset


def _seqs(body: bytes) -> array:
    seqs = array("Q")
    seqs.frombytes(body)
    return seqs


class Replay:
    """Folds records, oldest first, into the unfinished events and the high-water seq."""

    def __init__(self) -> None:
        self.pending: dict[int, Wire] = {}
        self.high = 0

    def apply(self, kind: int, body: bytes) -> None:
        if kind == ACCEPTED:
            pending = self.pending
            for wire in jsonexact.loads(body):
                pending[wire[0]] = wire
                if wire[0] > self.high:
                    self.high = wire[0]
        elif kind in (DONE, FAILED):
            pop = self.pending.pop
            for seq in _seqs(body):
                pop(seq, None)
        elif kind == HIGH:
            self.high = max(self.high, struct.unpack("<Q", body)[0])

    def apply_all(self, records: Iterable[tuple[int, bytes]]) -> None:
        for kind, body in records:
            self.apply(kind, body)

    def unfinished(self) -> Iterator[Wire]:
        """The events to run again, in arrival order (so each account's order holds)."""
        for seq in sorted(self.pending):
            yield self.pending[seq]
